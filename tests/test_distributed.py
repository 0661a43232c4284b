"""ChunkedSampler and ChunkedLoader under a real ``torch.distributed`` job.

Two processes (spawned, ``gloo`` on the CPU, rendezvous through a file in
``tmp_path``) each build the sampler and the loader without ``num_replicas`` or
``rank``, so both come from the process group, iterate two epochs with
``set_epoch``, run one ``all_reduce`` per batch (equal step counts on every rank,
or the job would hang) and write the sample indices they saw to a JSON file.
The job runs once: that it is reproducible follows from each rank's order being
the one a sampler with explicit ``num_replicas`` and ``rank`` gives in the test
process (another process, with another hash seed and start time).

Samples encode their index: ``x`` is full of ``i`` and ``y`` is ``LABEL + i``;
the ranks check that the two agree before they report ``y - LABEL``.
"""

from __future__ import annotations

import collections
import csv
import datetime
import json
import time
import traceback
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import wait_for_ranks
from torch.utils.data import DataLoader

from torchloader import ChunkedLoader, ChunkedSampler, PathDataset, PreloadedDataset, SkippedSampleWarning
from torchloader.order.chunking import epoch_ranges

WORLD = 2
N = 23  # odd: the ranks are padded by one sample, or cut by one with drop_last
CHUNK = 5  # 4 full chunks and a short one of 3
BATCH = 5  # 12 samples a rank: batches of 5, 5, 2
SEED = 7
EPOCHS = 2
LABEL = 1000
DEADLINE = 120  # seconds for a whole job; the process group times out after 60

# name: (what iterates, data set, its options)
CASES = {
    "sampler/path": ("sampler", "path", {}),
    "sampler/path/drop_last": ("sampler", "path", {"drop_last": True}),
    "sampler/preloaded": ("sampler", "preloaded", {}),
    "sampler/preloaded/drop_last": ("sampler", "preloaded", {"drop_last": True}),
    "loader/path/0 workers": ("loader", "path", {"num_workers": 0}),
    # fork: the default under torchrun on Linux before Python 3.14 (not here: a rank that
    # multiprocessing spawned defaults to spawn), from a rank that gloo made multi-threaded.
    # Spawned workers are left to tests/test_chunk_workers.py and test_randomness.py: the
    # rank's share is cut in the rank's own process, whatever the workers' start method,
    # and 4 spawned workers here were two thirds of this job's CPU time.
    "loader/path/2 forked process workers": (
        "loader",
        "path",
        {"num_workers": 2, "multiprocessing_context": "fork"},
    ),
    "loader/path/2 threads": ("loader", "path", {"num_workers": 2, "worker_type": "thread"}),
    "loader/preloaded/0 workers": ("loader", "preloaded", {"num_workers": 0}),
    "loader/preloaded/drop_last batches": ("loader", "preloaded", {"drop_last": True}),
}
# on_error="skip": the files of BAD are broken; batches keep their boundaries
BAD = (4, 13, 21)
SKIP_CASES = {
    "skip/loader/0 workers": ("loader", "path-skip", {"num_workers": 0}),
    "skip/loader/2 forked process workers": (
        "loader",
        "path-skip",
        {"num_workers": 2, "multiprocessing_context": "fork"},
    ),
    # fork: a spawned rank's DataLoader would spawn its workers anew each epoch (8 more
    # interpreters importing torch, 13 s of the suite)
    "skip/dataloader/2 workers": ("dataloader", "path-skip", {"num_workers": 2, "multiprocessing_context": "fork"}),
}
LOADER_CASES = [name for name, (kind, _, _) in CASES.items() if kind == "loader"]


def _sampler_drop_last(name):
    """The sampler's drop_last (a ChunkedLoader's drop_last is about batches only)."""
    kind, _, options = CASES[name]
    return kind == "sampler" and options.get("drop_last", False)


def _batch_drop_last(name):
    return CASES[name][0] == "loader" and CASES[name][2].get("drop_last", False)


# --- in each rank ---------------------------------------------------------------------


def _dataset(kind, folder):
    if kind in ("path", "path-skip"):
        skip = kind == "path-skip"
        paths = [f"{folder}/{'broken' if skip and i in BAD else ''}{i:02d}.npy" for i in range(N)]
        return PathDataset(paths, [LABEL + i for i in range(N)], on_error="skip" if skip else "raise")
    x = torch.arange(N, dtype=torch.int32).repeat_interleave(6).reshape(N, 2, 3)
    return PreloadedDataset(x, torch.arange(N) + LABEL)


