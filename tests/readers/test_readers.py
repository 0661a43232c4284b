"""Tests for torchloader/readers/image.py: one file -> one tensor."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from helpers import china
from PIL import Image, features

from torchloader.readers import _files
from torchloader.readers import image as readers
from torchloader.readers._tensor import to_tensor
from torchloader.readers.arrays import NpyReader, NpzReader, PtReader
from torchloader.readers.image import ImageReader
from torchloader.readers.suffix import IMAGE_SUFFIXES, SuffixReader

try:
    import simplejpeg
except ImportError:  # pragma: no cover - simplejpeg is a dev dependency
    simplejpeg = None

needs_simplejpeg = pytest.mark.skipif(simplejpeg is None, reason="needs simplejpeg")


def photo(height=48, width=64, top=120, left=230) -> np.ndarray:
    """A crop of a real photograph (edges, texture, smooth sky), uint8 H x W x 3."""
    return china()[top : top + height, left : left + width].copy()


def save(path, array_or_image, **options):
    image = array_or_image
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image.save(path, **options)
    return str(path)


def pillow_pixels(path, mode) -> np.ndarray:
    with Image.open(path) as image:
        array = np.asarray(image.convert(mode))
    return array if array.ndim == 3 else array[:, :, None]


def chw(array: np.ndarray) -> torch.Tensor:
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


class _Tripwire:
    """Unpickling it creates a file: proof that a loader ran pickled code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_trip, (self.path,))


def _trip(path):
    with open(path, "w") as f:
        f.write("unpickled")
    return path


# --- ImageReader: options ------------------------------------------------------


def test_image_reader_defaults_and_repr():
    reader = ImageReader()

    assert (reader.mode, reader.decoder) == ("RGB", "auto")
    assert repr(ImageReader("L", decoder="pillow")) == "ImageReader(mode='L', decoder='pillow', exif_transpose=False)"


def test_image_reader_refuses_an_unknown_mode():
    with pytest.raises(ValueError) as info:
        ImageReader("CMYK")

    assert str(info.value) == ("mode must be one of ('RGB', 'L', 'RGBA', 'keep') (got 'CMYK')")


def test_image_reader_refuses_an_unknown_decoder():
    with pytest.raises(ValueError) as info:
        ImageReader(decoder="turbo")

    assert str(info.value) == "decoder must be 'auto' or 'pillow' (got 'turbo')"


# --- ImageReader: lossless formats give the stored pixels ---------------------


LOSSLESS = [".png", ".bmp", ".tif", ".tiff"] + ([".webp"] if features.check("webp") else [])


@pytest.mark.parametrize("suffix", LOSSLESS)
def test_rgb_image_round_trips_exactly_as_uint8_chw(tmp_path, suffix):
    pixels = photo(20, 30)
    options = {"lossless": True} if suffix == ".webp" else {}
    path = save(tmp_path / f"a{suffix}", pixels, **options)

    x = ImageReader()(path)

    assert x.dtype == torch.uint8
    assert x.shape == (3, 20, 30)
    assert x.permute(1, 2, 0).is_contiguous()  # a CHW view of HWC pixels, like pil_to_tensor
    assert torch.equal(x, chw(pixels))


def test_modes_give_1_3_4_channels(tmp_path):
    rgba = np.dstack([photo(10, 12), np.arange(120, dtype=np.uint8).reshape(10, 12)])
    path = save(tmp_path / "a.png", rgba)

    rgb, grey, with_alpha, kept = (ImageReader(m)(path) for m in ("RGB", "L", "RGBA", "keep"))

    assert torch.equal(rgb, chw(rgba[:, :, :3]))  # alpha dropped, not composited
    assert torch.equal(grey, chw(pillow_pixels(path, "L")))
    assert grey.shape == (1, 10, 12)
    assert torch.equal(with_alpha, chw(rgba))
    assert torch.equal(kept, chw(rgba))


def test_greyscale_png_in_rgb_mode_repeats_the_channel(tmp_path):
    grey = photo(8, 9)[:, :, 1]
    path = save(tmp_path / "g.png", grey)

    x = ImageReader()(path)
    one = ImageReader("L")(path)
    kept = ImageReader("keep")(path)

    assert torch.equal(x, chw(np.dstack([grey] * 3)))
    assert torch.equal(one, chw(grey))
    assert torch.equal(kept, chw(grey))


