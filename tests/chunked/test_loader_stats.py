"""Tests for torchloader/chunked/stats.py: LoaderStats, the counters of a ChunkedLoader."""

from __future__ import annotations

import pickle
import threading

from torchloader.chunked.stats import LoaderStats

FIELDS = [
    "chunks_loaded",
    "samples_loaded",
    "bytes_loaded",
    "load_seconds",
    "wait_seconds",
    "first_chunk_wait_seconds",
    "peak_buffer_bytes",
    "samples_skipped",
]


def test_a_new_stats_object_counts_nothing():
    assert LoaderStats().as_dict() == dict.fromkeys(FIELDS, 0)


def test_as_dict_has_the_public_counters_only_in_declaration_order():
    assert list(LoaderStats().as_dict()) == FIELDS


def test_add_chunk_sums_counts_and_times_and_keeps_the_peak():
    stats = LoaderStats()
    stats.add_chunk(8, 800, 0.5, peak_bytes=1600)
    stats.add_chunk(3, 300, 0.25, peak_bytes=1200)  # a lower peak does not lower it

    assert (stats.chunks_loaded, stats.samples_loaded, stats.bytes_loaded) == (2, 11, 1100)
    assert stats.load_seconds == 0.75
    assert stats.peak_buffer_bytes == 1600


def test_add_wait_sums_the_waits():
    stats = LoaderStats()
    stats.add_wait(0.125)
    stats.add_wait(0.25)
    assert stats.wait_seconds == 0.375


def test_reset_zeroes_every_counter_and_keeps_a_working_lock():
    stats = LoaderStats()
    stats.add_chunk(8, 800, 0.5, peak_bytes=1600)
    stats.add_wait(1.0)
    stats.first_chunk_wait_seconds = 0.5

    stats.reset()

    assert stats.as_dict() == dict.fromkeys(FIELDS, 0)
    stats.add_chunk(1, 10, 0.0, peak_bytes=10)
    assert stats.samples_loaded == 1


def test_counts_are_exact_when_threads_add_at_once():
    stats = LoaderStats()

    def add():
        for _ in range(2000):
            stats.add_chunk(2, 3, 0.0, peak_bytes=5)
            stats.add_wait(0.0)

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert (stats.chunks_loaded, stats.samples_loaded, stats.bytes_loaded) == (8000, 16000, 24000)


def test_pickles_without_its_lock_and_gets_a_new_one():
    stats = LoaderStats()
    stats.add_chunk(4, 400, 0.5, peak_bytes=800)
    stats.add_wait(0.25)

    copy = pickle.loads(pickle.dumps(stats))

    assert copy == stats
    assert copy.as_dict() == stats.as_dict()
    assert copy._lock is not stats._lock
    copy.add_chunk(1, 100, 0.0, peak_bytes=0)  # the new lock works
    assert (copy.chunks_loaded, stats.chunks_loaded) == (2, 1)


def test_repr_shows_the_counters_but_not_the_lock():
    text = repr(LoaderStats(chunks_loaded=2))
    assert text.startswith("LoaderStats(chunks_loaded=2, samples_loaded=0, ")
    assert "lock" not in text
