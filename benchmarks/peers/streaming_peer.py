"""Benchmark peer: MosaicML Streaming (``mosaicml-streaming``) reading MDS shards.

Converts ``--data`` (``<class>/<i>.jpg`` folders) with
``MDSWriter(columns={"image": "jpeg", "label": "int", "index": "int"})`` (default
64 MiB shards, no compression); the 'jpeg' encoding stores an opened JPEG file as
the file's bytes (no re-encode). Then times one shuffled epoch, after one warm-up
epoch, of::

    StreamingDataset(local=out, remote=None, shuffle=True, batch_size=256)
    torch.utils.data.DataLoader(dataset, batch_size=256, num_workers=W, persistent_workers=W > 0)

Workers persist across epochs as in torchloader's own benchmarks; ``--no-persistent``
starts new ones each epoch.

The dataset subclass's ``__getitem__`` turns the PIL image that the 'jpeg'
column decodes to into a HWC uint8 tensor (Streaming's documented way to add a
transform). ``--decoder simplejpeg`` writes the image as a 'bytes' column instead
and decodes it with simplejpeg (libjpeg-turbo), the decoder torchloader uses.

``import streaming`` imports ``streaming.vision``, which imports torchvision;
PyPI's torchvision wheels for Linux x86_64 are built against CUDA torch and don't
import beside the CPU torch 2.13.0 used here. Where torchvision doesn't import,
this script puts a stand-in for the two names ``streaming.vision`` imports into
``sys.modules`` (that module is not used here), so the rest of Streaming loads.

Prints one JSON object per worker count on stdout (or ``{"skipped": ...}``); logs
go to stderr. Each line's ``check`` says whether both epochs gave every sample
once, and the first image's largest difference from Pillow's decode of its file.
Local files only (no remote).

Run: ``python benchmarks/peers/streaming_peer.py --data DIR --work DIR
[--batch-size 256] [--workers 2|0,2] [--limit N] [--decoder pil|simplejpeg]``
"""

from __future__ import annotations

import json
import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # benchmarks/, for common.py
sys.path.insert(0, HERE)  # benchmarks/peers/, for peer_common.py

from peer_common import convert_files, convert_once, logger, parse_args, reason, run_worker_counts, skip  # noqa: E402

PEER = "mosaicml-streaming"
TITLE = "MosaicML Streaming"

# PIL images give read-only arrays; torch.from_numpy warns but shares them (the
# collate copies into the batch anyway).
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

log = logger(PEER)


def import_streaming():
    """``import streaming``, with a stand-in for torchvision where it won't import."""
    stand_in = False
    try:
        import torchvision.datasets  # noqa: F401
        import torchvision.transforms.functional  # noqa: F401
    except Exception:  # noqa: BLE001  (missing, or RuntimeError from a CUDA-only build)
        import types

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]

        def unavailable(*args, **kwargs):
            raise ImportError("torchvision is not importable here (stand-in for streaming.vision)")

        tv = types.ModuleType("torchvision")
        tv.__path__ = []
        datasets = types.ModuleType("torchvision.datasets")
        datasets.VisionDataset = type("VisionDataset", (), {"__init__": unavailable})
        transforms = types.ModuleType("torchvision.transforms")
        functional = types.ModuleType("torchvision.transforms.functional")
        functional.to_tensor = unavailable
        tv.datasets, tv.transforms, transforms.functional = datasets, transforms, functional
        import importlib.machinery

        for module in (tv, datasets, transforms, functional):
            # A spec, so that importlib.util.find_spec() works on it (transformers
            # then finds no torchvision distribution and treats it as absent).
            module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None, is_package=True)
            sys.modules[module.__name__] = module
        stand_in = True
    import streaming

    return streaming, stand_in


