"""Tests for torchloader/datasets/_csv.py: read_csv_table."""

from __future__ import annotations

import os
import re

import pytest

from torchloader.datasets._csv import read_csv_table


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

    assert read_csv_table(ints, "path", "label", None)[1] == [-1, 2]
    assert read_csv_table(names, "path", "label", None)[1] == ["cat", "dog"]


def test_leading_zeros_signs_and_spaces_around_integers_are_integers(tmp_path):
    csv_path = write(tmp_path / "t.csv", 'path,label\na,007\nb, 3\nc,+4 \nd,"  -0012"\ne,0\n')

    assert read_csv_table(csv_path, "path", "label", None)[1] == [7, 3, 4, -12, 0]


def test_names_that_only_look_numeric_stay_names(tmp_path):
    # not integers and not decimal numbers: version strings, words, other digits
    cells = ["v1.5", "1.2.3", "nan", "inf", "1_000", "\u0663", "3rd"]
    csv_path = write(tmp_path / "t.csv", "path,label\n" + "".join(f"p{i},{c}\n" for i, c in enumerate(cells)))

    assert read_csv_table(csv_path, "path", "label", None)[1] == cells


def test_decimal_labels_are_refused_with_the_line_and_the_fix(tmp_path):
    csv_path = write(tmp_path / "t.csv", "path,label\na.png,2.0\nb.png,10.0\nc.png,1.5\n")

    with pytest.raises(ValueError) as info:
        read_csv_table(csv_path, "path", "label", None)

    assert str(info.value) == (
        f"'{csv_path}' column 'label', line 2: label '2.0' is a decimal number; labels must be "
        f"integers or class names: convert the column to integers (e.g. 2.0 -> 2), "
        f"or write the classes as names"
    )


@pytest.mark.parametrize("cell", ["1.5", ".5", "3.", "1e3", "-2.5E-1"])
def test_every_decimal_spelling_is_refused_even_among_integers(tmp_path, cell):
    csv_path = write(tmp_path / "t.csv", f"path,label\na,1\nb,2\nc,{cell}\n")

    with pytest.raises(ValueError, match=rf"line 4: label '{re.escape(cell)}' is a decimal number"):
        read_csv_table(csv_path, "path", "label", None)


def test_one_name_among_integer_labels_is_refused_not_renumbering_them(tmp_path):
    csv_path = write(tmp_path / "t.csv", "path,label\na.png,10\nb.png,2\nc.png,cat\n")

    with pytest.raises(ValueError) as info:
        read_csv_table(csv_path, "path", "label", None)

    assert str(info.value) == (
        f"'{csv_path}' column 'label', line 4: label 'cat' is a class name, but 2 of the "
        f"3 labels are integers (the first on line 2); fix the cell, or make every label "
        f"a class name (e.g. 'class_10' for '10')"
    )


def test_one_integer_among_names_is_the_offending_cell(tmp_path):
    csv_path = write(tmp_path / "t.csv", "path,label\na,cat\nb,7\nc,dog\n")

    with pytest.raises(ValueError) as info:
        read_csv_table(csv_path, "path", "label", None)

    assert str(info.value).endswith(
        "column 'label', line 3: label '7' is an integer, but 2 of the 3 labels are class names "
        "(the first on line 2); fix the cell, or make every label a class name (e.g. 'class_7' for '7')"
    )


def test_a_tie_blames_the_kind_that_comes_later_and_lines_count_quoted_newlines(tmp_path):
    # the first record spans lines 2-3, so the second row is on line 4
    csv_path = write(tmp_path / "t.csv", 'path,label\n"a\nb.png",1\nc.png,x\n')

    with pytest.raises(ValueError, match=r"line 4: label 'x' is a class name, but 1 of the 2 labels"):
        read_csv_table(csv_path, "path", "label", None)


def test_line_numbers_count_the_blank_lines_the_reader_skips(tmp_path):
    csv_path = write(tmp_path / "t.csv", "path,label\n\na.png,\n")

    with pytest.raises(ValueError, match=r"line 3: empty 'label' cell$"):
        read_csv_table(csv_path, "path", "label", None)


def test_path_cells_are_taken_exactly_as_written(tmp_path):
    for name in ("a.jpg", " a.jpg", "a.jpg "):
        (tmp_path / name).write_bytes(b"x")
    csv_path = write(tmp_path / "t.csv", 'path,label\n a.jpg,0\na.jpg ,1\n" a.jpg",2\na.jpg,3\n')

    paths, _ = read_csv_table(csv_path, "path", "label", None)

    assert paths == [
        str(tmp_path / " a.jpg"),
        str(tmp_path / "a.jpg "),
        str(tmp_path / " a.jpg"),
        str(tmp_path / "a.jpg"),
    ]


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
        f"'{csv_path}' has no column 'label' (columns: ['path', 'y']); pass path_column=... / label_column=..."
    )


def test_a_missing_path_column_lists_the_columns(tmp_path):
    csv_path = write(tmp_path / "t.csv", "file,label\na.png,1\n")

    with pytest.raises(KeyError) as info:
        read_csv_table(csv_path, "path", "label", None)

    assert info.value.args[0].startswith(f"'{csv_path}' has no column 'path' (columns: ['file', 'label'])")


def test_an_empty_file_has_no_columns(tmp_path):
    csv_path = write(tmp_path / "t.csv", "")

    with pytest.raises(KeyError, match=r"has no column 'path' \(columns: \[\]\)"):
        read_csv_table(csv_path, "path", "label", None)


def test_a_header_only_file_gives_no_rows(tmp_path):
    csv_path = write(tmp_path / "t.csv", "path,label\n")

    assert read_csv_table(csv_path, "path", "label", None) == ([], [])


def test_empty_cells_are_refused_with_the_line(tmp_path):
    no_label = write(tmp_path / "a.csv", "path,label\na.png,0\nb.png,\n")
    no_path = write(tmp_path / "b.csv", "path,label\n,0\n")
    spaces = write(tmp_path / "d.csv", "path,label\n  ,0\n")
    short_row = write(tmp_path / "c.csv", "path,label\na.png\n")

    with pytest.raises(ValueError) as info:
        read_csv_table(no_label, "path", "label", None)
    assert str(info.value) == f"'{no_label}' line 3: empty 'label' cell"

    with pytest.raises(ValueError) as info:
        read_csv_table(no_path, "path", "label", None)
    assert str(info.value) == f"'{no_path}' line 2: empty path cell"

    with pytest.raises(ValueError) as info:
        read_csv_table(spaces, "path", "label", None)
    assert str(info.value) == (
        f"'{spaces}' line 2: the path cell '  ' holds only spaces; "
        f"write the file's path there (paths are taken exactly as written)"
    )

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
