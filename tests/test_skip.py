"""on_error="skip": a sample that cannot be read is left out of its batch, never replaced.

The data is a real folder of images, some of them broken in the ways files break
(truncated, empty, text under an image suffix, deleted after the folder scan,
unreadable); image ``i`` is full of ``10 * i``, so a batch tells which samples it
holds. Every loader is checked against the order it promised: the batches of
that order, each without the bad samples, never shifted or refilled.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import pickle
import stat
import tempfile
import warnings

import numpy as np
import pytest
import torch
from helpers import deadline
from PIL import Image

from torchloader import (
    ChunkedLoader,
    ErrorLog,
    PathDataset,
    SampleLoadError,
    SkippedSample,
    SkippedSampleWarning,
)

N = 20
BAD = {3: "truncated PNG", 4: "empty file", 7: "text as .png", 12: "deleted after the scan", 15: "truncated JPEG"}
GOOD = [i for i in range(N) if i not in BAD]
CAUSES = {
    3: "OSError",  # Pillow: image file is truncated
    4: "UnidentifiedImageError",
    7: "UnidentifiedImageError",
    12: "FileNotFoundError",
    15: "OSError",
}

_ignore_worker_count = pytest.mark.filterwarnings("ignore:This DataLoader will create")


def _png(value, size=8):
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(value, size=8):
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def write_folder(root, bad=BAD):
    """``root/c/00.png`` ... (image i full of 10 * i), broken where ``bad`` says."""
    folder = root / "c"
    folder.mkdir(parents=True)
    for i in range(N):
        kind = bad.get(i)
        suffix = ".jpg" if kind == "truncated JPEG" else ".png"
        data = _jpeg(10 * i) if suffix == ".jpg" else _png(10 * i)
        if kind in ("truncated PNG", "truncated JPEG"):
            data = data[: len(data) * 2 // 3]  # cut inside the pixel data
        elif kind == "empty file":
            data = b""
        elif kind == "text as .png":
            data = b"this is not an image\n"
        (folder / f"{i:02d}{suffix}").write_bytes(data)
    return folder


def scanned(root, bad=BAD, **options):
    """The folder as a PathDataset, with the file meant to vanish deleted after the scan
    (no limit on skipped samples, unless asked: a quarter of them are bad)."""
    options.setdefault("max_skipped", None)
    write_folder(root, bad)
    ds = PathDataset.from_folder(root, **options)
    for i, kind in bad.items():
        if kind == "deleted after the scan":
            os.remove(ds.path(i))
    return ds


def indices_of(x):
    """Which samples a batch holds (image i is full of 10 * i)."""
    values = x[:, 0, 0, 0].to(torch.int64)
    assert torch.equal(x.to(torch.int64), values.view(-1, 1, 1, 1).expand_as(x)), "a mixed image"
    return (values // 10).tolist()


def without_bad(batches):
    return [[i for i in batch if i not in BAD] for batch in batches]


def position_batches(order, batch_size, drop_last=False):
    """The epoch's order cut into batches of ``batch_size`` positions."""
    order = [int(i) for i in order]
    batches = [order[a : a + batch_size] for a in range(0, len(order), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


@pytest.fixture
def ds(tmp_path):
    return scanned(tmp_path / "root", on_error="skip")


# --- PathDataset: ds[indices] -----------------------------------------------------------


def test_each_bad_file_is_left_out_of_its_batch_and_listed_with_path_and_cause(ds):
    with pytest.warns(SkippedSampleWarning) as warned:
        x, y = ds[list(range(N))]

    assert indices_of(x) == GOOD and y.tolist() == [0] * len(GOOD)
    assert ds.errors.indices() == sorted(BAD)
    for record in ds.errors:
        assert record.path == ds.path(record.index)
        assert record.cause.startswith(CAUSES[record.index] + ":"), record
    assert len(warned) == 1
    message = str(warned[0].message)
    assert "skipped sample 3" in message and ds.path(3) in message and "ds.errors" in message


@pytest.mark.parametrize("bad", sorted(BAD), ids=[BAD[i] for i in sorted(BAD)])
def test_raise_is_the_default_and_names_the_index_the_path_and_the_cause(tmp_path, bad):
    ds = scanned(tmp_path / "root")
    with pytest.raises(SampleLoadError) as info:
        ds[[0, 1, bad, 16]]
    assert (info.value.index, info.value.path) == (bad, ds.path(bad))
    assert str(info.value).startswith(f"could not load sample {bad} from '{ds.path(bad)}': {CAUSES[bad]}")
    assert len(ds.errors) == 0


def test_a_sample_asked_for_alone_still_raises_and_says_how_to_skip_it(ds):
    with pytest.raises(SampleLoadError, match=r"cannot be left out: use ds\.dataloader\(batch_size"):
        ds[12]
    assert len(ds.errors) == 0


def test_a_batch_whose_every_sample_failed_is_empty_with_the_samples_shape(ds):
    with pytest.warns(SkippedSampleWarning):
        x, y = ds[[3, 4, 7]]
    assert (x.shape, x.dtype, y.shape, y.dtype) == ((0, 3, 8, 8), torch.uint8, (0,), torch.int64)
    assert ds.errors.indices() == [3, 4, 7]


def test_a_data_set_with_no_readable_sample_is_an_error(tmp_path):
    ds = scanned(tmp_path / "root", bad=dict.fromkeys(range(N), "empty file"), on_error="skip")
    with pytest.raises(SampleLoadError, match=f"none of the {N} samples could be read"):
        ds[[0, 1]]


def test_the_first_sample_of_a_batch_may_be_the_bad_one(ds):
    with pytest.warns(SkippedSampleWarning):
        x, _ = ds[[12, 13, 3, 14]]
    assert indices_of(x) == [13, 14]


def test_a_transform_error_is_not_skipped_it_would_recur_for_every_sample(tmp_path):
    def transform(x):
        raise ValueError("a bug in the transform")

    ds = scanned(tmp_path / "root", on_error="skip", transform=transform)
    with pytest.raises(SampleLoadError, match="ValueError: a bug in the transform") as info:
        ds[[0, 1]]
    assert info.value.skippable is False and len(ds.errors) == 0
    with pytest.raises(SampleLoadError, match="a bug in the transform"):
        ChunkedLoader(ds, 4, chunk_size=8)


def test_a_sample_of_another_shape_is_not_skipped(tmp_path):
    ds = scanned(tmp_path / "root", on_error="skip")
    with open(ds.path(5), "wb") as f:
        f.write(_png(50, size=4))
    with pytest.raises(ValueError, match=r"sample 5 has x \(3, 4, 4\).* but sample 0 has x \(3, 8, 8\)"):
        ds[[0, 5]]


def test_the_first_skip_of_a_log_is_warned_about_once(ds):
    with pytest.warns(SkippedSampleWarning) as warned:
        ds[[0, 3]]
        ds[[4, 5]]
        ds[[3, 6]]  # again: listed once
    assert len(warned) == 1 and ds.errors.indices() == [3, 4]
    ds.errors.clear()
    with pytest.warns(SkippedSampleWarning):
        ds[[7, 8]]
    assert ds.errors.indices() == [7]


def test_jpegs_decoded_in_place_skip_a_truncated_one_and_keep_the_others_exact(tmp_path):
    folder = tmp_path / "jpegs" / "c"
    folder.mkdir(parents=True)
    for i in range(6):
        data = _jpeg(10 * i, size=16)
        (folder / f"{i}.jpg").write_bytes(data[: len(data) // 3] if i == 2 else data)
    ds = PathDataset.from_folder(tmp_path / "jpegs", on_error="skip")
    reference = PathDataset.from_folder(tmp_path / "jpegs")

    with pytest.warns(SkippedSampleWarning):
        x, _ = ds[list(range(6))]

    assert torch.equal(x, torch.stack([reference[i][0] for i in (0, 1, 3, 4, 5)]))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert ds.errors.indices() == [2]


def test_on_error_must_be_raise_or_skip(tmp_path):
    with pytest.raises(ValueError, match=r"on_error must be 'raise' .* or 'skip' .* \(got 'ignore'\)"):
        PathDataset([str(tmp_path / "a.png")], on_error="ignore")


def test_a_skipping_data_set_pickles_with_its_log_and_says_so_in_its_repr(ds):
    with pytest.warns(SkippedSampleWarning):
        ds[[2, 3]]
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.on_error == "skip" and copy.errors == ds.errors
    assert repr(ds).endswith("on_error='skip')")


# --- ds.dataloader() -----------------------------------------------------------------------


@_ignore_worker_count
@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_batches_keep_their_boundaries_and_come_back_without_the_bad_samples(ds, num_workers):
    loader = ds.dataloader(4, seed=3, num_workers=num_workers, persistent_workers=num_workers > 0)
    for epoch in range(2):
        loader.batch_sampler.set_epoch(epoch)
        expected = without_bad([list(batch) for batch in loader.batch_sampler])
        loader.batch_sampler.set_epoch(epoch)  # a pass of the sampler moved it on to the next epoch
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            got = [indices_of(x) for x, _ in loader]
        assert got == expected and len(got) == len(loader)
        assert len([w for w in warned if w.category is SkippedSampleWarning]) == (epoch == 0)
        assert sorted(ds.errors.indices()) == sorted(BAD)  # recorded in this process
        assert loader.errors is ds.errors


@_ignore_worker_count
def test_dataloader_in_raise_mode_names_the_deleted_file_from_a_worker(tmp_path):
    ds = scanned(tmp_path / "root", bad={12: "deleted after the scan"})
    # one worker: after a worker raised, torch's DataLoader waits 5 s per worker at shutdown
    # (its join timeout; a plain DataLoader over a dataset that raises does the same)
    with deadline(60), pytest.raises(SampleLoadError, match=rf"sample 12 from '{ds.path(12)}': FileNotFoundError"):
        for _ in ds.dataloader(4, shuffle=False, num_workers=1):
            pass


# --- ChunkedLoader ---------------------------------------------------------------------------

WORKERS = pytest.mark.parametrize(
    "num_workers, worker_type",
    [(0, "process"), (2, "thread"), (2, "process")],
    ids=["0 workers", "2 threads", "2 processes"],
)


def _epoch(loader):
    order = loader.sampler.order_of(loader.epoch)[0]
    expected = without_bad(position_batches(order, loader.batch_size, loader.drop_last))
    return expected, [indices_of(x) for x, _ in loader]


@WORKERS
@pytest.mark.parametrize("drop_last", [False, True])
def test_chunked_loader_leaves_bad_samples_out_and_keeps_every_batch_boundary(ds, num_workers, worker_type, drop_last):
    loader = ChunkedLoader(
        ds, 3, chunk_size=7, seed=1, drop_last=drop_last, num_workers=num_workers, worker_type=worker_type
    )
    try:
        with pytest.warns(SkippedSampleWarning, match="listed in loader.errors"):
            expected, got = _epoch(loader)
        assert got == expected and len(got) == len(loader)
        expected, got = _epoch(loader)  # a second epoch, in a new order: warned about no more
        assert got == expected and len(got) == len(loader)
    finally:
        loader.close()
    assert loader.errors is ds.errors and sorted(ds.errors.indices()) == sorted(BAD)
    # every sample of every chunk is read, also those of a last batch that drop_last cuts
    assert loader.stats.samples_skipped == 2 * len(BAD)


def test_chunked_loader_counts_every_time_a_sample_is_left_out(ds):
    loader = ChunkedLoader(ds, 4, chunk_size=8)
    with pytest.warns(SkippedSampleWarning):
        for _ in range(3):
            list(loader)
    assert loader.stats.samples_skipped == 3 * len(BAD) and len(loader.errors) == len(BAD)


def test_a_chunk_of_bad_samples_gives_empty_batches_so_ranks_stay_in_step(tmp_path):
    bad = {i: "empty file" for i in range(4, 12)}
    ds = scanned(tmp_path / "root", bad=bad, on_error="skip")
    loader = ChunkedLoader(ds, 4, chunk_size=4, shuffle=False)
    with pytest.warns(SkippedSampleWarning):
        got = [indices_of(x) for x, _ in loader]
    assert got == [[0, 1, 2, 3], [], [], [12, 13, 14, 15], [16, 17, 18, 19]]


def test_a_bad_first_sample_does_not_stop_the_loader_from_learning_the_layout(tmp_path):
    ds = scanned(tmp_path / "root", bad={0: "empty file", 1: "text as .png"}, on_error="skip")
    loader = ChunkedLoader(ds, 5, chunk_size=10, shuffle=False)
    assert loader.layout.x_shape == (3, 8, 8)
    with pytest.warns(SkippedSampleWarning):
        got = [indices_of(x) for x, _ in loader]
    assert got == [[2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18, 19]]
    assert ds.errors.indices() == [0, 1]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resuming_mid_epoch_yields_what_the_uninterrupted_run_had_left(ds, num_workers):
    options = {"chunk_size": 6, "seed": 5, "num_workers": num_workers}
    with pytest.warns(SkippedSampleWarning):
        whole = ChunkedLoader(ds, 4, **options)
        expected = [indices_of(x) for x, _ in whole]
        first = ChunkedLoader(ds, 4, **options)
        batches = iter(first)
        head = [indices_of(next(batches)[0]) for _ in range(2)]
        state = first.state_dict()
        del batches
    resumed = ChunkedLoader(ds, 4, **options)
    resumed.load_state_dict(state)
    assert head + [indices_of(x) for x, _ in resumed] == expected
    for loader in (whole, first, resumed):
        loader.close()


class _Flaky(torch.utils.data.Dataset):
    """A dataset of its own, with ``on_error`` set, whose samples 2 and 5 fail."""

    on_error = "skip"

    def __len__(self):
        return 8

    def __getitem__(self, i):
        if i in (2, 5):
            raise OSError(f"sample {i} is on a bad sector")
        return torch.full((3, 2, 2), 10 * i, dtype=torch.uint8), i


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_any_data_set_with_on_error_skip_is_skipped_by_the_chunked_loader(worker_type):
    loader = ChunkedLoader(_Flaky(), 3, chunk_size=8, shuffle=False, num_workers=2, worker_type=worker_type)
    with pytest.warns(SkippedSampleWarning):
        got = [y.tolist() for _, y in loader]
    loader.close()
    assert got == [[0, 1], [3, 4], [6, 7]]
    assert [(r.index, r.cause) for r in loader.errors] == [
        (2, "OSError: sample 2 is on a bad sector"),
        (5, "OSError: sample 5 is on a bad sector"),
    ]


def test_a_data_set_without_on_error_still_raises_in_the_chunked_loader():
    class Strict(_Flaky):
        on_error = "raise"

    with pytest.raises(SampleLoadError, match="sample 2: OSError: sample 2 is on a bad sector"):
        list(ChunkedLoader(Strict(), 3, chunk_size=8, shuffle=False))


def test_a_data_set_whose_on_error_means_something_else_is_not_skipped():
    class Odd(_Flaky):
        on_error = "warn"  # a dataset's own setting, not torchloader's

    with pytest.raises(SampleLoadError, match="sample 2 is on a bad sector"):
        list(ChunkedLoader(Odd(), 3, chunk_size=8, shuffle=False))


def test_chunked_loader_in_raise_mode_names_the_deleted_file_from_a_worker_process(tmp_path):
    ds = scanned(tmp_path / "root", bad={12: "deleted after the scan"})
    loader = ChunkedLoader(ds, 4, chunk_size=8, shuffle=False, num_workers=2)
    with deadline(60), pytest.raises(SampleLoadError, match=rf"sample 12 from '{ds.path(12)}': FileNotFoundError"):
        list(loader)
    loader.close()


# --- unreadable files (permissions) ----------------------------------------------------------


def _read_as_unprivileged_user(root, unreadable, out):
    """In a forked child: drop root (which reads any file), then read the folder."""
    try:
        torch.set_num_threads(1)  # the parent's OpenMP threads did not survive the fork
        if os.geteuid() == 0:
            os.setgid(65534)
            os.setuid(65534)  # nobody: permissions apply from here on
        ds = PathDataset.from_folder(root, on_error="skip")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SkippedSampleWarning)
            x, _ = ds[list(range(N))]
            chunked = [indices_of(b) for b, _ in ChunkedLoader(ds, 6, chunk_size=12, shuffle=False)]
        try:
            PathDataset.from_folder(root)[[0, unreadable]]
            raised = None
        except SampleLoadError as exc:
            raised = (exc.index, exc.path, exc.cause)
        out.send(("ok", indices_of(x), chunked, list(ds.errors), raised))
    except BaseException as exc:  # reported to the test
        out.send(("error", repr(exc)))


def test_an_unreadable_file_is_a_permission_error_naming_it_or_is_skipped(tmp_path):
    root = tempfile.mkdtemp(prefix="torchloader-perm-")  # not under tmp_path: nobody may enter it
    try:
        os.chmod(root, 0o755)
        folder = write_folder(__import__("pathlib").Path(root), bad={})
        os.chmod(folder, 0o755)
        for path in folder.iterdir():
            os.chmod(path, 0o644)
        unreadable = 6
        path = str(folder / f"{unreadable:02d}.png")
        os.chmod(path, 0)
        Image.init()  # the child may not read Pillow's plugins from a root-only folder
        receive, send = multiprocessing.Pipe(duplex=False)
        child = multiprocessing.get_context("fork").Process(
            target=_read_as_unprivileged_user, args=(root, unreadable, send)
        )
        child.start()
        with deadline(60):
            while not receive.poll(0.1):
                assert child.is_alive(), f"the reading process died with exit code {child.exitcode}"
            result = receive.recv()
            child.join()
    finally:
        for dirpath, _, files in os.walk(root):
            for name in files:
                os.chmod(os.path.join(dirpath, name), stat.S_IRUSR | stat.S_IWUSR)
        __import__("shutil").rmtree(root)
    assert result[0] == "ok", result
    _, served, chunked, errors, raised = result
    good = [i for i in range(N) if i != unreadable]
    assert served == good
    assert chunked == [[0, 1, 2, 3, 4, 5], [7, 8, 9, 10, 11], [12, 13, 14, 15, 16, 17], [18, 19]]
    assert [(r.index, r.path) for r in errors] == [(unreadable, path)]
    assert errors[0].cause.startswith("PermissionError: [Errno 13] Permission denied")
    assert raised[:2] == (unreadable, path) and raised[2].startswith("PermissionError")


# --- ErrorLog ---------------------------------------------------------------------------------


def test_the_error_report_is_a_csv_of_index_path_and_cause(tmp_path):
    log = ErrorLog()
    log.record(
        [
            SkippedSample(9, 'a,b/"quoted"\nname.png', "OSError: broken"),
            SkippedSample(2, None, "ValueError: no file"),
            SkippedSample(5, os.fsdecode(b"caf\xe9.png"), "OSError: x"),  # not UTF-8
        ],
        warn=False,
    )
    log.write(tmp_path / "errors.csv")
    with open(tmp_path / "errors.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["index", "path", "cause"],
        ["9", 'a,b/"quoted"\nname.png', "OSError: broken"],
        ["2", "", "ValueError: no file"],
        ["5", "caf\\udce9.png", "OSError: x"],
    ]


def test_all_ranks_without_a_process_group_is_a_sorted_copy():
    log = ErrorLog([SkippedSample(4, "b", "x"), SkippedSample(1, "a", "y")])
    merged = log.all_ranks()
    assert merged is not log and merged.indices() == [1, 4] and log.indices() == [4, 1]


def test_a_sample_is_listed_once_with_its_first_cause():
    log = ErrorLog()
    log.record([SkippedSample(3, "a", "first")], warn=False)
    log.record([SkippedSample(3, "a", "second"), SkippedSample(1, "b", "z")], warn=False)
    assert list(log) == [SkippedSample(3, "a", "first"), SkippedSample(1, "b", "z")]
    assert repr(log) == "ErrorLog(2 skipped)"


def test_a_subset_of_a_skipping_data_set_is_skipped_and_listed_with_the_wrapped_indices(ds):
    subset = torch.utils.data.Subset(ds, [10, 11, 12, 13, 14, 15, 16])
    loader = ChunkedLoader(subset, 3, chunk_size=7, shuffle=False)
    with pytest.warns(SkippedSampleWarning):
        got = [indices_of(x) for x, _ in loader]
    assert got == [[10, 11], [13, 14], [16]]
    assert loader.errors is ds.errors and ds.errors.indices() == [12, 15]


class _BuggySplit(torch.utils.data.Subset):
    """A split whose own ``__getitem__`` has a bug for one position: user code, not a file."""

    def __getitem__(self, i):
        if i == 2:
            return 1 // 0
        return super().__getitem__(i)

    def __getitems__(self, indices):  # torch requires it with an own __getitem__
        return [self[i] for i in indices]


@pytest.mark.parametrize("workers", [0, 2], ids=["0 workers", "2 threads"])
def test_an_error_in_a_subset_subclass_s_own_getitem_raises_and_is_not_listed(tmp_path, workers):
    ds = scanned(tmp_path / "root", bad={}, on_error="skip")  # every file reads
    split = _BuggySplit(ds, list(range(8)))
    loader = ChunkedLoader(split, 4, chunk_size=8, shuffle=False, num_workers=workers, worker_type="thread")
    try:
        with pytest.raises(SampleLoadError, match="ZeroDivisionError") as info:
            list(loader)
    finally:
        loader.close()  # its threads
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    with pytest.raises(ZeroDivisionError):
        list(split)  # read as it is, the split raises too
    with pytest.raises(ZeroDivisionError):
        list(torch.utils.data.DataLoader(split, batch_size=4))
    assert len(ds.errors) == 0


def test_a_subset_subclass_is_read_as_it_is_so_its_unreadable_files_raise_too(ds):
    split = _BuggySplit(ds, [5, 6, 7, 8])  # position 2 is its bug, sample 7 a text file
    loader = ChunkedLoader(split, 2, chunk_size=2, shuffle=False)
    assert loader.errors is not ds.errors and loader.filler.dataset is split
    with pytest.raises(SampleLoadError, match="07.png"):
        list(ChunkedLoader(_BuggySplit(ds, [5, 7]), 2, chunk_size=2, shuffle=False))
    assert len(ds.errors) == 0 and len(loader.errors) == 0


# --- found in review --------------------------------------------------------------------------


def test_a_target_transform_works_when_a_batch_keeps_one_sample(tmp_path):
    ds = scanned(tmp_path / "root", on_error="skip", target_transform=lambda y: y + 5)
    with pytest.warns(SkippedSampleWarning):
        x, y = ds[[3, 5]]  # the first is bad: one sample is left
    assert indices_of(x) == [5] and y.tolist() == [5]
    x, y = ds[[6]]
    assert indices_of(x) == [6] and y.tolist() == [5]


def test_a_transform_that_returns_no_tensor_is_an_error_not_a_skip(tmp_path):
    def buggy(x):
        return None if int(x[0, 0, 0]) == 50 else x

    ds = scanned(tmp_path / "root", bad={}, on_error="skip", transform=buggy)
    with pytest.raises(ValueError, match="sample 5 has a NoneType but sample 0 has x"):
        ds[[0, 5]]
    subset = torch.utils.data.Subset(ds, list(range(10)))
    with pytest.raises(ValueError, match="sample 5 has a NoneType but sample 0 has x"):
        list(ChunkedLoader(subset, 4, chunk_size=8, shuffle=False))
    assert len(ds.errors) == 0

    class Own(_Flaky):  # a dataset of its own: read sample by sample
        def __getitem__(self, i):
            return None if i == 3 else super().__getitem__(i if i not in (2, 5) else 0)

    with pytest.raises(SampleLoadError, match="could not load sample 3: TypeError") as info:
        list(ChunkedLoader(Own(), 4, chunk_size=8, shuffle=False))
    assert info.value.skippable is False


class _CountingReader:
    def __init__(self, reader):
        self.reader = reader
        self.calls = multiprocessing.Value("i", 0)

    def __call__(self, path):
        with self.calls.get_lock():
            self.calls.value += 1
        return self.reader(path)


def test_a_chunked_loader_learns_the_layout_from_one_file_when_the_transform_is_broken(tmp_path):
    write_folder(tmp_path / "root", bad={})
    reader = _CountingReader(PathDataset.from_folder(tmp_path / "root").reader)
    ds = PathDataset.from_folder(tmp_path / "root", reader=reader, transform=lambda x: "not a tensor", on_error="skip")
    with pytest.raises(SampleLoadError, match="could not load sample 0: TypeError"):
        ChunkedLoader(torch.utils.data.Subset(ds, range(N)), 4, chunk_size=8)
    assert reader.calls.value == 1


def test_batches_of_only_bad_samples_do_not_read_the_data_set_again_each(tmp_path):
    bad = dict.fromkeys(range(12), "empty file")
    write_folder(tmp_path / "root", bad=bad)
    reader = _CountingReader(PathDataset.from_folder(tmp_path / "root").reader)
    ds = PathDataset.from_folder(tmp_path / "root", reader=reader, on_error="skip", max_skipped=None)
    with pytest.warns(SkippedSampleWarning):
        got = [indices_of(x) for x, _ in ds.dataloader(2, shuffle=False)]
    assert got == [[]] * 6 + [[12, 13], [14, 15], [16, 17], [18, 19]]
    assert reader.calls.value <= N + 12 + 1  # each file once, plus one look for the shape


def test_skipped_samples_count_when_their_batch_is_handed_out(tmp_path):
    ds = scanned(tmp_path / "root", bad={7: "empty file"}, on_error="skip")
    loader = ChunkedLoader(ds, 2, chunk_size=8, shuffle=False)
    batches = iter(loader)
    next(batches)  # the chunk holding sample 7 is loaded, its batch not yet handed out
    assert (loader.stats.samples_skipped, len(ds.errors)) == (0, 0)
    next(batches), next(batches)
    state = loader.state_dict()
    del batches
    resumed = ChunkedLoader(ds, 2, chunk_size=8, shuffle=False)
    resumed.load_state_dict(state)
    with pytest.warns(SkippedSampleWarning):
        rest = [indices_of(x) for x, _ in resumed]
    assert rest[0] == [6] and resumed.stats.samples_skipped == 1 and ds.errors.indices() == [7]


def test_a_batch_cut_by_drop_last_lists_none_of_its_samples(tmp_path):
    ds = scanned(tmp_path / "root", bad={19: "empty file"}, on_error="skip")
    loader = ChunkedLoader(ds, 3, chunk_size=20, shuffle=False, drop_last=True)  # 18, 19 are cut
    assert [indices_of(x)[-1] for x, _ in loader][-1] == 17
    assert loader.stats.samples_skipped == 0 and len(ds.errors) == 0


def test_ds_dataloader_s_dataset_is_the_data_set_itself(ds):
    loader = ds.dataloader(4, shuffle=False)
    assert loader.dataset is ds
    loader.dataset.transform = lambda x: x // 10  # swapping a transform, as users do
    with pytest.warns(SkippedSampleWarning):
        assert next(iter(loader))[0][:, 0, 0, 0].tolist() == [0, 1, 2]


class _OwnErrors(_Flaky):
    def __getitem__(self, i):
        if i in (2, 5):
            raise SampleLoadError("sample on a bad sector")  # the library's error, without an index
        return super().__getitem__(i)


def test_a_sample_load_error_without_an_index_is_listed_under_the_index_asked_for():
    loader = ChunkedLoader(_OwnErrors(), 4, chunk_size=8, shuffle=False)
    with pytest.warns(SkippedSampleWarning):
        list(loader)
    assert [(r.index, r.cause) for r in loader.errors] == [(2, "sample on a bad sector"), (5, "sample on a bad sector")]


@pytest.mark.parametrize("error", [MemoryError(), OSError(24, "Too many open files")], ids=["MemoryError", "EMFILE"])
def test_running_out_of_memory_or_file_handles_is_never_skipped(tmp_path, error):
    def reader(path):
        raise error

    ds = PathDataset([str(tmp_path / f"{i}.png") for i in range(4)], on_error="skip", reader=reader)
    with pytest.raises(SampleLoadError, match=type(error).__name__) as info:
        ds[[0, 1]]
    assert info.value.skippable is False and "on_error='skip'" not in str(info.value)
    assert len(ds.errors) == 0


def test_the_error_that_nothing_can_be_read_is_not_itself_skipped(tmp_path):
    ds = scanned(tmp_path / "root", bad=dict.fromkeys(range(N), "empty file"), on_error="skip")
    with pytest.raises(SampleLoadError, match="none of the") as info:
        ChunkedLoader(ds, 4, chunk_size=8)
    assert info.value.skippable is False


def test_error_log_items_can_be_indexed():
    log = ErrorLog(SkippedSample(i, None, "x") for i in range(5))
    assert [log[k].index for k in range(5)] == list(range(5)) and log[-1].index == 4


# --- max_skipped --------------------------------------------------------------------------------


def test_more_bad_files_than_max_skipped_allows_is_an_error_naming_the_first(tmp_path):
    ds = scanned(tmp_path / "root", on_error="skip", max_skipped=0.1)  # 5 of 20 bad: limit 2
    assert ds.errors.limit == 2
    with pytest.warns(SkippedSampleWarning), pytest.raises(SampleLoadError) as info:
        for _ in ds.dataloader(4, shuffle=False):
            pass
    message = str(info.value)
    assert message.startswith("3 samples could not be read, more than the 2 that max_skipped allows")
    assert f"The first: sample 3 ({ds.path(3)!r}): OSError" in message and "raise max_skipped" in message
    assert info.value.skippable is False


def test_the_default_max_skipped_stops_a_run_whose_files_all_vanished(tmp_path):
    write_folder(tmp_path / "root", bad={})
    ds = PathDataset.from_folder(tmp_path / "root", on_error="skip")  # the default: 10%
    loader = ChunkedLoader(ds, 4, chunk_size=8, shuffle=False)
    for path in (ds.path(i) for i in range(N)):
        os.remove(path)  # a mount that went away
    with pytest.raises(SampleLoadError, match="4 samples could not be read, more than the 2 that max_skipped"):
        for _ in loader:  # the first batch already lost all 4
            pass
    loader.close()


@pytest.mark.parametrize("max_skipped, limit", [(None, None), (0, 0), (7, 7), (0.25, 5), (1.0, 20), (0.01, 1)])
def test_max_skipped_is_a_fraction_of_the_data_set_a_count_or_none(tmp_path, max_skipped, limit):
    ds = PathDataset([str(tmp_path / f"{i}.png") for i in range(N)], on_error="skip", max_skipped=max_skipped)
    assert ds.errors.limit == limit


@pytest.mark.parametrize("max_skipped", [-1, 1.5, "10%", True])
def test_max_skipped_refuses_what_it_cannot_mean(tmp_path, max_skipped):
    with pytest.raises(ValueError, match="max_skipped"):
        PathDataset([str(tmp_path / "a.png")], on_error="skip", max_skipped=max_skipped)
