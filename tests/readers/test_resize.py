"""Tests for torchloader/readers/resize.py: Resize, the transform pack and PathDataset share."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from helpers import china
from PIL import Image

from torchloader import Resize


def chw(array: np.ndarray) -> torch.Tensor:
    """An ``H x W x C`` (or ``H x W``) array as the ``C x H x W`` view readers return."""
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def photo(height, width, channels=3) -> np.ndarray:
    pixels = china()[100 : 100 + height, 200 : 200 + width]
    if channels == 1:
        return np.asarray(Image.fromarray(pixels).convert("L"))[:, :, None]
    if channels == 4:
        alpha = np.arange(height * width, dtype=np.uint8).reshape(height, width, 1)
        return np.concatenate([pixels, alpha], axis=2)
    return pixels


def pillow_resize(array: np.ndarray, height, width) -> np.ndarray:
    """The reference: Pillow's bilinear resize of the same pixels."""
    image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    out = np.asarray(image.resize((width, height), Image.BILINEAR))
    return out[:, :, None] if out.ndim == 2 else out


# --- shapes ------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("size, want", [(8, (8, 8)), ((5, 7), (5, 7)), ([9, 4], (9, 4))])
@pytest.mark.parametrize("crop", [False, True])
def test_output_has_the_size_and_keeps_channels_and_dtype(channels, size, want, crop):
    x = chw(photo(30, 44, channels))

    y = Resize(size, crop=crop)(x)

    assert y.shape == (channels, *want)
    assert y.dtype == torch.uint8


def test_one_int_is_a_square():
    x = chw(photo(30, 44))
    assert torch.equal(Resize(12)(x), Resize((12, 12))(x))


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_stretch_gives_pillows_bilinear_resize(channels):
    pixels = photo(30, 44, channels)

    y = Resize((13, 21))(chw(pixels))

    assert np.array_equal(y.permute(1, 2, 0).numpy(), pillow_resize(pixels, 13, 21))


def test_an_image_already_of_the_size_is_unchanged():
    pixels = photo(12, 16)
    assert np.array_equal(Resize((12, 16))(chw(pixels)).permute(1, 2, 0).numpy(), pixels)
    assert np.array_equal(Resize((12, 16), crop=True)(chw(pixels)).permute(1, 2, 0).numpy(), pixels)


def test_the_output_is_a_chw_view_of_fresh_memory():
    x = chw(photo(30, 44))
    y = Resize(8)(x)
    y.zero_()  # writable, and not the input's memory
    assert x.sum() > 0


# --- crop: keep the aspect ratio, cut the centre -----------------------------------


def test_crop_of_a_wide_image_cuts_the_sides_equally():
    pixels = photo(20, 60)

    y = Resize((20, 20), crop=True)(chw(pixels))

    assert np.array_equal(y.permute(1, 2, 0).numpy(), pixels[:, 20:40])


def test_crop_of_a_tall_image_cuts_top_and_bottom_equally():
    pixels = photo(50, 10)

    y = Resize((10, 10), crop=True)(chw(pixels))

    assert np.array_equal(y.permute(1, 2, 0).numpy(), pixels[20:30])


def test_crop_then_shrinks_the_centre_box():
    pixels = photo(40, 100)  # box of aspect 1:2 inside 40 x 100: 40 x 80, from column 10

    y = Resize((10, 20), crop=True)(chw(pixels))

    assert np.array_equal(y.permute(1, 2, 0).numpy(), pillow_resize(pixels[:, 10:90], 10, 20))


def test_crop_keeps_the_aspect_ratio_where_stretch_does_not():
    # A centred white square on black: cropping to a square keeps it square.
    pixels = np.zeros((40, 80, 1), dtype=np.uint8)
    pixels[10:30, 30:50] = 255

    cropped = Resize((20, 20), crop=True)(chw(pixels))[0].numpy()
    stretched = Resize((20, 20))(chw(pixels))[0].numpy()

    rows, cols = np.nonzero(cropped == 255)
    assert (rows.max() - rows.min()) == (cols.max() - cols.min())  # still a square
    rows, cols = np.nonzero(stretched == 255)
    assert (rows.max() - rows.min()) > (cols.max() - cols.min())  # squeezed sideways


# --- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, got",
    [
        (torch.zeros(3, 4, 4), "torch.float32 of shape (3, 4, 4)"),
        (torch.zeros(4, 4, dtype=torch.uint8), "torch.uint8 of shape (4, 4)"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), "torch.uint8 of shape (2, 3, 4, 4)"),
        (torch.zeros(5, 4, 4, dtype=torch.uint8), "torch.uint8 of shape (5, 4, 4)"),
        (torch.zeros(3, 4, 4, dtype=torch.int16), "torch.int16 of shape (3, 4, 4)"),
        (np.zeros((3, 4, 4), np.uint8), "ndarray"),
    ],
)
def test_refuses_what_is_not_a_uint8_chw_image(x, got):
    with pytest.raises(ValueError) as err:
        Resize(2)(x)
    assert str(err.value) == f"Resize takes a uint8 C x H x W tensor with 1 to 4 channels (got {got})"


@pytest.mark.parametrize("size", [0, -3, (4, 0), (0, 4)])
def test_refuses_sizes_below_one(size):
    with pytest.raises(ValueError) as err:
        Resize(size)
    assert str(err.value) == f"size must be positive (got {size!r})"


@pytest.mark.parametrize("size", ["32", 3.0, (1, 2, 3), (4,), True, (4, 2.5)])
def test_refuses_sizes_that_are_not_ints(size):
    with pytest.raises(TypeError) as err:
        Resize(size)
    assert str(err.value) == f"size must be an int or (height, width) of ints (got {size!r})"


# --- pickling and repr -------------------------------------------------------------


def test_pickles_and_gives_the_same_pixels():
    resize = Resize((9, 11), crop=True)
    x = chw(photo(30, 44))

    copy = pickle.loads(pickle.dumps(resize))

    assert repr(copy) == repr(resize) == "Resize((9, 11), crop=True)"
    assert torch.equal(copy(x), resize(x))


def test_size_is_stored_as_a_tuple_of_ints():
    resize = Resize([np.int64(5), 6])
    assert resize.size == (5, 6) and type(resize.size[0]) is int
    assert repr(Resize(4)) == "Resize((4, 4), crop=False)"
