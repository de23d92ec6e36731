"""DataFrames for models fitted on one: the only module that builds pandas objects, and it
is imported only where such a model is served (the array path never comes here)."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from modelserver.model import Column, ColumnKind, ModelColumns


def table(columns: ModelColumns, values: dict[str, npt.NDArray[Any]]) -> pd.DataFrame:
    """The model's table from each column's checked values, in the model's column order."""
    return pd.DataFrame(
        {column.name: _series(column, values[column.name]) for column in columns.columns},
        copy=False,
    )


def table_of_rows(rows: npt.NDArray[np.floating], columns: ModelColumns) -> pd.DataFrame:
    """A table from a [rows, features] array of numbers, its columns taken by position."""
    return table(columns, {column.name: rows[:, i] for i, column in enumerate(columns.columns)})


def example_table(columns: ModelColumns, dtype: type[np.floating]) -> pd.DataFrame:
    """One row the model takes, for its warm-up: 0 for numbers, its first known category
    (or an empty string) for strings."""
    return table(columns, {column.name: _example(column, dtype) for column in columns.columns})


def with_example_values(
    frame: pd.DataFrame, columns: Sequence[Column], dtype: type[np.floating]
) -> pd.DataFrame:
    """`frame` with the values of `columns` replaced in every row by the warm-up's, which
    the model took: to tell whether a failure of the model came from those values."""
    rows = len(frame)
    return frame.assign(
        **{
            column.name: _series(column, np.repeat(_example(column, dtype), rows))
            for column in columns
        }
    )


def _example(column: Column, dtype: type[np.floating]) -> npt.NDArray[Any]:
    if column.categories:
        return np.asarray(column.categories[:1], dtype=object)
    if column.kind is ColumnKind.STRING:
        return np.asarray([""], dtype=object)
    return np.zeros(1, dtype=dtype)


def concatenate(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The tables of requests merged into one predict call, rows in order."""
    return pd.concat(tables, ignore_index=True)


def _series(column: Column, values: npt.NDArray[Any]) -> Any:
    if column.categorical:
        # XGBoost maps the categories it was trained on to its codes itself.
        return pd.Categorical(values, categories=column.categories)
    if values.dtype == object:
        # Strings as plain Python objects: what encoders fitted on object columns see.
        return pd.Series(values, dtype=object, copy=False)
    return values
