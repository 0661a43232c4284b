"""Read ``path,label`` rows from a CSV file with a header."""

from __future__ import annotations

import csv
import os

__all__ = ["read_csv_table"]


def read_csv_table(
    csv_path: str | os.PathLike[str],
    path_column: str,
    label_column: str | None,
    root: str | os.PathLike[str] | None,
) -> tuple[list[str], list[int] | list[str] | None]:
    """Return ``(paths, labels)``: absolute paths, and int or str labels (or None).

    Relative paths resolve against ``root`` (default: the CSV's folder) and must
    not leave it (``../x.jpg`` is refused); absolute paths are taken as they are.

    Raises:
        KeyError: a column is missing (the message lists the columns found).
        ValueError: an empty cell or a relative path that leaves ``root``; the
            message gives the line number.
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
        paths, labels = [], []
        for line, row in enumerate(rows, start=2):
            paths.append(_resolve(row[path_column], root, csv_path, line))
            if label_column is not None:
                labels.append(_cell(row, label_column, csv_path, line))
    if label_column is None:
        return paths, None
    return paths, _as_ints(labels)


def _cell(row: dict, column: str, csv_path: str, line: int) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise ValueError(f"'{csv_path}' line {line}: empty {column!r} cell")
    return value


def _resolve(path: str | None, root: str, csv_path: str, line: int) -> str:
    if not path or not path.strip():
        raise ValueError(f"'{csv_path}' line {line}: empty path cell")
    path = path.strip()
    if os.path.isabs(path):
        return path
    full = os.path.normpath(os.path.join(root, path))
    if os.path.commonpath([full, root]) != root:
        raise ValueError(
            f"'{csv_path}' line {line}: {path!r} resolves to '{full}', outside "
            f"root '{root}'; give an absolute path or a root that contains it"
        )
    return full


def _as_ints(labels: list[str]) -> list[int] | list[str]:
    try:
        return [int(v) for v in labels]
    except ValueError:
        return labels
