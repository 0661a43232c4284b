"""Tests for torchloader/_core/intraop.py: one intra-op thread in a loading thread only."""

from __future__ import annotations

import threading

import pytest
import torch

from torchloader._core.intraop import use_one_intraop_thread

openmp = pytest.mark.skipif(
    "parallel backend: OpenMP" not in torch.__config__.parallel_info(), reason="an OpenMP build of torch"
)


def in_thread(fn):
    result = {}
    thread = threading.Thread(target=lambda: result.update(value=fn()))
    thread.start()
    thread.join()
    return result["value"]


@openmp
@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs 2 intra-op threads to tell")
def test_the_calling_thread_gets_one_thread_and_no_other_thread_does():
    before = torch.get_num_threads()

    def loading_thread():
        done = use_one_intraop_thread()
        x = torch.ones(10**6)
        return done, torch.get_num_threads(), float((x + x).sum())

    assert in_thread(loading_thread) == (True, 1, 2e6)
    assert torch.get_num_threads() == before  # the training loop's thread
    assert in_thread(torch.get_num_threads) == before  # threads started later


def test_without_openmp_nothing_changes(monkeypatch):
    from torchloader._core import intraop

    intraop._omp_set_num_threads.cache_clear()
    monkeypatch.setattr(torch.__config__, "parallel_info", lambda: "ATen parallel backend: native thread pool")
    try:
        assert in_thread(use_one_intraop_thread) is False
    finally:
        intraop._omp_set_num_threads.cache_clear()
