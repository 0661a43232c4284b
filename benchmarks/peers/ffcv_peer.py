"""FFCV (https://github.com/libffcv/ffcv) as a benchmark peer for torchloader.

Run with the FFCV venv's python (see install_ffcv.sh):

    /work/venv-ffcv/bin/python benchmarks/peers/ffcv_peer.py \
        --data /work/benchdata/jpeg128 --work /tmp/ffcv-work --batch-size 256 --workers 2 [--limit N]

Converts the class-folder JPEG tree into two .beton files in --work (reused while the
selected files are unchanged):

* JPEG: ``RGBImageField(write_mode='jpg', jpeg_quality=90)``. FFCV has no pass-through
  for already-compressed files: its writer takes decoded pixels and re-encodes them with
  OpenCV at ``jpeg_quality``, so the stored JPEGs are a second generation of the source
  files (same 128x128 size, same quality 90). ``'smart'``/``'proportion'`` only choose per
  image between 'jpg' and 'raw'; with every image the same size they pick one or the other
  for all of them, so the two files here cover them.
* RAW: ``RGBImageField(write_mode='raw')``, decoded uint8 HWC pixels (the peer of
  torchloader's PackedDataset).
* RRC (``--modes rrc``, not run by default): a folder of images of every size, the
  ImageNet training recipe: ``RGBImageField(write_mode='jpg', max_resolution=512,
  jpeg_quality=90)`` (``--max-resolution``), read with ``RandomResizedCropRGBImageDecoder((S, S)) ->
  RandomHorizontalFlip() -> ToTensor() -> ToTorchImage()`` (``S`` is ``--crop-size``,
  default 128). Its crops are random, so it is not compared with Pillow (``check``).

Labels are ``IntField``. Each .beton is read by ``ffcv.loader.Loader`` with
``order=OrderOption.RANDOM, os_cache=True, drop_last=False`` (FFCV documents QUASI_RANDOM as
"mostly useful when os_cache=False"), pipelines ``SimpleRGBImageDecoder() -> ToTensor() ->
ToTorchImage()`` (uint8, NCHW view of channels-last memory, no copy) and
``IntDecoder() -> ToTensor()``. FFCV's "workers" are numba threads inside this process (the
batch is decoded with ``prange`` on ``num_workers`` threads, in one background thread);
``num_workers=0`` means "all cores" to FFCV, so 0 is run as cpu_count().

The first epoch JIT-compiles the pipeline with numba, so one warm-up epoch is run and
the second is timed (``measure_epochs(..., warmup=1)``), each configuration in a fresh
child process (so no earlier loader's mapped .beton pages or threads skew its peak PSS or
rate). The peak PSS includes the touched pages of the mmapped .beton (os_cache=True maps
the file; for RAW that is the whole decoded dataset). One JSON object per line goes
to stdout; everything else goes to stderr. If FFCV cannot be imported or fails, a
``{"name": ..., "peer": "ffcv", "skipped": reason}`` line is printed and the exit code is 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import traceback
from io import BytesIO
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/, for common.py
sys.path.insert(0, str(HERE))  # benchmarks/peers/, for peer_common.py

import peer_common  # noqa: E402

# stdout carries only the JSON lines: keep the real stdout aside and send fd 1 (Python
# prints, tqdm, numba or C-level chatter from FFCV) to stderr for the whole run.
_JSON_OUT = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr

PEER = "ffcv"

log = peer_common.logger("ffcv_peer")


def emit(obj: dict) -> None:
    peer_common.emit(obj, _JSON_OUT)


def one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").strip()
    return text[:500]


def list_files(data: Path, limit: int | None) -> tuple[list[Path], list[int], list[str]]:
    """Files, labels and class names (``peer_common.class_jpegs``); with ``limit``,
    every ``len // limit``-th file from the first, ``limit`` of them."""
    found, classes = peer_common.class_jpegs(str(data))
    files = [Path(f) for f, _ in found]
    labels = [label for _, label in found]
    if not files:
        raise FileNotFoundError(f"no JPEG files under {data}/<class>/")
    if limit and limit < len(files):
        step = len(files) // limit
        picked = list(range(0, len(files), step))[:limit]
        files = [files[i] for i in picked]
        labels = [labels[i] for i in picked]
    return files, labels, classes


