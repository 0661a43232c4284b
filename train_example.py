"""Train a small CNN with torchloader: a real training script, read top to bottom.

With no arguments it writes the handwritten digits that scikit-learn ships
(1797 images, 8x8, no network needed) as 28x28 grey PNG files into
``./data/digits/{train,test}/<digit>/<n>.png`` (once; later runs reuse them),
trains for a few epochs and prints, per epoch, the training time, samples/s,
the mean training loss and the accuracy on the held-out test folder.

Copy-paste::

    python train_example.py                       # PathDataset + DataLoader, 5 epochs
    python train_example.py --mode preload        # everything in RAM, one gather per batch
    python train_example.py --mode chunked --ram-budget 256KiB   # ChunkedLoader, RAM-sized chunks
    python train_example.py --mode packed         # decode once into shards, then memory-map
    python train_example.py --workers 2 --epochs 10
    python train_example.py --data ~/my_images --image-size 64 --mode chunked --ram-budget 1GiB
    torchrun --nproc_per_node=2 train_example.py --mode chunked   # DDP: gloo on CPU, nccl on GPUs
    python train_example.py --data ~/scraped --mode chunked --on-error skip --error-report bad.csv

``--data DIR`` trains on your own ``DIR/<class>/<file>`` folder of images (any
size; they are resized to ``--image-size``). If ``DIR`` holds ``train/`` and
``test/`` sub-folders they are used as such; otherwise a seeded random 80/20
split of ``DIR``'s files is made.

The three ``--mode`` values are the three ways torchloader holds data:

- ``path``: :class:`torchloader.PathDataset`, one file read per sample, in a
  plain ``torch.utils.data.DataLoader``. Any data set size.
- ``preload``: :class:`torchloader.PreloadedDataset`, the whole data set in RAM,
  each batch one ``index_select``. Only for data that fits in RAM.
- ``chunked``: :class:`torchloader.ChunkedLoader` over a ``PathDataset``: the
  data set is read in contiguous RAM-sized chunks, shuffled chunk by chunk.
- ``packed``: ``torchloader.pack`` decodes the images once into ``.npy`` shards
  next to the data (``<data>.packed/``, reused later), then a ``ChunkedLoader``
  reads RAM chunks from the memory-mapped :class:`torchloader.PackedDataset`.

Under ``torchrun`` (``WORLD_SIZE`` > 1) each process joins a process group (nccl
on CUDA, one GPU per process; gloo on CPU), the model is wrapped in
``DistributedDataParallel`` and every loader reads only its rank's share: the
chunked loaders deal whole chunks to ranks, ``--mode path`` uses a
``DistributedSampler``. Rank 0 writes the data (and the pack) first and prints.

``--on-error skip`` trains past files that cannot be read: each is left out of
its batch (which is one shorter; every rank still takes the same steps), and at
the end rank 0 prints how many were skipped on all ranks and, with
``--error-report FILE``, writes them (index, path, cause) as CSV. More than
``--max-skipped`` (a fraction, default 0.1) of a data set unreadable stops the run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset

from torchloader import ChunkedLoader, ImageReader, PackedDataset, PathDataset, PreloadedDataset, pack

DIGITS_COUNT = 1797  # images in sklearn.datasets.load_digits
DIGITS_SPLIT_SEED = 0  # the train/test split on disk does not depend on --seed
TEST_FRACTION = 0.2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--mode",
        choices=("path", "preload", "chunked", "packed"),
        default="path",
        help="how the data is held and read (default: path)",
    )
    parser.add_argument("--data", default=None, help="your own DIR/<class>/<file> image folder (default: the digits)")
    parser.add_argument(
        "--digits-dir",
        default=os.path.join("data", "digits"),
        help="where the digits are written and reused (default: data/digits)",
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--image-size", type=int, default=28, help="images are resized to SxS")
    parser.add_argument(
        "--ram-budget", default="256KiB", help="--mode chunked/packed: bytes for the RAM chunks, e.g. 256KiB, 2GiB"
    )
    parser.add_argument(
        "--block-size", type=int, default=4, help="--mode packed: samples per contiguous read inside a chunk"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="skip: leave unreadable files out of their batch and list them",
    )
    parser.add_argument(
        "--max-skipped",
        type=float,
        default=0.1,
        help="with --on-error skip: stop once more than this fraction of a data set could not be read (default 0.1)",
    )
    parser.add_argument(
        "--error-report",
        default=None,
        metavar="FILE",
        help="with --on-error skip: write the skipped files here as CSV (the test set's to FILE-test)",
    )
    args = parser.parse_args(argv)
    if args.on_error == "skip" and args.mode == "preload":
        parser.error(
            "--on-error skip needs --mode path, chunked or packed (preload reads "
            "every file up front and stops at the first that cannot be read)"
        )
    return args


# --- the data set on disk --------------------------------------------------------------


def build_digits(root: str) -> str:
    """Write the scikit-learn digits as ``root/{train,test}/<digit>/<n>.png``; return root.

    A complete ``root`` is reused as it is. The folder is built under a temporary
    name beside ``root`` and moved into place with one ``os.replace``, so an
    interrupted build leaves no ``root`` that looks complete.
    """
    if os.path.isdir(root):
        _check_digits_complete(root)
        return root
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".digits-partial-", dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the final folder should not be
    try:
        _write_digits(tmp)
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished first: use its folder
            if not os.path.isdir(root):
                raise
            _check_digits_complete(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _write_digits(root: str) -> None:
    # Imported here: only the digits need scikit-learn, not --data.
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype(np.uint8)  # 0..16 -> 0..255
    is_test = np.zeros(len(images), dtype=bool)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    is_test[rng.permutation(len(images))[: round(TEST_FRACTION * len(images))]] = True
    for n, (image, label) in enumerate(zip(images, digits.target)):
        folder = os.path.join(root, "test" if is_test[n] else "train", str(label))
        os.makedirs(folder, exist_ok=True)
        big = Image.fromarray(image).resize((28, 28), Image.Resampling.BILINEAR)
        big.save(os.path.join(folder, f"{n:04d}.png"))


def _check_digits_complete(root: str) -> None:
    count = sum(
        name.endswith(".png")
        for split in ("train", "test")
        for _, _, files in os.walk(os.path.join(root, split))
        for name in files
    )
    if count != DIGITS_COUNT:
        raise RuntimeError(
            f"'{root}' holds {count} of the {DIGITS_COUNT} digit images, so it is not a "
            f"complete digits folder; delete it, or pass --digits-dir to build the "
            f"digits elsewhere"
        )


# --- datasets and loaders --------------------------------------------------------------


class Resize:
    """Resize a ``uint8`` ``C x H x W`` image to ``size x size``, keeping its channels.

    A class, not a lambda, so that datasets holding it pickle to spawned workers.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == (self.size, self.size):
            return x
        y = F.interpolate(
            x[None].float(), size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
        )
        return y[0].round_().clamp_(0, 255).to(torch.uint8)


