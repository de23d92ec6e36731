"""The hold-out set of `modelserver validate`: fetched and verified like a model artifact,
then read into one float column per feature and the raw labels.

Every column but the label is a feature column, in file order; a value that is empty
(CSV), null or absent (JSON lines, Parquet) is a missing value (NaN), which the model may
or may not accept. A value that is not a number is remembered as the column's problem:
it matters only if the column is sent to a model.
"""

import csv
import json
import math
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modelserver.fatal import StartupError
from modelserver.sources import fetch_model, file_sha256
from modelserver.validate_errors import ValidateError

DatasetFormat = Literal["csv", "parquet", "jsonl"]

_PARQUET_MAGIC = b"PAR1"
# pandas writes a DataFrame's index as a column of this name; it is not a feature.
_PANDAS_INDEX_PREFIX = "__index_level_"
_NAMES_SHOWN = 20


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    values: npt.NDArray[np.float64]
    """One float per row; NaN where the value is missing or not a number."""
    problem: str | None
    """The first value that is not a number, e.g. "row 3 holds 'abc'"; None if all are."""


@dataclass(frozen=True)
class Dataset:
    columns: list[FeatureColumn]
    """Every column but the label, in file order."""
    labels: list[Any]
    """The label of each row as read: a string (CSV), a JSON value, a Parquet value."""
    label_column: str

    @property
    def rows(self) -> int:
        return len(self.labels)

    def column(self, name: str) -> FeatureColumn:
        return next(column for column in self.columns if column.name == name)


def fetch_dataset(
    uri: str,
    *,
    sha256: str | None,
    cache_dir: Path,
    timeout_seconds: float,
    max_bytes: int,
    retries: int,
) -> Path:
    """The dataset as a local file whose digest matches the pin (downloads go to cache_dir)."""
    try:
        path = fetch_model(
            uri,
            cache_dir=cache_dir,
            expected_sha256=sha256,
            timeout_seconds=timeout_seconds,
            max_bytes=max_bytes,
            retries=retries,
            artifact="dataset",
        )
        actual = None if sha256 is None else file_sha256(path)
    except StartupError as error:
        raise ValidateError("dataset", str(error)) from error
    except OSError as error:
        raise ValidateError("dataset", f"cannot read the dataset {uri}: {error}") from error
    if sha256 is not None and actual != sha256:
        raise ValidateError(
            "dataset",
            f"dataset sha256 mismatch: {uri} has sha256 {actual}, the pin is {sha256}; "
            "pin the digest of the file you mean (sha256sum FILE) or restore that file",
        )
    return path


def read_dataset(
    path: Path, data_format: DatasetFormat, label_column: str, max_rows: int | None
) -> Dataset:
    """Read the first `max_rows` rows (all without it) and check that a label column exists."""
    try:
        with path.open("rb") as head:
            is_parquet = head.read(len(_PARQUET_MAGIC)) == _PARQUET_MAGIC
        if data_format == "parquet":
            columns, labels = _read_parquet(path, label_column, max_rows)
        elif is_parquet:
            raise ValidateError(
                "dataset", f"the dataset is a Parquet file, not {data_format}; set format parquet"
            )
        elif data_format == "csv":
            columns, labels = _read_csv(path, label_column, max_rows)
        else:
            columns, labels = _read_jsonl(path, label_column, max_rows)
    except UnicodeDecodeError as error:
        raise ValidateError(
            "dataset", f"the dataset is not UTF-8 text ({data_format}): {error}"
        ) from error
    except OSError as error:
        raise ValidateError("dataset", f"cannot read the dataset: {error}") from error
    if labels is None:
        names = [column.name for column in columns]
        shown = ", ".join(names[:_NAMES_SHOWN]) + (", ..." if len(names) > _NAMES_SHOWN else "")
        raise ValidateError(
            "dataset",
            f"label column {label_column!r} not found; the dataset's columns are: "
            f"{shown or '(none)'}",
        )
    if not labels:
        raise ValidateError("dataset", "the dataset has no rows")
    for row, label in enumerate(labels, start=1):
        if label is None or (isinstance(label, str) and not label.strip()):
            raise ValidateError(
                "dataset", f"row {row} has no label: column {label_column!r} is empty there"
            )
    return Dataset(columns, labels, label_column)


class _Column:
    """A feature column being read: floats, and the first value that is not one."""

    def __init__(self, name: str, rows_before: int = 0) -> None:
        self.name = name
        self.values = array("d", [math.nan] * rows_before)
        self.problem: str | None = None

    def add(self, value: Any, row: int) -> None:
        number = _as_number(value)
        if number is None:
            number = math.nan
            if self.problem is None:
                self.problem = f"row {row} holds {_shown(value)}"
        self.values.append(number)

    def done(self) -> FeatureColumn:
        return FeatureColumn(self.name, np.frombuffer(self.values, dtype=np.float64), self.problem)