class JpegFolder:
    """Indexable (image HWC uint8 RGB, label) dataset for DatasetWriter."""

    def __init__(self, files: list[Path], labels: list[int]):
        self.files = [str(f) for f in files]
        self.labels = labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        import numpy as np
        from PIL import Image

        with Image.open(self.files[i]) as im:
            return np.asarray(im.convert("RGB")), self.labels[i]


def digest(files: list[Path], labels: list[int], extra: str) -> str:
    h = hashlib.sha1(extra.encode())
    for f, y in zip(files, labels):
        st = f.stat()
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\0{y}\n".encode())
    return h.hexdigest()[:12]


def write_beton(
    work: Path, mode: str, files, labels, jpeg_quality: int, writers: int, max_resolution: int | None = None
) -> Path:
    """The .beton of ``mode`` (``jpg``, ``raw``, or ``rrc``: ``jpg`` at most ``max_resolution``)."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    write_mode = "jpg" if mode == "rrc" else mode
    key = digest(files, labels, f"{mode} q{jpeg_quality} max{max_resolution} ffcv-{ffcv_version()}")
    path = work / f"ffcv_{mode}_{len(files)}_{key}.beton"
    if path.exists():
        log(f"reusing {path} ({path.stat().st_size / 2**20:.1f} MiB)")
        return path
    for old in work.glob(f"ffcv_{mode}_{len(files)}_*.beton*"):  # same selection, stale files
        log(f"removing stale {old}")
        old.unlink()
    tmp = path.with_suffix(".beton.tmp")
    log(f"writing {path} ({len(files)} images, write_mode={write_mode!r}, {writers} writer processes)")
    start = time.perf_counter()
    field = RGBImageField(write_mode=write_mode, max_resolution=max_resolution, jpeg_quality=jpeg_quality)
    writer = DatasetWriter(str(tmp), {"image": field, "label": IntField()}, num_workers=writers)
    writer.from_indexed_dataset(JpegFolder(files, labels))
    os.replace(tmp, path)
    log(f"wrote {path.stat().st_size / 2**20:.1f} MiB in {time.perf_counter() - start:.1f} s")
    return path


def make_loader(path: Path, batch_size: int, workers: int, order=None, indices=None, crop_size: int | None = None):
    """FFCV's Loader of ``path``; with ``crop_size``, the RandomResizedCrop pipeline (mode ``rrc``)."""
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, ToTensor, ToTorchImage

    if crop_size is None:
        image = [SimpleRGBImageDecoder(), ToTensor(), ToTorchImage()]
    else:
        image = [
            RandomResizedCropRGBImageDecoder((crop_size, crop_size)),
            RandomHorizontalFlip(),
            ToTensor(),
            ToTorchImage(),
        ]
    return Loader(
        str(path),
        batch_size=batch_size,
        num_workers=workers,
        order=OrderOption.RANDOM if order is None else order,
        os_cache=True,
        drop_last=False,
        indices=indices,
        pipelines={
            "image": image,
            "label": [IntDecoder(), ToTensor()],
        },
    )


