"""Whether a JPEG's EXIF orientation turns it, told from its bytes without decoding.

``ImageReader(exif_transpose=True)`` keeps libjpeg-turbo's fast path for the
JPEGs ``PIL.ImageOps.exif_transpose`` would leave as they are, and hands the
others to Pillow. A JPEG without an APP1 segment (where EXIF and XMP live) or
with one plain EXIF segment is answered here in microseconds; any other is
answered by Pillow's own header parse, so the answer is always Pillow's.
"""

from __future__ import annotations

import io
import struct

from PIL import Image

__all__ = ["jpeg_transposes"]

_ORIENTATION = 0x0112  # the EXIF tag
_TURNED = range(2, 9)  # the orientations exif_transpose turns (1: as stored)


def jpeg_transposes(data: bytes) -> bool:
    """Whether ``PIL.ImageOps.exif_transpose`` would turn the JPEG ``data``.

    The orientation lives in an APP1 segment (EXIF, or XMP). The segments up to
    the first scan are walked (~3 us): no APP1, no turning; one EXIF APP1 whose
    first directory reads cleanly is answered from its orientation tag. Anything
    else (XMP, several APP1s, an odd directory) is asked of Pillow's lazy header
    parse (~30 us, no pixels decoded), which ``exif_transpose`` itself uses; a
    header Pillow cannot parse answers True: Pillow decodes the file, and reports
    what is wrong with it.

    Example:
        >>> buffer = io.BytesIO()
        >>> exif = Image.Exif()
        >>> exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
        >>> Image.new("RGB", (4, 2)).save(buffer, "JPEG", exif=exif)
        >>> jpeg_transposes(buffer.getvalue())
        True
    """
    segments = _app1_segments(data)
    if segments == []:
        return False
    if segments is not None and len(segments) == 1:
        orientation = _exif_orientation(data[segments[0]])
        if orientation is not None:
            return orientation in _TURNED
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.getexif().get(_ORIENTATION, 1) in _TURNED
    except Exception:  # Pillow decodes the file next, and says what is wrong with it
        return True


def _app1_segments(data: bytes) -> list[slice] | None:
    """The payloads of the APP1 segments before the JPEG's first scan; None where
    the segments do not walk cleanly (then Pillow decides)."""
    found, pos, end = [], 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: no more header segments
            return found
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xE1:
            found.append(slice(pos + 4, pos + 2 + length))
        pos += 2 + length
    return None


def _exif_orientation(segment: bytes) -> int | None:
    """The orientation tag in the first directory of an EXIF APP1 payload (1 without
    one), or None where only Pillow should say (not EXIF, odd layout, a repeated tag)."""
    tiff = segment[6:] if segment.startswith(b"Exif\0\0") else b""
    order = {b"II*\0": "<", b"MM\0*": ">"}.get(tiff[:4])
    if order is None or len(tiff) < 8:
        return None
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    if ifd + 2 + 12 * count > len(tiff):
        return None
    values = []
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, kind, items, value = struct.unpack_from(order + "HHI4s", tiff, entry)
        if tag == _ORIENTATION:
            if (kind, items) != (3, 1):  # not one SHORT
                return None
            values.append(struct.unpack_from(order + "H", value)[0])
    return None if len(values) > 1 else values[0] if values else 1
