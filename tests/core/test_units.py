"""Tests for torchloader/_core/units.py: byte sizes read from strings and written for people."""

from __future__ import annotations

import numpy as np
import pytest

from torchloader._core.units import format_bytes, parse_bytes

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4


# ---------------------------------------------------------------- parse_bytes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1", 1),
        ("17B", 17),
        ("17 b", 17),
        ("1K", KiB),
        ("1k", KiB),
        ("1KiB", KiB),
        ("1kib", KiB),
        ("1KB", 1000),
        ("3M", 3 * MiB),
        ("3MiB", 3 * MiB),
        ("2MB", 2_000_000),
        ("512 MB", 512_000_000),
        ("8GiB", 8 * GiB),
        ("8G", 8 * GiB),
        ("8GB", 8_000_000_000),
        ("1.5G", 1_610_612_736),
        ("1.5GiB", 1_610_612_736),
        ("2T", 2 * TiB),
        ("2TiB", 2 * TiB),
        ("2TB", 2 * 10**12),
        (".5KiB", 512),
        ("1.KiB", KiB),
        ("  64 MiB  ", 64 * MiB),
        ("1.5", 1),  # fractions of a byte are dropped
        ("99999999999999999999", 99999999999999999999),
    ],
)
def test_parse_bytes_reads_units(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2.01KB", 2010), ("4.02KB", 4020), ("8.11KB", 8110), ("16.06KB", 16060)],
)
def test_parse_bytes_is_exact_for_decimal_fractions(text, expected):
    # float("2.01") * 1000 == 2009.9999999999998
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("size", [0, 1, 4096, 10**15, np.int64(4096), np.uint32(7)])
def test_parse_bytes_passes_ints_through(size):
    out = parse_bytes(size)
    assert out == int(size)
    assert type(out) is int


@pytest.mark.parametrize("text", ["", "  ", "8 gigs", "GiB", "-1GiB", "1e9", "1.2.3K", "1 KiB B", "0x10", "1,5G"])
def test_parse_bytes_rejects_unreadable_strings(text):
    with pytest.raises(ValueError) as info:
        parse_bytes(text)
    assert str(info.value) == (f"cannot read {text!r} as a size; write e.g. '8GiB', '512MB' or 1048576")


def test_parse_bytes_rejects_negative_ints():
    with pytest.raises(ValueError) as info:
        parse_bytes(-5)
    assert str(info.value) == "size must be >= 0 bytes (got -5)"


@pytest.mark.parametrize(
    ("size", "type_name"),
    [(1.5, "float"), (True, "bool"), (None, "NoneType"), (b"8GiB", "bytes"), ([1], "list")],
)
def test_parse_bytes_rejects_other_types(size, type_name):
    with pytest.raises(TypeError) as info:
        parse_bytes(size)
    assert str(info.value) == (f"size must be an int or a string like '8GiB' (got {type_name})")


# --------------------------------------------------------------- format_bytes


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1023.6, "1.0 KiB"),  # not '1024 B'
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (MiB - 1, "1.0 MiB"),  # not '1024.0 KiB'
        (MiB, "1.0 MiB"),
        (8 * GiB, "8.0 GiB"),
        (GiB - 1, "1.0 GiB"),
        (3 * TiB, "3.0 TiB"),
        (1024 * TiB, "1024.0 TiB"),
        (-2048, "-2.0 KiB"),
        (-5, "-5 B"),
    ],
)
def test_format_bytes(n, expected):
    assert format_bytes(n) == expected


@pytest.mark.parametrize("unit", ["B", "KiB", "MiB", "GiB", "TiB"])
@pytest.mark.parametrize("count", [1, 3, 512, 1000])
def test_format_bytes_round_trips_through_parse_bytes(count, unit):
    size = parse_bytes(f"{count}{unit}")
    assert parse_bytes(format_bytes(size).replace(" ", "")) == size
