"""examples/train.py and examples/digits.py: the digits built once, every mode learns, a user's folder trains."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from pathlib import Path

import background
import numpy as np
import pytest
import torch
from PIL import Image

from torchloader import CenterCrop, RandomResizedCrop

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TRAIN = EXAMPLES / "train.py"


def _import_example():
    # examples/train.py imports digits.py from its own folder, as a script run from there does
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location("train", TRAIN)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module  # so that what it defines pickles to workers
    spec.loader.exec_module(module)
    return module


te = _import_example()
dg = sys.modules["digits"]  # examples/digits.py, as examples/train.py imported it


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    # On a busy 2-core machine (DataLoader workers, other processes) two intra-op
    # threads made an epoch take anywhere from 0.8 s to 11 s; one takes a steady ~1.4 s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> str:
    start_early()
    background.ready("train_example")  # built by whichever pytest process got there first
    return str(background.root() / "train_example" / "digits")


def start_early() -> None:
    """Build the digits and start the torchrun jobs (see tests/background.py)."""
    root = background.root() / "train_example"
    digits, data = str(root / "digits"), root / "skip" / "digits"

    def make():
        dg.build_digits(digits)
        shutil.copytree(digits, data, copy_function=os.link)  # hard links: 1,797 files in no time
        broken = sorted(str(p) for p in list((data / "train").rglob("*.png"))[::300])  # 5 files, any rank's
        for path in broken:
            Path(path).unlink()  # not written through the link: the digits stay whole
            Path(path).write_bytes(b"not a png")
        (root / "skip" / "broken.txt").write_text("\n".join(broken))

    background.prepare("train_example", make)
    # one epoch of 8x8 images (the digits' own size): what is under test is two ranks
    # training together (epochs and image sizes are the in-process tests' business)
    small = ["--image-size", "8"]
    _start_torchrun(
        "gloo/path",
        ["--mode", "path", "--epochs", "1", "--digits-dir", digits, "--device", "cpu", *small],
        root / "path",
    )
    # one job for two tests (a torchrun job is 3 interpreters importing torch): chunked mode
    # learns on two ranks, past the broken files, and reports them
    _start_torchrun(
        "gloo/chunked",
        [
            "--mode",
            "chunked",
            "--epochs",
            "1",
            "--digits-dir",
            str(data),
            "--device",
            "cpu",
            *small,
            "--on-error",
            "skip",
            "--error-report",
            str(root / "skip" / "bad.csv"),
        ],
        root / "skip",
    )


def _write_image(path: Path, size: tuple[int, int], mode: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(2) if channels == 1 else pixels).save(path)


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """``cat/`` and ``dog/`` with 5 PNGs each: different sizes, mostly RGB."""
    sizes = [(20, 30), (17, 17), (40, 25), (9, 12), (33, 8)]
    modes = ["RGB", "RGB", "RGB", "L", "RGBA"]  # the reader makes them all RGB
    for c, name in enumerate(["cat", "dog"]):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i, (size, mode) in enumerate(zip(sizes, modes)):
            _write_image(tmp_path / "pets" / name / f"{i}.png", size, mode, seed=10 * c + i)
    return tmp_path / "pets"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["path", "preload", "chunked", "packed"])
def test_every_mode_learns_the_digits(mode, digits, capsys):
    # path mode at the default image size (28); the others at 8x8, the digits' own size
    # (scikit-learn's are 8x8): a twelfth of the compute
    size = [] if mode == "path" else ["--image-size", "8"]
    result = te.main(["--mode", mode, "--epochs", "2", "--digits-dir", digits, *size])

    first, last = result["history"]
    assert last["test_acc"] > 0.7  # chance is 0.1; 2 epochs reached 0.91-0.97 over 5 seeds
    assert last["loss"] < first["loss"]
    assert (result["in_channels"], result["classes"]) == (1, [str(d) for d in range(10)])
    assert (result["train_samples"], result["test_samples"]) == (1438, 359)
    out = capsys.readouterr().out
    assert re.search(
        r"^epoch 2/2  \d+\.\ds  \d+ samples/s  loss \d\.\d{3}  test acc "
        r"\d\.\d{3}$",
        out,
        re.MULTILINE,
    ), out


@pytest.mark.slow
def test_the_default_ram_budget_cuts_the_digits_into_several_chunks(digits, capsys):
    te.main(["--mode", "chunked", "--epochs", "0", "--digits-dir", digits])

    chunks = int(re.search(r"chunked: (\d+) chunks", capsys.readouterr().out).group(1))
    assert chunks >= 3


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["path", "chunked"])
def test_workers_train_exactly_as_the_main_process_does(mode, digits):
    # 8x8 images: a twelfth of the compute; the order is what is under test.
    args = ["--mode", mode, "--epochs", "2", "--image-size", "8", "--digits-dir", digits]
    in_process = te.main([*args, "--workers", "0"])
    workers = te.main([*args, "--workers", "2"])

    # Same seed, same order on any number of workers, every epoch: the same training.
    def results(run):
        return [value for epoch in run["history"] for value in (epoch["loss"], epoch["test_acc"])]

    assert results(workers) == pytest.approx(results(in_process), rel=1e-6)
    assert workers["history"][-1]["test_acc"] > 0.7


@pytest.mark.parametrize("mode", ["path", "preload", "chunked", "packed"])
def test_a_user_folder_of_rgb_images_of_any_size_trains(mode, user_folder):
    result = te.main(
        ["--data", str(user_folder), "--mode", mode, "--epochs", "1", "--image-size", "16", "--batch-size", "4"]
    )

    assert result["in_channels"] == 3
    assert result["classes"] == ["cat", "dog"]
    assert (result["train_samples"], result["test_samples"]) == (8, 2)
    assert len(result["history"]) == 1


def test_a_user_folder_trains_on_random_crops_and_tests_on_centre_crops(user_folder):
    args = te.parse_args(["--data", str(user_folder), "--image-size", "16"])
    train_loader, test_loader, _ = te.path_loaders(args)
    train, test = train_loader.dataset, test_loader.dataset
    assert isinstance(train.decode, RandomResizedCrop) and train.decode.size == (16, 16) and train.transform is None
    assert isinstance(test.decode, CenterCrop) and test.decode.size == (16, 16) and test.decode.resize == 18
    # images of every size come out 16 x 16; a test sample is the same each time, a train sample varies by epoch
    assert {tuple(train[i][0].shape) for i in range(len(train))} == {(3, 16, 16)}
    assert torch.equal(test[0][0], test[0][0])
    in_order, epochs = train.dataloader(4, shuffle=False), []
    for epoch in range(2):
        in_order.sampler.set_epoch(epoch)
        epochs.append(torch.cat([x.flatten() for x, _ in in_order]))
    assert not torch.equal(epochs[0], epochs[1])  # the same samples in the same order, cropped anew

    resized = te.parse_args(["--data", str(user_folder), "--image-size", "16", "--augment", "none"])
    assert te.path_datasets(resized)[0].decode is None
    assert te.parse_args(["--image-size", "8"]).augment == "none"  # the digits: resized, as before


def test_a_user_folder_with_train_and_test_folders_keeps_that_split(user_folder, tmp_path):
    split = tmp_path / "split"
    for part, files in [("train", ["0.png", "1.png", "2.png"]), ("test", ["3.png"])]:
        for name in ["cat", "dog"]:
            (split / part / name).mkdir(parents=True)
            for file in files:
                os.replace(user_folder / name / file, split / part / name / file)

    result = te.main(["--data", str(split), "--epochs", "1", "--image-size", "12"])

    assert (result["train_samples"], result["test_samples"]) == (6, 2)


def test_a_complete_digits_folder_is_reused(digits, monkeypatch):
    def write_again(root):
        raise AssertionError("the complete folder should have been reused")

    monkeypatch.setattr(dg, "_write_digits", write_again)

    assert dg.build_digits(digits) == digits


def test_an_interrupted_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    def interrupted(root):
        (Path(root) / "train" / "0").mkdir(parents=True)
        (Path(root) / "train" / "0" / "0000.png").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(dg, "_write_digits", interrupted)

    with pytest.raises(KeyboardInterrupt):
        dg.build_digits(str(tmp_path / "digits"))
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary


def test_an_incomplete_digits_folder_is_refused(tmp_path):
    root = tmp_path / "digits"
    (root / "train" / "3").mkdir(parents=True)
    _write_image(root / "train" / "3" / "0007.png", (28, 28), "L", seed=0)

    with pytest.raises(RuntimeError) as info:
        dg.build_digits(str(root))
    assert str(info.value) == (
        f"'{root}' holds 1 of the 1797 digit images, so it is not a complete digits "
        f"folder; delete it, or pass --digits-dir to build the digits elsewhere"
    )


def test_resize_keeps_channels_and_dtype():
    import torchloader

    image = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)

    resized = te.Resize(16)(image)

    assert te.Resize is torchloader.Resize  # the library's, not one of the example's own
    assert (resized.shape, resized.dtype) == ((3, 16, 16), torch.uint8)
    assert te.Resize(20)(torch.zeros(1, 20, 20, dtype=torch.uint8)).shape == (1, 20, 20)


def test_path_mode_reads_the_pixels_packed_mode_trains_on(user_folder):
    # the same split, the same resize: --mode path and --mode packed train on the same data
    args = te.parse_args(["--data", str(user_folder), "--image-size", "16", "--augment", "none"])
    path_train, path_test, path_classes = te.path_loaders(args)
    packed_train, packed_test, packed_classes = te.packed_loaders(args)
    packed_train.close()

    assert path_classes == packed_classes == ["cat", "dog"]
    for path_set, packed_set in [(path_train.dataset, packed_train.dataset), (path_test.dataset, packed_test.dataset)]:
        assert len(path_set) == len(packed_set)
        for i in range(len(path_set)):
            (x, y), (px, py) = path_set[i], packed_set[i]
            assert torch.equal(x, px) and int(y) == int(py), i


def test_digits_are_28x28_grey_pngs_split_80_20_in_class_folders(digits):
    root = Path(digits)
    train, test = sorted(root.glob("train/*/*.png")), sorted(root.glob("test/*/*.png"))

    assert (len(train), len(test)) == (1438, 359)
    assert sorted(p.name for p in (root / "train").iterdir()) == [str(d) for d in range(10)]
    assert sorted(p.name for p in (root / "test").iterdir()) == [str(d) for d in range(10)]
    with Image.open(train[0]) as image:
        assert (image.mode, image.size) == ("L", (28, 28))


def test_digits_py_run_as_a_script_reuses_a_complete_folder(digits):
    import subprocess

    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "digits.py"), digits], capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{digits}\n"


def test_the_training_example_stays_short():
    # one short loader function per mode, read top to bottom: no data plumbing of its own
    # (325: the import of nine names takes a line each, the crops of --data need five, and
    # freeing the DDP model before the process group goes four)
    assert len(TRAIN.read_text().splitlines()) <= 325


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["path", "preload", "chunked", "packed"])
def test_every_mode_learns_on_the_gpu(mode, digits):
    run = te.main(["--mode", mode, "--epochs", "2", "--device", "cuda", "--digits-dir", digits])
    assert run["history"][-1]["test_acc"] > 0.7


def _torchrun_command(args):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",  # its own free port, bound when the job starts: a port picked at
        # collection could be taken by then (gloo's connections use the same port range)
        str(TRAIN),
        *args,
    ]


def _start_torchrun(name, args, cwd):
    """``torchrun --nproc_per_node=2 examples/train.py *args`` as a background job."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    background.start(name, _torchrun_command(args), after="train_example", cwd=cwd, env=env)


