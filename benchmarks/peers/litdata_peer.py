"""Benchmark peer: LitData (``litdata``) reading chunks written by ``litdata.optimize``.

Converts ``--data`` (``<class>/<i>.jpg`` folders) with ``litdata.optimize``, each
item ``{"index": i, "image": PIL.Image.open(path), "label": c}``: an opened JPEG
file is stored by LitData's JPEG serializer as the file's bytes (no re-encode), in
chunks of ``chunk_bytes="64MB"`` as its README does. Then times one shuffled epoch,
after one warm-up epoch, of::

    StreamingDataset(output_dir, shuffle=True)
    StreamingDataLoader(dataset, batch_size=256, num_workers=W, persistent_workers=W > 0)

Workers persist across epochs as in torchloader's own benchmarks; ``--no-persistent``
starts new ones each epoch. ``optimize()`` leaves the process's multiprocessing
start method at "spawn"; it is put back after converting.

LitData decodes such JPEGs with ``torchvision.io.decode_jpeg`` (libjpeg-turbo) and
has no other decoder for them. PyPI's torchvision wheels for Linux x86_64 are built
against CUDA torch and don't import beside the CPU torch 2.13.0 used here, so where
torchvision is missing or broken, ``--decoder auto`` (the default) passes
``StreamingDataset(serializers={"jpeg": ...})`` a JPEG serializer that decodes the
same bytes with simplejpeg (libjpeg-turbo too, about torchvision's rate per core).
``--decoder pil`` decodes with Pillow instead.

Prints one JSON object per worker count on stdout (or ``{"skipped": ...}``); logs
go to stderr. Each line's ``check`` says whether both epochs gave every sample
once, and the first image's largest difference from Pillow's decode of its file.
Local files only: LitData's PyPI version check is switched off.

Run: ``python benchmarks/peers/litdata_peer.py --data DIR --work DIR
[--batch-size 256] [--workers 2|0,2] [--limit N] [--decoder auto|torchvision|simplejpeg|pil]``
"""

from __future__ import annotations

import json
import os
import sys
import warnings

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # no request to PyPI at import

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # benchmarks/, for common.py
sys.path.insert(0, HERE)  # benchmarks/peers/, for peer_common.py

from peer_common import convert_files, convert_once, logger, parse_args, reason, run_worker_counts, skip  # noqa: E402

PEER = "litdata"
TITLE = "LitData"

CHUNK_BYTES = "64MB"

warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

log = logger(PEER)


def _item(entry: tuple[int, str, int]) -> dict:
    """optimize() fn: an opened JPEG (stored as its file's bytes) and its label."""
    from PIL import Image

    i, path, label = entry
    return {"index": i, "image": Image.open(path), "label": label}


def convert(files: list[tuple[str, int]], work: str) -> tuple[str, dict]:
    """litdata.optimize() chunks in ``work``; reused when already complete."""
    import litdata

    params = {"files": len(files), "first": files[0][0], "last": files[-1][0], "chunk_bytes": CHUNK_BYTES}
    out = os.path.join(work, f"litdata-n{len(files)}")

    def write(tmp: str) -> None:
        log(f"litdata.optimize: {len(files)} samples into {out}")
        # optimize() switches the process's multiprocessing start method to "spawn"
        # for good (set_start_method(force=True)); put the default (fork) back after,
        # so that the DataLoader workers start the same whether or not we converted.
        import multiprocessing as mp

        method = mp.get_start_method(allow_none=True)
        try:
            litdata.optimize(
                fn=_item,
                inputs=[(i, path, label) for i, (path, label) in enumerate(files)],
                output_dir=tmp,
                chunk_bytes=CHUNK_BYTES,
                num_workers=min(2, os.cpu_count() or 1),
                verbose=False,
            )
        finally:
            mp.set_start_method(method, force=True)

    info = {"chunk_bytes": CHUNK_BYTES, **convert_once(out, params, write)}
    with open(os.path.join(out, "index.json")) as f:
        index = json.load(f)
    info["chunks"] = len(index["chunks"])
    info["data_format"] = index["config"].get("data_format")
    info["bytes"] = sum(os.path.getsize(os.path.join(out, c["filename"])) for c in index["chunks"])
    return out, info