def make_datasets(args: argparse.Namespace) -> tuple[Dataset, Dataset, list[str]]:
    """``(train, test, classes)`` as ``PathDataset``s."""
    # The digits are grey; a user's folder is read as RGB so that grey, palette and
    # RGBA files in one folder all give 3 channels and can be batched together.
    root = build_digits(args.digits_dir) if args.data is None else args.data
    folder = dict(
        reader=ImageReader("L" if args.data is None else "RGB"),
        transform=Resize(args.image_size),
        on_error=args.on_error,
        max_skipped=args.max_skipped,
    )
    train_dir, test_dir = os.path.join(root, "train"), os.path.join(root, "test")
    if os.path.isdir(train_dir) and os.path.isdir(test_dir):
        train = PathDataset.from_folder(train_dir, **folder)
        test = PathDataset.from_folder(test_dir, **folder)
        if test.classes != train.classes:
            raise ValueError(
                f"'{train_dir}' has classes {train.classes} but '{test_dir}' has "
                f"{test.classes}; both need the same class folders"
            )
        return train, test, train.classes
    full = PathDataset.from_folder(root, **folder)
    train_idx, test_idx = split_indices(len(full), seed=args.seed)
    return (select(full, train_idx, args.max_skipped), select(full, test_idx, args.max_skipped), full.classes)