def _torchrun(args, cwd):
    """``torchrun --nproc_per_node=2 examples/train.py *args``, finished."""
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(_torchrun_command(args), capture_output=True, text=True, timeout=180, cwd=cwd, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["chunked", "path"])
def test_torchrun_with_two_processes_trains_on_the_cpu_with_gloo(mode, digits):
    done = background.result(f"gloo/{mode}")  # chunked: past 5 broken files (the next test)

    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    header = [line for line in lines if line.startswith("mode=")]
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert header == [f"mode={mode} device=cpu workers=0 train=1438 test=359 classes=10 in_channels=1 ranks=2"]
    assert len(epochs) == 1  # rank 0 prints; the other rank is quiet
    accuracy = float(epochs[-1].rsplit(" ", 1)[1])
    assert accuracy > 0.6  # chance is 0.1


def _break_files(folder: Path) -> list[str]:
    """Two files of the folder made unreadable: one emptied, one cut short."""
    empty, cut = folder / "cat" / "1.png", folder / "dog" / "3.png"
    empty.write_bytes(b"")
    cut.write_bytes(cut.read_bytes()[:40])
    return sorted([str(empty), str(cut)])


def test_a_broken_file_stops_training_by_default_naming_the_file(user_folder):
    from torchloader import SampleLoadError

    broken = _break_files(user_folder)
    with pytest.raises(SampleLoadError, match="|".join(re.escape(f"'{path}'") for path in broken)):
        te.main(["--data", str(user_folder), "--mode", "chunked", "--epochs", "1", "--image-size", "16"])


