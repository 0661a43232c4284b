"""Tests for torchloader/datasets/_folder.py: scanning a class-per-folder tree.

torchvision cannot be installed here, so ``reference_image_folder`` restates its
documented ``ImageFolder`` algorithm (``find_classes`` + ``make_dataset``) and the
scan is compared against it on trees whose sort order is easy to get wrong.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import deadline

from torchloader.datasets._folder import IMG_EXTENSIONS, find_classes, scan_folder

LAYOUT = "expected root/<class>/<file>"
# torchvision.datasets.folder.IMG_EXTENSIONS, ImageFolder's default
TORCHVISION_IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def reference_image_folder(root, extensions=TORCHVISION_IMG_EXTENSIONS, allow_empty=False):
    """torchvision.datasets.ImageFolder's classes, class_to_idx and samples."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise FileNotFoundError(f"Couldn't find any class folder in {root}.")
    class_to_idx = {name: i for i, name in enumerate(classes)}
    extensions = tuple(e.lower() for e in extensions)
    samples, available = [], set()
    for target_class in sorted(class_to_idx):
        target_dir = os.path.join(root, target_class)
        for dirpath, _, fnames in sorted(os.walk(target_dir, followlinks=True)):
            for fname in sorted(fnames):
                path = os.path.join(dirpath, fname)
                if path.lower().endswith(extensions):
                    samples.append((path, class_to_idx[target_class]))
                    available.add(target_class)
    if set(classes) - available and not allow_empty:
        raise FileNotFoundError("Found no valid file for some classes.")
    return classes, class_to_idx, samples


def make_tree(root, files, folders=()):
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    for rel in folders:
        (root / rel).mkdir(parents=True, exist_ok=True)
    return root


TRICKY = [
    # class names: uppercase sorts before "_", before lowercase; " " < "-" < "."
    "B/x.png",
    "_c/i.png",
    "a b/h.png",
    "a-b/g.png",
    "a/z.png",
    "a/Y.png",
    "a/10.png",
    "a/9.png",
    "a/UPPER.PNG",
    "a/skip.txt",
    "a/a/f.png",
    "a/a/b/c.png",  # "a/a/b" sorts after "a/a-b" and "a/a.b": "/" > "-" > "."
    "a/a-b/d.png",
    "a/a.b/e.png",
    "a/a b/s.png",
]


def test_classes_and_samples_match_image_folder_on_tricky_names(tmp_path):
    root = make_tree(tmp_path / "root", TRICKY)
    (root / "loose.png").write_bytes(b"x")  # files directly in root are ignored

    classes, paths, labels = scan_folder(root, (".png",))

    ref_classes, ref_class_to_idx, ref_samples = reference_image_folder(str(root), (".png",))
    assert classes == ref_classes == ["B", "_c", "a", "a b", "a-b"]
    assert {c: i for i, c in enumerate(classes)} == ref_class_to_idx
    assert list(zip(paths, labels)) == ref_samples


def test_sample_order_is_sorted_by_folder_then_name(tmp_path):
    root = make_tree(tmp_path / "root", TRICKY)

    _, paths, _ = scan_folder(root, (".png",))

    rel = [os.path.relpath(p, root) for p in paths]
    assert rel == [
        "B/x.png",
        "_c/i.png",
        "a/10.png",
        "a/9.png",
        "a/UPPER.PNG",
        "a/Y.png",
        "a/z.png",
        "a/a/f.png",
        "a/a b/s.png",
        "a/a-b/d.png",
        "a/a.b/e.png",
        "a/a/b/c.png",
        "a b/h.png",
        "a-b/g.png",
    ]


def test_matches_image_folder_with_several_extensions_and_other_files(tmp_path):
    files = ["dog/1.JPG", "dog/2.jpeg", "dog/3.npy", "dog/n/4.Png", "cat/5.gif", "cat/6.txt"]
    root = make_tree(tmp_path / "root", files)
    extensions = (".jpg", ".jpeg", ".png", ".gif")

    classes, paths, labels = scan_folder(root, extensions)

    ref_classes, _, ref_samples = reference_image_folder(str(root), extensions)
    assert classes == ref_classes == ["cat", "dog"]
    assert list(zip(paths, labels)) == ref_samples
    assert len(paths) == 4


def test_suffixes_match_case_insensitively_both_ways(tmp_path):
    root = make_tree(tmp_path / "root", ["c/a.PNG", "c/b.png", "c/c.jpg"])

    _, paths, _ = scan_folder(root, [".PNG"])

    assert [os.path.basename(p) for p in paths] == ["a.PNG", "b.png"]


def test_a_single_suffix_string_is_one_suffix(tmp_path):
    root = make_tree(tmp_path / "root", ["c/a.png", "c/b.jpg", "c/g"])

    _, paths, _ = scan_folder(root, ".png")

    assert [os.path.basename(p) for p in paths] == ["a.png"]