def select(ds: PathDataset, indices: list[int], max_skipped: float) -> PathDataset:
    """The samples at ``indices`` as a PathDataset of their own (a torch ``Subset``
    would hide ``ds.dataloader()`` and ``ds.errors``)."""
    assert ds.labels is not None
    return PathDataset(
        ds.paths[indices],
        ds.labels[indices],
        reader=ds.reader,
        transform=ds.transform,
        classes=ds.classes,
        on_error=ds.on_error,
        max_skipped=max_skipped,
    )


def make_packed_datasets(args: argparse.Namespace) -> tuple[Dataset, Dataset, list[str]]:
    """``(train, test, classes)`` read from packs made once next to the data.

    ``pack`` decodes and resizes every image once into ``.npy`` shards in
    ``<data>.packed/``; a later run finds the same pack complete and reuses it.
    """
    root = build_digits(args.digits_dir) if args.data is None else args.data
    mode = "L" if args.data is None else "RGB"
    packs = os.path.normpath(root) + ".packed"

    def packed(src: str, name: str) -> PackedDataset:
        dst = os.path.join(packs, f"{name}-{args.image_size}px-{mode}")
        print(
            pack(
                src, dst, size=args.image_size, mode=mode, workers=args.workers, progress=False, on_error=args.on_error
            )
        )
        return PackedDataset(dst)

    train_dir, test_dir = os.path.join(root, "train"), os.path.join(root, "test")
    if os.path.isdir(train_dir) and os.path.isdir(test_dir):
        train, test = packed(train_dir, "train"), packed(test_dir, "test")
        return train, test, train.classes or []
    full = packed(root, "all")  # same file order as PathDataset.from_folder(root)
    train_idx, test_idx = split_indices(len(full), seed=args.seed)
    return Subset(full, train_idx), Subset(full, test_idx), full.classes or []


