"""Read ``path,label`` rows from a CSV file with a header."""

from __future__ import annotations

import csv
import os
import re

from torchloader.remote.urls import is_url

__all__ = ["read_csv_table"]

# An integer label: optional sign, ASCII digits ("007" is 7), spaces around ignored.
_INT = re.compile(r"[+-]?[0-9]+")
# A decimal number that is not an integer ("2.0", "1.5", ".5", "1e3"): refused.
_DECIMAL = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][+-]?[0-9]+)?")


def read_csv_table(
    csv_path: str | os.PathLike[str],
    path_column: str,
    label_column: str | None,
    root: str | os.PathLike[str] | None,
) -> tuple[list[str], list[int] | list[str] | None]:
    """Return ``(paths, labels)``: absolute paths, and int or str labels (or None).

    Path cells are taken exactly as written (a leading or trailing space is part
    of the file name). Relative paths resolve against ``root`` (default: the
    CSV's folder) and must not leave it (``../x.jpg`` is refused); absolute
    paths are taken as they are.

    Label cells, spaces around them ignored, are either all integers (``"7"``,
    ``"007"``, ``" -3"``: returned as ``int``) or all class names (returned as
    ``str``). Decimal numbers (``"2.0"``) and a column mixing integers and names
    are refused rather than guessed at.

    Raises:
        KeyError: a column is missing (the message lists the columns found).
        ValueError: an empty cell, a relative path that leaves ``root``, a
            decimal label, or integers and names mixed in the label column; the
            message gives the line number and the fix.
    """
    csv_path = os.fspath(csv_path)
    root = os.path.abspath(root if root is not None else os.path.dirname(csv_path))
    # utf-8-sig: spreadsheet programs start the file with a byte-order mark, which
    # would otherwise become part of the first column's name.
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = csv.DictReader(f)
        columns = rows.fieldnames or []
        for column in (path_column, label_column):
            if column is not None and column not in columns:
                raise KeyError(
                    f"'{csv_path}' has no column {column!r} (columns: {columns}); "
                    f"pass path_column=... / label_column=..."
                )
        paths, labels, lines = [], [], []
        for row in rows:
            line = rows.line_num  # the file's line (a quoted cell may span several)
            paths.append(_resolve(row[path_column], root, csv_path, line))
            if label_column is not None:
                labels.append(_cell(row, label_column, csv_path, line))
                lines.append(line)
    if label_column is None:
        return paths, None
    return paths, _parse_labels(labels, lines, csv_path, label_column)


def _cell(row: dict, column: str, csv_path: str, line: int) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise ValueError(f"'{csv_path}' line {line}: empty {column!r} cell")
    return value


def _resolve(path: str | None, root: str, csv_path: str, line: int) -> str:
    if not path:
        raise ValueError(f"'{csv_path}' line {line}: empty path cell")
    if not path.strip():
        raise ValueError(
            f"'{csv_path}' line {line}: the path cell {path!r} holds only spaces; "
            f"write the file's path there (paths are taken exactly as written)"
        )
    if os.path.isabs(path) or is_url(path):
        return path
    full = os.path.normpath(os.path.join(root, path))
    if os.path.commonpath([full, root]) != root:
        raise ValueError(
            f"'{csv_path}' line {line}: {path!r} resolves to '{full}', outside "
            f"root '{root}'; give an absolute path or a root that contains it"
        )
    return full


def _parse_labels(cells: list[str], lines: list[int], csv_path: str, column: str) -> list[int] | list[str]:
    """All integers -> ints; all names -> the names; anything else is refused."""
    where = f"'{csv_path}' column {column!r}"
    for cell, line in zip(cells, lines):
        if _DECIMAL.fullmatch(cell) and not _INT.fullmatch(cell):
            raise ValueError(
                f"{where}, line {line}: label {cell!r} is a decimal number; labels must be "
                f"integers or class names: convert the column to integers (e.g. 2.0 -> 2), "
                f"or write the classes as names"
            )
    is_int = [bool(_INT.fullmatch(cell)) for cell in cells]
    ints = sum(is_int)
    if ints == len(cells):
        return [int(cell) for cell in cells]
    if ints == 0:
        return cells
    # Mixed: the rarer kind is the mistake (on a tie, the kind that comes later).
    names = len(cells) - ints
    first_int, first_name = is_int.index(True), is_int.index(False)
    if ints < names or (ints == names and first_int > first_name):
        odd, kind, count, others, first = first_int, "an integer", names, "class names", first_name
    else:
        odd, kind, count, others, first = first_name, "a class name", ints, "integers", first_int
    raise ValueError(
        f"{where}, line {lines[odd]}: label {cells[odd]!r} is {kind}, but {count} of the "
        f"{len(cells)} labels are {others} (the first on line {lines[first]}); fix the cell, "
        f"or make every label a class name (e.g. 'class_{cells[first_int]}' for {cells[first_int]!r})"
    )
