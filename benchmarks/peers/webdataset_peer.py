"""Benchmark peer: WebDataset (``webdataset``) reading JPEG tar shards.

Converts ``--data`` (``<class>/<i>.jpg`` folders) into tar shards with
``wds.ShardWriter`` (JPEG bytes as they are, label as ``.cls``), then times one
shuffled epoch, after one warm-up epoch, of the pipeline WebDataset documents for
training::

    wds.WebDataset(urls, shardshuffle=N).shuffle(1000).decode("torchrgb8")
       .to_tuple("jpg", "cls", "__key__").batched(256)
    wds.WebLoader(dataset, batch_size=None, num_workers=W, persistent_workers=W > 0)

(``shardshuffle=True`` is what 1.0 warns about and maps to 100; the shard count is
passed instead.) Workers persist across epochs as in torchloader's own benchmarks;
``--no-persistent`` starts new ones each epoch.

``--decoder simplejpeg`` swaps the image handler for a custom one (a documented
``.decode(fn)`` hook) that decodes with libjpeg-turbo through simplejpeg, to show
the pipeline's cost with the same decoder torchloader uses.

Prints one JSON object per worker count on stdout (or ``{"skipped": ...}``); logs
go to stderr. Each line's ``check`` says whether both epochs gave every sample
once, and the first image's largest difference from Pillow's decode of its file.

Run: ``python benchmarks/peers/webdataset_peer.py --data DIR --work DIR
[--batch-size 256] [--workers 2|0,2] [--limit N] [--decoder pil|simplejpeg]``

``--workers`` takes a comma list: one line per count, the conversion done once.
"""

from __future__ import annotations

import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # benchmarks/, for common.py
sys.path.insert(0, HERE)  # benchmarks/peers/, for peer_common.py

from peer_common import convert_files, convert_once, logger, parse_args, reason, run_worker_counts, skip  # noqa: E402

PEER = "webdataset"
TITLE = "WebDataset"

SHUFFLE_BUFFER = 1000
MAX_PER_SHARD = 2000
MIN_SHARDS = 8

log = logger(PEER)


def convert(files: list[tuple[str, int]], work: str) -> tuple[list[str], dict]:
    """Tar shards of JPEG bytes in ``work``; reused when already complete."""
    import webdataset as wds

    per_shard = min(MAX_PER_SHARD, math.ceil(len(files) / MIN_SHARDS))
    params = {"files": len(files), "first": files[0][0], "last": files[-1][0], "per_shard": per_shard}
    out = os.path.join(work, f"wds-n{len(files)}")

    def write(tmp: str) -> None:
        os.makedirs(tmp)
        log(f"writing {len(files)} samples to tar shards of {per_shard} in {out}")
        with wds.ShardWriter(os.path.join(tmp, "shard-%06d.tar"), maxcount=per_shard, maxsize=200e6, verbose=0) as sink:
            for i, (path, label) in enumerate(files):
                with open(path, "rb") as f:
                    sink.write({"__key__": f"{i:06d}", "jpg": f.read(), "cls": label})

    info = {"per_shard": per_shard, **convert_once(out, params, write)}
    shards = sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".tar"))
    info["shards"] = len(shards)
    info["bytes"] = sum(os.path.getsize(s) for s in shards)
    return shards, info


def simplejpeg_handler(key: str, data: bytes):
    """``.decode()`` handler: JPEG -> HWC uint8 tensor through simplejpeg."""
    if not key.lower().endswith((".jpg", ".jpeg")):
        return None
    import simplejpeg
    import torch

    return torch.from_numpy(simplejpeg.decode_jpeg(data, colorspace="RGB"))


def main() -> int:
    args = parse_args(__doc__, ["pil", "simplejpeg"], "pil")
    try:
        import common  # noqa: F401  (benchmarks/common.py, for peer_common)
        import webdataset as wds
    except Exception as e:  # noqa: BLE001
        skip(TITLE, PEER, reason("import failed", e))
        return 0
    converted = convert_files(args, convert, TITLE, PEER)
    if converted is None:
        return 0
    files, (shards, info) = converted
    decoder = "torchrgb8" if args.decoder == "pil" else simplejpeg_handler
    dec = "decode('torchrgb8') [Pillow, CHW]" if args.decoder == "pil" else "decode(simplejpeg handler) [HWC]"

    def make_loader(workers: int, persistent: bool):
        ds = (
            wds.WebDataset(shards, shardshuffle=len(shards), empty_check=False)
            .shuffle(SHUFFLE_BUFFER)
            .decode(decoder)
            .to_tuple("jpg", "cls", "__key__")
            .batched(args.batch_size)
        )
        return wds.WebLoader(ds, batch_size=None, num_workers=workers, persistent_workers=persistent)

    def config(workers: int, persistent: bool) -> str:
        return (
            f"{info['shards']} tar shards of {info['per_shard']} JPEGs (bytes as stored), "
            f"WebDataset(shardshuffle={len(shards)}).shuffle({SHUFFLE_BUFFER}).{dec}"
            f".to_tuple('jpg','cls','__key__').batched({args.batch_size}), "
            f"WebLoader(batch_size=None, num_workers={workers}, persistent_workers={persistent})"
        )

    run_worker_counts(
        args,
        files,
        make_loader,
        config,
        info=info,
        version=wds.__version__,
        title=TITLE,
        peer=PEER,
        detail=f"{len(shards)} shards",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