def _indices_of(batch):
    """The sample indices of a batch, after checking that x and y agree on them."""
    x, y = batch
    indices = (y - LABEL).tolist()
    want = torch.tensor(indices, dtype=x.dtype).reshape(-1, *[1] * (x.ndim - 1)).expand_as(x)
    if not torch.equal(x, want):
        raise AssertionError(f"x does not hold the index its label gives: {indices}")
    return indices


def _run_case(name, folder, out):
    kind, data, options = {**CASES, **SKIP_CASES}[name]
    ds = _dataset(data, folder)
    if kind == "dataloader":  # ds.dataloader(): a shuffle of the whole data set per epoch
        loader = ds.dataloader(BATCH, seed=SEED, **options)
        iterated, closing = loader.batch_sampler, None
        sampler = loader.batch_sampler.sampler
    elif kind == "sampler":
        sampler = ChunkedSampler(
            ds, chunk_size=CHUNK, seed=SEED, num_replicas=None, rank=None, drop_last=options.get("drop_last", False)
        )
        loader = DataLoader(ds, batch_size=BATCH, sampler=sampler)
        iterated, closing = sampler, None
    else:
        loader = ChunkedLoader(ds, BATCH, chunk_size=CHUNK, seed=SEED, num_replicas=None, rank=None, **options)
        sampler, iterated, closing = loader.sampler, loader, loader
    report = {"replicas": [sampler.num_replicas, sampler.rank], "epochs": []}
    try:
        for epoch in range(EPOCHS):
            iterated.set_epoch(epoch)
            seen, sizes, reduced = [], [], []
            for batch in loader:
                indices = _indices_of(batch)
                seen += indices
                sizes.append(len(indices))
                step = torch.ones(1)
                dist.all_reduce(step)  # a rank with fewer batches would leave this hanging
                reduced.append(step.item())
            report["epochs"].append(
                {
                    "indices": seen,
                    "batch_sizes": sizes,
                    "all_reduced": reduced,
                    "len": len(loader),
                    "errors": list(getattr(ds, "errors", ())),
                }
            )
            if closing is not None:
                report["epochs"][-1]["samples_skipped"] = loader.stats.samples_skipped
    finally:
        if closing is not None:
            closing.close()
    if data == "path-skip":  # the error report of every rank, written once
        merged = ds.errors.all_ranks()
        report["all_ranks"] = list(merged)
        if dist.get_rank() == 0:
            report["report_file"] = f"{out}/{name.replace('/', '_')}.csv"
            merged.write(report["report_file"])
    return report


def _rank_main(rank, init_method, folder, out, names):
    """One rank of the job (at module level so that spawned processes can import it)."""
    try:
        # Python >= 3.12 warns when a forked worker starts: gloo's threads run here
        warnings.filterwarnings("ignore", "This process .* is multi-threaded, use of fork", DeprecationWarning)
        warnings.filterwarnings("ignore", category=SkippedSampleWarning)
        torch.set_num_threads(1)
        dist.init_process_group(
            "gloo",
            init_method=init_method,
            rank=rank,
            world_size=WORLD,
            timeout=datetime.timedelta(seconds=60),
        )
        try:
            reports = {name: _run_case(name, folder, out) for name in names}
            dist.barrier()
        finally:
            dist.destroy_process_group()
        with open(f"{out}/rank{rank}.json", "w") as file:
            json.dump(reports, file)
    except BaseException:
        with open(f"{out}/rank{rank}.error", "w") as file:
            file.write(traceback.format_exc())
        raise


# --- in the test process ----------------------------------------------------------------


def _launch(folder, out, names):
    """Start the job: its rank processes (``_finish`` waits for them)."""
    out.mkdir()
    context = mp.get_context("spawn")
    init_method = f"file://{out / 'rendezvous'}"
    ranks = [
        context.Process(
            target=_rank_main,
            args=(rank, init_method, str(folder), str(out), names),
            name=f"test-distributed-rank-{rank}",
        )
        for rank in range(WORLD)
    ]
    for process in ranks:
        process.start()
    return ranks, out, time.monotonic() + DEADLINE


def _finish(ranks, out, end):
    """``{rank: {case: report}}`` of a launched job, or fail with the ranks' tracebacks."""
    hung = wait_for_ranks(ranks, end)
    errors = {path.name: path.read_text() for path in sorted(out.glob("*.error"))}
    assert not hung, f"ranks still running after {DEADLINE} s (a hang): {hung}; {errors}"
    assert [process.exitcode for process in ranks] == [0] * WORLD, errors
    return {rank: json.loads((out / f"rank{rank}.json").read_text()) for rank in range(WORLD)}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The job's ``{rank: {case: report}}``."""
    folder = tmp_path_factory.mktemp("samples")
    for i in range(N):
        np.save(folder / f"{i:02d}.npy", np.full((2, 3), i, dtype=np.int32))
    for i in BAD:  # a .npy cut short
        (folder / f"broken{i:02d}.npy").write_bytes((folder / f"{i:02d}.npy").read_bytes()[:100])
    return _finish(*_launch(folder, tmp_path_factory.mktemp("job") / "out", list(CASES) + list(SKIP_CASES)))