def test_returns_str_paths_for_a_path_root(tmp_path):
    root = make_tree(tmp_path / "root", ["c/a.png"])

    classes, paths, labels = scan_folder(root, (".png",))

    assert (classes, labels) == (["c"], [0])
    assert paths == [os.path.join(str(root), "c", "a.png")]
    assert all(type(p) is str for p in paths)


def test_find_classes_lists_sorted_sub_folders_only(tmp_path):
    root = make_tree(tmp_path / "root", ["b/x", "a/x", "B/x", "file.png"])

    assert find_classes(str(root)) == ["B", "a", "b"]


def test_symlinked_class_folders_and_sub_folders_are_followed(tmp_path):
    make_tree(tmp_path / "outside", ["x.png", "deep/y.png"])
    root = make_tree(tmp_path / "root", ["own/a.png"])
    os.symlink(tmp_path / "outside", root / "linked")
    os.symlink(tmp_path / "outside", root / "own" / "more")

    classes, paths, labels = scan_folder(root, (".png",))

    ref_classes, _, ref_samples = reference_image_folder(str(root), (".png",))
    assert classes == ref_classes == ["linked", "own"]
    assert list(zip(paths, labels)) == ref_samples
    assert len(paths) == 5


def test_a_symlink_loop_is_scanned_once_and_terminates(tmp_path):
    root = make_tree(tmp_path / "root", ["cls/a.png", "cls/sub/b.png"])
    os.symlink("..", root / "cls" / "sub" / "up")  # cls/sub/up -> cls
    os.symlink(".", root / "cls" / "self")  # cls/self -> cls

    classes, paths, labels = scan_folder(root, (".png",))

    assert classes == ["cls"]
    assert [os.path.relpath(p, root) for p in paths] == ["cls/a.png", "cls/sub/b.png"]
    assert labels == [0, 0]


def test_a_folder_reached_through_two_links_is_kept_under_the_first_name(tmp_path):
    make_tree(tmp_path / "shared", ["s.png"])
    root = make_tree(tmp_path / "root", ["cls/a.png"])
    for name in ("l2", "l1", "l3"):
        os.symlink(tmp_path / "shared", root / "cls" / name)

    _, paths, _ = scan_folder(root, (".png",))

    assert [os.path.relpath(p, root) for p in paths] == ["cls/a.png", "cls/l1/s.png"]


def test_a_missing_root_says_what_was_expected(tmp_path):
    root = tmp_path / "nope"

    with pytest.raises(FileNotFoundError) as info:
        scan_folder(root, (".png",))

    assert str(info.value) == f"'{root}' is not a folder; {LAYOUT}"


def test_a_file_as_root_is_not_a_folder(tmp_path):
    root = tmp_path / "file.png"
    root.write_bytes(b"x")

    with pytest.raises(FileNotFoundError, match=r"is not a folder; expected root/<class>/<file>$"):
        scan_folder(root, (".png",))


def test_an_empty_root_has_no_class_folders(tmp_path):
    root = make_tree(tmp_path, [], folders=["root"]) / "root"

    with pytest.raises(FileNotFoundError) as info:
        scan_folder(root, (".png",))

    assert str(info.value) == f"no class folders under '{root}'; {LAYOUT}"


def test_files_directly_in_root_suggest_the_root_is_one_level_too_low(tmp_path):
    root = make_tree(tmp_path / "root", ["b.png", "a.png", "notes.txt"])

    with pytest.raises(FileNotFoundError) as info:
        scan_folder(root, (".png",))

    assert str(info.value) == (
        f"no class folders under '{root}', but 2 files directly in it (e.g. 'a.png'); "
        f"{LAYOUT}. Is the root one level too low? "
        f"Files without classes can be read with PathDataset(paths)."
    )


def test_only_other_files_in_root_is_just_no_class_folders(tmp_path):
    root = make_tree(tmp_path / "root", ["notes.txt"])

    with pytest.raises(FileNotFoundError) as info:
        scan_folder(root, (".png",))

    assert str(info.value) == f"no class folders under '{root}'; {LAYOUT}"


def test_class_folders_without_matching_files_suggest_one_level_too_high(tmp_path):
    root = make_tree(tmp_path / "root", ["a/readme.txt", "b/x.jpg"])

    with pytest.raises(FileNotFoundError) as info:
        scan_folder(root, (".png", ".gif"))

    assert str(info.value) == (
        f"no files ending in .png, .gif under '{root}' (scanned 2 class folders: a, b); "
        f"{LAYOUT}. Is the root one level too high?"
    )


def test_the_message_shortens_long_lists(tmp_path):
    root = make_tree(tmp_path / "root", [], folders=[f"c{i}" for i in range(7)])

    with pytest.raises(FileNotFoundError) as info:
        scan_folder(root, (".png",))

    assert "(scanned 7 class folders: c0, c1, c2, c3, c4, ... (7 in all))" in str(info.value)