def test_l_mode_tensor_owns_writable_memory_without_warning(tmp_path):
    # np.asarray(PIL image) is read-only; torch warns on that (an error here).
    path = save(tmp_path / "g.png", photo(8, 9)[:, :, 0])

    x = ImageReader("L", decoder="pillow")(path)
    x += 1  # must not touch Pillow's buffer or warn

    assert x.shape == (1, 8, 9)


def test_keep_mode_keeps_16_bit_images(tmp_path):
    deep = (np.arange(12 * 10).reshape(12, 10) * 500).astype(np.uint16)
    png = save(tmp_path / "d.png", deep)
    big_endian = Image.frombytes("I;16B", (10, 12), deep.astype(">u2").tobytes())
    tif = save(tmp_path / "d.tif", big_endian)

    for path in (png, tif):
        x = ImageReader("keep")(path)
        assert x.dtype == torch.uint16
        assert x.shape == (1, 12, 10)
        assert np.array_equal(x[0].numpy(), deep)


def _palette_image(transparent: bool) -> Image.Image:
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., 0] = np.arange(8) * 30
    rgba[..., 1] = np.arange(6)[:, None] * 40
    if not transparent:
        return Image.fromarray(rgba[..., :3]).quantize(8)
    rgba[..., 3] = np.where(np.arange(8) % 2, 255, 128)  # partial: a tRNS table
    return Image.fromarray(rgba).quantize(8)


def test_palette_png_with_transparency_reads_in_every_mode_without_warning(tmp_path):
    path = save(tmp_path / "p.png", _palette_image(transparent=True))
    with Image.open(path) as image:
        assert image.mode == "P" and isinstance(image.info["transparency"], bytes)
        rgba = np.asarray(image.convert("RGBA"))

    rgb = ImageReader("RGB")(path)
    grey = ImageReader("L")(path)

    assert torch.equal(rgb, chw(rgba[:, :, :3]))
    assert torch.equal(grey, chw(np.asarray(Image.fromarray(rgba).convert("L"))))
    assert torch.equal(ImageReader("RGBA")(path), chw(rgba))
    assert torch.equal(ImageReader("keep")(path), chw(rgba))


def test_keep_mode_expands_a_palette_without_transparency_to_rgb(tmp_path):
    path = save(tmp_path / "p.gif", _palette_image(transparent=False))

    kept = ImageReader("keep")(path)

    assert kept.shape == (3, 6, 8)
    assert torch.equal(kept, chw(pillow_pixels(path, "RGB")))


def test_image_reader_accepts_a_path_object(tmp_path):
    path = save(tmp_path / "a.jpg", photo(8, 8))

    assert torch.equal(ImageReader()(tmp_path / "a.jpg"), ImageReader()(path))


# --- JPEG: libjpeg-turbo and Pillow give identical pixels ------------------------


@needs_simplejpeg
@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:2", "4:2:0"])
@pytest.mark.parametrize("size", [(48, 64), (37, 53)])  # odd sizes pad the chroma blocks
def test_rgb_jpeg_decodes_identically_through_simplejpeg_and_pillow(tmp_path, turbo_calls, subsampling, size):
    path = save(tmp_path / "a.jpg", photo(*size), quality=90, subsampling=subsampling)

    turbo = ImageReader()(path)
    pillow = ImageReader(decoder="pillow")(path)

    assert turbo_calls == ["RGB"]  # the fast path was taken, once
    assert turbo.shape == (3, *size)
    assert torch.equal(turbo, pillow)
    assert torch.equal(pillow, chw(pillow_pixels(path, "RGB")))


@needs_simplejpeg
def test_progressive_jpeg_decodes_identically(tmp_path, turbo_calls):
    path = save(tmp_path / "a.JPEG", photo(), progressive=True, quality=80)

    assert torch.equal(ImageReader()(path), ImageReader(decoder="pillow")(path))
    assert turbo_calls == ["RGB"]


@needs_simplejpeg
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_greyscale_jpeg_decodes_identically(tmp_path, turbo_calls, mode):
    path = save(tmp_path / "g.jpg", Image.fromarray(photo()).convert("L"))

    turbo = ImageReader(mode)(path)
    pillow = ImageReader(mode, decoder="pillow")(path)

    assert turbo_calls == [{"RGB": "RGB", "L": "GRAY"}[mode]]
    assert turbo.shape == ({"RGB": 3, "L": 1}[mode], 48, 64)
    assert torch.equal(turbo, pillow)


