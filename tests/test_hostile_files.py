"""Files that readers once got wrong: hung on, clipped, turned or refused.

Each file is real, built in ``tmp_path``: a JPEG libjpeg warns about, 16-bit and
32-bit greyscale images, a FIFO and a symlink to ``/dev/zero`` under image and
array names, phone-style JPEGs with an EXIF orientation, a 3-frame GIF. The
reads that once blocked run under ``deadline``: a regression fails, never hangs.
"""

from __future__ import annotations

import io
import os
import pickle
import socket
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import china, deadline
from PIL import Image, ImageFile, ImageOps

from torchloader import ImageReader, NpyReader, NpzReader, PathDataset, PtReader, SuffixReader
from torchloader.readers._files import NotRegularFileError, read_bytes
from torchloader.readers._orientation import jpeg_transposes

try:
    import simplejpeg
except ImportError:  # pragma: no cover - simplejpeg is a dev dependency
    simplejpeg = None

needs_simplejpeg = pytest.mark.skipif(simplejpeg is None, reason="needs simplejpeg")
DECODERS = ["auto", "pillow"]


def photo(height=48, width=64) -> np.ndarray:
    return china()[120 : 120 + height, 230 : 230 + width].copy()


def jpeg_bytes(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def pillow_pixels(path, mode, transpose=False) -> np.ndarray:
    with Image.open(path) as image:
        if transpose:
            image = ImageOps.exif_transpose(image)
        array = np.asarray(image.convert(mode))
    return array if array.ndim == 3 else array[:, :, None]


def hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).numpy()


def slot(channels, height, width) -> np.ndarray:
    return np.zeros((height, width, channels), np.uint8)


# --- 1. a JPEG libjpeg warns about reads as Pillow reads it ---------------------------


def stray_bytes_jpeg(path, pixels) -> str:
    """A valid JPEG with 8 bytes before its end marker (one may fall into the last
    entropy-coded byte: eight always leave some over)."""
    data = jpeg_bytes(pixels)
    assert data.endswith(b"\xff\xd9")
    bad = data[:-2] + b"\x00" * 8 + data[-2:]
    if simplejpeg is not None:  # the file is what it claims: libjpeg-turbo warns, strictly
        with pytest.raises(ValueError, match="extraneous bytes before marker 0xd9"):
            simplejpeg.decode_jpeg(bad)
    return write(path, bad)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(("colour", "mode"), [(True, "RGB"), (False, "RGB"), (False, "L")])
def test_a_jpeg_with_stray_bytes_before_its_end_reads_as_pillow_reads_it(tmp_path, decoder, colour, mode):
    pixels = photo() if colour else photo()[:, :, 0].copy()
    path = stray_bytes_jpeg(tmp_path / "warned.jpg", pixels)

    x = ImageReader(mode, decoder=decoder)(path)

    assert np.array_equal(hwc(x), pillow_pixels(path, mode))


@needs_simplejpeg
@pytest.mark.parametrize(("colour", "mode"), [(True, "RGB"), (False, "L")])
def test_read_into_of_a_jpeg_with_stray_bytes_writes_pillows_pixels(tmp_path, colour, mode):
    pixels = photo() if colour else photo()[:, :, 0].copy()
    path = stray_bytes_jpeg(tmp_path / "warned.jpg", pixels)
    out = slot(3 if mode == "RGB" else 1, 48, 64)

    assert ImageReader(mode).read_into(path, out) is True
    assert np.array_equal(out, pillow_pixels(path, mode))