def test_an_empty_class_folder_is_an_error(tmp_path):
    root = make_tree(tmp_path / "root", ["cat/a.png", "emu/notes.txt"], folders=["dog"])

    with pytest.raises(FileNotFoundError) as info:
        scan_folder(root, (".png",))

    assert str(info.value) == (
        f"class folders without files ending in .png under '{root}': dog, emu; remove them or pass allow_empty=True"
    )
    with pytest.raises(FileNotFoundError):  # torchvision refuses it too
        reference_image_folder(str(root), (".png",))


def test_allow_empty_keeps_the_empty_class_in_classes(tmp_path):
    root = make_tree(tmp_path / "root", ["cat/a.png", "emu/b.png"], folders=["dog"])

    classes, paths, labels = scan_folder(root, (".png",), allow_empty=True)

    ref_classes, _, ref_samples = reference_image_folder(str(root), (".png",), allow_empty=True)
    assert classes == ref_classes == ["cat", "dog", "emu"]
    assert list(zip(paths, labels)) == ref_samples
    assert labels == [0, 2]


# --- what is listed: torchvision's extensions, regular files only -------------------


def test_the_default_extensions_are_torchvisions():
    assert IMG_EXTENSIONS == TORCHVISION_IMG_EXTENSIONS


def test_default_extensions_give_image_folders_samples(tmp_path):
    names = ["a.jpg", "b.JPEG", "c.png", "d.ppm", "e.bmp", "f.pgm", "g.tif", "h.tiff", "i.webp"]
    others = ["j.gif", "k.npy", "l.npz", "m.pt", "n.txt", "o.jpg.bak"]
    root = make_tree(tmp_path / "root", [f"c/{n}" for n in names + others])

    _, paths, _ = scan_folder(root, IMG_EXTENSIONS)

    _, _, ref_samples = reference_image_folder(str(root))
    assert [p for p, _ in ref_samples] == paths
    assert [os.path.basename(p) for p in paths] == names


def test_fifos_devices_and_broken_links_are_not_listed_and_never_opened(tmp_path):
    root = make_tree(tmp_path / "root", ["c/a.jpg", "c/sub/b.jpg", "elsewhere/real.jpg"])
    os.mkfifo(root / "c" / "x.jpg")  # opening it would wait for a writer forever
    os.mkfifo(root / "c" / "sub" / "x2.jpg")
    os.symlink("/dev/zero", root / "c" / "y.jpg")  # reading it would never end
    os.symlink(root / "missing.jpg", root / "c" / "z.jpg")
    os.symlink(root / "elsewhere" / "real.jpg", root / "c" / "w.jpg")  # a link to a file: kept

    with deadline(10):
        classes, paths, labels = scan_folder(root, (".jpg",))

    assert classes == ["c", "elsewhere"]
    assert [os.path.relpath(p, root) for p in paths] == ["c/a.jpg", "c/w.jpg", "c/sub/b.jpg", "elsewhere/real.jpg"]
    # ImageFolder's os.walk lists all of them (and then blocks reading x.jpg)
    ref = [os.path.relpath(p, root) for p, _ in reference_image_folder(str(root), (".jpg",))[2]]
    assert ref == [
        "c/a.jpg",
        "c/w.jpg",
        "c/x.jpg",
        "c/y.jpg",
        "c/z.jpg",
        "c/sub/b.jpg",
        "c/sub/x2.jpg",
        "elsewhere/real.jpg",
    ]


def test_a_fifo_directly_in_root_is_not_a_loose_file(tmp_path):
    root = make_tree(tmp_path, [], folders=["root"]) / "root"
    os.mkfifo(root / "x.png")

    with deadline(10), pytest.raises(FileNotFoundError) as info:
        scan_folder(root, (".png",))

    assert str(info.value) == f"no class folders under '{root}'; {LAYOUT}"


# --- a root one level too high --------------------------------------------------------


def test_a_root_holding_splits_of_class_folders_is_one_level_too_high(tmp_path):
    files = ["train/cat/1.png", "train/dog/2.png", "test/cat/3.png", "test/dog/4.png"]
    root = make_tree(tmp_path / "root", files)

    with pytest.raises(ValueError) as info:
        scan_folder(root, (".png",))

    assert str(info.value) == (
        f"'{root}' looks one level too high: its folders test, train hold no files ending "
        f"in .png of their own, only sub-folders (cat, dog) that hold them, as class folders "
        f"do; {LAYOUT}. Use from_folder('{root}/train') for one of them, or pass "
        f"allow_nested_only=True if test, train are the classes and their sub-folders belong to them"
    )


