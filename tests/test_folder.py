"""Tests for torchloader/folder.py: scanning a class-per-folder tree.

torchvision cannot be installed here, so ``reference_image_folder`` restates its
documented ``ImageFolder`` algorithm (``find_classes`` + ``make_dataset``) and the
scan is compared against it on trees whose sort order is easy to get wrong.
"""

from __future__ import annotations

import os

import pytest

from torchloader.folder import find_classes, scan_folder

LAYOUT = "expected root/<class>/<file>"


def reference_image_folder(root, extensions, allow_empty=False):
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
        f"class folders without files ending in .png under '{root}': dog, emu; "
        f"remove them or pass allow_empty=True"
    )
    with pytest.raises(FileNotFoundError):  # torchvision refuses it too
        reference_image_folder(str(root), (".png",))


def test_allow_empty_keeps_the_empty_class_in_classes(tmp_path):
    root = make_tree(tmp_path / "root", ["cat/a.png", "emu/b.png"], folders=["dog"])

    classes, paths, labels = scan_folder(root, (".png",), allow_empty=True)

    ref_classes, _, ref_samples = reference_image_folder(
        str(root), (".png",), allow_empty=True
    )
    assert classes == ref_classes == ["cat", "dog", "emu"]
    assert list(zip(paths, labels)) == ref_samples
    assert labels == [0, 2]
