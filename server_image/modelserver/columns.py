"""Named-column requests: one input per column of a table (MLServer's pandas convention,
content_type pd), for models fitted on a DataFrame.

Each input is a column of shape [rows] or [rows, 1], named as the model's column; BYTES
inputs carry strings. The columns become the model's [rows, features] array in its own
column order (models of numbers), or a DataFrame (models that select columns by name,
encode strings or take categories). The same checks serve REST JSON, binary tensor data
and gRPC: each caller gives every input's data as it came (JSON values, or an array from
raw bytes or typed contents).
"""

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from modelserver.model import Column, ColumnKind, Features
from modelserver.tensors import (
    BAD_REQUEST,
    CONTENT_TYPE,
    DATATYPES,
    NUMPY_CONTENT,
    REJECTED,
    STRING_CONTENT,
    TABLE_CONTENT,
    InvalidInput,
    ModelInput,
    TensorHeader,
    as_array,
    check_integer_range,
    check_kind,
    finite_rows,
)

BYTES = "BYTES"
_COLUMN_CONTENT_TYPES = (NUMPY_CONTENT, TABLE_CONTENT, STRING_CONTENT)
_SHOWN_CATEGORIES = 10
"""Categories a refusal lists before it says how many more there are."""

ColumnData = list[Any] | npt.NDArray[Any]
"""An input's values as they came: JSON data, or an array (raw bytes, typed contents)."""


def column_rows(inputs: Sequence[tuple[TensorHeader, ColumnData]], model: ModelInput) -> Features:
    """The model's rows from one input per column: 400 for what is no table whatever the
    model (a name twice, columns of different lengths, data that do not fit their own
    shape or datatype), 422 for what this model cannot take (a name it does not have, a
    column missing, another datatype than the column's, an unknown category)."""
    if model.columns is None:
        raise _no_columns(inputs, model)
    given = _by_name(inputs, model.columns.names)
    rows = _row_count(given)
    values = {
        column.name: _column_values(*given[column.name], column, rows, model)
        for column in model.columns.columns
    }
    if model.frame:
        from modelserver.frames import table  # pandas: for models fitted on a table only

        return table(model.columns, values)
    return np.column_stack([values[name] for name in model.columns.names])


def _no_columns(
    inputs: Sequence[tuple[TensorHeader, ColumnData]], model: ModelInput
) -> InvalidInput:
    """The refusal of a table for a model fitted without feature names."""
    unnamed = "this model has no named columns (it was fitted without feature names)"
    if len(inputs) != 1:
        return InvalidInput(
            f"expected exactly 1 input tensor of shape [rows, {model.n_features}], got"
            f" {len(inputs)} inputs; {unnamed} to take one input per column",
            REJECTED,
        )
    header = inputs[0][0]
    given_by_input = (header.parameters or {}).get(CONTENT_TYPE) == TABLE_CONTENT
    where = f"input {header.name!r}" if given_by_input else "request"
    return InvalidInput(
        f"{where}: content_type {TABLE_CONTENT!r} is not supported: {unnamed}; send one"
        f" tensor [rows, {model.n_features}], content_type {NUMPY_CONTENT!r} (or none)",
        REJECTED,
    )


def _by_name(
    inputs: Sequence[tuple[TensorHeader, ColumnData]], names: tuple[str, ...]
) -> dict[str, tuple[TensorHeader, ColumnData]]:
    given: dict[str, tuple[TensorHeader, ColumnData]] = {}
    for header, data in inputs:
        if header.name in given:
            raise InvalidInput(
                f"input {header.name!r} is given twice; send each column once", BAD_REQUEST
            )
        given[header.name] = (header, data)
    known = set(names)
    unknown = [name for name in given if name not in known]
    if unknown:
        raise InvalidInput(
            f"input {unknown[0]!r} is not a column of this model; its columns: {', '.join(names)}",
            REJECTED,
        )
    missing = [name for name in names if name not in given]
    if missing:
        raise InvalidInput(
            f"column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} missing;"
            f" this model takes one input per column: {', '.join(names)}",
            REJECTED,
        )
    return given


def _row_count(given: dict[str, tuple[TensorHeader, ColumnData]]) -> int:
    """The rows of the table: every column's shape must be [rows] or [rows, 1], alike."""
    first: tuple[str, int] | None = None
    for name, (header, _) in given.items():
        shape = list(header.shape)
        where = f"input {name!r}"
        if any(dimension < 0 for dimension in shape):
            raise InvalidInput(f"{where}: shape {shape} has a negative dimension", BAD_REQUEST)
        if len(shape) not in (1, 2) or shape[1:] not in ([], [1]) or shape[0] < 1:
            raise InvalidInput(
                f"{where}: a column's shape is [rows] or [rows, 1] with rows >= 1, got {shape}",
                REJECTED,
            )
        if first is None:
            first = (name, shape[0])
        elif shape[0] != first[1]:
            raise InvalidInput(
                f"columns of different lengths: input {name!r} has {shape[0]} rows, input"
                f" {first[0]!r} has {first[1]}; a table needs one value per row in every column",
                BAD_REQUEST,
            )
    assert first is not None  # the model has at least one column, all of them given
    return first[1]


