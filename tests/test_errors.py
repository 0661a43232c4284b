"""Tests for torchloader/errors.py: SampleLoadError."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import pytest
from torch._utils import ExceptionWrapper

import torchloader
from torchloader.errors import SampleLoadError


def test_is_a_runtime_error_exported_from_the_package():
    assert issubclass(SampleLoadError, RuntimeError)
    assert torchloader.SampleLoadError is SampleLoadError


def test_single_message_constructor_leaves_index_and_path_unset():
    err = SampleLoadError("something went wrong")

    assert str(err) == "something went wrong"
    assert err.args == ("something went wrong",)
    assert err.index is None
    assert err.path is None


def test_index_and_path_are_keyword_attributes():
    err = SampleLoadError("msg", index=4, path="a/b.png")

    assert (err.index, err.path) == (4, "a/b.png")
    assert err.args == ("msg",)


def test_from_exception_names_index_path_and_cause():
    err = SampleLoadError.from_exception(7, "img/7.png", OSError("truncated"))

    assert str(err) == "could not load sample 7 from 'img/7.png': OSError: truncated"
    assert (err.index, err.path) == (7, "img/7.png")


def test_from_exception_accepts_a_path_object_and_stores_a_str():
    err = SampleLoadError.from_exception(0, Path("d") / "x.npy", ValueError("bad"))

    assert err.path == os.path.join("d", "x.npy")
    assert isinstance(err.path, str)
    assert str(err) == f"could not load sample 0 from {err.path!r}: ValueError: bad"


def test_from_exception_without_a_path():
    err = SampleLoadError.from_exception(3, None, KeyError("k"))

    assert str(err) == "could not load sample 3: KeyError: 'k'"
    assert err.path is None
    assert err.index == 3


def test_pickle_round_trip_keeps_message_index_and_path():
    err = SampleLoadError.from_exception(12, "x/12.jpg", OSError("boom"))

    back = pickle.loads(pickle.dumps(err))

    assert type(back) is SampleLoadError
    assert str(back) == str(err)
    assert (back.index, back.path) == (12, "x/12.jpg")


def test_pickle_round_trip_of_a_plain_message():
    back = pickle.loads(pickle.dumps(SampleLoadError("just text")))

    assert str(back) == "just text"
    assert (back.index, back.path) == (None, None)


def test_dataloader_exception_wrapper_rebuilds_it_with_its_own_type():
    # torch's workers send ExceptionWrapper(sys.exc_info()); the main process
    # calls reraise(), which builds exc_type(message) with one argument.
    try:
        raise SampleLoadError.from_exception(5, "d/5.png", OSError("nope"))
    except SampleLoadError:
        wrapper = ExceptionWrapper(sys.exc_info(), where="in DataLoader worker process 0")

    with pytest.raises(SampleLoadError) as info:
        wrapper.reraise()

    message = str(info.value)
    assert message.startswith("Caught SampleLoadError in DataLoader worker process 0.\nOriginal Traceback")
    assert "could not load sample 5 from 'd/5.png': OSError: nope" in message


def test_non_utf8_path_keeps_its_bytes_and_the_message_stays_printable():
    raw = b"data/caf\xff.png"
    path = os.fsdecode(raw)  # a str with a surrogate escape on POSIX

    err = SampleLoadError.from_exception(1, path, OSError("bad"))

    assert os.fsencode(err.path) == raw
    str(err).encode("utf-8")  # would raise UnicodeEncodeError on a lone surrogate
    assert str(err) == f"could not load sample 1 from {path!r}: OSError: bad"
    back = pickle.loads(pickle.dumps(err))
    assert os.fsencode(back.path) == raw
