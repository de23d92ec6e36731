"""What the server needs from a loaded model, whatever library made it."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt


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