def shuffled_order(n: int, *, seed: int) -> list[int]:
    """A seeded random permutation of ``range(n)``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def split_indices(n: int, *, seed: int) -> tuple[list[int], list[int]]:
    """A seeded random 80/20 split of ``range(n)``, each part sorted (in file order)."""
    n_test = max(1, round(TEST_FRACTION * n))
    if n - n_test < 1:
        raise ValueError(f"--data has {n} image(s); at least 2 are needed to split")
    order = shuffled_order(n, seed=seed)
    return sorted(order[n_test:]), sorted(order[:n_test])


def make_loaders(args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    """``(train_loader, test_loader, classes)`` for ``args.mode``."""
    if args.mode == "packed":
        train, test, classes = make_packed_datasets(args)
    else:
        train, test, classes = make_datasets(args)
    on_cuda = torch.device(args.device).type == "cuda"
    common = dict(
        num_workers=args.workers,
        # Pinned (page-locked) host memory lets .to(device, non_blocking=True) copy
        # asynchronously; it only helps with a CUDA device, so only ask for it then.
        pin_memory=on_cuda,
        persistent_workers=args.workers > 0,  # keep workers across epochs
    )
    if args.mode == "packed":
        # Decoded once into memory-mapped shards; ChunkedLoader fills each RAM chunk
        # with one batched read. The pack keeps the folder's class order, so each
        # chunk is built from --block-size-sample blocks taken from random places:
        # batches mix classes almost as a full shuffle would, reads stay sequential runs.
        train_loader = ChunkedLoader(
            train,
            args.batch_size,
            ram_budget=args.ram_budget,
            block_size=args.block_size,
            seed=args.seed,
            num_workers=args.workers,
        )
        if is_main():
            print(f"packed: {train_loader.shuffle_quality()}")
        test_loader = DataLoader(test, batch_size=args.batch_size, shuffle=False, **common)
        return train_loader, test_loader, classes
    if args.mode == "preload":
        # One parallel pass reads every file; then each batch is one index_select.
        train = PreloadedDataset.from_dataset(train)
        test = PreloadedDataset.from_dataset(test)
        return (
            train.dataloader(args.batch_size, shuffle=True, seed=args.seed, **common),
            test.dataloader(args.batch_size, shuffle=False, **common),
            classes,
        )
    if args.mode == "chunked":
        # ChunkedLoader reads the data set in RAM chunks that fit in --ram-budget
        # (two chunks: one served while the next loads, with --workers processes),
        # and serves the batches from the chunk in RAM. Chunks are contiguous runs of
        # indices; the chunk order and the order inside each chunk change per epoch.
        #
        # A class-per-folder data set is sorted by class, so a contiguous chunk holds
        # few classes (a 128KiB chunk is ~165 digits: 1-2 classes) and so does every
        # batch drawn from it: trained that way the model ends each epoch knowing
        # only the last chunk's classes (test acc 0.18 after 5 epochs, measured).
        # So the samples are put in a seeded random order once, first. PathDataset
        # opens one file per sample anyway, so no disk locality is lost; data meant
        # to be read in chunks is best stored in shuffled order for the same reason.
        train = Subset(train, shuffled_order(len(train), seed=args.seed))
        train_loader = ChunkedLoader(
            train, args.batch_size, ram_budget=args.ram_budget, seed=args.seed, num_workers=args.workers
        )
        if is_main():
            print(
                f"chunked: {len(train_loader.sampler.chunks())} chunks of up to "
                f"{train_loader.chunk_size} samples (--ram-budget {args.ram_budget})"
            )
    else:
        # The sampler gets a generator of its own: with shuffle=True the DataLoader
        # would draw each iterator's worker seed from the shuffling generator too,
        # and persistent workers draw it once, not per epoch, so the order of epoch
        # 2 onwards would depend on --workers.
        if args.on_error == "skip":
            # A DataLoader with batch_size= asks for one sample at a time and has no
            # way to leave one out; ds.dataloader() reads whole batches and can.
            return (
                train.dataloader(args.batch_size, seed=args.seed, **common),
                test.dataloader(args.batch_size, shuffle=False, **common),
                classes,
            )
        sampler: Any = RandomSampler(train, generator=torch.Generator().manual_seed(args.seed))
        if dist.is_initialized():  # each rank its share of a seeded shuffle
            sampler = DistributedSampler(train, shuffle=True, seed=args.seed)
        train_loader = DataLoader(
            train,
            batch_size=args.batch_size,
            sampler=sampler,
            generator=torch.Generator().manual_seed(args.seed),
            **common,
        )
    if isinstance(test, PathDataset) and args.on_error == "skip":
        test_loader: Any = test.dataloader(args.batch_size, shuffle=False, **common)
    else:
        test_loader = DataLoader(test, batch_size=args.batch_size, shuffle=False, **common)
    return train_loader, test_loader, classes


# --- model and training ----------------------------------------------------------------


def make_model(in_channels: int, num_classes: int) -> nn.Module:
    """A small CNN; the adaptive pool makes it work for any ``--image-size``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(4),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy a ``uint8`` batch to ``device``, then make it float and normalise it there."""
    # non_blocking=True: from pinned memory the copy runs asynchronously and the
    # host queues the next kernels meanwhile; from unpinned memory it is a plain copy.
    x = x.to(device, non_blocking=True)
    y = y.to(device, non_blocking=True)
    # Converting on the device, after the copy, sends uint8: 4x fewer bytes cross
    # PCIe than float32 would.
    x = x.float().div_(255).sub_(0.5).div_(0.5)
    return x, y


def train_one_epoch(
    model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, device: torch.device
) -> tuple[float, int]:
    """One pass over ``loader``; returns ``(mean loss, samples seen)``."""
    model.train()
    total_loss = torch.zeros((), device=device)
    seen = 0
    for x, y in loader:
        x, y = to_device(x, y, device)
        # The mean over the batch; a batch whose every file was skipped (--on-error
        # skip) is empty, and still takes its step (loss 0) so DDP ranks stay in step.
        loss = F.cross_entropy(model(x), y, reduction="sum") / max(len(y), 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Summed on the device: loss.item() per step would wait for the GPU every step.
        total_loss += loss.detach() * len(y)
        seen += len(y)
    total_loss, seen = all_ranks(total_loss, seen)
    return total_loss.item() / max(seen, 1), seen


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, device: torch.device) -> float:
    """Accuracy of ``model`` on ``loader``."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    total = 0
    for x, y in loader:
        x, y = to_device(x, y, device)
        correct += (model(x).argmax(dim=1) == y).sum()
        total += len(y)
    correct, total = all_ranks(correct, total)
    return correct.item() / max(total, 1)


