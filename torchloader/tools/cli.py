"""The ``torchloader`` command line (also ``python -m torchloader``).

Commands:
    env     what this machine offers a data loader: versions, JPEG decoder,
            cores, RAM, shared memory, CUDA.
    inspect how big a data set is and which way to load it.
    pack    decode a data set once into .npy shards, or --encoded: copy its image files into them.
    verify  check a packed directory against its manifest.
    bench   time every loading mode on your data, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from collections.abc import Sequence
from typing import Any

from torchloader._core.system import usable_cores

__all__ = ["main"]


def _env() -> dict[str, Any]:
    import numpy
    import PIL
    import torch

    from torchloader._core.units import format_bytes
    from torchloader._version import __version__
    from torchloader.readers import image as readers

    shm = shutil.disk_usage("/dev/shm").total if os.path.isdir("/dev/shm") else None
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    return {
        "torchloader": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "jpeg_decoder": "libjpeg-turbo (simplejpeg)" if readers.simplejpeg else "Pillow",
        "cpu_cores": usable_cores(),
        "ram": format_bytes(ram) if ram else "unknown",
        "shared_memory": format_bytes(shm) if shm else "none",
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available",
    }


def _echo(text: object = "", *, err: bool = False) -> None:
    """Print ``text`` on stdout (stderr), whatever its paths hold.

    A file name that is not valid in the file system's encoding comes back from
    ``os`` with surrogates (``'bad\\udcff.jpg'``), which a strict stream (e.g.
    ``PYTHONIOENCODING=utf-8``) cannot encode; such characters are written
    backslash-escaped instead of ending the command.
    """
    stream = sys.stderr if err else sys.stdout
    line = f"{text}\n"
    try:
        stream.write(line)
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "utf-8"
        stream.write(line.encode(encoding, "backslashreplace").decode(encoding))
    stream.flush()


def _cmd_inspect(args: argparse.Namespace) -> int:
    from torchloader.errors import SampleLoadError
    from torchloader.tools.report import inspect_data

    try:
        report = inspect_data(args.path, on_error=args.on_error)
    except SampleLoadError as exc:  # --on-error raise
        _echo(f"torchloader inspect: {exc}\n(--on-error skip reports unreadable files and goes on)", err=True)
        return 1
    _echo(json.dumps(report.as_dict(), indent=2) if args.json else report)
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    info = _env()
    if args.json:
        _echo(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for key, value in info.items():
            _echo(f"{key:<{width}}  {value}")
    return 0


def _cmd_pack(args: argparse.Namespace) -> int:
    from torchloader.errors import SampleLoadError
    from torchloader.packs.pack import pack

    size = None
    if args.size:
        size = args.size[0] if len(args.size) == 1 else (args.size[0], args.size[1])
    try:
        summary = pack(
            args.src,
            args.dst,
            size=size,
            crop=args.crop,
            mode=args.mode,
            shard_bytes=args.shard_bytes,
            num_workers=args.num_workers,
            on_error=args.on_error,
            overwrite=args.overwrite,
            progress=not args.quiet,
            encoded=args.encoded,
            max_side=args.max_side,
        )
    except SampleLoadError as exc:  # a bad file is a user error too: no traceback
        _echo(f"torchloader pack: {exc}\n(--on-error skip leaves unreadable files out)", err=True)
        return 1
    _echo(summary)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from torchloader.packs.verify import verify_pack

    problems = verify_pack(args.dst)
    for problem in problems:
        _echo(problem)
    if not problems:
        _echo(f"{args.dst}: every file matches the manifest")
    return 1 if problems else 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from torchloader.tools.bench import bench, format_table, plot

    results = bench(
        args.path,
        modes=args.modes,
        num_workers=args.num_workers,
        batch_size=args.batch_size,
        epochs=args.epochs,
        ram_budget=args.ram_budget,
        limit=args.limit,
        progress=not args.quiet,
        crop=args.crop,
    )
    if args.json:
        _echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        _echo(f"{args.path}: batch {args.batch_size}, shuffled, median of {args.epochs} epoch(s) after a warm-up")
        _echo(format_table(results))
    if args.plot:
        plot(results, args.plot, title=f"torchloader bench {os.path.basename(os.path.normpath(args.path))}")
    return 0


def _add_bench(commands: Any) -> None:
    from torchloader.tools.bench import MODES

    cores = usable_cores()
    bench = commands.add_parser("bench", help="time every loading mode on your data")
    bench.add_argument("path", help="image folder, .csv, folder of .npy, or packed directory")
    bench.add_argument("--modes", nargs="+", choices=list(MODES), help="default: all that apply")
    bench.add_argument(
        "--num-workers",
        "--workers",
        type=int,
        nargs="+",
        default=sorted({0, cores}),
        help=f"worker counts to try (default: 0 {cores})",
    )
    bench.add_argument("--batch-size", type=int, default=256)
    bench.add_argument("--epochs", type=int, default=1, help="timed epochs after a warm-up (median)")
    bench.add_argument("--ram-budget", default="256MiB", help="ChunkedLoader's budget (default 256MiB)")
    bench.add_argument("--limit", type=int, help="use N samples spread over the data set")
    bench.add_argument("--crop", type=int, metavar="N", help="decode with RandomResizedCrop(N): images of many sizes")
    bench.add_argument("--plot", metavar="OUT.png", help="also draw a bar chart")
    bench.add_argument("--json", action="store_true", help="print JSON for scripts")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(run=_cmd_bench)


def _add_pack(commands: Any) -> None:
    pack = commands.add_parser("pack", help="decode a data set once into .npy shards")
    pack.add_argument("src", help="image folder root/<class>/<file>, a .csv of path,label, or a folder of .npy")
    pack.add_argument("dst", help="output folder, or a URL (s3://bucket/prefix: staged here, then uploaded)")
    pack.add_argument("--size", type=int, nargs="+", metavar="N", help="resize to H W (or N x N)")
    pack.add_argument("--crop", action="store_true", help="keep the aspect ratio, cut the centre")
    pack.add_argument("--mode", default="RGB", choices=("RGB", "L", "RGBA"), help="image channels")
    pack.add_argument("--shard-bytes", "--shard-size", default="1GiB", help="bytes per shard file (default 1GiB)")
    pack.add_argument("--num-workers", "--workers", type=int, default=None, help="processes (default: the cores)")
    pack.add_argument(
        "--on-error",
        default="raise",
        choices=("raise", "skip"),
        help="a file that cannot be read: raise (default) stops the pack; "
        "skip leaves it out and names it in the summary",
    )
    pack.add_argument("--overwrite", action="store_true", help="replace a different pack in DST")
    pack.add_argument(
        "--encoded",
        action="store_true",
        help="store each image file's bytes as they are (any sizes; decoded, and cropped, when read)",
    )
    pack.add_argument(
        "--max-side",
        type=int,
        metavar="N",
        help="with --encoded: shrink images whose longer side is over N, encoded again (JPEG quality 90)",
    )
    pack.add_argument("--quiet", action="store_true", help="no progress bar")
    pack.set_defaults(run=_cmd_pack)
    verify = commands.add_parser("verify", help="check a packed directory against its manifest")
    verify.add_argument("dst")
    verify.set_defaults(run=_cmd_verify)


def _parser() -> argparse.ArgumentParser:
    from torchloader._version import __version__

    parser = argparse.ArgumentParser(prog="torchloader", description="Fast PyTorch data loading: tools.")
    parser.add_argument("--version", action="version", version=f"torchloader {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    env = commands.add_parser("env", help="show what this machine offers a data loader")
    env.add_argument("--json", action="store_true", help="print JSON for scripts")
    env.set_defaults(run=_cmd_env)
    inspect = commands.add_parser("inspect", help="size a data set and recommend how to load it")
    inspect.add_argument("path", help="image folder, .csv, folder of .npy, or packed directory")
    inspect.add_argument("--json", action="store_true", help="print JSON for scripts")
    inspect.add_argument(
        "--on-error",
        default="skip",
        choices=("skip", "raise"),
        help="a probed file that cannot be read: skip (default) counts and lists it "
        "and goes on; raise stops with its error (exit status 1)",
    )
    inspect.set_defaults(run=_cmd_inspect)
    _add_pack(commands)
    _add_bench(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "pack" and args.size and len(args.size) > 2:
        parser.error("--size takes H W or one N")
    try:
        return args.run(args)
    except (OSError, ValueError, ImportError) as exc:  # a user error: the message says what to do
        _echo(f"torchloader {args.command}: {exc}", err=True)
        return 1