def broken_jpegs(tmp_path) -> dict[str, str]:
    data = jpeg_bytes(photo())
    return {
        "truncated": write(tmp_path / "cut.jpg", data[: len(data) // 2]),
        "garbage": write(tmp_path / "junk.jpg", bytes(range(256)) * 8),
    }


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_broken_jpeg_still_raises(tmp_path, decoder):
    for path in broken_jpegs(tmp_path).values():
        with pytest.raises(OSError):  # Pillow's: truncated, or cannot identify
            ImageReader(decoder=decoder)(path)
        with pytest.raises(OSError):  # as Pillow alone does
            pillow_pixels(path, "RGB")


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_jpeg_whose_scan_pillow_decodes_despite_libjpeg_gives_pillows_pixels(tmp_path, decoder):
    data = jpeg_bytes(photo())
    path = write(tmp_path / "head.jpg", data[:700] + b"\x5a" * 4000)  # no end marker
    if simplejpeg is not None:
        with pytest.raises(ValueError, match="Premature end of JPEG file"):
            simplejpeg.decode_jpeg(Path(path).read_bytes())

    assert np.array_equal(hwc(ImageReader(decoder=decoder)(path)), pillow_pixels(path, "RGB"))


@needs_simplejpeg
def test_read_into_of_a_broken_jpeg_raises_or_declines(tmp_path):
    paths = broken_jpegs(tmp_path)

    with pytest.raises(OSError, match="truncated"):
        ImageReader().read_into(paths["truncated"], slot(3, 48, 64))
    assert ImageReader().read_into(paths["garbage"], slot(3, 48, 64)) is False  # no header: the caller reads it


@pytest.mark.parametrize("decoder", DECODERS)
def test_with_load_truncated_images_a_cut_jpeg_gives_pillows_fill(tmp_path, monkeypatch, decoder):
    path = broken_jpegs(tmp_path)["truncated"]
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)

    x = ImageReader(decoder=decoder)(path)

    assert np.array_equal(hwc(x), pillow_pixels(path, "RGB"))


# --- 2. 16-bit greyscale is scaled, never clipped -------------------------------------


EDGES = [0, 1, 128, 129, 385, 386, 32767, 32768, 65406, 65407, 65534, 65535]  # each side of a step


def deep_grey() -> np.ndarray:
    ramp = (np.arange(6 * 8, dtype=np.uint32) * 1393 % 65536).astype(np.uint16)
    return np.concatenate([np.array(EDGES, np.uint16), ramp]).reshape(6, 10)


def deep_files(tmp_path, values) -> list[str]:
    height, width = values.shape
    files = [(tmp_path / "d.png", Image.fromarray(values))]  # I;16
    files.append((tmp_path / "b.tif", Image.frombytes("I;16B", (width, height), values.astype(">u2").tobytes())))
    files.append((tmp_path / "l.tif", Image.frombytes("I;16L", (width, height), values.astype("<u2").tobytes())))
    for path, image in files:
        image.save(path)
    return [str(path) for path, _ in files]


def test_16_bit_files_open_in_the_modes_they_are_meant_to_test(tmp_path):
    modes = []
    for path in deep_files(tmp_path, deep_grey()):
        with Image.open(path) as image:
            modes.append(image.mode)
    assert modes == ["I;16", "I;16B", "I;16"]  # Pillow opens little-endian TIFF as I;16


@pytest.mark.parametrize("decoder", DECODERS)
def test_16_bit_grey_is_scaled_to_8_bits_rounded_in_every_8_bit_mode(tmp_path, decoder):
    values = deep_grey()
    grey = np.rint(values * (255 / 65535)).astype(np.uint8)
    assert grey.ravel()[: len(EDGES)].tolist() == [0, 0, 0, 1, 1, 2, 127, 128, 254, 255, 255, 255]
    expected = {
        "L": grey[:, :, None],
        "RGB": np.dstack([grey] * 3),
        "RGBA": np.dstack([grey] * 3 + [np.full_like(grey, 255)]),
    }

    for path in deep_files(tmp_path, values):
        for mode, pixels in expected.items():
            x = ImageReader(mode, decoder=decoder)(path)
            assert x.dtype == torch.uint8
            assert np.array_equal(hwc(x), pixels), (path, mode)


def test_keep_mode_gives_the_exact_16_bit_values(tmp_path):
    values = deep_grey()

    for path in deep_files(tmp_path, values):
        x = ImageReader("keep")(path)
        assert x.dtype == torch.uint16 and x.shape == (1, 6, 10)
        assert np.array_equal(x[0].numpy(), values)


@pytest.mark.parametrize(
    ("values", "pillow_mode"),
    [
        (np.array([[-5, 0], [300, 70000]], np.int32), "I"),
        (np.array([[-0.5, 0.0], [0.25, 1000.5]], np.float32), "F"),
    ],
)
def test_32_bit_integer_and_float_images_are_refused_in_8_bit_modes(tmp_path, values, pillow_mode):
    path = str(tmp_path / "wide.tif")
    Image.fromarray(values).save(path)

    for mode in ("RGB", "L", "RGBA"):
        with pytest.raises(ValueError) as info:
            ImageReader(mode)(path)
        message = str(info.value)
        assert message.startswith(f"{path!r} is a 32-bit ")
        assert f"(Pillow mode {pillow_mode!r})" in message and "ImageReader('keep')" in message
    kept = ImageReader("keep")(path)
    assert kept.dtype == torch.from_numpy(values).dtype and np.array_equal(kept[0].numpy(), values)


def test_a_32_bit_image_is_skipped_with_its_cause_by_a_skipping_data_set(tmp_path):
    good = str(tmp_path / "good.png")
    Image.fromarray(photo(6, 10)[:, :, 0]).save(good)
    wide = str(tmp_path / "wide.tif")
    Image.fromarray(np.zeros((6, 10), np.int32)).save(wide)
    ds = PathDataset([good, wide], [0, 1], on_error="skip")

    with pytest.warns(UserWarning, match="skipped sample 1"):
        x, _ = ds[[0, 1]]

    assert x.shape == (1, 3, 6, 10)
    assert ds.errors.indices() == [1] and next(iter(ds.errors)).cause.startswith("ValueError: ")


# --- 3. anything but a regular file is refused at once --------------------------------


def fifo(path) -> str:
    os.mkfifo(path)
    return str(path)


def to_dev_zero(path) -> str:
    os.symlink("/dev/zero", path)
    return str(path)


READERS = {
    "ImageReader()": (ImageReader(), ".jpg"),
    "ImageReader(png)": (ImageReader(), ".png"),
    "ImageReader(decoder='pillow')": (ImageReader(decoder="pillow"), ".jpg"),
    "NpyReader()": (NpyReader(), ".npy"),
    "NpyReader(mmap=True)": (NpyReader(mmap=True), ".npy"),
    "NpzReader()": (NpzReader(), ".npz"),
    "PtReader()": (PtReader(), ".pt"),
    "SuffixReader(jpg)": (SuffixReader(), ".jpg"),
    "SuffixReader(npy)": (SuffixReader(), ".npy"),
    "read_bytes": (read_bytes, ".jpg"),
}
KINDS = {
    "FIFO": (fifo, "is a FIFO (named pipe), not a regular file"),
    "/dev/zero": (to_dev_zero, "is a character device"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("name", sorted(READERS))
def test_every_reader_refuses_a_fifo_or_a_device_at_once(tmp_path, name, kind):
    reader, suffix = READERS[name]
    make, what = KINDS[kind]
    path = make(tmp_path / f"x{suffix}")

    with deadline(20), pytest.raises(NotRegularFileError) as info:
        reader(path)

    message = str(info.value)
    assert message.startswith(repr(path)) and what in message
    assert "replace it with the file it stands for, or leave it out of the paths" in message
    if kind == "/dev/zero":
        assert f"(which resolves to '/dev/zero') {what}" in message
    assert isinstance(info.value, OSError)


@needs_simplejpeg
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_read_into_refuses_a_fifo_or_a_device_at_once(tmp_path, kind):
    path = KINDS[kind][0](tmp_path / "x.jpg")

    for reader in (ImageReader(), SuffixReader()):
        with deadline(20), pytest.raises(NotRegularFileError):
            reader.read_into(path, slot(3, 48, 64))


def test_a_directory_or_a_socket_named_like_a_file_is_refused(tmp_path):
    (tmp_path / "d.png").mkdir()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "s.jpg"))

        for name, what in (("d.png", "a directory"), ("s.jpg", "a socket")):
            for reader in (ImageReader(), ImageReader(decoder="pillow"), read_bytes):
                with deadline(20), pytest.raises(NotRegularFileError, match=f"is {what}, not a regular file"):
                    reader(str(tmp_path / name))


def test_a_symlink_to_a_regular_file_reads_as_the_file(tmp_path):
    real = tmp_path / "real.png"
    Image.fromarray(photo(6, 10)).save(real)
    os.symlink(real, tmp_path / "link.png")

    assert torch.equal(ImageReader()(str(tmp_path / "link.png")), ImageReader()(str(real)))


def test_a_skipping_data_set_leaves_fifos_and_devices_out(tmp_path):
    good = str(tmp_path / "good.png")
    Image.fromarray(photo(6, 10)).save(good)
    paths = [good, fifo(tmp_path / "f.png"), to_dev_zero(tmp_path / "z.jpg"), good]
    ds = PathDataset(paths, [0, 1, 2, 3], on_error="skip", max_skipped=None)

    with deadline(20), pytest.warns(UserWarning, match="skipped sample 1"):
        x, y = ds[[0, 1, 2, 3]]

    assert x.shape == (2, 3, 6, 10) and y.tolist() == [0, 3]
    assert ds.errors.indices() == [1, 2]
    assert all(record.cause.startswith("NotRegularFileError: ") for record in ds.errors)


def test_read_bytes_never_reads_more_than_fstat_reported(tmp_path, monkeypatch):
    path = tmp_path / "grows.bin"
    path.write_bytes(b"x" * 100_000)
    real_fstat = os.fstat

    def stale(fd):  # as if the file had been 10 bytes at fstat time
        info = list(real_fstat(fd))
        info[6] = 10  # st_size
        return os.stat_result(info)

    monkeypatch.setattr(os, "fstat", stale)

    assert read_bytes(str(path)) == b"x" * 10


def test_read_bytes_of_a_proc_file_is_bounded_by_its_size(tmp_path):
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc")
    os.symlink("/proc/self/status", tmp_path / "status.jpg")

    assert read_bytes(str(tmp_path / "status.jpg")) == b""  # st_size 0: nothing read


def test_not_regular_file_error_pickles(tmp_path):
    with pytest.raises(NotRegularFileError) as info:
        read_bytes(fifo(tmp_path / "f.jpg"))

    back = pickle.loads(pickle.dumps(info.value))

    assert type(back) is NotRegularFileError and str(back) == str(info.value)


# --- 4. EXIF orientation, on request --------------------------------------------------


def oriented_jpeg(path, orientation, pixels=None, **options) -> str:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(photo(30, 40) if pixels is None else pixels).save(path, quality=90, exif=exif, **options)
    return str(path)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_transpose_turns_as_pillows_exif_transpose(tmp_path, decoder, orientation):
    path = oriented_jpeg(tmp_path / "phone.jpg", orientation)

    x = ImageReader(decoder=decoder, exif_transpose=True)(path)

    assert np.array_equal(hwc(x), pillow_pixels(path, "RGB", transpose=True))
    assert x.shape == ((3, 40, 30) if orientation >= 5 else (3, 30, 40))


@pytest.mark.parametrize("decoder", DECODERS)
def test_by_default_an_oriented_jpeg_comes_out_as_stored(tmp_path, decoder):
    path = oriented_jpeg(tmp_path / "phone.jpg", 6)

    x = ImageReader(decoder=decoder)(path)

    assert x.shape == (3, 30, 40)
    assert np.array_equal(hwc(x), pillow_pixels(path, "RGB"))


def test_exif_transpose_turns_greyscale_pngs_and_16_bit_ones(tmp_path):
    grey = photo(30, 40)[:, :, 0].copy()
    for name, image in (("g.png", Image.fromarray(grey)), ("d.png", Image.fromarray(grey.astype(np.uint16) * 257))):
        exif = Image.Exif()
        exif[0x0112] = 8
        image.save(tmp_path / name, exif=exif)

        x = ImageReader("L", exif_transpose=True)(str(tmp_path / name))

        assert np.array_equal(x[0].numpy(), np.rot90(grey))  # ROTATE_90: counter-clockwise


def test_exif_transpose_follows_an_xmp_orientation_as_pillow_does(tmp_path):
    path = str(tmp_path / "xmp.jpg")
    Image.fromarray(photo(30, 40)).save(path, quality=90, xmp=XMP_6)

    x = ImageReader(exif_transpose=True)(path)

    assert x.shape == (3, 40, 30)
    assert np.array_equal(hwc(x), pillow_pixels(path, "RGB", transpose=True))


def pillows_answer(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as image:
        return image.getexif().get(0x0112, 1) in range(2, 9)


def count_pillow_opens(monkeypatch) -> list:
    opened, real = [], Image.open

    def spy(*args, **kwargs):
        opened.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    return opened


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("orientation", [None, *range(0, 10)])
def test_jpeg_transposes_answers_as_pillow_from_the_bytes_alone(monkeypatch, endian, orientation):
    exif = Image.Exif()
    exif.endian = endian
    exif[0x010F] = "torchloader"  # Make: a directory of more than one entry
    if orientation is not None:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(photo(8, 8)).save(buffer, "JPEG", exif=exif, icc_profile=b"\xff\xda" * 40)
    data = buffer.getvalue()
    expected = pillows_answer(data)
    opened = count_pillow_opens(monkeypatch)

    assert jpeg_transposes(data) is expected
    assert opened == []


def _exif_segment(*entries) -> bytes:
    """Raw EXIF: a little-endian first directory of ``(tag, type, count, value)`` entries."""
    body = b"".join(struct.pack("<HHI4s", tag, kind, count, value) for tag, kind, count, value in entries)
    return b"Exif\0\0II*\0" + struct.pack("<IH", 8, len(entries)) + body + b"\0" * 4


XMP_6 = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
)
ODD = {
    "a repeated tag": {"exif": _exif_segment((0x0112, 3, 1, b"\6\0\0\0"), (0x0112, 3, 1, b"\1\0\0\0"))},
    "a LONG orientation": {"exif": _exif_segment((0x0112, 4, 1, b"\6\0\0\0"))},
    "a directory past the end": {"exif": b"Exif\0\0II*\0" + struct.pack("<I", 4000)},
    "XMP only": {"xmp": XMP_6},
    "EXIF without orientation and XMP": {"exif": _exif_segment((0x010F, 2, 4, b"abc\0")), "xmp": XMP_6},
}


@pytest.mark.parametrize("case", sorted(ODD))
def test_jpeg_transposes_asks_pillow_where_the_bytes_are_odd(monkeypatch, case):
    buffer = io.BytesIO()
    Image.fromarray(photo(8, 8)).save(buffer, "JPEG", **ODD[case])
    data = buffer.getvalue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow: "Corrupt EXIF data", each time it reads the directory
        expected = pillows_answer(data)
        opened = count_pillow_opens(monkeypatch)
        assert jpeg_transposes(data) is expected
    assert len(opened) == 1


@needs_simplejpeg
def test_exif_transpose_keeps_libjpeg_turbo_where_nothing_turns(tmp_path, turbo_calls):
    upright = oriented_jpeg(tmp_path / "up.jpg", 1)
    plain = write(tmp_path / "plain.jpg", jpeg_bytes(photo(30, 40)))
    turned = oriented_jpeg(tmp_path / "turned.jpg", 6)
    reader = ImageReader(exif_transpose=True)

    reader(upright), reader(plain)
    assert turbo_calls == ["RGB", "RGB"]
    reader(turned)
    assert turbo_calls == ["RGB", "RGB"]  # Pillow turns it


@needs_simplejpeg
@pytest.mark.parametrize("orientation", [3, 6])
def test_read_into_declines_a_jpeg_that_would_be_turned(tmp_path, turbo_calls, orientation):
    square = oriented_jpeg(tmp_path / "sq.jpg", orientation, photo(30, 30))
    wide = oriented_jpeg(tmp_path / "wide.jpg", orientation)

    assert ImageReader(exif_transpose=True).read_into(square, slot(3, 30, 30)) is False
    assert ImageReader(exif_transpose=True).read_into(wide, slot(3, 30, 40)) is False
    assert ImageReader(exif_transpose=True).read_into(wide, slot(3, 40, 30)) is False
    assert turbo_calls == []
    assert ImageReader().read_into(wide, slot(3, 30, 40)) is True  # not asked to turn: as stored


@needs_simplejpeg
def test_a_batch_of_square_jpegs_is_turned_file_by_file(tmp_path):
    paths = [oriented_jpeg(tmp_path / f"{i}.jpg", 6 if i % 2 else 1, photo(30, 30)) for i in range(4)]
    ds = PathDataset(paths, [0] * 4, reader=ImageReader(exif_transpose=True))

    x, _ = ds[[0, 1, 2, 3]]

    for i, path in enumerate(paths):
        assert np.array_equal(hwc(x[i]), pillow_pixels(path, "RGB", transpose=True))


def test_exif_transpose_is_in_repr_pickles_and_is_checked():
    reader = ImageReader("L", exif_transpose=True)

    back = pickle.loads(pickle.dumps(reader))

    assert repr(back) == repr(reader) == "ImageReader(mode='L', decoder='auto', exif_transpose=True)"
    assert back.exif_transpose is True and ImageReader().exif_transpose is False
    with pytest.raises(TypeError, match="exif_transpose must be True or False"):
        ImageReader(exif_transpose="yes")


@pytest.mark.parametrize("decoder", DECODERS)
def test_exif_transpose_leaves_the_decompression_bomb_guard_on(tmp_path, monkeypatch, decoder):
    refused = oriented_jpeg(tmp_path / "big.jpg", 6, photo(50, 50))
    warned = oriented_jpeg(tmp_path / "warn.jpg", 6, photo(30, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    reader = ImageReader(decoder=decoder, exif_transpose=True)

    with pytest.raises(Image.DecompressionBombError):
        reader(refused)
    with pytest.warns(Image.DecompressionBombWarning) as record:
        assert reader(warned).shape == (3, 40, 30)
    assert len(record) == 1  # one open, one warning


# --- 5. multi-frame files give their first frame --------------------------------------


def frames() -> list[np.ndarray]:
    return [np.full((6, 8, 3), colour, np.uint8) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_3_frame_gif_or_tiff_gives_its_first_frame(tmp_path, decoder):
    images = [Image.fromarray(f) for f in frames()]
    for name in ("anim.gif", "pages.tif"):
        images[0].save(tmp_path / name, save_all=True, append_images=images[1:])
        with Image.open(tmp_path / name) as image:
            assert image.n_frames == 3

        x = ImageReader(decoder=decoder)(str(tmp_path / name))

        assert np.array_equal(hwc(x), frames()[0]), name


def test_a_folder_of_phone_photos_turns_upright_through_suffix_readers_image_reader(tmp_path):
    (tmp_path / "cat").mkdir()
    path = oriented_jpeg(tmp_path / "cat" / "phone.jpg", 6)
    upright = PathDataset.from_folder(tmp_path, reader=SuffixReader(image=ImageReader(exif_transpose=True)))
    as_stored = PathDataset.from_folder(tmp_path)
    assert np.array_equal(hwc(upright[0][0]), pillow_pixels(path, "RGB", transpose=True))
    assert upright[0][0].shape[1:] == as_stored[0][0].shape[1:][::-1]  # turned by 90 degrees
