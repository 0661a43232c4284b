"""Tests for torchloader/datasets/_labels.py: encode_labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchloader.datasets._labels import encode_labels


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint32])
def test_integer_arrays_become_int64_without_classes(dtype):
    labels, classes = encode_labels(np.array([3, 0, 2], dtype=dtype), expected_len=3)

    assert labels.dtype == np.int64
    assert labels.tolist() == [3, 0, 2]
    assert classes is None


def test_python_ints_and_tensors_are_accepted():
    from_list, _ = encode_labels([1, 0, 1], expected_len=3)
    from_tensor, classes = encode_labels(torch.tensor([1, 0, 1]), expected_len=3)

    assert from_list.tolist() == from_tensor.tolist() == [1, 0, 1]
    assert from_tensor.dtype == np.int64
    assert classes is None


def test_negative_integer_labels_are_kept():
    labels, _ = encode_labels([-1, 2], expected_len=2)

    assert labels.tolist() == [-1, 2]


def test_class_names_become_indices_into_their_sorted_set():
    labels, classes = encode_labels(["dog", "cat", "dog", "bird"], expected_len=4)

    assert classes == ["bird", "cat", "dog"]
    assert labels.tolist() == [2, 1, 2, 0]
    assert labels.dtype == np.int64
    assert all(type(c) is str for c in classes)


def test_class_names_sort_like_sorted_str():
    names = ["b", "B", "a-b", "a", "a b", "_x", "10", "9"]

    labels, classes = encode_labels(names, expected_len=len(names))

    assert classes == sorted(names)
    assert [classes[i] for i in labels] == names


def test_object_array_of_str_is_treated_as_class_names():
    labels, classes = encode_labels(np.array(["y", "x"], dtype=object), expected_len=2)

    assert classes == ["x", "y"]
    assert labels.tolist() == [1, 0]


def test_wrong_length_is_refused_with_the_shapes():
    with pytest.raises(ValueError) as info:
        encode_labels([0, 1], expected_len=3)

    assert str(info.value) == ("labels must be one label per path: expected shape (3,), got (2,)")


def test_two_dimensional_labels_are_refused():
    with pytest.raises(ValueError) as info:
        encode_labels(np.zeros((3, 1), dtype=np.int64), expected_len=3)

    assert str(info.value) == ("labels must be one label per path: expected shape (3,), got (3, 1)")


def test_float_labels_are_refused_not_rounded():
    with pytest.raises(TypeError) as info:
        encode_labels([0.0, 1.5], expected_len=2)

    assert str(info.value) == (
        "labels must be integers or class names (got dtype float64); "
        "convert them with labels.astype(int) if they are whole numbers"
    )


def test_bool_labels_are_refused():
    with pytest.raises(TypeError, match=r"got dtype bool"):
        encode_labels([True, False], expected_len=2)


def test_none_among_labels_is_refused():
    with pytest.raises(TypeError, match=r"got dtype object"):
        encode_labels(["cat", None], expected_len=2)


def test_no_labels_for_no_paths():
    labels, classes = encode_labels([], expected_len=0)

    assert labels.dtype == np.int64
    assert labels.shape == (0,)
    assert classes is None


def test_a_list_mixing_integers_and_names_is_refused_not_made_all_names():
    with pytest.raises(TypeError) as info:
        encode_labels([10, 2, "cat"], expected_len=3)

    assert str(info.value) == (
        "labels[0] is 10 (int), but other labels are class names (str); "
        "give every label as an integer, or every label as a name"
    )


def test_a_float_among_names_is_refused():
    with pytest.raises(TypeError, match=r"^labels\[1\] is 2\.0 \(float\), but other labels are class names"):
        encode_labels(("cat", 2.0), expected_len=2)


def test_numpy_str_names_and_string_arrays_stay_class_names():
    from_list, classes = encode_labels(["b", np.str_("a")], expected_len=2)
    from_array, array_classes = encode_labels(np.array(["10", "cat"]), expected_len=2)

    assert (from_list.tolist(), classes) == ([1, 0], ["a", "b"])
    assert (from_array.tolist(), array_classes) == ([0, 1], ["10", "cat"])