def _epoch_indices(job, name, epoch):
    return [job[rank][name]["epochs"][epoch]["indices"] for rank in range(WORLD)]


def _line(epoch):
    """The epoch's chunk order laid end to end (before the cut into ranks): the
    padding repeats its start and drop_last cuts its end."""
    starts, stops = epoch_ranges(N, CHUNK, seed=SEED, epoch=epoch)
    return [i for a, b in zip(starts.tolist(), stops.tolist()) for i in range(a, b)]


def _line_chunks(epoch):
    """The epoch's chunks, in line order, each as its list of indices."""
    starts, stops = epoch_ranges(N, CHUNK, seed=SEED, epoch=epoch)
    return [list(range(a, b)) for a, b in zip(starts.tolist(), stops.tolist())]


ALL_CASES = pytest.mark.parametrize("name", list(CASES))
EVERY_EPOCH = pytest.mark.parametrize("epoch", range(EPOCHS))


# --- the tests -------------------------------------------------------------------------


@ALL_CASES
def test_world_size_and_rank_come_from_the_process_group(job, name):
    replicas = [job[rank][name]["replicas"] for rank in range(WORLD)]
    assert replicas == [[WORLD, rank] for rank in range(WORLD)]


@ALL_CASES
@EVERY_EPOCH
def test_no_rank_sees_a_sample_twice_in_an_epoch(job, name, epoch):
    for indices in _epoch_indices(job, name, epoch):
        assert len(set(indices)) == len(indices)


@pytest.mark.parametrize("name", [n for n in CASES if _sampler_drop_last(n)])
@EVERY_EPOCH
def test_with_drop_last_ranks_are_disjoint_and_miss_only_the_cut_tail(job, name, epoch):
    first, second = _epoch_indices(job, name, epoch)
    assert not set(first) & set(second)
    cut = N % WORLD
    missing = set(range(N)) - set(first + second)
    assert len(missing) == cut and len(first + second) == N - cut
    # the cut falls in the line's last chunk (the short one, which always comes
    # last); the rank that ends there takes a random share of it, so which of its
    # samples are left out changes from epoch to epoch
    assert missing <= set(_line_chunks(epoch)[-1])


def test_the_samples_drop_last_leaves_out_change_between_epochs(job):
    name = next(n for n in CASES if _sampler_drop_last(n))
    missing = [set(range(N)) - {i for part in _epoch_indices(job, name, e) for i in part} for e in range(EPOCHS)]
    assert missing[0] != missing[1]


@pytest.mark.parametrize("name", [n for n in CASES if not _sampler_drop_last(n) and not _batch_drop_last(n)])
@EVERY_EPOCH
def test_padded_ranks_cover_the_data_set_and_share_only_the_padding(job, name, epoch):
    first, second = _epoch_indices(job, name, epoch)
    padding = -N % WORLD
    seen = collections.Counter(first + second)
    # every sample once, and `padding` samples twice: repeats from the start of the
    # epoch's line (its first chunk: the padded piece takes a random share of it)
    twice = [i for i, count in seen.items() if count == 2]
    assert set(seen) == set(range(N)) and sum(seen.values()) == N + padding
    assert len(twice) == padding and set(twice) <= set(_line_chunks(epoch)[0])
    assert sorted(set(first) & set(second)) == sorted(twice)


