"""Tests for torchloader/csv_table.py: read_csv_table."""

from __future__ import annotations

import os

import pytest

from torchloader.csv_table import read_csv_table


def write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def test_relative_paths_resolve_against_the_csv_folder(tmp_path):
    csv_path = write(tmp_path / "data" / "train.csv", "path,label\na.png,1\nsub/b.png,0\n")

    paths, labels = read_csv_table(csv_path, "path", "label", None)

    folder = str(tmp_path / "data")
    assert paths == [os.path.join(folder, "a.png"), os.path.join(folder, "sub", "b.png")]
    assert labels == [1, 0]


def test_relative_paths_resolve_against_root_when_given(tmp_path):
    csv_path = write(tmp_path / "lists" / "train.csv", "path,label\nx/a.png,3\n")
    root = tmp_path / "images"

    paths, labels = read_csv_table(csv_path, "path", "label", root)

    assert paths == [str(root / "x" / "a.png")]
    assert labels == [3]


def test_a_relative_csv_path_resolves_against_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path / "train.csv", "path,label\na.png,0\n")
    monkeypatch.chdir(tmp_path)

    paths, _ = read_csv_table("train.csv", "path", "label", None)

    assert paths == [os.path.join(os.getcwd(), "a.png")]


def test_absolute_paths_are_taken_as_they_are(tmp_path):
    elsewhere = str(tmp_path / "elsewhere" / "a.png")
    csv_path = write(tmp_path / "data" / "t.csv", f"path,label\n{elsewhere},0\n")

    paths, _ = read_csv_table(csv_path, "path", "label", None)

    assert paths == [elsewhere]


def test_paths_are_normalised_when_they_stay_inside_root(tmp_path):
    csv_path = write(tmp_path / "t.csv", "path,label\nsub/../a.png,0\n./b.png,1\n")

    paths, _ = read_csv_table(csv_path, "path", "label", None)

    assert paths == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]


def test_a_relative_path_leaving_root_is_refused_with_the_line(tmp_path):
    csv_path = write(tmp_path / "data" / "t.csv", "path,label\nok.png,0\n../secret.png,1\n")

    with pytest.raises(ValueError) as info:
        read_csv_table(csv_path, "path", "label", None)

    root = str(tmp_path / "data")
    assert str(info.value) == (
        f"'{csv_path}' line 3: '../secret.png' resolves to "
        f"'{tmp_path / 'secret.png'}', outside root '{root}'; "
        f"give an absolute path or a root that contains it"
    )


def test_a_sibling_folder_sharing_roots_prefix_is_outside_root(tmp_path):
    # "data2" starts with "data" as a string but is not inside it.
    csv_path = write(tmp_path / "data" / "t.csv", "path,label\n../data2/a.png,0\n")

    with pytest.raises(ValueError, match=r"line 2: '\.\./data2/a\.png' resolves to"):
        read_csv_table(csv_path, "path", "label", None)


def test_integer_labels_become_ints_and_names_stay_str(tmp_path):
    ints = write(tmp_path / "i.csv", "path,label\na,-1\nb, 2 \n")
    names = write(tmp_path / "n.csv", "path,label\na,cat\nb,dog\n")
    mixed = write(tmp_path / "m.csv", "path,label\na,1\nb,cat\n")

    assert read_csv_table(ints, "path", "label", None)[1] == [-1, 2]
    assert read_csv_table(names, "path", "label", None)[1] == ["cat", "dog"]
    assert read_csv_table(mixed, "path", "label", None)[1] == ["1", "cat"]


def test_label_column_none_reads_no_labels_and_needs_no_such_column(tmp_path):
    csv_path = write(tmp_path / "t.csv", "path\na.png\nb.png\n")

    paths, labels = read_csv_table(csv_path, "path", None, None)

    assert labels is None
    assert paths == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]


def test_other_column_names_and_extra_columns(tmp_path):
    csv_path = write(tmp_path / "t.csv", "id,file,split,y\n1,a.png,train,4\n2,b.png,val,5\n")

    paths, labels = read_csv_table(csv_path, "file", "y", None)

    assert paths == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert labels == [4, 5]


def test_a_missing_label_column_lists_the_columns(tmp_path):
    csv_path = write(tmp_path / "t.csv", "path,y\na.png,1\n")

    with pytest.raises(KeyError) as info:
        read_csv_table(csv_path, "path", "label", None)

    assert info.value.args[0] == (
        f"'{csv_path}' has no column 'label' (columns: ['path', 'y']); "
        f"pass path_column=... / label_column=..."
    )


def test_a_missing_path_column_lists_the_columns(tmp_path):
    csv_path = write(tmp_path / "t.csv", "file,label\na.png,1\n")

    with pytest.raises(KeyError) as info:
        read_csv_table(csv_path, "path", "label", None)

    assert info.value.args[0].startswith(
        f"'{csv_path}' has no column 'path' (columns: ['file', 'label'])"
    )


def test_an_empty_file_has_no_columns(tmp_path):
    csv_path = write(tmp_path / "t.csv", "")

    with pytest.raises(KeyError, match=r"has no column 'path' \(columns: \[\]\)"):
        read_csv_table(csv_path, "path", "label", None)


def test_a_header_only_file_gives_no_rows(tmp_path):
    csv_path = write(tmp_path / "t.csv", "path,label\n")

    assert read_csv_table(csv_path, "path", "label", None) == ([], [])


def test_empty_cells_are_refused_with_the_line(tmp_path):
    no_label = write(tmp_path / "a.csv", "path,label\na.png,0\nb.png,\n")
    no_path = write(tmp_path / "b.csv", "path,label\n  ,0\n")
    short_row = write(tmp_path / "c.csv", "path,label\na.png\n")

    with pytest.raises(ValueError) as info:
        read_csv_table(no_label, "path", "label", None)
    assert str(info.value) == f"'{no_label}' line 3: empty 'label' cell"

    with pytest.raises(ValueError) as info:
        read_csv_table(no_path, "path", "label", None)
    assert str(info.value) == f"'{no_path}' line 2: empty path cell"

    with pytest.raises(ValueError, match=r"line 2: empty 'label' cell"):
        read_csv_table(short_row, "path", "label", None)


def test_a_byte_order_mark_does_not_rename_the_first_column(tmp_path):
    csv_path = write(tmp_path / "t.csv", "path,label\na.png,1\n", encoding="utf-8-sig")

    paths, labels = read_csv_table(csv_path, "path", "label", None)

    assert paths == [str(tmp_path / "a.png")]
    assert labels == [1]


def test_quoted_cells_with_commas_and_spaces(tmp_path):
    csv_path = write(tmp_path / "t.csv", 'path,label\n"my pics/a, b.png",sea lion\n')

    paths, labels = read_csv_table(csv_path, "path", "label", None)

    assert paths == [str(tmp_path / "my pics" / "a, b.png")]
    assert labels == ["sea lion"]


def test_utf8_names(tmp_path):
    csv_path = write(tmp_path / "t.csv", "path,label\nкот/ё.png,чай\n")

    paths, labels = read_csv_table(csv_path, "path", "label", None)

    assert paths == [str(tmp_path / "кот" / "ё.png")]
    assert labels == ["чай"]