def is_main() -> bool:
    """Rank 0, or the only process: the one that prints."""
    return not dist.is_initialized() or dist.get_rank() == 0


def all_ranks(value: torch.Tensor, count: int) -> tuple[torch.Tensor, int]:
    """``value`` and ``count`` summed over the ranks (as they are without torchrun)."""
    if not dist.is_initialized():
        return value, count
    both = torch.stack([value.double(), torch.tensor(float(count), device=value.device).double()])
    dist.all_reduce(both)
    return both[0].to(value.dtype), int(both[1].item())


def setup_distributed(device: torch.device) -> torch.device:
    """Join the process group when run by torchrun; returns this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def set_epoch(loader: Any, epoch: int) -> None:
    """Tell the loader (or its sampler) which epoch's order to use."""
    if hasattr(loader, "set_epoch"):  # ChunkedLoader
        loader.set_epoch(epoch)
        return
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def report_skipped(args: argparse.Namespace, train_loader: Any, test_loader: Any) -> dict[str, int]:
    """With --on-error skip: the files skipped on all ranks, printed and written by rank 0."""
    counts = {}
    for name, loader in (("train", train_loader), ("test", test_loader)):
        errors = getattr(loader, "errors", None)  # ChunkedLoader and ds.dataloader() have them
        if args.on_error != "skip" or errors is None:
            continue
        merged = errors.all_ranks()  # a collective: every rank takes part
        counts[name] = len(merged)
        if is_main() and len(merged):
            print(
                f"{name}: skipped {len(merged)} file(s) that could not be read, e.g. "
                f"{merged[0].path}: {merged[0].cause}"
            )
            if args.error_report:
                stem, suffix = os.path.splitext(args.error_report)
                merged.write(args.error_report if name == "train" else f"{stem}-test{suffix}")
    return counts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train and evaluate; return the configuration and one metrics dict per epoch."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    device = setup_distributed(torch.device(args.device))
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank > 0:
        dist.barrier()  # rank 0 writes the data set (and the pack) first
    train_loader, test_loader, classes = make_loaders(args)
    if rank == 0 and dist.is_initialized():
        dist.barrier()
    in_channels = train_loader.dataset[0][0].shape[0]
    model = make_model(in_channels, len(classes)).to(device)
    if dist.is_initialized():  # gradients averaged over the ranks after each backward
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    say = print if is_main() else (lambda *a, **k: None)
    say(
        f"mode={args.mode} device={device} workers={args.workers} "
        f"train={len(train_loader.dataset)} test={len(test_loader.dataset)} "
        f"classes={len(classes)} in_channels={in_channels}"
        + (f" ranks={dist.get_world_size()}" if dist.is_initialized() else "")
    )
    history = []
    for epoch in range(args.epochs):
        set_epoch(train_loader, epoch)
        start = time.perf_counter()
        loss, seen = train_one_epoch(model, train_loader, optimizer, device)
        seconds = time.perf_counter() - start  # .item() above waited for the device
        accuracy = evaluate(model, test_loader, device)
        history.append(
            dict(epoch=epoch + 1, seconds=seconds, samples_per_s=seen / seconds, loss=loss, test_acc=accuracy)
        )
        say(
            f"epoch {epoch + 1}/{args.epochs}  {seconds:.1f}s  {seen / seconds:.0f} samples/s"
            f"  loss {loss:.3f}  test acc {accuracy:.3f}"
        )
    skipped = report_skipped(args, train_loader, test_loader)
    getattr(train_loader, "close", lambda: None)()  # ChunkedLoader: stop loading ahead
    if dist.is_initialized():
        dist.barrier()  # no rank tears the group down while another still uses it
        dist.destroy_process_group()
    return dict(
        mode=args.mode,
        in_channels=in_channels,
        classes=classes,
        train_samples=len(train_loader.dataset),
        test_samples=len(test_loader.dataset),
        history=history,
        skipped=skipped,
    )


if __name__ == "__main__":
    main()
