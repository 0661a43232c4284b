"""Tests for torchloader/packs/format.py: the packed format, its manifest, and verify_pack.

Packed directories are written here by hand (np.save + Manifest), so the format is
tested apart from the writer in pack.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchloader import verify_pack
from torchloader._core.files import write_json_atomic
from torchloader.packs.format import FORMAT, MANIFEST, VERSION, Manifest, ShardInfo, sha256_of


def write_pack(root, sizes=(3, 2, 4), shape=(2, 3), labels=True):
    """A packed directory with shards of ``sizes`` samples; sample i is full of i."""
    root.mkdir(parents=True, exist_ok=True)
    shards, start = [], 0
    for k, n in enumerate(sizes):
        name = f"shard-{k:05d}.npy"
        values = np.arange(start, start + n, dtype=np.uint8).reshape(-1, *[1] * len(shape))
        np.save(root / name, np.broadcast_to(values, (n, *shape)).copy())
        path = str(root / name)
        shards.append(ShardInfo(name, start, start + n, sha256_of(path), os.path.getsize(path)))
        start += n
    label_info = None
    if labels:
        np.save(root / "labels.npy", np.arange(start, dtype=np.int64) % 2)
        label_info = {"file": "labels.npy", "sha256": sha256_of(str(root / "labels.npy"))}
    manifest = Manifest(start, list(shape), "|u1", shards, ["even", "odd"], label_info, {"size": None})
    manifest.write(str(root))
    return manifest


def unchecked(raw):
    """A manifest's fields without its checksum: edited by hand, or from before checksums
    (so that its other checks are what is tested)."""
    raw.pop("checksum", None)
    return raw


def edit_manifest(root, **changes):
    path = root / MANIFEST
    raw = unchecked(json.loads(path.read_text()))
    raw.update(changes)
    path.write_text(json.dumps(raw))


# --- the manifest ------------------------------------------------------------------


def test_a_manifest_reads_back_equal(tmp_path):
    written = write_pack(tmp_path / "p")

    read = Manifest.read(str(tmp_path / "p"))

    assert read == written
    assert (read.format, read.version) == (FORMAT, VERSION) == ("torchloader.pack", 1)
    assert all(isinstance(s, ShardInfo) for s in read.shards)


def test_the_manifest_is_plain_json_with_format_and_version(tmp_path):
    write_pack(tmp_path / "p")

    raw = json.loads((tmp_path / "p" / MANIFEST).read_text())

    assert raw["format"] == "torchloader.pack" and raw["version"] == 1
    assert raw["count"] == 9 and raw["sample_shape"] == [2, 3] and raw["dtype"] == "|u1"
    assert [(s["start"], s["stop"]) for s in raw["shards"]] == [(0, 3), (3, 5), (5, 9)]


def test_writing_leaves_no_temporary_file_and_replaces_the_old_manifest(tmp_path):
    path = tmp_path / "m.json"
    write_json_atomic(str(path), {"a": 1})
    write_json_atomic(str(path), {"a": 2})

    assert json.loads(path.read_text()) == {"a": 2}
    assert os.listdir(tmp_path) == ["m.json"]


def test_shard_of_maps_every_index_to_its_shard_and_offset(tmp_path):
    manifest = write_pack(tmp_path / "p", sizes=(3, 1, 4, 2))

    found = [manifest.shard_of(i) for i in range(manifest.count)]

    for index, (k, local) in enumerate(found):
        shard = manifest.shards[k]
        assert shard.start <= index < shard.stop and local == index - shard.start
    assert [k for k, _ in found] == [0, 0, 0, 1, 2, 2, 2, 2, 3, 3]


def test_sha256_of_is_the_files_sha256(tmp_path):
    data = os.urandom(3 << 20)  # more than one read block
    (tmp_path / "f").write_bytes(data)
    assert sha256_of(str(tmp_path / "f")) == hashlib.sha256(data).hexdigest()


# --- reading errors name the file and the fix --------------------------------------


def test_a_missing_folder_is_named(tmp_path):
    root = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as err:
        Manifest.read(root)
    assert str(err.value) == f"'{root}' is not a folder; pack a data set there with `torchloader pack SRC '{root}'`"


def test_a_folder_without_manifest_is_an_interrupted_pack(tmp_path):
    write_pack(tmp_path / "p")
    os.remove(tmp_path / "p" / MANIFEST)
    root = str(tmp_path / "p")

    with pytest.raises(FileNotFoundError) as err:
        Manifest.read(root)
    assert str(err.value) == (
        f"'{root}' has no manifest.json: it is not a packed data set, or its pack was "
        f"interrupted; run `torchloader pack SRC '{root}'` (again) to complete it"
    )


def test_a_foreign_manifest_is_refused(tmp_path):
    write_pack(tmp_path / "p")
    edit_manifest(tmp_path / "p", format="webdataset")

    with pytest.raises(ValueError) as err:
        Manifest.read(str(tmp_path / "p"))
    assert str(err.value) == f"'{tmp_path / 'p' / MANIFEST}' is not a torchloader pack manifest (format='webdataset')"


def test_a_json_list_is_not_a_manifest(tmp_path):
    (tmp_path / MANIFEST).write_text("[1, 2]")
    with pytest.raises(ValueError) as err:
        Manifest.read(str(tmp_path))
    assert str(err.value) == f"'{tmp_path / MANIFEST}' is not a torchloader pack manifest (format=None)"


@pytest.mark.parametrize("version", [3, 0, None])
def test_another_format_version_names_the_fix(tmp_path, version):
    write_pack(tmp_path / "p")
    edit_manifest(tmp_path / "p", version=version)

    with pytest.raises(ValueError) as err:
        Manifest.read(str(tmp_path / "p"))
    assert str(err.value) == (
        f"'{tmp_path / 'p' / MANIFEST}' is pack format version {version!r}; this torchloader "
        f"reads versions 1 and 2: re-pack with `torchloader pack --overwrite` or "
        f"install the torchloader that wrote it"
    )


def test_a_raw_pack_is_version_1_and_does_not_say_encoded(tmp_path):
    # torchloader 0.1 reads version 1 manifests and refuses unknown fields: a raw pack
    # written today must still be one it reads
    write_pack(tmp_path / "p")
    raw = json.loads((tmp_path / "p" / MANIFEST).read_text())
    assert raw["version"] == 1 and "encoded" not in raw


def test_version_2_without_an_index_is_damaged(tmp_path):
    write_pack(tmp_path / "p")
    edit_manifest(tmp_path / "p", version=2)
    with pytest.raises(ValueError, match="version 2 does not go with encoded=None"):
        Manifest.read(str(tmp_path / "p"))


def test_a_truncated_manifest_cannot_be_read(tmp_path):
    write_pack(tmp_path / "p")
    path = tmp_path / "p" / MANIFEST
    path.write_text(path.read_text()[:40])

    with pytest.raises(ValueError) as err:
        Manifest.read(str(tmp_path / "p"))
    assert str(err.value).startswith(f"cannot read '{path}': ")
    assert str(err.value).endswith("; re-run `torchloader pack` with --overwrite")


@pytest.mark.parametrize("change", [{"shards": [{"file": "x.npy"}]}, {"extra": 1}, {"count": None, "shards": 3}])
def test_a_manifest_with_broken_fields_is_named_not_a_type_error(tmp_path, change):
    write_pack(tmp_path / "p")
    edit_manifest(tmp_path / "p", **change)
    root = str(tmp_path / "p")

    with pytest.raises(ValueError) as err:
        Manifest.read(root)
    assert str(err.value).startswith(f"'{tmp_path / 'p' / MANIFEST}' is damaged (")
    assert str(err.value).endswith(f"); re-pack with `torchloader pack SRC '{root}' --overwrite`")


# --- verify_pack -------------------------------------------------------------------


def test_an_intact_pack_verifies_clean(tmp_path):
    write_pack(tmp_path / "p")
    assert verify_pack(str(tmp_path / "p")) == []


def test_an_unlabelled_pack_verifies_clean(tmp_path):
    write_pack(tmp_path / "p", labels=False)
    assert verify_pack(str(tmp_path / "p")) == []


def test_a_flipped_byte_in_a_shard_is_named(tmp_path):
    write_pack(tmp_path / "p")
    path = tmp_path / "p" / "shard-00001.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # pixel data, not the header: shape and dtype still match
    path.write_bytes(bytes(data))

    assert verify_pack(str(tmp_path / "p")) == [
        f"'{path}' has a different checksum than the manifest: its bytes changed"
    ]


def test_a_truncated_shard_is_named(tmp_path):
    write_pack(tmp_path / "p")
    path = tmp_path / "p" / "shard-00002.npy"
    path.write_bytes(path.read_bytes()[:-5])

    problems = verify_pack(str(tmp_path / "p"))

    assert len(problems) == 1
    assert problems[0].startswith(f"'{path}' cannot be read: ValueError: ")


def test_missing_labels_are_named(tmp_path):
    write_pack(tmp_path / "p")
    os.remove(tmp_path / "p" / "labels.npy")

    assert verify_pack(str(tmp_path / "p")) == [f"'{tmp_path / 'p' / 'labels.npy'}' is missing"]


def test_a_shard_of_another_shape_or_dtype_is_named(tmp_path):
    write_pack(tmp_path / "p")
    np.save(tmp_path / "p" / "shard-00000.npy", np.zeros((2, 2, 3), np.uint8))
    np.save(tmp_path / "p" / "labels.npy", np.zeros(9, np.int32))

    assert verify_pack(str(tmp_path / "p")) == [
        f"'{tmp_path / 'p' / 'shard-00000.npy'}' holds uint8 (2, 2, 3), the manifest says uint8 (3, 2, 3)",
        f"'{tmp_path / 'p' / 'labels.npy'}' holds int32 (9,), the manifest says int64 (9,)",
    ]


def test_every_problem_is_listed_not_just_the_first(tmp_path):
    write_pack(tmp_path / "p")
    os.remove(tmp_path / "p" / "shard-00000.npy")
    os.remove(tmp_path / "p" / "shard-00002.npy")

    assert verify_pack(str(tmp_path / "p")) == [
        f"'{tmp_path / 'p' / 'shard-00000.npy'}' is missing",
        f"'{tmp_path / 'p' / 'shard-00002.npy'}' is missing",
    ]


def test_a_count_that_disagrees_with_the_shards_is_named(tmp_path):
    manifest = write_pack(tmp_path / "p", labels=False)
    manifest.count = 10
    manifest.write(str(tmp_path / "p"))

    assert verify_pack(str(tmp_path / "p")) == ["manifest.json: the shards hold 9 samples, count says 10"]


def test_verify_of_a_folder_without_manifest_raises_the_reading_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no manifest.json"):
        verify_pack(str(tmp_path))


def test_the_manifest_is_a_dataclass_of_plain_values():
    manifest = Manifest(0, [1], "|u1", [])
    assert dataclasses.asdict(manifest)["format"] == "torchloader.pack"
    assert manifest.classes is None and manifest.skipped == [] and manifest.options == {}


# --- property tests: whatever manifest.json holds, the reader refuses or returns a sound one --

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["count", "sample_shape", "dtype", "shards", "classes", "labels", "options", "skipped", "sources", "checksum"]


def _sound(m: Manifest, root) -> None:
    """What every reader of a manifest relies on."""
    assert isinstance(m.count, int) and m.count >= 0
    assert all(isinstance(d, int) and d >= 0 for d in m.sample_shape)
    assert not np.dtype(m.dtype).hasobject
    position = 0
    for shard in m.shards:
        assert shard.start == position <= shard.stop
        assert os.path.dirname(os.path.join(str(root), shard.file)) == str(root)  # inside
        position = shard.stop


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=JSON)
def test_a_manifest_with_any_field_replaced_is_refused_or_sound(tmp_path, field, value):
    root = tmp_path / "p"
    if not (root / MANIFEST).exists():
        write_pack(root)
    good = unchecked(json.loads((root / MANIFEST).read_text()))
    (root / MANIFEST).write_text(json.dumps({**good, field: value}))
    try:
        manifest = Manifest.read(str(root))
    except ValueError as err:
        assert (
            str(err).startswith(f"'{root / MANIFEST}' is damaged (")
            or "is not a torchloader" in str(err)
            or "was changed after it was written" in str(err)  # a checksum replaced by another string
        )
    else:
        _sound(manifest, root)
    finally:
        (root / MANIFEST).write_text(json.dumps(good))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=JSON)
def test_any_json_document_as_the_manifest_is_refused_with_a_value_error(tmp_path, document):
    root = tmp_path / "p"
    root.mkdir(exist_ok=True)
    (root / MANIFEST).write_text(json.dumps(document))

    with pytest.raises(ValueError):
        Manifest.read(str(root))


@pytest.mark.parametrize("file", ["../outside.npy", "/etc/passwd", "sub/shard.npy", "..", ""])
def test_a_shard_file_outside_the_directory_is_refused(tmp_path, file):
    write_pack(tmp_path / "p")
    raw = unchecked(json.loads((tmp_path / "p" / MANIFEST).read_text()))
    raw["shards"][0]["file"] = file
    (tmp_path / "p" / MANIFEST).write_text(json.dumps(raw))

    with pytest.raises(ValueError, match=r"is not the next range of a file in the directory"):
        Manifest.read(str(tmp_path / "p"))
