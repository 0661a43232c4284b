"""The ``torchloader`` command line (also ``python -m torchloader``).

Commands:
    env     what this machine offers a data loader: versions, JPEG decoder,
            cores, RAM, shared memory, CUDA.
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

__all__ = ["main"]


def _env() -> dict[str, Any]:
    import numpy
    import PIL
    import torch

    from . import __version__, readers
    from .chunking import format_bytes

    shm = shutil.disk_usage("/dev/shm").total if os.path.isdir("/dev/shm") else None
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    return {
        "torchloader": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "jpeg_decoder": "libjpeg-turbo (simplejpeg)" if readers.simplejpeg else "Pillow",
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram": format_bytes(ram) if ram else "unknown",
        "shared_memory": format_bytes(shm) if shm else "none",
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available",
    }


def _cmd_env(args: argparse.Namespace) -> int:
    info = _env()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="torchloader", description="Fast PyTorch data loading: tools."
    )
    parser.add_argument("--version", action="version", version=f"torchloader {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    env = commands.add_parser("env", help="show what this machine offers a data loader")
    env.add_argument("--json", action="store_true", help="print JSON for scripts")
    env.set_defaults(run=_cmd_env)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return args.run(args)