@pytest.mark.filterwarnings("ignore::torchloader.SkippedSampleWarning")
@pytest.mark.parametrize("mode", ["path", "chunked"])
def test_on_error_skip_trains_past_broken_files_and_reports_them(mode, user_folder, tmp_path, capsys):
    import csv

    broken = _break_files(user_folder)
    report = tmp_path / "bad.csv"
    result = te.main(
        [
            "--data",
            str(user_folder),
            "--mode",
            mode,
            "--epochs",
            "2",
            "--image-size",
            "16",
            "--batch-size",
            "4",
            "--on-error",
            "skip",
            "--max-skipped",
            "0.5",
            "--error-report",
            str(report),
        ]
    )

    assert len(result["history"]) == 2
    written = []
    for path in (report, tmp_path / "bad-test.csv"):
        if path.exists():
            with open(path, newline="") as f:
                written += [row["path"] for row in csv.DictReader(f)]
    assert sorted(written) == broken
    assert sum(result["skipped"].values()) == 2
    assert "skipped 1 file(s) that could not be read" in capsys.readouterr().out


def test_on_error_skip_is_refused_for_preload():
    with pytest.raises(SystemExit):
        te.parse_args(["--mode", "preload", "--on-error", "skip"])


@pytest.mark.slow
def test_torchrun_with_on_error_skip_writes_the_files_every_rank_skipped(digits):
    import csv

    root = background.root() / "train_example" / "skip"
    broken = (root / "broken.txt").read_text().splitlines()
    done = background.result("gloo/chunked")

    assert done.returncode == 0, done.stderr[-3000:]
    with open(root / "bad.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["path"] for row in rows) == broken
    assert all(row["cause"].startswith("UnidentifiedImageError") for row in rows)
    assert f"train: skipped {len(broken)} file(s)" in done.stdout


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="nccl needs a GPU per rank: 2 GPUs")
@pytest.mark.parametrize("mode", ["chunked", "path"])
def test_torchrun_with_two_processes_trains_on_two_gpus_with_nccl(mode, digits, tmp_path):
    done = _torchrun(["--mode", mode, "--epochs", "2", "--digits-dir", digits, "--device", "cuda"], tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    header = [line for line in done.stdout.splitlines() if line.startswith("mode=")]
    assert header == [f"mode={mode} device=cuda:0 workers=0 train=1438 test=359 classes=10 in_channels=1 ranks=2"]
    accuracy = float([line for line in done.stdout.splitlines() if line.startswith("epoch ")][-1].rsplit(" ", 1)[1])
    assert accuracy > 0.6
