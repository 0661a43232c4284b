"""Train a small CNN with torchloader, read top to bottom (as pytorch/examples' mnist/main.py).

With no arguments it writes scikit-learn's handwritten digits as PNG files in ``data/digits/`` (once; see
``digits.py``), trains for 5 epochs and prints each one's seconds, samples/s, mean loss and test accuracy.
``--mode`` is one of the four ways torchloader holds data::

    python examples/train.py --mode path      # (default) PathDataset: paths in RAM, one file read per sample
    python examples/train.py --mode preload   # PreloadedDataset: all of it in RAM, each batch one gather
    python examples/train.py --mode chunked --ram-budget 256KiB   # ChunkedLoader: a PathDataset in RAM chunks
    python examples/train.py --mode packed    # pack() once into <data>.packed/, a ChunkedLoader over the shards
    python examples/train.py --data ~/photos --image-size 64 --workers 2   # your DIR/<class>/<file> images
    python examples/train.py --data ~/scraped --mode chunked --on-error skip --error-report bad.csv
    torchrun --nproc_per_node=2 examples/train.py --mode chunked   # DDP: gloo on CPU, nccl on GPUs

``--data DIR``: images of any size, read as RGB; ``--mode path`` and ``chunked`` crop them as they decode (random
resized crops and flips to train, centre crops to test; ``--augment none``: resized as ``pack`` resizes them, as the
other modes do). ``DIR/train`` and ``DIR/test`` if both exist, else a seeded 80/20 split. ``--on-error skip`` leaves
unreadable files out of their batches and lists them (``--error-report FILE``: as CSV). Under ``torchrun`` each
loader reads its rank's share.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from digits import build_digits  # beside this file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from torchloader import (
    CenterCrop,
    ChunkedLoader,
    ImageReader,
    PackedDataset,
    PathDataset,
    PreloadedDataset,
    RandomResizedCrop,
    Resize,
    pack,
)


class Net(nn.Module):
    """A small CNN on uint8 ``C x H x W`` images; the adaptive pool takes any --image-size."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(64 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 127.5 - 1  # made float on the device: uint8 is a quarter of the bytes to copy
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.adaptive_max_pool2d(F.relu(self.bn2(self.conv2(x))), 4)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def train(model: nn.Module, device: torch.device, loader: Any, optimizer: torch.optim.Optimizer) -> tuple[float, int]:
    """One epoch; returns the mean loss and the samples seen, over all ranks."""
    model.train()
    total_loss, seen = torch.zeros((), device=device), torch.zeros((), device=device)
    for data, target in loader:
        data, target = data.to(device, non_blocking=True), target.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        # --on-error skip can empty a batch: it still takes its step (loss 0), so DDP ranks stay in step
        loss = F.cross_entropy(model(data), target, reduction="sum") / max(len(target), 1)
        loss.backward()
        optimizer.step()
        total_loss += loss.detach() * len(target)  # summed on the device: no waiting for it every step
        seen += len(target)
    total_loss, seen = all_ranks(total_loss, seen)  # waits for the device: the epoch's work is done
    return total_loss / max(seen, 1), int(seen)


@torch.no_grad()
def test(model: nn.Module, device: torch.device, loader: Any) -> float:
    """The accuracy on ``loader``, over all ranks."""
    model.eval()
    correct, total = torch.zeros((), device=device), torch.zeros((), device=device)
    for data, target in loader:
        data, target = data.to(device, non_blocking=True), target.to(device, non_blocking=True)
        correct += (model(data).argmax(dim=1) == target).sum()
        total += len(target)
    correct, total = all_ranks(correct, total)
    return correct / max(total, 1)


def folders(args: argparse.Namespace) -> tuple[str, str | None]:
    """``(train, test)`` folders, or ``(root, None)`` for one folder to split 80/20."""
    root = build_digits(args.digits_dir) if args.data is None else args.data
    train, test = os.path.join(root, "train"), os.path.join(root, "test")
    return (train, test) if os.path.isdir(train) and os.path.isdir(test) else (root, None)


def split(n: int, seed: int) -> tuple[list[int], list[int]]:
    """A seeded random 80/20 split of ``range(n)``, each part in file order."""
    order, n_test = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist(), max(1, round(0.2 * n))
    if n - n_test < 1:
        raise ValueError(f"--data has {n} image(s); at least 2 are needed to split")
    return sorted(order[n_test:]), sorted(order[:n_test])