def _column_values(
    header: TensorHeader, data: ColumnData, column: Column, rows: int, model: ModelInput
) -> npt.NDArray[Any]:
    """One column's values, flat: numbers in the model's float type, or strings."""
    where = f"input {header.name!r}"
    content_type = (header.parameters or {}).get(CONTENT_TYPE)
    if content_type is not None and content_type not in _COLUMN_CONTENT_TYPES:
        raise InvalidInput(
            f"{where}: content_type {content_type!r:.40} is not supported for a column; use"
            f" {', '.join(_COLUMN_CONTENT_TYPES)} or none",
            REJECTED,
        )
    is_strings = header.datatype == BYTES
    if not is_strings and header.datatype not in DATATYPES:
        raise InvalidInput(
            f"{where}: unknown datatype {header.datatype!r}; supported:"
            f" {', '.join(DATATYPES)}, {BYTES}",
            BAD_REQUEST,
        )
    if column.kind is ColumnKind.STRING and not is_strings:
        raise InvalidInput(
            f"{where}: column {column.name!r} holds strings: send it as datatype {BYTES},"
            f" not {header.datatype}",
            REJECTED,
        )
    if column.kind is ColumnKind.NUMBER and is_strings:
        raise InvalidInput(
            f"{where}: column {column.name!r} holds numbers: send it with a numeric datatype"
            f" ({model_float_datatype(model)}, ...), not {BYTES}",
            REJECTED,
        )
    if is_strings:
        values = _strings(data, rows, where)
    else:
        values = _numbers(header.datatype, data, rows, model, where)
    if column.categories is not None:
        _check_categories(values, column, where)
    return values


def model_float_datatype(model: ModelInput) -> str:
    return "FP32" if model.input_dtype is np.float32 else "FP64"


def _numbers(
    datatype: str, data: ColumnData, rows: int, model: ModelInput, where: str
) -> npt.NDArray[Any]:
    values = as_array(data, where)
    if values.size != rows:
        raise InvalidInput(
            f"{where}: shape needs {rows} values, data has {values.size}", BAD_REQUEST
        )
    # As one [rows, 1] block, so that the one-tensor checks and messages apply.
    block = values.reshape(rows, 1)
    check_kind(block, DATATYPES[datatype], where, BAD_REQUEST)
    check_integer_range(block, DATATYPES[datatype], where)
    numbers: npt.NDArray[Any] = finite_rows(block, model, where, DATATYPES[datatype])[:, 0]
    return numbers


def _strings(data: ColumnData, rows: int, where: str) -> npt.NDArray[np.object_]:
    """BYTES elements as text: JSON strings, or bytes (raw data, gRPC) that are UTF-8."""
    elements = data.ravel().tolist() if isinstance(data, np.ndarray) else _flat(data, where)
    if len(elements) != rows:
        raise InvalidInput(
            f"{where}: shape needs {rows} values, data has {len(elements)}", BAD_REQUEST
        )
    texts = np.empty(rows, dtype=object)
    for position, element in enumerate(elements):
        if type(element) is str:
            texts[position] = element
        elif isinstance(element, bytes):
            try:
                texts[position] = element.decode()
            except UnicodeDecodeError:
                raise InvalidInput(
                    f"{where}: BYTES element {position} is not UTF-8 text", BAD_REQUEST
                ) from None
        else:
            raise InvalidInput(
                f"{where}: datatype BYTES takes strings, got {element!r:.40} at row {position}",
                BAD_REQUEST,
            )
    return texts


def _flat(data: list[Any], where: str) -> list[Any]:
    """JSON data of a column, [v, ...] or [[v], ...], as one list."""
    if not any(isinstance(element, list) for element in data):
        return data
    flat = []
    for element in data:
        if not isinstance(element, list) or len(element) != 1:
            raise InvalidInput(
                f"{where}: nested data of a column must be one value per row, [[v], [v], ...]",
                BAD_REQUEST,
            )
        flat.append(element[0])
    return flat


def _check_categories(values: npt.NDArray[Any], column: Column, where: str) -> None:
    assert column.categories is not None
    known = set(column.categories)
    for row, value in enumerate(values.tolist()):
        if value not in known and not (isinstance(value, float) and math.isnan(value)):
            shown = ", ".join(map(repr, column.categories[:_SHOWN_CATEGORIES]))
            more = len(column.categories) - _SHOWN_CATEGORIES
            if more > 0:
                shown += f" and {more} more"
            raise InvalidInput(
                f"{where}: {value!r:.40} at row {row} is not a category of column"
                f" {column.name!r} that this model knows: {shown}",
                REJECTED,
            )
