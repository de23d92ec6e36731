"""What the server needs from a loaded model, whatever library made it."""

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from pandas import DataFrame


class Task(StrEnum):
    REGRESSION = "regression"
    BINARY = "binary"
    MULTICLASS = "multiclass"


@dataclass(frozen=True)
class Prediction:
    """Predictions for a block of rows; row i of every array belongs to input row i."""

    values: npt.NDArray[np.generic]
    """Class labels for classifiers, predicted values for regressors."""
    probabilities: npt.NDArray[np.floating] | None
    """Class probabilities [rows, classes] for classifiers that have them."""

    def rows(self, start: int, stop: int) -> "Prediction":
        probabilities = None if self.probabilities is None else self.probabilities[start:stop]
        return Prediction(self.values[start:stop], probabilities)

    def monitored_values(self) -> npt.NDArray[np.floating]:
        """One number per row for the prediction-value histogram (drift at a glance)."""
        if self.probabilities is None:
            return np.asarray(self.values, dtype=np.float64).reshape(len(self.values), -1)[:, 0]
        if self.probabilities.shape[1] == 2:
            return self.probabilities[:, 1]  # positive-class probability
        # Probability of the predicted class.
        return np.asarray(self.probabilities.max(axis=1), dtype=np.float64)


class ColumnKind(StrEnum):
    """What a named column of the model holds."""

    NUMBER = "number"
    STRING = "string"
    ANY = "any"
    """Not known from the model (a column passed on to the estimator as it is)."""


@dataclass(frozen=True)
class Column:
    """A named input column of a model fitted on a table."""

    name: str
    kind: ColumnKind
    categories: tuple[Any, ...] | None = None
    """The only values the model takes, when it refuses others (an encoder that fails on
    an unknown category)."""
    categorical: bool = False
    """The model wants the column as pandas' category dtype (XGBoost's categorical
    features), not as plain values."""


@dataclass(frozen=True)
class ModelColumns:
    """The named columns a model takes, in its order, and how it wants them."""

    columns: tuple[Column, ...]
    frame: bool
    """predict_frame takes a DataFrame with these columns; otherwise a numeric
    [rows, features] array in this order is what the model takes (predict)."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


Features: TypeAlias = "npt.NDArray[np.floating] | DataFrame"
"""What one predict call takes: an array of rows, or a table for models fitted on one."""


class Model(Protocol):
    format: str
    task: Task
    n_features: int
    feature_names: list[str] | None
    classes: list[str] | list[int] | None
    accepts_missing: bool
    has_probabilities: bool

    @property
    def input_dtype(self) -> type[np.floating]:
        """The float type that predict wants, so requests are converted once."""

    def predict(self, rows: npt.NDArray[np.floating]) -> Prediction: ...


class TableModel(Model, Protocol):
    """A model that knows its named columns, and can predict a DataFrame of them."""

    columns: ModelColumns | None

    def predict_frame(self, frame: "DataFrame") -> Prediction: ...


def model_columns(model: Model) -> ModelColumns | None:
    """The named columns of a model that knows them; models that predate named columns
    (and test doubles) have none."""
    columns: ModelColumns | None = getattr(model, "columns", None)
    return columns
