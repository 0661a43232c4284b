"""``torchloader bench --plot``: the measured rows as a bar chart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["plot"]

_COLOURS = {
    "bound": "#777777",
    "limit": "#aaaaaa",
    "peer": "#4c9a52",
    "dataloader": "#d08a2e",
    "seed": "#d08a2e",
    "ram-collate": "#d08a2e",
}


def plot(results: Sequence[Any], out: str, *, title: str = "samples/s") -> None:
    """A horizontal bar chart of samples/s per row (log scale), written to ``out`` (PNG).

    Grey: the bound and limits; orange: plain DataLoader baselines; green: peers;
    blue: torchloader.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'torchloader[bench]'") from None
    rows = [r for r in results if r.samples_per_s][::-1]
    fig, ax = plt.subplots(figsize=(12, 0.3 * len(rows) + 1.4))
    ax.barh(range(len(rows)), [r.samples_per_s for r in rows], color=[_COLOURS.get(r.mode, "#3b75af") for r in rows])
    ax.set_yticks(range(len(rows)), [_short(r.name) for r in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("samples/s (log scale)")
    ax.set_title(title)
    ax.grid(axis="x", which="both", alpha=0.3)
    for k, r in enumerate(rows):
        ax.text(r.samples_per_s, k, f" {r.samples_per_s:,.0f}", va="center", fontsize=7)
    fig.subplots_adjust(left=0.42, right=0.95, top=1 - 0.5 / fig.get_figheight(), bottom=0.6 / fig.get_figheight())
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _short(name: str, width: int = 70) -> str:
    if len(name) <= width:
        return name
    cut = name.split(" (")[0]
    cut += ", cold" if "cold" in name and "cold" not in cut else ""
    return cut if len(cut) <= width else cut[: width - 1] + "…"