def path_datasets(args: argparse.Namespace) -> tuple[PathDataset, PathDataset]:
    """Train and test ``PathDataset``: the paths in RAM, each image read and cropped (or resized) when asked for."""
    options = dict(reader=ImageReader(args.image_mode), on_error=args.on_error, max_skipped=args.max_skipped)
    size = args.image_size
    if args.augment == "crop" and args.mode in ("path", "chunked"):  # crops as they decode: any image size in
        train_how, test_how = dict(decode=RandomResizedCrop(size)), dict(decode=CenterCrop(size, resize=size * 8 // 7))
    else:
        train_how = test_how = dict(transform=Resize(size))
    train_dir, test_dir = folders(args)
    if test_dir is None:  # two datasets, not Subsets: each with its own dataloader() and errors
        full = PathDataset.from_folder(train_dir)
        (a, b), classes = split(len(full), args.seed), full.classes
        train = PathDataset(full.paths[a], full.labels[a], classes=classes, **options, **train_how)
        return train, PathDataset(full.paths[b], full.labels[b], classes=classes, **options, **test_how)
    train = PathDataset.from_folder(train_dir, **options, **train_how)
    test = PathDataset.from_folder(test_dir, **options, **test_how)
    if test.classes != train.classes:
        raise ValueError(f"'{train_dir}' has classes {train.classes} but '{test_dir}' has {test.classes}")
    return train, test


def loader_options(args: argparse.Namespace) -> dict[str, Any]:
    """DataLoader options: workers kept across epochs; pinned memory (asynchronous copies) for CUDA."""
    return dict(num_workers=args.workers, persistent_workers=args.workers > 0, pin_memory="cuda" in args.device)


def batches(dataset: Any, args: argparse.Namespace, *, shuffle: bool = True) -> Any:
    """``dataset.dataloader()``: a DataLoader whose workers read whole batches (a rank's share under torchrun)."""
    return dataset.dataloader(args.batch_size, shuffle=shuffle, seed=args.seed, **loader_options(args))


# --- one function per --mode: (train loader, test loader, class names) -------------------


def path_loaders(args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    """--mode path: one image file read per sample."""
    train, test = path_datasets(args)
    return batches(train, args), batches(test, args, shuffle=False), train.classes


def preload_loaders(args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    """--mode preload: every image read once (in parallel) into RAM; then each batch is one gather."""
    train, test = path_datasets(args)
    in_ram = PreloadedDataset.from_dataset(train), PreloadedDataset.from_dataset(test)
    return batches(in_ram[0], args), batches(in_ram[1], args, shuffle=False), train.classes


def chunked_loaders(args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    """--mode chunked: images read into RAM chunks (two fit in --ram-budget); batches served from RAM."""
    train, test = path_datasets(args)
    # A chunk is a run of consecutive samples, and a folder per class is sorted by class: a 128KiB chunk
    # (~165 digits) holds 1-2 classes, as does each batch from it (test acc 0.18 after 5 epochs). A
    # PathDataset opens a file per sample anyway: a seeded random order, once, costs no disk locality.
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed)).tolist()
    options = dict(ram_budget=args.ram_budget, seed=args.seed, num_workers=args.workers)
    loader = ChunkedLoader(Subset(train, order), args.batch_size, **options)
    n = len(loader.sampler.chunks())
    say(f"chunked: {n} chunks of up to {loader.chunk_size} samples (--ram-budget {args.ram_budget})")
    return loader, batches(test, args, shuffle=False), train.classes


def packed_loaders(args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    """--mode packed: images decoded once into shards beside the data (reused later), then memory-mapped."""
    train_dir, test_dir = folders(args)
    packs = os.path.normpath(train_dir if test_dir is None else os.path.dirname(train_dir)) + ".packed"
    options = dict(size=args.image_size, mode=args.image_mode, num_workers=args.workers, on_error=args.on_error)

    def packed(src: str, name: str) -> PackedDataset:
        dst = os.path.join(packs, f"{name}-{args.image_size}px-{args.image_mode}")
        say(pack(src, dst, progress=False, **options))  # the summary; a pack already complete is reused
        return PackedDataset(dst)

    if test_dir is None:
        full = packed(train_dir, "all")  # in PathDataset.from_folder's order: the same split
        train, test = (Subset(full, part) for part in split(len(full), args.seed))
        classes = full.classes
    else:
        train, test = packed(train_dir, "train"), packed(test_dir, "test")
        classes = train.classes
    # The pack keeps the folder's class order, so each RAM chunk is built from --block-size
    # runs of samples taken from random places: batches mix classes almost as a full shuffle.
    chunks = dict(ram_budget=args.ram_budget, block_size=args.block_size, seed=args.seed, num_workers=args.workers)
    loader = ChunkedLoader(train, args.batch_size, **chunks)
    say(f"packed: {loader.shuffle_quality()}")
    return loader, DataLoader(test, batch_size=args.batch_size, **loader_options(args)), classes or []


LOADERS = {"path": path_loaders, "preload": preload_loaders, "chunked": chunked_loaders, "packed": packed_loaders}


def setup_distributed(device: torch.device) -> torch.device:
    """Join the process group when run by torchrun; returns this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def say(*message: Any) -> None:
    """Print on rank 0 (or in the only process)."""
    if rank() == 0:
        print(*message)


def all_ranks(*totals: torch.Tensor) -> list[float]:
    """``totals`` (0-dim tensors) summed over the ranks (as they are without torchrun)."""
    both = torch.stack([total.double() for total in totals])
    if dist.is_initialized():
        dist.all_reduce(both)
    return both.tolist()


def report_skipped(args: argparse.Namespace, train_loader: Any, test_loader: Any) -> dict[str, int]:
    """With --on-error skip: the files skipped on all ranks, printed (and written) by rank 0."""
    counts = {}
    for name, loader in (("train", train_loader), ("test", test_loader)):
        if args.on_error == "skip" and getattr(loader, "errors", None) is not None:  # a packed test set has none
            merged = loader.errors.all_ranks()  # a collective: every rank takes part
            counts[name] = n = len(merged)
            if n:
                say(f"{name}: skipped {n} file(s) that could not be read, e.g. {merged[0].path}: {merged[0].cause}")
            if n and args.error_report and rank() == 0:
                stem, suffix = os.path.splitext(args.error_report)
                merged.write(args.error_report if name == "train" else f"{stem}-test{suffix}")
    return counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--mode", choices=tuple(LOADERS), default="path", help="how the data is held and read (default: path)")
    add("--data", help="your own DIR/<class>/<file> image folder (default: the digits)")
    add("--digits-dir", default=os.path.join("data", "digits"), help="where the digits are written and reused")
    add("--epochs", type=int, default=5)
    add("--batch-size", type=int, default=64)
    add("--lr", type=float, default=1e-3, help="Adam learning rate")
    add("--workers", type=int, default=0, help="loader worker processes")
    add("--image-size", type=int, default=28, help="images are cropped or resized to SxS")
    add("--augment", choices=("crop", "none"), help="--data, --mode path/chunked: crop (default) or resize images")
    add("--ram-budget", default="256KiB", help="--mode chunked/packed: bytes for the RAM chunks, e.g. 256KiB, 2GiB")
    add("--block-size", type=int, default=4, help="--mode packed: samples per contiguous read inside a chunk")
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add("--seed", type=int, default=0)
    add("--on-error", choices=("raise", "skip"), default="raise", help="skip: leave unreadable files out, list them")
    add("--max-skipped", type=float, default=0.1, help="with skip: stop past this fraction unreadable (default 0.1)")
    add("--error-report", metavar="FILE", help="with skip: write the skipped files as CSV (the test set's: FILE-test)")
    args = parser.parse_args(argv)
    if args.on_error == "skip" and args.mode == "preload":
        parser.error("--on-error skip needs --mode path, chunked or packed (preload reads every file up front)")
    # The digits are grey; a user's folder is read as RGB, so that grey, palette and RGBA files batch together.
    args.image_mode = "L" if args.data is None else "RGB"
    args.augment = args.augment or ("none" if args.data is None else "crop")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train and evaluate; return the configuration and one metrics dict per epoch."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    device = setup_distributed(torch.device(args.device))
    if rank() > 0:
        dist.barrier()  # rank 0 writes the data set (and the pack) first
    train_loader, test_loader, classes = LOADERS[args.mode](args)
    if rank() == 0 and dist.is_initialized():
        dist.barrier()
    in_channels, n_train, n_test = len(args.image_mode), len(train_loader.dataset), len(test_loader.dataset)
    model = Net(in_channels, len(classes)).to(device)
    if dist.is_initialized():  # gradients averaged over the ranks in each backward
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    ranks = f" ranks={dist.get_world_size()}" if dist.is_initialized() else ""
    say(
        f"mode={args.mode} device={device} workers={args.workers} train={n_train} test={n_test} "
        f"classes={len(classes)} in_channels={in_channels}{ranks}"
    )
    history = []
    for epoch in range(args.epochs):
        train_loader.sampler.set_epoch(epoch)  # on every rank, as with a DistributedSampler
        start = time.perf_counter()
        loss, seen = train(model, device, train_loader, optimizer)
        seconds = time.perf_counter() - start
        accuracy = test(model, device, test_loader)
        speed = seen / seconds
        history.append(dict(epoch=epoch + 1, seconds=seconds, samples_per_s=speed, loss=loss, test_acc=accuracy))
        say(
            f"epoch {epoch + 1}/{args.epochs}  {seconds:.1f}s  {speed:.0f} samples/s"
            f"  loss {loss:.3f}  test acc {accuracy:.3f}"
        )
    skipped = report_skipped(args, train_loader, test_loader)
    if isinstance(train_loader, ChunkedLoader):
        train_loader.close()  # stop loading ahead
    if dist.is_initialized():
        # DDP holds the gloo group in reference cycles: freed at interpreter exit, its worker threads
        # aborted the process ~1 run in 12 ("terminate called without an active exception"); free it now
        del model, optimizer
        gc.collect()
        dist.barrier()  # no rank tears the group down while another still uses it
        dist.destroy_process_group()
    result = dict(mode=args.mode, in_channels=in_channels, classes=classes, history=history, skipped=skipped)
    return result | dict(train_samples=n_train, test_samples=n_test)


if __name__ == "__main__":
    main()