def test_allow_nested_only_reads_such_a_tree_as_image_folder_does(tmp_path):
    files = ["train/cat/1.png", "train/dog/2.png", "test/cat/3.png", "test/dog/4.png"]
    root = make_tree(tmp_path / "root", files)

    classes, paths, labels = scan_folder(root, (".png",), allow_nested_only=True)

    ref_classes, _, ref_samples = reference_image_folder(str(root), (".png",))
    assert classes == ref_classes == ["test", "train"]
    assert list(zip(paths, labels)) == ref_samples


def test_a_single_split_folder_is_one_level_too_high(tmp_path):
    root = make_tree(tmp_path / "root", ["train/cat/1.png", "train/dog/2.png"])

    with pytest.raises(ValueError, match=r"its folders train hold no files .* only sub-folders \(cat, dog\)"):
        scan_folder(root, (".png",))


def test_an_empty_split_folder_does_not_hide_the_layout(tmp_path):
    root = make_tree(tmp_path / "root", ["train/cat/1.png", "val/cat/2.png"], folders=["test"])

    with pytest.raises(ValueError, match=r"its folders train, val hold no files"):
        scan_folder(root, (".png",), allow_empty=True)


def test_nested_sub_folders_inside_classes_are_legal(tmp_path):
    # a file of its own in one class folder: an ordinary tree, whatever the rest holds
    mixed = make_tree(tmp_path / "mixed", ["cat/001.png", "cat/nested/002.png", "dog/nested/003.png"])
    # every class only in sub-folders, but sub-classes with names of their own
    subclasses = make_tree(tmp_path / "sub", ["cat/tabby/1.png", "cat/siamese/2.png", "dog/pug/3.png"])
    # one class whose images are all in one sub-folder
    single = make_tree(tmp_path / "single", ["cat/all/1.png", "cat/all/2.png"])

    for root in (mixed, subclasses, single):
        classes, paths, labels = scan_folder(root, (".png",))
        ref_classes, _, ref_samples = reference_image_folder(str(root), (".png",))
        assert classes == ref_classes
        assert list(zip(paths, labels)) == ref_samples
    assert scan_folder(mixed, (".png",))[2] == [0, 0, 1]


# --- pack directories are not image folders --------------------------------------------


def fake_pack(folder):
    """What ``torchloader pack`` leaves: shards, labels, sources and the manifest."""
    folder.mkdir(parents=True)
    np.save(folder / "shard-00000.npy", np.zeros((2, 4, 4, 3), np.uint8))
    np.save(folder / "labels.npy", np.zeros(2, np.int64))
    (folder / "sources.txt").write_text("a.png\nb.png\n")
    (folder / "manifest.json").write_text(json.dumps({"format": "torchloader.pack", "version": 1, "count": 2}))
    return folder


def test_a_pack_beside_the_class_folders_is_refused(tmp_path):
    root = make_tree(tmp_path / "root", ["cat/a.png", "dog/b.png"])
    pack = fake_pack(root / "train.packed")

    for extensions in (IMG_EXTENSIONS, (".npy",)):
        with pytest.raises(ValueError) as info:
            scan_folder(root, extensions, allow_empty=True)
        assert str(info.value) == (
            f"'{pack}' inside the image root '{root}' is a pack written by `torchloader pack` "
            f"(manifest.json of format 'torchloader.pack'), not a folder of images: its shards "
            f"are not samples. Load it with PackedDataset('{pack}'), and move it out of '{root}'"
        )


def test_a_pack_inside_a_class_folder_is_refused(tmp_path):
    root = make_tree(tmp_path / "root", ["cat/a.png"])
    fake_pack(root / "cat" / "deep" / "p")

    with pytest.raises(ValueError, match=r"/cat/deep/p' inside the image root .* is a pack"):
        scan_folder(root, (".npy", ".png"))


def test_a_pack_as_the_root_is_refused(tmp_path):
    root = fake_pack(tmp_path / "packed")

    with pytest.raises(ValueError) as info:
        scan_folder(root, (".npy",))

    assert str(info.value) == (
        f"'{root}' is a pack written by `torchloader pack` (manifest.json of format "
        f"'torchloader.pack'), not a folder of images: its shards are not samples. "
        f"Load it with PackedDataset('{root}')"
    )


def test_another_manifest_json_is_just_a_file(tmp_path):
    root = make_tree(tmp_path / "root", ["cat/a.npy", "dog/b.npy"])
    (root / "cat" / "manifest.json").write_text('{"format": "something else"}')
    (root / "dog" / "manifest.json").write_text("not json {")

    classes, paths, _ = scan_folder(root, (".npy", ".json"))

    assert classes == ["cat", "dog"]
    assert [os.path.relpath(p, root) for p in paths] == [
        "cat/a.npy",
        "cat/manifest.json",
        "dog/b.npy",
        "dog/manifest.json",
    ]
