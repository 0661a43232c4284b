import numpy as np
import pytest

from torchloader.order.chunking import epoch_order
from torchloader.order.quality import (
    batch_label_entropy,
    batch_spread,
    shuffle_buffer_order,
    shuffle_quality,
)

SORTED_LABELS = np.repeat(np.arange(10), 200)  # 2000 samples stored by class


def test_a_full_shuffle_scores_about_one():
    order = np.random.default_rng(5).permutation(2000)
    quality = shuffle_quality(order, 64, SORTED_LABELS)
    assert quality.label_entropy == pytest.approx(1.0, abs=0.03)
    assert quality.spread == pytest.approx(1.0, abs=0.03)


def test_storage_order_scores_zero_entropy_and_tiny_spread():
    quality = shuffle_quality(np.arange(2000), 50, SORTED_LABELS)  # 4 batches per class
    assert quality.label_entropy == 0.0
    assert quality.spread < 0.05


def test_chunk_spread_is_about_chunk_over_n_and_entropy_grows_with_chunk_size():
    results = []
    for chunk in (100, 400, 2000):
        order, _ = epoch_order(2000, chunk, seed=1)
        results.append(shuffle_quality(order, 50, SORTED_LABELS))
    assert [round(q.spread, 1) for q in results] == [0.1, 0.2, 1.0]
    entropies = [q.label_entropy for q in results]
    assert entropies == sorted(entropies) and entropies[0] < 0.3 and entropies[-1] > 0.95


def test_entropy_of_a_single_class_batch_is_zero_and_of_two_equal_classes_one_bit():
    labels = np.array([0, 0, 1, 1])
    assert batch_label_entropy(np.array([0, 1, 2, 3]), labels, 2) == 0.0
    assert batch_label_entropy(np.array([0, 2, 1, 3]), labels, 2) == 1.0
    assert batch_label_entropy(np.array([0, 1]), labels, 4) == 0.0  # no full batch


def test_spread_is_the_mean_std_of_full_batches():
    assert batch_spread(np.array([0, 2, 10, 10, 99]), 2) == 0.5
    assert shuffle_quality(np.arange(10), 4).label_entropy is None


@pytest.mark.parametrize(("n", "size"), [(1, 1), (10, 3), (100, 100), (100, 1000)])
def test_shuffle_buffer_emits_every_sample_once(n, size):
    order = shuffle_buffer_order(n, size, seed=2)
    assert sorted(order.tolist()) == list(range(n))


def test_shuffle_buffer_of_one_keeps_storage_order_and_depends_on_seed():
    assert shuffle_buffer_order(20, 1).tolist() == list(range(20))
    assert shuffle_buffer_order(50, 10, seed=1).tolist() != shuffle_buffer_order(50, 10, seed=2).tolist()


def test_blocks_raise_label_entropy_at_the_same_chunk_size():
    plain, _ = epoch_order(2000, 340, seed=0)
    blocks, _ = epoch_order(2000, 340, seed=0, block_size=16)
    plain_q, blocks_q = (shuffle_quality(o, 64, SORTED_LABELS) for o in (plain, blocks))
    assert plain_q.label_entropy < 0.6 < 0.9 < blocks_q.label_entropy
