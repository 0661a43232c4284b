"""Tests for torchloader/_core/shared_memory.py, with a real small /dev/shm.

A private mount namespace (``unshare -m``, root only) gets a 64 MB tmpfs on
/dev/shm, as a default Docker container has, and a child Python runs there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from torchloader._core.shared_memory import check_room, free_bytes

can_mount = pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare for a private /dev/shm",
)


def run_with_small_shm(tmp_path, code: str, size: str = "64m") -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    command = f"mount -t tmpfs -o size={size} tmpfs /dev/shm && exec {sys.executable} {script}"
    done = subprocess.run(["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, timeout=120)
    if "mount:" in done.stderr and done.returncode == 32:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    return done


def npy_folder(tmp_path, count=40, side=1024):
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(count):
        np.save(folder / f"{i:03d}.npy", np.full((side, side), i, np.uint8))
    return folder


@can_mount
def test_a_chunked_loader_that_would_not_fit_is_refused_at_construction(tmp_path):
    folder = npy_folder(tmp_path)
    done = run_with_small_shm(
        tmp_path,
        f"""
        import glob
        from torchloader import ChunkedLoader, PathDataset
        ds = PathDataset(sorted(glob.glob("{folder}/*.npy")), [0] * 40)
        try:
            ChunkedLoader(ds, 4, ram_budget="128MiB", num_workers=2)
        except RuntimeError as exc:
            print(exc)
        ChunkedLoader(ds, 4, ram_budget="128MiB", num_workers=2, worker_type="thread").close()
        print("threads need none")
    """,
    )

    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith(
        "ChunkedLoader's 2 chunk buffers for 2 worker processes needs 80.0 MiB of shared "
        "memory, but /dev/shm has 64.0 MiB free (of 64.0 MiB); give it more room "
        "(docker run --shm-size=1g, or remount /dev/shm larger), lower ram_budget, or use "
        "worker_type='thread' or num_workers=0, which need no shared memory"
    )
    assert second == "threads need none"


@can_mount
def test_a_full_shm_in_a_dataloader_worker_names_the_fix(tmp_path):
    folder = npy_folder(tmp_path, count=8, side=4096)  # 16 MiB samples: a batch of 8 is 128 MiB
    done = run_with_small_shm(
        tmp_path,
        f"""
        import glob
        from torchloader import PathDataset
        ds = PathDataset(sorted(glob.glob("{folder}/*.npy")), [0] * 8)
        try:
            for _ in ds.dataloader(8, num_workers=1):
                pass
        except RuntimeError as exc:
            print(str(exc).replace("\\n", " "))
    """,
    )

    assert done.returncode == 0, done.stderr
    assert "could not allocate 128.0 MiB of shared memory in /dev/shm" in done.stdout
    assert "docker run --shm-size=1g" in done.stdout


def test_check_room_passes_where_there_is_room():
    free = free_bytes()
    if free is None:
        pytest.skip("no /dev/shm")
    check_room(1, "a test")
    with pytest.raises(RuntimeError, match=r"^a test needs .* of shared memory, but /dev/shm has "):
        check_room(free + 2**40, "a test")
