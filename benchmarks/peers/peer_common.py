"""What the benchmark peers' scripts (``benchmarks/peers/*_peer.py``) share.

Each peer script converts a ``<class>/<i>.jpg`` folder into its library's format,
times one epoch after a warm-up, and prints one JSON object per line on stdout
(``{"name", "peer", "samples_per_s", "peak_pss_bytes", "samples", ...}``, or
``{"name", "peer", "skipped": reason}``); logs go to stderr and the exit code is 0
even when skipped. This module holds the parts they do alike:

* output: ``logger``, ``emit``, ``skip``, ``reason``;
* options: ``parse_args`` (``--data --work --batch-size --workers --limit
  --decoder --no-persistent``) and ``worker_counts``;
* input and conversion: ``class_jpegs``, ``list_files``, ``prepared``,
  ``convert_once``, ``convert_files``;
* timing: ``Epochs`` (each epoch's sample indices, checked for every sample once
  and for a shuffled order, and the first image checked against Pillow's decode of
  its file) and ``run_worker_counts`` (one output line per worker count).

Each script keeps its own conversion and loader. Only the standard library is
imported here at import time: torch, numpy, Pillow and ``benchmarks/common.py``
are imported where they are used, so that a script can report a failed import as
a ``skipped`` line. The scripts import this module as ``peer_common``, after
putting their own folder (and ``benchmarks/``, for ``common.py``) on ``sys.path``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TextIO


def logger(prefix: str) -> Callable[..., None]:
    """A ``log(*args)`` that prints ``[prefix] args`` to stderr, flushed."""

    def log(*args: object) -> None:
        print(f"[{prefix}]", *args, file=sys.stderr, flush=True)

    return log


def emit(obj: dict, out: TextIO | None = None) -> None:
    """``obj`` as one JSON line on ``out`` (stdout by default), flushed."""
    out = sys.stdout if out is None else out
    out.write(json.dumps(obj) + "\n")
    out.flush()


def skip(name: str, peer: str, why: str, out: TextIO | None = None) -> None:
    """Emit the ``{"name", "peer", "skipped": why}`` line of a run that did not happen."""
    emit({"name": name, "peer": peer, "skipped": why}, out)


def reason(what: str, exc: BaseException) -> str:
    """``"what: ExcType: message"``, first line only: a ``skipped`` reason."""
    return f"{what}: {type(exc).__name__}: {exc}".splitlines()[0]


def worker_counts(text: str) -> list[int]:
    """``"2"`` or a comma list ``"0,2"`` as worker counts (empty items ignored)."""
    return [int(w) for w in str(text).split(",") if w.strip()]


def parse_args(doc: str, decoders: list[str], default_decoder: str) -> argparse.Namespace:
    """The options of a peer script whose loader runs worker processes.

    ``--data`` and ``--work`` (required), ``--batch-size`` (256), ``--workers``
    (``"2"``; a comma list runs each count, the conversion done once), ``--limit``,
    ``--decoder`` (one of ``decoders``, ``default_decoder`` by default) and
    ``--no-persistent``. The description is the first paragraph of ``doc``; the
    parsed worker counts are ``args.worker_counts``, and ``default_decoder`` is
    kept as ``args.default_decoder``.
    """
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", default="2", help="worker count, or a comma list of them")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--decoder", choices=decoders, default=default_decoder)
    ap.add_argument("--no-persistent", action="store_true", help="new worker processes every epoch")
    args = ap.parse_args()
    args.worker_counts = worker_counts(args.workers)
    args.default_decoder = default_decoder
    return args


def class_jpegs(root: str) -> tuple[list[tuple[str, int]], list[str]]:
    """``(path, label)`` for every ``.jpg``/``.jpeg`` file (any case) under
    ``root/<class>/``, and the class names: classes sorted, label = class's
    position, files sorted by name within a class."""
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    files = [
        (os.path.join(root, c, f), label)
        for label, c in enumerate(classes)
        for f in sorted(os.listdir(os.path.join(root, c)))
        if f.lower().endswith((".jpg", ".jpeg"))
    ]
    return files, classes


def list_files(root: str, limit: int | None) -> list[tuple[str, int]]:
    """(path, label) for every JPEG under ``root/<class>/``, classes sorted; with
    ``limit``, ``limit`` evenly spaced ones (every k-th), so all classes stay in."""
    files, _ = class_jpegs(root)
    if limit and limit < len(files):
        files = [files[i * len(files) // limit] for i in range(limit)]
    return files


def prepared(path: str, params: dict) -> bool:
    """Whether ``path`` holds a finished conversion made with ``params`` (its ``DONE``)."""
    try:
        with open(os.path.join(path, "DONE")) as f:
            return json.load(f) == params
    except (OSError, ValueError):
        return False


def convert_once(out: str, params: dict, write: Callable[[str], None]) -> dict:
    """Convert into the folder ``out`` unless it already holds a finished
    conversion made with ``params``.

    ``write(tmp)`` fills ``tmp = out + ".tmp"`` (removed first, not created: make it
    if the writer needs it). Then ``tmp/DONE`` records ``params`` and ``tmp``
    becomes ``out``, so an interrupted conversion is never taken for a finished one.
    Returns ``{"convert_s": seconds of write(tmp) (0.0 when reused), "reused": bool}``.
    """
    if prepared(out, params):
        return {"convert_s": 0.0, "reused": True}
    tmp = out + ".tmp"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.perf_counter()
    write(tmp)
    with open(os.path.join(tmp, "DONE"), "w") as f:
        json.dump(params, f)
    os.rename(tmp, out)
    return {"convert_s": round(time.perf_counter() - start, 2), "reused": False}


def convert_files(args: argparse.Namespace, convert: Callable[[list, str], Any], name: str, peer: str):
    """``list_files(args.data, args.limit)`` and ``convert(files, args.work)``
    (``args.work`` made first): ``(files, what convert returned)``. On failure
    the traceback goes to stderr, a ``"conversion failed: ..."`` skipped line is
    emitted under ``name``, and None is returned."""
    try:
        files = list_files(args.data, args.limit)
        os.makedirs(args.work, exist_ok=True)
        return files, convert(files, args.work)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        skip(name, peer, reason("conversion failed", e))
        return None


class Epochs:
    """Each ``iter()`` is one epoch of ``loader``. Records the sample indices each
    epoch yields (checked after timing) and checks the first batch against Pillow."""

    def __init__(self, loader, files, unpack, log: Callable[..., None]) -> None:
        self.loader = loader
        self.files = files
        self.unpack = unpack  # batch -> (images, labels, sample indices)
        self.log = log  # for the problems report() finds
        self.check: dict = {}
        self.seen: list[list] = []

    def __iter__(self):
        seen: list = []
        self.seen.append(seen)
        for batch in self.loader:
            images, labels, index = self.unpack(batch)
            if not self.check:
                self._check_batch(images, labels, index)
            seen.extend(index.tolist() if hasattr(index, "tolist") else index)
            yield batch

    def close(self) -> None:
        # Ends persistent workers now rather than whenever the loader is collected.
        from torch.utils.data import DataLoader

        dl = self.loader
        if not isinstance(dl, DataLoader):  # WebLoader is a pipeline around a DataLoader
            dl = next((p for p in getattr(dl, "pipeline", []) if isinstance(p, DataLoader)), None)
        it = getattr(dl, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

    def report(self) -> dict:
        """``check`` and ``problems`` fields of the output line (problems also logged)."""
        n = len(self.files)
        check = dict(self.check)
        problems = []
        for epoch, seen in enumerate(self.seen):
            seen = sorted(int(i) for i in seen)
            what = "warm-up" if epoch < len(self.seen) - 1 else "timed"
            check[f"{what}_epoch_samples"] = len(seen)
            if seen != list(range(n)):
                problems.append(f"{what} epoch gave {len(seen)} samples, {len(set(seen))} distinct, of {n}")
        check["every_sample_once"] = not problems
        orders = [[int(i) for i in seen] for seen in self.seen]
        check["shuffled"] = all(order != sorted(order) for order in orders)
        check["epoch_orders_differ"] = len(orders) > 1 and orders[-1] != orders[-2]
        if not check["shuffled"]:
            problems.append("an epoch came in stored order")
        if check.get("max_pixel_diff_vs_pillow", 0) != 0:
            problems.append(f"decoded image differs from Pillow's by up to {check['max_pixel_diff_vs_pillow']}")
        if not check.get("label_ok", False):
            problems.append("label of the checked sample is wrong")
        for p in problems:
            self.log("CHECK:", p)
        return {"check": check, "problems": problems}

    def _check_batch(self, images, labels, index) -> None:
        import numpy as np
        import torch
        from PIL import Image

        if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8):
            raise TypeError(f"images are {type(images).__name__} {getattr(images, 'dtype', '')}, not uint8 tensors")
        self.check["batch_shape"] = list(images.shape)
        self.check["label_type"] = f"{type(labels).__name__}[{getattr(labels, 'dtype', type(labels[0]).__name__)}]"
        i = int(index[0])
        img = images[0].numpy()
        if img.shape[0] == 3:
            img = img.transpose(1, 2, 0)
        ref = np.asarray(Image.open(self.files[i][0]).convert("RGB"))
        self.check["max_pixel_diff_vs_pillow"] = int(np.abs(img.astype(int) - ref.astype(int)).max())
        self.check["label_ok"] = int(labels[0]) == self.files[i][1]


def run_worker_counts(
    args: argparse.Namespace,
    files: list[tuple[str, int]],
    make_loader: Callable[[int, bool], Any],
    config: Callable[[int, bool], str],
    *,
    info: dict,
    version: str,
    title: str,
    peer: str,
    detail: str,
    decoder: str | None = None,
    unpack: Callable[[Any], tuple] = lambda batch: batch,
    extra: dict | None = None,
) -> None:
    """One output line per count in ``args.worker_counts`` (from ``parse_args``).

    For each count W, with ``persistent = W > 0 and not args.no_persistent``:
    ``make_loader(W, persistent)`` is built inside ``measure_epochs`` (one warm-up
    epoch, one timed) and wrapped in ``Epochs`` (``unpack(batch)`` gives its images,
    labels and sample indices). The line is ``{"name", "peer", "samples_per_s",
    "peak_pss_bytes", "samples", "version", "workers", "batch_size", **extra,
    "config": config(W, persistent), "check", "problems", "convert": info,
    "machine"}``, its name ``"<title>, W workers"`` followed by ``", <decoder>"``
    where ``args.decoder`` is not the default (``decoder``, the decoder used,
    defaults to ``args.decoder``). A failure gives a ``"failed: ..."`` skipped line
    instead (traceback on stderr) and the next count still runs. Before each run
    it logs ``"<N> samples, <detail>, W workers, decoder <decoder>"``.
    """
    from common import machine, measure_epochs  # benchmarks/common.py

    log = logger(peer)
    decoder = args.decoder if decoder is None else decoder
    suffix = "" if args.decoder == args.default_decoder else f", {decoder}"
    for workers in args.worker_counts:
        name = f"{title}, {workers} workers{suffix}"
        persistent = workers > 0 and not args.no_persistent
        try:
            made: dict = {}

            def make():
                made["epochs"] = Epochs(make_loader(workers, persistent), files, unpack, log)
                return made["epochs"]

            log(f"{len(files)} samples, {detail}, {workers} workers, decoder {decoder}")
            rate, pss = measure_epochs(make, len(files), warmup=1)
            epochs = made.pop("epochs")
            emit(
                {
                    "name": name,
                    "peer": peer,
                    "samples_per_s": round(rate, 1),
                    "peak_pss_bytes": pss,
                    "samples": len(files),
                    "version": version,
                    "workers": workers,
                    "batch_size": args.batch_size,
                    **(extra or {}),
                    "config": config(workers, persistent),
                    **epochs.report(),
                    "convert": info,
                    "machine": machine(),
                }
            )
            del epochs
            gc.collect()  # the loader's workers and memory go before the next one is made
        except Exception as e:  # noqa: BLE001
            traceback.print_exc(file=sys.stderr)
            skip(name, peer, reason("failed", e))