@EVERY_EPOCH
def test_dropping_short_batches_cuts_each_ranks_own_tail(job, epoch):
    per_rank = -(-N // WORLD)
    for rank in range(WORLD):
        kept = job[rank]["loader/preloaded/drop_last batches"]["epochs"][epoch]["indices"]
        full = job[rank]["loader/preloaded/0 workers"]["epochs"][epoch]["indices"]
        assert kept == full[: per_rank - per_rank % BATCH]


@ALL_CASES
@EVERY_EPOCH
def test_every_rank_yields_the_same_samples_and_batches_per_epoch(job, name, epoch):
    reports = [job[rank][name]["epochs"][epoch] for rank in range(WORLD)]
    per_rank = N // WORLD if _sampler_drop_last(name) else -(-N // WORLD)
    batches = per_rank // BATCH if _batch_drop_last(name) else -(-per_rank // BATCH)
    sizes = [BATCH] * (per_rank // BATCH) + ([] if _batch_drop_last(name) else [per_rank % BATCH])
    assert [r["batch_sizes"] for r in reports] == [sizes] * WORLD
    assert [r["len"] for r in reports] == [batches] * WORLD
    expected_samples = sum(sizes)
    assert [len(r["indices"]) for r in reports] == [expected_samples] * WORLD


@ALL_CASES
@EVERY_EPOCH
def test_one_all_reduce_per_batch_completes_on_every_rank(job, name, epoch):
    for rank in range(WORLD):
        report = job[rank][name]["epochs"][epoch]
        assert report["all_reduced"] == [float(WORLD)] * len(report["batch_sizes"])


@ALL_CASES
def test_the_order_changes_between_epochs(job, name):
    for rank in range(WORLD):
        orders = [job[rank][name]["epochs"][epoch]["indices"] for epoch in range(EPOCHS)]
        assert orders[0] != orders[1]


@pytest.mark.parametrize("name", [n for n in CASES if not _batch_drop_last(n)])
def test_the_chunks_are_dealt_to_the_ranks_anew_each_epoch(job, name):
    # a property of SEED: rank 0 gets chunks 0, 2 and a part of 1 in epoch 0, and
    # chunks 2, 0 and a part of 3 in epoch 1
    for rank in range(WORLD):
        samples = [set(job[rank][name]["epochs"][epoch]["indices"]) for epoch in range(EPOCHS)]
        assert samples[0] != samples[1]


@ALL_CASES
@EVERY_EPOCH
def test_each_rank_yields_the_order_of_explicit_num_replicas_and_rank(job, name, epoch):
    for rank in range(WORLD):
        sampler = ChunkedSampler(
            range(N), chunk_size=CHUNK, seed=SEED, num_replicas=WORLD, rank=rank, drop_last=_sampler_drop_last(name)
        )
        sampler.set_epoch(epoch)
        want = list(sampler)
        if _batch_drop_last(name):
            want = want[: len(want) - len(want) % BATCH]
        assert job[rank][name]["epochs"][epoch]["indices"] == want


def test_loader_workers_and_threads_yield_what_no_workers_yield(job):
    for rank in range(WORLD):
        reports = [job[rank][name] for name in LOADER_CASES if not _batch_drop_last(name)]
        assert all(report == reports[0] for report in reports[1:])


# --- on_error="skip" ------------------------------------------------------------------------

SKIPPING = pytest.mark.parametrize("name", list(SKIP_CASES))


@SKIPPING
@EVERY_EPOCH
def test_with_skipped_samples_every_rank_still_takes_the_same_number_of_steps(job, name, epoch):
    reports = [job[rank][name]["epochs"][epoch] for rank in range(WORLD)]
    assert [len(r["all_reduced"]) for r in reports] == [r["len"] for r in reports] == [reports[0]["len"]] * WORLD
    assert all(value == WORLD for r in reports for value in r["all_reduced"])


@SKIPPING
@EVERY_EPOCH
def test_the_ranks_serve_every_good_sample_and_no_bad_one(job, name, epoch):
    served = [set(part) for part in _epoch_indices(job, name, epoch)]
    assert set.union(*served) == set(range(N)) - set(BAD)
    assert len(set.intersection(*served)) <= 1  # the padding, one sample, may be shared


@SKIPPING
def test_each_rank_lists_the_bad_samples_it_met_and_the_report_has_them_all(job, name):
    met = [{r[0] for r in job[rank][name]["epochs"][-1]["errors"]} for rank in range(WORLD)]
    assert all(part <= set(BAD) for part in met) and set.union(*met) == set(BAD)
    for rank in range(WORLD):
        merged = job[rank][name]["all_ranks"]
        assert [r[0] for r in merged] == sorted(BAD)
        assert all(r[1].endswith(f"broken{r[0]:02d}.npy") and r[2].startswith("ValueError") for r in merged)
    with open(job[0][name]["report_file"], newline="") as f:  # written by rank 0
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "path", "cause"]
    assert [row[:2] for row in rows[1:]] == [[str(r[0]), r[1]] for r in job[0][name]["all_ranks"]]


@pytest.mark.parametrize("name", [n for n in SKIP_CASES if SKIP_CASES[n][0] == "loader"])
@EVERY_EPOCH
def test_a_rank_s_positions_are_its_batches_and_its_skipped_samples(job, name, epoch):
    for rank in range(WORLD):
        report = job[rank][name]["epochs"][epoch]
        before = job[rank][name]["epochs"][epoch - 1]["samples_skipped"] if epoch else 0
        share = -(-N // WORLD)  # padded
        assert sum(report["batch_sizes"]) + report["samples_skipped"] - before == share