def _as_number(value: Any) -> float | None:
    """The value as a float (NaN when missing), or None when it is not a number."""
    if value is None:
        return math.nan
    if isinstance(value, bool | int | float | Decimal):
        try:
            return float(value)
        except OverflowError:
            return None
    if isinstance(value, str):
        if not value.strip():
            return math.nan
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _checked_names(names: list[str]) -> None:
    for position, name in enumerate(names, start=1):
        if not name.strip():
            raise ValidateError("dataset", f"column {position} of the dataset has no name")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValidateError("dataset", f"the dataset has two columns named {name!r}")
        seen.add(name)


def _read_csv(
    path: Path, label_column: str, max_rows: int | None
) -> tuple[list[FeatureColumn], list[Any] | None]:
    # utf-8-sig: spreadsheet programs start their CSV files with a byte-order mark.
    with path.open(newline="", encoding="utf-8-sig") as text:
        reader = csv.reader(text, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise ValidateError("dataset", "the dataset is empty: no header row (CSV)")
            _checked_names(header)
            label_at = header.index(label_column) if label_column in header else None
            columns = [_Column(name) for name in header]
            labels: list[Any] = []
            for cells in _first(reader, max_rows):
                if not cells:
                    continue  # a blank line
                if len(cells) != len(header):
                    raise ValidateError(
                        "dataset",
                        f"line {reader.line_num} has {len(cells)} values, the header has "
                        f"{len(header)} columns (CSV)",
                    )
                row = len(labels) + 1
                for column, cell in zip(columns, cells, strict=True):
                    column.add(cell, row)
                labels.append(None if label_at is None else cells[label_at])
        except csv.Error as error:
            raise ValidateError(
                "dataset", f"line {reader.line_num} is not valid CSV: {error}"
            ) from error
    features = [column.done() for column in columns if column.name != label_column]
    return features, None if label_at is None else labels


def _first(rows: Iterable[list[str]], max_rows: int | None) -> Iterator[list[str]]:
    """The rows up to `max_rows` non-blank ones."""
    taken = 0
    for cells in rows:
        if max_rows is not None and taken >= max_rows:
            return
        if cells:
            taken += 1
        yield cells


def _read_jsonl(
    path: Path, label_column: str, max_rows: int | None
) -> tuple[list[FeatureColumn], list[Any] | None]:
    columns: dict[str, _Column] = {}
    labels: list[Any] = []
    found_label = False
    with path.open(encoding="utf-8-sig") as text:
        for line_number, line in enumerate(text, start=1):
            if max_rows is not None and len(labels) >= max_rows:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValidateError(
                    "dataset", f"line {line_number} is not valid JSON: {error.msg} (JSON lines)"
                ) from error
            if not isinstance(record, dict):
                raise ValidateError(
                    "dataset",
                    f"line {line_number} is a JSON {type(record).__name__}, not an object with "
                    "one key per column (JSON lines)",
                )
            row = len(labels) + 1
            for name in record:
                if name != label_column and name not in columns:
                    if not name.strip():
                        raise ValidateError(
                            "dataset", f"line {line_number} has a key with no name (JSON lines)"
                        )
                    columns[name] = _Column(name, rows_before=row - 1)  # absent so far: missing
            for name, column in columns.items():
                column.add(record.get(name), row)
            found_label = found_label or label_column in record
            labels.append(record.get(label_column))
    features = [column.done() for column in columns.values()]
    return features, labels if found_label or not labels else None


def _read_parquet(
    path: Path, label_column: str, max_rows: int | None
) -> tuple[list[FeatureColumn], list[Any] | None]:
    # Imported here: CSV and JSON lines do not need the Arrow libraries.
    import arro3.io
    from arro3.core import ChunkedArray, DataType

    try:
        table = arro3.io.read_parquet(path).read_all()
    except BaseException as error:
        # A corrupt file makes the Rust reader panic, which arrives as a BaseException.
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise
        raise ValidateError(
            "dataset", f"the dataset is not a readable Parquet file: {_first_line(error)}"
        ) from error
    if max_rows is not None and table.num_rows > max_rows:
        table = table.slice(0, max_rows)
    names = [name for name in table.column_names if not name.startswith(_PANDAS_INDEX_PREFIX)]
    _checked_names(names)
    features: list[FeatureColumn] = []
    labels: list[Any] | None = None
    for name in names:
        data: ChunkedArray = table[name]
        if name == label_column:
            labels = list(data.to_pylist())
        elif table.num_rows == 0:
            features.append(FeatureColumn(name, np.zeros(0), None))
        elif (
            DataType.is_integer(data.type) or DataType.is_floating(data.type)
        ) and data.null_count == 0:
            values = np.asarray(data.to_numpy(), dtype=np.float64)
            features.append(FeatureColumn(name, values, None))
        else:
            column = _Column(name)
            for row, value in enumerate(data.to_pylist(), start=1):
                column.add(value, row)
            features.append(column.done())
    return features, labels


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