def convert(files: list[tuple[str, int]], work: str, decoder: str) -> tuple[str, dict]:
    """MDS shards in ``work``; reused when already complete. Then clears
    Streaming's stale shared memory (``clean_stale_shared_memory()``)."""
    from PIL import Image
    from streaming import MDSWriter
    from streaming.base.util import clean_stale_shared_memory

    encoding = "jpeg" if decoder == "pil" else "bytes"
    columns = {"image": encoding, "label": "int", "index": "int"}
    params = {"files": len(files), "first": files[0][0], "last": files[-1][0], "columns": columns}
    out = os.path.join(work, f"mds-{encoding}-n{len(files)}")

    def write(tmp: str) -> None:
        log(f"MDSWriter: {len(files)} samples into {out}")
        with MDSWriter(out=tmp, columns=columns) as writer:
            for i, (path, label) in enumerate(files):
                if encoding == "jpeg":
                    with Image.open(path) as image:  # 'jpeg' stores the file's own bytes
                        writer.write({"image": image, "label": label, "index": i})
                else:
                    with open(path, "rb") as f:
                        writer.write({"image": f.read(), "label": label, "index": i})

    info = {"columns": columns, **convert_once(out, params, write)}
    with open(os.path.join(out, "index.json")) as f:
        index = json.load(f)
    info["shards"] = len(index["shards"])
    info["bytes"] = sum(s["raw_data"]["bytes"] for s in index["shards"])
    clean_stale_shared_memory()
    return out, info


def dataset_class(decoder: str):
    """StreamingDataset whose items are (HWC uint8 image tensor, label, index)."""
    import numpy as np
    import torch
    from streaming import StreamingDataset

    class ImageDataset(StreamingDataset):
        def __getitem__(self, idx: int):
            obj = super().__getitem__(idx)
            image = obj["image"]
            if decoder == "pil":
                image = np.asarray(image.convert("RGB"))
            else:
                import simplejpeg

                image = simplejpeg.decode_jpeg(image, colorspace="RGB")
            return torch.from_numpy(image), obj["label"], obj["index"]

    return ImageDataset


def main() -> int:
    args = parse_args(__doc__, ["pil", "simplejpeg"], "pil")
    try:
        streaming, stand_in = import_streaming()
        import common  # noqa: F401  (benchmarks/common.py, for peer_common)
        from streaming.base.util import clean_stale_shared_memory  # noqa: F401  (used by convert)
        from torch.utils.data import DataLoader
    except Exception as e:  # noqa: BLE001
        skip(TITLE, PEER, reason("import failed", e))
        return 0
    if stand_in:
        log("torchvision does not import here: a stand-in lets `import streaming` load (streaming.vision unused)")
    converted = convert_files(args, lambda files, work: convert(files, work, args.decoder), TITLE, PEER)
    if converted is None:
        return 0
    files, (out, info) = converted
    Dataset = dataset_class(args.decoder)
    dec = (
        "'jpeg' column (Pillow decode) -> HWC tensor in __getitem__"
        if args.decoder == "pil"
        else "'bytes' column decoded by simplejpeg -> HWC tensor in __getitem__"
    )

    def make_loader(workers: int, persistent: bool):
        ds = Dataset(local=out, remote=None, shuffle=True, batch_size=args.batch_size)
        return DataLoader(ds, batch_size=args.batch_size, num_workers=workers, persistent_workers=persistent)

    def config(workers: int, persistent: bool) -> str:
        return (
            f"MDSWriter(columns={info['columns']}) {info['shards']} shards (default 64 MiB, "
            f"no compression), StreamingDataset(local, remote=None, shuffle=True [py1e], "
            f"batch_size={args.batch_size}), {dec}, torch DataLoader(batch_size={args.batch_size}, "
            f"num_workers={workers}, persistent_workers={persistent})"
            + ("; torchvision stand-in for `import streaming`" if stand_in else "")
        )

    # run_worker_counts collects each loader before the next is made, so that the
    # dataset's shared memory is gone before the next dataset is created.
    run_worker_counts(
        args,
        files,
        make_loader,
        config,
        info=info,
        version=streaming.__version__,
        title=TITLE,
        peer=PEER,
        detail=f"{info['shards']} shards",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