def check(path: Path, mode: str, files, labels, jpeg_quality: int, n: int = 64) -> dict:
    """Decode the first n samples in order and compare them with Pillow."""
    import cv2
    import numpy as np
    from ffcv.loader import OrderOption
    from PIL import Image

    loader = make_loader(
        path, batch_size=n, workers=1, order=OrderOption.SEQUENTIAL, indices=np.arange(min(n, len(files)))
    )
    images, ys = next(iter(loader))
    assert str(images.dtype) == "torch.uint8", images.dtype
    got = images.permute(0, 2, 3, 1).numpy()  # NCHW view -> NHWC
    vs_file, vs_stored = 0, 0
    mean_vs_file = []
    for i in range(got.shape[0]):
        with Image.open(files[i]) as im:
            ref = np.asarray(im.convert("RGB"))
        assert int(ys[i]) == labels[i], (i, int(ys[i]), labels[i])
        d = np.abs(got[i].astype(np.int16) - ref.astype(np.int16))
        vs_file = max(vs_file, int(d.max()))
        mean_vs_file.append(float(d.mean()))
        if mode == "jpg":
            # What FFCV stored: the same pixels re-encoded by OpenCV; decode those bytes
            # with Pillow to separate the re-encoding loss from decoder differences.
            ok, buf = cv2.imencode(
                ".jpg", cv2.cvtColor(ref, cv2.COLOR_RGB2BGR), [int(cv2.IMWRITE_JPEG_QUALITY), jpeg_quality]
            )
            stored = np.asarray(Image.open(BytesIO(buf.tobytes())).convert("RGB"))
            vs_stored = max(vs_stored, int(np.abs(got[i].astype(np.int16) - stored.astype(np.int16)).max()))
    out = {
        "check_samples": int(got.shape[0]),
        "check_shape": list(images.shape[1:]),
        "max_abs_diff_vs_pillow": vs_file,
        "mean_abs_diff_vs_pillow": round(sum(mean_vs_file) / len(mean_vs_file), 4),
    }
    if mode == "jpg":
        out["max_abs_diff_vs_pillow_of_stored_jpeg"] = vs_stored
    log(f"check {mode}: {out}")
    return out


def measure_in_child(
    path: Path, batch_size: int, workers: int, samples: int, crop_size: int | None = None
) -> tuple[float, int]:
    """Time one loader in its own process, so that no earlier loader's mapping of a
    .beton, numba state or threads count in its PSS or its rate."""
    import subprocess

    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--_measure",
        str(path),
        "--batch-size",
        str(batch_size),
        "--workers",
        str(workers),
        "--_samples",
        str(samples),
    ]
    if crop_size is not None:
        cmd += ["--_crop", str(crop_size)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"measuring child exited {proc.returncode}")
    res = json.loads(lines[-1])
    if "error" in res:
        raise RuntimeError(res["error"])
    return res["samples_per_s"], res["peak_pss_bytes"]


def child_measure(path: Path, batch_size: int, workers: int, samples: int, crop_size: int | None = None) -> int:
    from common import measure_epochs
    from ffcv.loader import Loader  # noqa: F401  (imported before the PSS baseline)

    try:
        rate, pss = measure_epochs(
            lambda: make_loader(path, batch_size, workers, crop_size=crop_size), samples, warmup=1
        )
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        emit({"error": one_line(exc)})
        return 1
    emit({"samples_per_s": rate, "peak_pss_bytes": pss})
    return 0


