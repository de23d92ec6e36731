"""The data of `modelserver profile`: a CSV (header row), Parquet or .npy file read into one
column of numbers per feature, and labels from a column of it or from a file of their own.

A value that is empty (CSV) or null (Parquet) is a missing value (NaN). A column that holds
text is a categorical column: each distinct text gets a code, its position among the
column's distinct texts in sorted order (what pandas' `astype("category")` assigns), since
the server receives numbers only.
"""

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

_PARQUET_MAGIC = b"PAR1"
_PANDAS_INDEX_PREFIX = "__index_level_"


class ProfileError(Exception):
    """A profile cannot be built; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Column:
    name: str
    values: npt.NDArray[np.float64]
    """One number per row; NaN where missing; the code of each text for a text column."""
    texts: list[str] | None = None
    """For a text column: the text of code i at position i."""


@dataclass(frozen=True)
class Table:
    columns: list[Column]
    labels: list[Any] | None
    """The label column's values as read, when one was named."""

    @property
    def rows(self) -> int:
        return len(self.columns[0].values) if self.columns else 0


def read_table(path: Path, label_column: str | None) -> Table:
    """Read a .csv, .parquet or .npy file (by its content for Parquet, else its suffix)."""
    try:
        with path.open("rb") as head:
            is_parquet = head.read(len(_PARQUET_MAGIC)) == _PARQUET_MAGIC
        if is_parquet:
            columns, labels = _read_parquet(path, label_column)
        elif path.suffix == ".npy":
            if label_column is not None:
                raise ProfileError(
                    f"{path} is a .npy array without column names; give the labels with"
                    " --labels FILE instead of --label-column"
                )
            columns, labels = _read_npy(path), None
        elif path.suffix in (".csv", ".txt"):
            columns, labels = _read_csv(path, label_column)
        else:
            raise ProfileError(
                f"{path}: unknown data format {path.suffix!r}; give a .csv (with a header"
                " row), .parquet or .npy file"
            )
    except UnicodeDecodeError as error:
        raise ProfileError(f"{path} is not UTF-8 text: {error}") from error
    except OSError as error:
        raise ProfileError(f"cannot read {path}: {error}") from error
    if label_column is not None and labels is None:
        names = ", ".join(column.name for column in columns[:20])
        raise ProfileError(f"{path} has no column {label_column!r}; its columns are: {names}")
    if not columns or len(columns[0].values) == 0:
        raise ProfileError(f"{path} holds no feature values (no rows or no columns)")
    return Table(columns, labels)


def read_labels(path: Path) -> list[Any]:
    """Labels from a 1-D .npy array or a text file with one label per line (no header)."""
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            if array.ndim != 1:
                raise ProfileError(f"{path}: labels must be a 1-D array, got shape {array.shape}")
            labels: list[Any] = array.tolist()
            return labels
        with path.open(encoding="utf-8-sig") as text:
            return [line.strip() for line in text if line.strip()]
    except (OSError, ValueError) as error:
        raise ProfileError(f"cannot read labels from {path}: {error}") from error


def _read_npy(path: Path) -> list[Column]:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ProfileError(f"{path} is not a numeric .npy array: {error}") from error
    if array.ndim != 2 or array.dtype.kind not in "fiub":
        raise ProfileError(
            f"{path}: expected a 2-D array of numbers [rows, features], got shape"
            f" {array.shape} of {array.dtype}"
        )
    values = array.astype(np.float64)
    return [Column(f"f{i}", values[:, i].copy()) for i in range(values.shape[1])]


def _read_csv(path: Path, label_column: str | None) -> tuple[list[Column], list[Any] | None]:
    with path.open(newline="", encoding="utf-8-sig") as text:
        reader = csv.reader(text, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise ProfileError(f"{path} is empty: a CSV file needs a header row")
            _check_names(header, path)
            cells: list[list[str]] = [[] for _ in header]
            for line in reader:
                if not line:
                    continue
                if len(line) != len(header):
                    raise ProfileError(
                        f"{path}: line {reader.line_num} has {len(line)} values, the header"
                        f" has {len(header)} columns"
                    )
                for column, cell in zip(cells, line, strict=True):
                    column.append(cell)
        except csv.Error as error:
            raise ProfileError(
                f"{path}: line {reader.line_num} is not valid CSV: {error}"
            ) from error
    labels = cells[header.index(label_column)] if label_column in header else None
    columns = [
        _column(name, values)
        for name, values in zip(header, cells, strict=True)
        if name != label_column
    ]
    return columns, list(labels) if labels is not None else None


def _read_parquet(path: Path, label_column: str | None) -> tuple[list[Column], list[Any] | None]:
    import arro3.io
    from arro3.core import DataType

    try:
        table = arro3.io.read_parquet(path).read_all()
    except BaseException as error:
        # A corrupt file makes the Rust reader panic, which arrives as a BaseException.
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise
        raise ProfileError(f"{path} is not a readable Parquet file: {error}") from error
    names = [name for name in table.column_names if not name.startswith(_PANDAS_INDEX_PREFIX)]
    _check_names(names, path)
    columns: list[Column] = []
    labels: list[Any] | None = None
    for name in names:
        data = table[name]
        if name == label_column:
            labels = list(data.to_pylist())
        elif (
            DataType.is_integer(data.type) or DataType.is_floating(data.type)
        ) and data.null_count == 0:
            columns.append(Column(name, np.asarray(data.to_numpy(), dtype=np.float64)))
        else:
            columns.append(_column(name, list(data.to_pylist())))
    return columns, labels


def _check_names(names: list[str], path: Path) -> None:
    for position, name in enumerate(names, start=1):
        if not name.strip():
            raise ProfileError(f"{path}: column {position} has no name")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ProfileError(f"{path}: more than one column is named {duplicates[0]!r}")


def _column(name: str, cells: Sequence[Any]) -> Column:
    """A column of numbers, or of text codes when any value is not a number."""
    if all(isinstance(cell, str) for cell in cells):
        try:
            return Column(name, np.asarray(cells, dtype=np.float64))
        except ValueError:
            pass  # empty cells or text: value by value below
    numbers = [_as_number(cell) for cell in cells]
    if all(number is not None for number in numbers):
        return Column(name, np.asarray(numbers, dtype=np.float64))
    texts = [None if _is_missing(cell) else str(cell) for cell in cells]
    distinct = sorted({text for text in texts if text is not None})
    code = {text: float(position) for position, text in enumerate(distinct)}
    values = np.asarray([math.nan if text is None else code[text] for text in texts])
    return Column(name, values, distinct)


def _is_missing(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _as_number(cell: Any) -> float | None:
    """The cell as a float (NaN when missing), or None when it is text."""
    if _is_missing(cell):
        return math.nan
    if isinstance(cell, bool | int | float | Decimal):
        return float(cell)
    if isinstance(cell, str):
        try:
            return float(cell)
        except ValueError:
            return None
    return None