def torchvision_works() -> bool:
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception:  # noqa: BLE001  (missing, or RuntimeError from a CUDA-only build)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        return False
    return True


try:  # the base class for the two decoders below; a failed import is reported in main()
    from litdata.streaming.serializers import JPEGSerializer as _JPEGSerializer
except Exception:  # noqa: BLE001
    _JPEGSerializer = object


class SimpleJPEGSerializer(_JPEGSerializer):
    """LitData's JPEG serializer, decoding the stored JPEG bytes with simplejpeg."""

    def deserialize(self, data: bytes):
        import simplejpeg
        import torch

        return torch.from_numpy(simplejpeg.decode_jpeg(data, colorspace="RGB"))  # HWC uint8


class PILJPEGSerializer(_JPEGSerializer):
    """LitData's JPEG serializer, decoding the stored JPEG bytes with Pillow."""

    def deserialize(self, data: bytes):
        import io

        import numpy as np
        import torch
        from PIL import Image

        # Pillow's arrays are read-only: torch warns once and shares it (collate copies).
        return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))  # HWC uint8


def main() -> int:
    args = parse_args(__doc__, ["auto", "torchvision", "simplejpeg", "pil"], "auto")
    try:
        import common  # noqa: F401  (benchmarks/common.py, for peer_common)
        import litdata
        from litdata import StreamingDataLoader, StreamingDataset
    except Exception as e:  # noqa: BLE001
        skip(TITLE, PEER, reason("import failed", e))
        return 0
    decoder = args.decoder
    if decoder in ("auto", "torchvision"):
        if torchvision_works():
            decoder = "torchvision"
        elif args.decoder == "torchvision":
            skip(TITLE, PEER, "torchvision.io.decode_jpeg does not import here")
            return 0
        else:
            decoder = "simplejpeg"
            log("torchvision does not import here: decoding LitData's JPEG bytes with simplejpeg")
    converted = convert_files(args, convert, TITLE, PEER)
    if converted is None:
        return 0
    files, (out, info) = converted
    serializers = {
        "torchvision": None,
        "simplejpeg": {"jpeg": SimpleJPEGSerializer()},
        "pil": {"jpeg": PILJPEGSerializer()},
    }[decoder]
    dec = {
        "torchvision": "its JPEG serializer (torchvision.io.decode_jpeg, CHW)",
        "simplejpeg": "its JPEG serializer's bytes decoded by simplejpeg (HWC), torchvision not importable",
        "pil": "its JPEG serializer's bytes decoded by Pillow (HWC)",
    }[decoder]

    def make_loader(workers: int, persistent: bool):
        ds = StreamingDataset(out, shuffle=True, serializers=serializers)
        extra = {"persistent_workers": True} if persistent else {}
        return StreamingDataLoader(ds, batch_size=args.batch_size, num_workers=workers, **extra)

    def config(workers: int, persistent: bool) -> str:
        return (
            f"litdata.optimize(chunk_bytes='{CHUNK_BYTES}') of PIL-opened JPEGs "
            f"(stored as file bytes, {info['chunks']} chunks, format {info['data_format']}), "
            f"StreamingDataset(shuffle=True), {dec}, "
            f"StreamingDataLoader(batch_size={args.batch_size}, num_workers={workers}"
            f"{', persistent_workers=True' if persistent else ''})"
        )

    run_worker_counts(
        args,
        files,
        make_loader,
        config,
        info=info,
        version=litdata.__version__,
        title=TITLE,
        peer=PEER,
        detail=f"{info['chunks']} chunks",
        decoder=decoder,
        unpack=lambda b: (b["image"], b["label"], b["index"]),
        extra={"decoder": decoder},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
