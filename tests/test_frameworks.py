"""torchloader's loaders inside the real PyTorch Lightning and Hugging Face Accelerate.

Each job (``tests/jobs/*_job.py``) is a script, run the way users run one: with
``python`` on one device, with ``torchrun`` for two gloo processes. It trains on
``ds.dataloader()``, ``DataLoader(ds, sampler=ChunkedSampler(...))``,
``ChunkedLoader`` with two worker processes and ``ChunkedLoader(PackedDataset)``
for three epochs, each loader made before the framework set up its process
group, and records the labels (= sample indices) each rank trained on. The
tests check, per epoch, that the ranks are disjoint and together cover the data
set once, that the order changes between epochs, and that the script exited by
itself with no process left behind.

The four jobs start as soon as the tests are collected and run beside the
other tests (see ``tests/background.py``); they wait on imports and process
start-up far more than on the two cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import background
import pytest

# found, not imported: the jobs import them (Lightning takes 5 s to import)
for _framework in ("pytorch_lightning", "accelerate"):
    if importlib.util.find_spec(_framework) is None:
        pytest.skip(f"needs {_framework} (pip install -e '.[dev]')", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent / "jobs"))
from common import MODES, N, write_data  # noqa: E402

JOBS = Path(__file__).parent / "jobs"
JOB_RUNS = {
    "lightning-1": ("lightning_job.py", 1),
    "lightning-ddp": ("lightning_job.py", 2),
    "accelerate-1": ("accelerate_job.py", 1),
    "accelerate-2": ("accelerate_job.py", 2),
}


def _command(script: str, processes: int, data: Path, out: Path) -> list[str]:
    job = [str(JOBS / script), str(data), str(out)]
    if processes == 1:
        return [sys.executable, *job]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={processes}",
        "--standalone",  # its own free port, bound when the job starts: a port picked at
        # collection could be taken by then (gloo's connections use the same port range)
        *job,
    ]


def start_early() -> None:
    """Write the data and start the four jobs (called when the tests are collected)."""
    root = background.root() / "frameworks"

    def make():
        write_data(str(root / "data"))
        for name in JOB_RUNS:
            (root / name).mkdir()

    background.prepare("frameworks", make)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    for name, (script, processes) in JOB_RUNS.items():
        command = _command(script, processes, root / "data", root / name)
        background.start(f"frameworks/{name}", command, after="frameworks", env=env)


@pytest.fixture(scope="module")
def jobs():
    """``{name: (finished job, {rank: seen})}``."""
    start_early()
    results = {}
    for name, (_, processes) in JOB_RUNS.items():
        done = background.result(f"frameworks/{name}")
        out = background.root() / "frameworks" / name
        seen = {
            r: json.loads((out / f"rank{r}.json").read_text())
            for r in range(processes)
            if (out / f"rank{r}.json").exists()
        }
        results[name] = (done, seen)
    return results


def _epochs(seen_by_rank: dict, mode: str) -> list[list[list[int]]]:
    """``[epoch][rank] -> labels`` of ``mode``."""
    ranks = [seen_by_rank[r][mode] for r in sorted(seen_by_rank)]
    epochs = sorted(int(k) for k in ranks[0] if k.isdigit())
    return [[rank[str(e)] for rank in ranks] for e in epochs]


@pytest.mark.slow
@pytest.mark.parametrize("job", list(JOB_RUNS))
def test_the_script_exits_by_itself_and_leaves_no_process(jobs, job):
    done, seen = jobs[job]
    assert done.returncode == 0, f"exit code {done.returncode} (None: a hang):\n{done.stderr[-4000:]}"
    assert done.leftover == [], f"processes of the job still alive after it exited: {done.leftover}"
    assert len(seen) == JOB_RUNS[job][1]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("job", list(JOB_RUNS))
def test_each_epoch_every_sample_is_trained_on_once_and_the_order_changes(jobs, job, mode):
    done, seen = jobs[job]
    assert done.returncode == 0, done.stderr[-4000:]
    epochs = _epochs(seen, mode)
    assert len(epochs) == 3
    for e, ranks in enumerate(epochs):
        together = [label for labels in ranks for label in labels]
        assert sorted(together) == list(range(N)), f"epoch {e}: not every sample exactly once"
        assert len({len(labels) for labels in ranks}) == 1, f"epoch {e}: ranks took unequal steps"
    for rank in range(len(epochs[0])):
        orders = [tuple(epoch[rank]) for epoch in epochs]
        assert len(set(orders)) == 3, f"rank {rank}: an epoch repeated another's order"


@pytest.mark.slow
@pytest.mark.parametrize("job", ["accelerate-1", "accelerate-2"])
def test_len_of_a_prepared_loader_is_its_batches_per_process(jobs, job):
    done, seen = jobs[job]
    assert done.returncode == 0, done.stderr[-4000:]
    for rank, record in seen.items():
        for mode in MODES:
            assert record[mode]["0-len"] == len(record[mode]["0"]) // 8, (rank, mode)
