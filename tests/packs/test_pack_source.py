"""Tests for torchloader/packs/_source.py: what ``pack`` can read, and the options it records."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from helpers import china
from PIL import Image

from torchloader.packs._source import PackSource, open_source


def image_folder(root, sizes=((20, 24), (22, 30), (18, 26)), suffix=".png"):
    """``root/<cat|dog>/<i><suffix>``: crops of the sample photo, alternating classes."""
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = root / ("cat", "dog")[i % 2] / f"{i}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(china()[i * 10 : i * 10 + h, 50 : 50 + w]).save(path)
        paths.append(str(path))
    return str(root)


def npy_folder(root, count=3, dtype=np.float32):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        np.save(root / f"{i:02d}.npy", np.full((2, 3), i, dtype=dtype))
    return str(root)


def open_(src, size=None, crop=False, mode="RGB"):
    return open_source(src, size=size, crop=crop, mode=mode)


# --- the three kinds of source -----------------------------------------------------


def test_an_image_folder_gives_classes_labels_and_resized_images(tmp_path):
    src = image_folder(tmp_path / "src")

    source, options = open_(src, size=(8, 6))

    assert isinstance(source, PackSource) and source.images
    assert len(source) == 3
    assert source.classes == ["cat", "dog"]
    assert source.labels.tolist() == [0, 0, 1]  # cat: 0.png, 2.png; dog: 1.png
    assert [os.path.basename(source.path(i)) for i in range(3)] == ["0.png", "2.png", "1.png"]
    x, y = source[0]
    assert x.shape == (3, 8, 6) and x.dtype == torch.uint8 and int(y) == 0
    assert options == {"source": os.path.abspath(src), "size": [8, 6], "crop": False, "mode": "RGB"}


def test_mode_l_reads_one_channel(tmp_path):
    source, options = open_(image_folder(tmp_path / "src"), size=5, mode="L")

    assert source[1][0].shape == (1, 5, 5)
    assert options["mode"] == "L" and options["size"] == [5, 5]


def test_without_size_images_keep_their_own_size(tmp_path):
    source, options = open_(image_folder(tmp_path / "src"))

    assert [tuple(source[i][0].shape) for i in range(3)] == [(3, 20, 24), (3, 18, 26), (3, 22, 30)]
    assert options["size"] is None


def test_a_csv_gives_its_rows_in_order_with_class_name_labels(tmp_path):
    image_folder(tmp_path / "img")
    csv = tmp_path / "train.csv"
    csv.write_text("path,label\nimg/dog/1.png,dog\nimg/cat/0.png,cat\nimg/cat/2.png,dog\n")

    source, options = open_(str(csv), size=4, crop=True)

    assert source.images
    assert [source.path(i) for i in range(3)] == [
        str(tmp_path / "img" / "dog" / "1.png"),
        str(tmp_path / "img" / "cat" / "0.png"),
        str(tmp_path / "img" / "cat" / "2.png"),
    ]
    assert source.classes == ["cat", "dog"] and source.labels.tolist() == [1, 0, 1]
    assert options == {"source": str(csv), "size": [4, 4], "crop": True, "mode": "RGB"}


def test_a_folder_of_npy_files_gives_arrays_as_they_are_in_name_order(tmp_path):
    src = npy_folder(tmp_path / "arrays", dtype=np.int16)
    (tmp_path / "arrays" / "notes.txt").write_text("not an array")

    source, options = open_(src)

    assert not source.images
    assert source.labels is None and source.classes is None
    assert [os.path.basename(source.path(i)) for i in range(3)] == ["00.npy", "01.npy", "02.npy"]
    assert source[2].dtype == torch.int16 and source[2].tolist() == [[2, 2, 2], [2, 2, 2]]
    assert options == {"source": os.path.abspath(src), "size": None, "crop": False, "mode": None}


def test_class_folders_of_npy_files_are_labelled_arrays(tmp_path):
    for name in ("a", "b"):
        npy_folder(tmp_path / "src" / name, count=2)

    source, _ = open_(str(tmp_path / "src"))

    assert not source.images
    assert source.classes == ["a", "b"] and source.labels.tolist() == [0, 0, 1, 1]


def test_the_source_pickles_for_spawned_workers(tmp_path):
    source, _ = open_(image_folder(tmp_path / "src"), size=(8, 6))

    copy = pickle.loads(pickle.dumps(source))

    assert copy.images and len(copy) == 3 and copy.path(2) == source.path(2)
    assert torch.equal(copy[1][0], source[1][0])


# --- what cannot be packed ---------------------------------------------------------


def test_an_empty_folder_names_the_three_layouts(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        open_(str(tmp_path))
    assert str(err.value) == (
        f"nothing to pack in '{tmp_path}': expected class folders (root/<class>/<file>), "
        f"a .csv file of path,label rows, or .npy files"
    )


@pytest.mark.parametrize("name", ["missing", "table.txt"])
def test_a_path_that_is_neither_a_folder_nor_a_csv_is_refused(tmp_path, name):
    (tmp_path / "table.txt").write_text("path,label\n")
    src = str(tmp_path / name)

    with pytest.raises(FileNotFoundError) as err:
        open_(src)
    assert str(err.value) == f"'{src}' is neither a folder nor a .csv file"


def test_images_mixed_with_arrays_are_refused(tmp_path):
    src = image_folder(tmp_path / "src")
    np.save(tmp_path / "src" / "cat" / "extra.npy", np.zeros(2))

    with pytest.raises(ValueError) as err:
        open_(src)
    assert str(err.value) == f"'{src}' mixes images and other files (['.npy', '.png']); pack them separately"


def test_size_is_refused_for_arrays(tmp_path):
    src = npy_folder(tmp_path / "arrays")

    with pytest.raises(ValueError) as err:
        open_(src, size=(4, 4))
    assert str(err.value) == (
        f"size=(4, 4) resizes images, but '{src}' holds arrays (['.npy']); "
        f"leave size out: arrays are packed as they are"
    )


def test_crop_without_a_size_is_refused(tmp_path):
    with pytest.raises(ValueError) as err:
        open_(image_folder(tmp_path / "src"), crop=True)
    assert str(err.value) == "crop=True (--crop) cuts images to size=...; give a size too"


def test_an_unknown_mode_is_refused(tmp_path):
    with pytest.raises(ValueError) as err:
        open_(image_folder(tmp_path / "src"), mode="CMYK")
    assert str(err.value) == "mode must be one of ('RGB', 'L', 'RGBA', 'keep') (got 'CMYK')"