@needs_simplejpeg
def test_l_mode_of_a_colour_jpeg_goes_through_pillow(tmp_path, turbo_calls):
    path = save(tmp_path / "a.jpg", photo(), quality=90)

    x = ImageReader("L")(path)

    assert turbo_calls == []  # libjpeg's luma differs from Pillow's convert("L")
    assert torch.equal(x, ImageReader("L", decoder="pillow")(path))
    assert torch.equal(x, chw(pillow_pixels(path, "L")))


@needs_simplejpeg
@pytest.mark.parametrize("mode", ["RGB", "L", "keep"])
def test_cmyk_jpeg_goes_through_pillow(tmp_path, turbo_calls, mode):
    path = save(tmp_path / "k.jpg", Image.fromarray(photo()).convert("CMYK"))

    x = ImageReader(mode)(path)

    assert turbo_calls == []
    assert torch.equal(x, ImageReader(mode, decoder="pillow")(path))
    assert x.shape[0] == {"RGB": 3, "L": 1, "keep": 4}[mode]


@needs_simplejpeg
@pytest.mark.parametrize("mode", ["RGBA", "keep"])
def test_other_modes_of_a_colour_jpeg_go_through_pillow(tmp_path, turbo_calls, mode):
    path = save(tmp_path / "a.jpg", photo(), quality=90)

    x = ImageReader(mode)(path)

    assert turbo_calls == []
    assert x.shape[0] == {"RGBA": 4, "keep": 3}[mode]
    assert torch.equal(x, ImageReader(mode, decoder="pillow")(path))


@needs_simplejpeg
def test_decoder_pillow_never_uses_simplejpeg(tmp_path, turbo_calls):
    path = save(tmp_path / "a.jpg", photo())

    ImageReader(decoder="pillow")(path)

    assert turbo_calls == []


@needs_simplejpeg
def test_a_png_named_jpg_falls_back_to_pillow(tmp_path, turbo_calls):
    pixels = photo(10, 11)
    path = tmp_path / "really_a_png.jpg"
    Image.fromarray(pixels).save(path, format="PNG")

    assert torch.equal(ImageReader()(str(path)), chw(pixels))
    assert turbo_calls == []


def test_without_simplejpeg_jpeg_decodes_through_pillow(tmp_path, monkeypatch):
    path = save(tmp_path / "a.jpg", photo(), subsampling="4:2:0")
    expected = chw(pillow_pixels(path, "RGB"))
    monkeypatch.setattr(readers, "simplejpeg", None)

    for mode in ("RGB", "L"):
        x = ImageReader(mode)(path)
        assert torch.equal(x, ImageReader(mode, decoder="pillow")(path))
    assert torch.equal(ImageReader()(path), expected)


# --- read_into: a JPEG decoded straight into a channels-last slot -----------------


def channels_last_slot(channels, height, width) -> np.ndarray:
    """The H x W x C memory of a channels-last slot, as batch and chunk buffers have."""
    return np.full((height, width, channels), 7, dtype=np.uint8)


@needs_simplejpeg
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_read_into_decodes_a_fitting_jpeg_in_place_with_the_readers_pixels(tmp_path, turbo_calls, mode):
    pixels = photo()
    if mode == "L":
        pixels = np.asarray(Image.fromarray(pixels).convert("L"))
    path = save(tmp_path / "a.jpg", pixels, quality=90)
    out = channels_last_slot(3 if mode == "RGB" else 1, 48, 64)

    assert ImageReader(mode).read_into(path, out) is True
    assert torch.equal(torch.from_numpy(out).permute(2, 0, 1), ImageReader(mode, decoder="pillow")(path))
    assert len(turbo_calls) == 1