def ffcv_version() -> str:
    from importlib.metadata import version

    return version("ffcv")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", default="2", help="FFCV num_workers (numba threads); a comma list runs each, e.g. 1,2")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--modes", default="jpg,raw", help="which .beton files: jpg,raw,rrc (rrc: RandomResizedCrop)")
    ap.add_argument("--jpeg-quality", type=int, default=90)
    ap.add_argument("--crop-size", type=int, default=128, help="the rrc mode's output size (square)")
    ap.add_argument("--max-resolution", type=int, default=512, help="the rrc mode's RGBImageField(max_resolution)")
    ap.add_argument("--no-check", action="store_true", help="skip the Pillow comparison")
    ap.add_argument("--_measure", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_samples", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_crop", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._measure is not None:  # internal: one timed loader, see measure_in_child
        return child_measure(args._measure, args.batch_size, int(args.workers), args._samples, args._crop)
    if args.data is None or args.work is None:
        ap.error("--data and --work are required")
    workers_list = peer_common.worker_counts(args.workers)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - {"jpg", "raw", "rrc"})
    if unknown:
        ap.error(f"unknown --modes {unknown}: jpg, raw or rrc")

    try:
        import common  # noqa: F401  (benchmarks/common.py: measure_epochs, for the child)
        import ffcv  # noqa: F401
        from ffcv.loader import Loader  # noqa: F401  (loads the compiled libffcv)

        version = ffcv_version()
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        emit({"name": "FFCV", "peer": PEER, "skipped": f"cannot import ffcv: {one_line(exc)}"})
        return 0

    import numba
    import numpy as np

    try:
        files, labels, classes = list_files(args.data, args.limit)
        args.work.mkdir(parents=True, exist_ok=True)
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        emit({"name": "FFCV", "peer": PEER, "skipped": one_line(exc)})
        return 0
    n = len(files)
    log(f"ffcv {version}, numba {numba.__version__}, numpy {np.__version__}; {n} files in {len(classes)} classes")

    size = args.crop_size
    label = {
        "jpg": "(JPEG)",
        "raw": "(RAW)",
        "rrc": f"(JPEG, max_resolution={args.max_resolution}) RandomResizedCrop({size})",
    }
    writers = max(1, min(2, os.cpu_count() or 1))
    for mode in modes:
        rrc = mode == "rrc"
        field = {
            "jpg": f"RGBImageField(write_mode='jpg', jpeg_quality={args.jpeg_quality})",
            "raw": "RGBImageField(write_mode='raw')",
            "rrc": (
                f"RGBImageField(write_mode='jpg', max_resolution={args.max_resolution}, "
                f"jpeg_quality={args.jpeg_quality})"
            ),
        }[mode]
        pipeline = (
            f"RandomResizedCropRGBImageDecoder(({size}, {size})), RandomHorizontalFlip(), ToTensor(), ToTorchImage()"
            if rrc
            else "SimpleRGBImageDecoder, ToTensor, ToTorchImage"
        )
        try:
            path = write_beton(
                args.work, mode, files, labels, args.jpeg_quality, writers, args.max_resolution if rrc else None
            )
            # random crops: nothing to compare with Pillow's full-size decode
            extra = {} if args.no_check or rrc else check(path, mode, files, labels, args.jpeg_quality)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            for w in workers_list:
                emit({"name": f"FFCV .beton {label[mode]}, {w} workers", "peer": PEER, "skipped": one_line(exc)})
            continue
        for w in workers_list:
            name = f"FFCV .beton {label[mode]}, {w} workers"
            if w < 1:  # FFCV's Loader turns num_workers < 1 into cpu_count()
                name += f" (FFCV uses all {os.cpu_count()} cores)"
            try:
                log(f"{name}: warm-up epoch (numba compile) + timed epoch, in a fresh process")
                rate, pss = measure_in_child(path, args.batch_size, w, n, size if rrc else None)
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                emit({"name": name, "peer": PEER, "skipped": one_line(exc)})
                continue
            log(f"{name}: {rate:.0f} samples/s, peak PSS {pss / 2**20:.0f} MiB")
            emit(
                {
                    "name": name,
                    "peer": PEER,
                    "samples_per_s": round(rate, 1),
                    "peak_pss_bytes": int(pss),
                    "samples": n,
                    "version": version,
                    "config": (
                        f"{field}, IntField(); Loader(batch_size={args.batch_size}, "
                        f"num_workers={w}, order=OrderOption.RANDOM, os_cache=True, "
                        f"drop_last=False); {pipeline}; IntDecoder, ToTensor"
                    ),
                    "beton_bytes": path.stat().st_size,
                    "numba": numba.__version__,
                    **extra,
                }
            )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # noqa: BLE001  (last resort: never fail the runner)
        traceback.print_exc()
        emit({"name": "FFCV", "peer": PEER, "skipped": one_line(exc)})
        sys.exit(0)
