"""How random an epoch's order is, as numbers relative to a full shuffle.

Two measures per batch, averaged over the epoch and divided by the same measure
of a full random permutation (so 1.0 means "as good as a full shuffle"):

- **label entropy**: the Shannon entropy of the labels in a batch. Data stored
  sorted by class (a class-per-folder tree) read in small chunks gives batches of
  one or two classes: entropy far below a full shuffle's, and training suffers.
- **spread**: the standard deviation of the batch's indices, i.e. how far apart
  in storage order its samples lie. A chunk of ``c`` of ``n`` samples has a
  spread of about ``c / n``.

``shuffle_buffer_order`` gives the order of a WebDataset-style shuffle buffer
(stream the data in storage order, emit a random element of a ``size``-sample
buffer) for comparison at the same RAM.

Choosing ``chunk_size``: label entropy is what training feels. If the data set is
stored in random order (e.g. packed after a shuffle), any chunk size gives ~1.0;
if it is sorted by class, entropy approaches 1.0 only when a chunk holds several
classes, i.e. ``chunk_size`` of a few times ``n / num_classes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from torchloader._core.subsets import ReadThrough

__all__ = [
    "POOR_ENTROPY",
    "PoorShuffleWarning",
    "ShuffleQuality",
    "batch_label_entropy",
    "batch_spread",
    "order_quality",
    "poor_shuffle_message",
    "shuffle_buffer_order",
    "shuffle_quality",
]

# Below this label entropy (x a full shuffle) a ChunkedLoader warns. With C
# classes in equal shares, a batch drawn from k of them has entropy log k, so
# 0.5 x log C means batches of about sqrt(C) classes or fewer (3 of 10, 32 of
# 1000): the "batches of 1-3 classes" case, while a chunk of a quarter of a
# class-sorted data set with block_size, or of most of it without, stays above.
POOR_ENTROPY = 0.5


class PoorShuffleWarning(UserWarning):
    """A loader's batches are far worse mixed than a full shuffle's (see ``shuffle_quality``)."""


def poor_shuffle_message(quality: ShuffleQuality, loader: object) -> str | None:
    """The warning for a loader whose batches' label entropy is below :data:`POOR_ENTROPY`, or None."""
    if quality.label_entropy is None or quality.label_entropy >= POOR_ENTROPY:
        return None
    chunk = getattr(loader, "chunk_size", "?")
    return (
        f"{type(loader).__name__}'s batches are poorly mixed: their label entropy is "
        f"{quality.label_entropy:.2f} of a full shuffle's (below {POOR_ENTROPY}: batches of a few "
        f"classes; chunk_size={chunk} of {quality.samples} samples, stored sorted by label?). "
        f"Training on such batches quietly degrades. Fix: block_size=... (e.g. block_size=64: "
        f"a chunk made of blocks from all over the data set), a larger ram_budget, or the samples "
        f"stored in a shuffled order (shuffle the list of paths once before building the "
        f"dataset or packing it); loader.shuffle_quality() measures it"
    )


@dataclass(frozen=True)
class ShuffleQuality:
    """Per-batch measures of an order, each relative to a full shuffle (1.0 = as random)."""

    label_entropy: float | None  # None without labels
    spread: float
    samples: int = 0  # in the order measured

    def __str__(self) -> str:
        entropy = "n/a" if self.label_entropy is None else f"{self.label_entropy:.2f}"
        return f"label entropy {entropy} x full shuffle, spread {self.spread:.3f} x full shuffle"


def _batches(order: np.ndarray, batch_size: int) -> np.ndarray:
    full = len(order) // batch_size * batch_size
    return order[:full].reshape(-1, batch_size)


def batch_label_entropy(order: np.ndarray, labels: np.ndarray, batch_size: int) -> float:
    """Mean Shannon entropy (bits) of the labels of each full batch of ``order``."""
    if len(order) < batch_size:
        return 0.0
    classes = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
    coded = classes[_batches(order, batch_size)]
    counts = np.zeros((len(coded), int(classes.max()) + 1))
    np.add.at(counts, (np.arange(len(coded))[:, None], coded), 1)
    p = counts / batch_size
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.nansum(-p * np.log2(p), axis=1).mean())


def batch_spread(order: np.ndarray, batch_size: int) -> float:
    """Mean standard deviation of the indices of each full batch of ``order``."""
    batches = _batches(order, batch_size)
    return float(batches.std(axis=1).mean()) if batches.size else 0.0


def shuffle_quality(
    order: np.ndarray, batch_size: int, labels: np.ndarray | None = None, *, seed: int = 0
) -> ShuffleQuality:
    """Label entropy and spread of ``order`` relative to a full shuffle of the same data.

    Example:
        >>> labels = np.repeat(np.arange(10), 100)  # stored sorted by class
        >>> print(shuffle_quality(np.arange(1000), 50, labels))
        label entropy 0.00 x full shuffle, spread 0.051 x full shuffle
    """
    order = np.asarray(order)
    reference = np.random.default_rng(seed).permutation(order)
    spread = batch_spread(order, batch_size) / max(batch_spread(reference, batch_size), 1e-12)
    entropy = None
    if labels is not None:
        labels = np.asarray(labels)
        full = batch_label_entropy(reference, labels, batch_size)
        entropy = batch_label_entropy(order, labels, batch_size) / full if full > 0 else 1.0
    return ShuffleQuality(entropy, spread, len(order))


def order_quality(order: np.ndarray, dataset: object, batch_size: int) -> ShuffleQuality:
    """:func:`shuffle_quality` of ``order`` over ``dataset``, with its labels (``labels``,
    or a 1-D ``y``); a ``Subset``'s order and labels are its dataset's."""
    through = ReadThrough(dataset)
    order, inner = through.inner_indices(order), through.dataset
    labels = getattr(inner, "labels", None)
    if labels is None and getattr(getattr(inner, "y", None), "ndim", 0) == 1:
        labels = inner.y.numpy()  # type: ignore[attr-defined]
    return shuffle_quality(order, batch_size, labels)


def shuffle_buffer_order(n: int, size: int, *, seed: int = 0) -> np.ndarray:
    """The order a shuffle buffer of ``size`` samples makes of ``0 .. n-1``.

    Samples stream in storage order into the buffer; each step emits a random
    buffered sample and refills its place (WebDataset's ``shuffle(size)``).
    """
    rng = np.random.default_rng(seed)
    buffer = list(range(min(size, n)))
    out = np.empty(n, dtype=np.int64)
    incoming = len(buffer)
    picks = rng.random(n)
    for k in range(n):
        j = int(picks[k] * len(buffer))
        out[k] = buffer[j]
        if incoming < n:
            buffer[j] = incoming
            incoming += 1
        else:
            buffer[j] = buffer[-1]
            buffer.pop()
    return out