@needs_simplejpeg
@pytest.mark.parametrize(
    ("case", "reader", "out"),
    [
        ("another size", ImageReader(), channels_last_slot(3, 40, 64)),
        ("another channel count", ImageReader(), channels_last_slot(1, 48, 64)),
        ("a C x H x W slot", ImageReader(), np.zeros((3, 48, 64), np.uint8)),
        ("a non-contiguous slot", ImageReader(), np.zeros((48, 64, 6), np.uint8)[:, :, ::2]),
        ("another dtype", ImageReader(), channels_last_slot(3, 48, 64).astype(np.float32)),
        ("decoder='pillow'", ImageReader(decoder="pillow"), channels_last_slot(3, 48, 64)),
        ("mode RGBA", ImageReader("RGBA"), channels_last_slot(4, 48, 64)),
        ("L of a colour JPEG", ImageReader("L"), channels_last_slot(1, 48, 64)),
    ],
)
def test_read_into_declines_and_writes_nothing_where_it_would_not_be_exact(tmp_path, turbo_calls, case, reader, out):
    path = save(tmp_path / "a.jpg", photo(), quality=90)
    before = out.copy()

    assert reader.read_into(path, out) is False, case
    assert np.array_equal(out, before)
    assert turbo_calls == []


@needs_simplejpeg
def test_read_into_declines_cmyk_pngs_and_broken_jpegs(tmp_path, turbo_calls):
    cmyk = save(tmp_path / "k.jpg", Image.fromarray(photo()).convert("CMYK"))
    png = save(tmp_path / "p.png", photo())
    broken = tmp_path / "b.jpg"
    broken.write_bytes(b"not a jpeg")

    for path in (cmyk, png, str(broken)):
        assert ImageReader().read_into(path, channels_last_slot(3, 48, 64)) is False
    assert turbo_calls == []


@needs_simplejpeg
def test_read_into_leaves_images_over_the_pixel_limit_to_pillow(tmp_path, monkeypatch, turbo_calls):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = save(tmp_path / "b.jpg", photo(50, 50))

    assert ImageReader().read_into(path, channels_last_slot(3, 50, 50)) is False
    assert turbo_calls == []


@needs_simplejpeg
def test_suffix_reader_read_into_uses_the_suffixes_reader(tmp_path):
    jpeg = save(tmp_path / "a.jpg", photo(), quality=90)
    npy = tmp_path / "a.npy"
    np.save(npy, photo())
    reader = SuffixReader()

    assert reader.read_into(jpeg, channels_last_slot(3, 48, 64)) is True
    assert reader.read_into(str(npy), channels_last_slot(3, 48, 64)) is False  # NpyReader has none
    assert SuffixReader({".jpg": ImageReader(decoder="pillow")}).read_into(jpeg, channels_last_slot(3, 48, 64)) is False


# --- decompression-bomb guard ----------------------------------------------------


@pytest.fixture
def small_pixel_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    return 1000


def _bomb_files(tmp_path, height, width):
    pixels = photo(height, width)
    return [save(tmp_path / "b.jpg", pixels), save(tmp_path / "b.png", pixels)]


@pytest.mark.parametrize("decoder", ["auto", "pillow"])
def test_images_over_twice_the_pixel_limit_are_refused(tmp_path, small_pixel_limit, decoder):
    for path in _bomb_files(tmp_path, 50, 50):  # 2500 > 2 x 1000
        with pytest.raises(Image.DecompressionBombError):
            ImageReader(decoder=decoder)(path)


@needs_simplejpeg
def test_a_jpeg_bomb_never_reaches_simplejpeg(tmp_path, small_pixel_limit, turbo_calls):
    path = save(tmp_path / "b.jpg", photo(50, 50))

    with pytest.raises(Image.DecompressionBombError):
        ImageReader()(path)
    assert turbo_calls == []


@pytest.mark.parametrize("decoder", ["auto", "pillow"])
def test_images_between_one_and_two_times_the_limit_warn(tmp_path, small_pixel_limit, decoder):
    for path in _bomb_files(tmp_path, 30, 40):  # 1000 < 1200 <= 2000
        with pytest.warns(Image.DecompressionBombWarning):
            x = ImageReader(decoder=decoder)(path)
        assert x.shape == (3, 30, 40)


def test_images_within_the_limit_read_silently(tmp_path, small_pixel_limit):
    for path in _bomb_files(tmp_path, 25, 40):  # exactly 1000 pixels
        assert ImageReader()(path).shape == (3, 25, 40)


# --- NpyReader ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "float16", "float32", "float64", "bool"])
def test_npy_keeps_dtype_shape_and_values(tmp_path, dtype):
    array = (np.arange(24).reshape(2, 3, 4) % 7).astype(dtype)
    np.save(tmp_path / "a.npy", array)

    x = NpyReader()(str(tmp_path / "a.npy"))

    assert x.dtype == torch.from_numpy(array).dtype
    assert np.array_equal(x.numpy(), array)


def test_npy_scalar_and_fortran_order(tmp_path):
    np.save(tmp_path / "s.npy", np.float32(2.5))
    np.save(tmp_path / "f.npy", np.asfortranarray(np.arange(6.0).reshape(2, 3)))

    assert NpyReader()(str(tmp_path / "s.npy")).shape == ()
    assert NpyReader()(str(tmp_path / "f.npy")).tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("mmap", [False, True])
def test_big_endian_npy_is_converted_to_native(tmp_path, mmap):
    array = np.arange(6, dtype=">i4").reshape(2, 3)
    np.save(tmp_path / "b.npy", array)

    x = NpyReader(mmap=mmap)(str(tmp_path / "b.npy"))

    assert x.dtype == torch.int32
    assert x.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_mmap_reads_the_same_values_and_never_writes_the_file(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = str(tmp_path / "a.npy")
    np.save(path, array)
    with open(path, "rb") as f:
        before = f.read()

    x = NpyReader(mmap=True)(path)
    assert torch.equal(x, NpyReader()(path))
    x.fill_(-1)  # copy-on-write: the file keeps its bytes
    del x

    with open(path, "rb") as f:
        assert f.read() == before


@pytest.mark.parametrize("mmap", [False, True])
def test_object_npy_is_refused_without_unpickling(tmp_path, mmap):
    tripwire = tmp_path / "tripped"
    path = str(tmp_path / "o.npy")
    np.save(path, np.array([_Tripwire(str(tripwire))], dtype=object), allow_pickle=True)

    with pytest.raises(ValueError) as info:
        NpyReader(mmap=mmap)(path)

    assert str(info.value) == (
        f"{path!r} holds Python objects, which only unpickling can read"
        if mmap
        else "Object arrays cannot be loaded when allow_pickle=False"
    )
    assert not tripwire.exists()


def test_npy_reader_repr():
    assert repr(NpyReader()) == "NpyReader(mmap=False)"
    assert repr(NpyReader(mmap=True)) == "NpyReader(mmap=True)"


# --- NpzReader ------------------------------------------------------------------


@pytest.mark.parametrize("save_npz", [np.savez, np.savez_compressed])
def test_npz_with_one_array_needs_no_key(tmp_path, save_npz):
    save_npz(tmp_path / "a.npz", image=np.arange(6, dtype=np.uint8).reshape(2, 3))

    x = NpzReader()(str(tmp_path / "a.npz"))

    assert x.dtype == torch.uint8
    assert x.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_npz_with_several_arrays_needs_a_key(tmp_path):
    path = str(tmp_path / "a.npz")
    np.savez(path, y=np.zeros(2), x=np.ones(3, dtype=">f8"))

    with pytest.raises(KeyError) as info:
        NpzReader()(path)

    assert info.value.args[0] == (f"{path!r} holds 2 arrays ['x', 'y']; pick one with reader=NpzReader(key=...)")
    x = NpzReader(key="x")(path)
    assert x.dtype == torch.float64
    assert x.tolist() == [1.0, 1.0, 1.0]


def test_npz_missing_key_lists_the_keys(tmp_path):
    path = str(tmp_path / "a.npz")
    np.savez(path, y=np.zeros(2), x=np.ones(3))

    with pytest.raises(KeyError) as info:
        NpzReader(key="z")(path)

    assert info.value.args[0] == f"{path!r} has no array 'z' (it has ['x', 'y'])"


def test_object_array_in_npz_is_refused_without_unpickling(tmp_path):
    tripwire = tmp_path / "tripped"
    path = str(tmp_path / "o.npz")
    np.savez(path, a=np.array([_Tripwire(str(tripwire))], dtype=object))

    with pytest.raises(ValueError, match="Object arrays cannot be loaded when allow_pickle=False"):
        NpzReader()(path)
    assert not tripwire.exists()


def test_npz_reader_repr():
    assert repr(NpzReader()) == "NpzReader(key=None)"
    assert repr(NpzReader("x")) == "NpzReader(key='x')"


# --- PtReader -------------------------------------------------------------------


def test_pt_reads_a_saved_tensor(tmp_path):
    tensor = torch.arange(12, dtype=torch.int16).reshape(3, 4)
    torch.save(tensor, tmp_path / "a.pt")

    x = PtReader()(str(tmp_path / "a.pt"))

    assert torch.equal(x, tensor)
    assert x.dtype == torch.int16


def test_pt_reads_a_saved_view_as_the_view(tmp_path):
    torch.save(torch.arange(100)[10:13], tmp_path / "v.pt")

    assert PtReader()(str(tmp_path / "v.pt")).tolist() == [10, 11, 12]


def test_pt_holding_a_non_tensor_is_refused_with_a_clear_message(tmp_path):
    path = str(tmp_path / "d.pt")
    torch.save({"x": torch.zeros(2)}, path)

    with pytest.raises(TypeError) as info:
        PtReader()(path)

    assert str(info.value) == (f"{path!r} holds a dict, expected a tensor; pass a reader that picks the tensor out")


def test_pt_holding_a_pickled_class_is_refused_without_running_it(tmp_path):
    tripwire = tmp_path / "tripped"
    path = str(tmp_path / "evil.pt")
    torch.save(_Tripwire(str(tripwire)), path)

    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        PtReader()(path)
    assert not tripwire.exists()


def test_pt_reader_repr():
    assert repr(PtReader()) == "PtReader()"


# --- SuffixReader ---------------------------------------------------------------


def test_suffix_reader_knows_images_arrays_and_tensors():
    reader = SuffixReader()

    assert reader.suffixes == tuple(sorted(IMAGE_SUFFIXES + (".npy", ".npz", ".pt")))
    assert set(IMAGE_SUFFIXES) == {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".gif", ".webp", ".tif", ".tiff"}
    assert repr(reader) == f"SuffixReader(suffixes={list(reader.suffixes)})"


def test_suffix_reader_dispatches_case_insensitively(tmp_path):
    pixels = photo(6, 7)
    save(tmp_path / "a.PNG", pixels)
    with open(tmp_path / "b.NPY", "wb") as f:  # np.save would append ".npy"
        np.save(f, np.arange(3))
    with open(tmp_path / "c.Npz", "wb") as f:
        np.savez(f, a=np.arange(2))
    torch.save(torch.ones(2), tmp_path / "d.PT")
    reader = SuffixReader()

    assert torch.equal(reader(str(tmp_path / "a.PNG")), chw(pixels))
    assert reader(str(tmp_path / "b.NPY")).tolist() == [0, 1, 2]
    assert reader(str(tmp_path / "c.Npz")).tolist() == [0, 1]
    assert reader(str(tmp_path / "d.PT")).tolist() == [1.0, 1.0]


def test_suffix_reader_entries_replace_and_extend_the_defaults(tmp_path):
    save(tmp_path / "a.png", photo(6, 7))
    (tmp_path / "b.txt").write_text("1 2 3")

    def read_txt(path):
        with open(path) as f:
            return np.array(f.read().split(), dtype=np.int64)

    reader = SuffixReader({".PNG": ImageReader("L"), ".txt": read_txt})

    assert reader(str(tmp_path / "a.png")).shape == (1, 6, 7)
    assert reader(str(tmp_path / "b.txt")).tolist() == [1, 2, 3]
    assert ".txt" in reader.suffixes and ".npy" in reader.suffixes


def test_suffix_reader_names_an_unknown_suffix_and_the_fix(tmp_path):
    reader = SuffixReader()

    with pytest.raises(ValueError) as info:
        reader(str(tmp_path / "a.csv"))

    assert str(info.value) == (
        f"no reader for suffix '.csv' (known: {', '.join(reader.suffixes)}); "
        f"pass reader=... or SuffixReader({{'.csv': your_reader}})"
    )


def test_suffix_reader_refuses_a_bad_mapping():
    with pytest.raises(ValueError) as info:
        SuffixReader({"png": ImageReader()})
    assert str(info.value) == (
        "readers must map a suffix like '.png' to a callable "
        "(got 'png': ImageReader(mode='RGB', decoder='auto', exif_transpose=False))"
    )

    with pytest.raises(ValueError, match=r"\(got '\.png': 3\)"):
        SuffixReader({".png": 3})


# --- pickling -------------------------------------------------------------------


def _sample_files(tmp_path):
    save(tmp_path / "a.jpg", photo(), quality=90)
    save(tmp_path / "a.png", photo(10, 12))
    np.save(tmp_path / "a.npy", np.arange(6.0).reshape(2, 3))
    np.savez(tmp_path / "a.npz", a=np.zeros(2), b=np.arange(4))
    torch.save(torch.arange(5), tmp_path / "a.pt")


@pytest.mark.parametrize(
    ("reader", "name"),
    [
        (ImageReader(), "a.jpg"),
        (ImageReader("L", decoder="pillow"), "a.jpg"),
        (ImageReader("keep"), "a.png"),
        (NpyReader(), "a.npy"),
        (NpyReader(mmap=True), "a.npy"),
        (NpzReader(key="b"), "a.npz"),
        (PtReader(), "a.pt"),
        (SuffixReader(), "a.png"),
        (SuffixReader({".png": ImageReader("L")}), "a.png"),
    ],
    ids=repr,
)
def test_every_reader_pickles_and_reads_the_same_after(tmp_path, reader, name):
    _sample_files(tmp_path)
    path = str(tmp_path / name)

    back = pickle.loads(pickle.dumps(reader))

    assert type(back) is type(reader)
    assert repr(back) == repr(reader)
    assert torch.equal(back(path), reader(path))


# --- to_tensor ------------------------------------------------------------------


def test_to_tensor_passes_tensors_through():
    tensor = torch.zeros(3)

    assert to_tensor(tensor) is tensor


def test_to_tensor_shares_a_writable_arrays_memory():
    array = np.arange(4)

    tensor = to_tensor(array)
    array[0] = 9

    assert tensor[0].item() == 9


def test_to_tensor_copies_read_only_arrays_without_warning():
    array = np.arange(4)
    array.flags.writeable = False

    tensor = to_tensor(array)
    tensor[0] = 7

    assert array[0] == 0


def test_to_tensor_copies_arrays_with_negative_strides():
    array = np.arange(12).reshape(3, 4)[::-1, ::-2]

    assert to_tensor(array).tolist() == array.tolist()


def test_to_tensor_converts_non_native_byte_order():
    tensor = to_tensor(np.array([1, 256], dtype=">u2"))

    assert tensor.dtype == torch.uint16
    assert tensor.tolist() == [1, 256]


def test_to_tensor_refuses_object_arrays_and_other_types():
    with pytest.raises(TypeError) as info:
        to_tensor(np.array([{}], dtype=object), what="the array in 'x.npy'")
    assert str(info.value) == ("the array in 'x.npy' is an object array; only numeric arrays can be loaded")

    with pytest.raises(TypeError) as info:
        to_tensor([1, 2])
    assert str(info.value) == "reader output must be a torch.Tensor or numpy.ndarray (got list)"

    with pytest.raises(TypeError, match=r"\(got Image\)"):
        to_tensor(Image.new("L", (2, 2)))


# --- read_bytes -----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 4096, 70_000])
def test_read_bytes_reads_the_whole_file(tmp_path, size):
    path = tmp_path / "f.bin"
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(data)

    assert _files.read_bytes(str(path)) == data


def test_read_bytes_of_a_file_that_shrank_after_fstat_reads_what_is_left(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100_000)
    real_fstat = _files.os.fstat

    def stale(fd):  # as if the file had been 200_000 bytes at fstat time
        info = list(real_fstat(fd))
        info[6] = 200_000  # st_size
        return os.stat_result(info)

    monkeypatch.setattr(_files.os, "fstat", stale)

    assert _files.read_bytes(str(path)) == b"x" * 100_000


def test_read_bytes_of_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        _files.read_bytes(str(tmp_path / "none.jpg"))


def test_a_mapped_npy_shorter_than_its_header_says_is_refused_by_name(tmp_path):
    path = str(tmp_path / "x.npy")
    np.save(path, np.zeros((100, 100), np.uint8))
    os.truncate(path, 5000)  # cut in place, as an interrupted copy leaves it
    with pytest.raises(ValueError) as info:
        NpyReader(mmap=True)(path)
    assert str(info.value) == (
        f"{path!r} is 5000 bytes, its header needs 10128 for uint8 (100, 100) (truncated or still being written?)"
    )


@pytest.mark.parametrize("order", ["C", "F"])
def test_a_mapped_npy_reads_back_exactly_in_either_order(tmp_path, order):
    path = str(tmp_path / "x.npy")
    array = np.asarray(np.arange(24, dtype=np.int32).reshape(2, 3, 4), order=order)
    np.save(path, array)
    assert np.array_equal(NpyReader(mmap=True)(path).numpy(), array)
