"""scikit-learn estimators and pipelines: skops (safe) or joblib/pickle (unsafe, opt-in)."""

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
import numpy.typing as npt
import skops.io
from sklearn.base import BaseEstimator, is_classifier
from sklearn.utils import get_tags

from modelserver.fatal import StartupError
from modelserver.model import Column, ColumnKind, Features, Prediction, Task
from modelserver.sklearn_columns import sklearn_columns
from modelserver.tensors import REJECTED, InvalidInput

if TYPE_CHECKING:
    from pandas import DataFrame


class SklearnModel:
    input_dtype = np.float64

    def __init__(self, estimator: Any, model_format: str, source: Path) -> None:
        if not isinstance(estimator, BaseEstimator):
            raise StartupError(f"{source}: not a scikit-learn estimator ({type(estimator)})")
        n_features = getattr(estimator, "n_features_in_", None)
        if not isinstance(n_features, int | np.integer):
            raise StartupError(f"{source}: not a fitted estimator (no n_features_in_)")
        self.format = model_format
        self._estimator = estimator
        self.n_features = int(n_features)
        names = getattr(estimator, "feature_names_in_", None)
        self.feature_names: list[str] | None = None if names is None else [str(n) for n in names]
        self.columns = sklearn_columns(estimator)
        self.accepts_missing: bool = get_tags(estimator).input_tags.allow_nan
        if is_classifier(estimator):
            classes = np.asarray(estimator.classes_)
            self.task = Task.BINARY if len(classes) == 2 else Task.MULTICLASS
            self.classes: list[str] | list[int] | None = classes.tolist()
        else:
            self.task = Task.REGRESSION
            self.classes = None
        self.has_probabilities = self.task is not Task.REGRESSION and hasattr(
            estimator, "predict_proba"
        )

    def predict(self, rows: npt.NDArray[np.floating]) -> Prediction:
        return self._predict(rows)

    def predict_frame(self, frame: "DataFrame") -> Prediction:
        try:
            return self._predict(frame)
        except (ValueError, TypeError) as error:
            refused = self._refused_columns(frame)
            if refused is None:
                raise  # not the values of the columns that the server could not check
            raise InvalidInput(_refusal(refused, error), REJECTED) from error

    def _refused_columns(self, frame: "DataFrame") -> list[Column] | None:
        """The columns, among those whose kind the model does not tell (passed through, or
        given to a FunctionTransformer, so unchecked), whose values made the model fail on
        `frame`: it predicts once they hold the warm-up's values instead. None when that
        does not help, a fault of the model's own. Runs only after a failure."""
        if self.columns is None:
            return None
        unchecked = [column for column in self.columns.columns if column.kind is ColumnKind.ANY]
        if len(unchecked) > 1:
            for column in unchecked:
                if self._takes_example_values(frame, [column]):
                    return [column]
        if unchecked and self._takes_example_values(frame, unchecked):
            return unchecked
        return None

    def _takes_example_values(self, frame: "DataFrame", columns: list[Column]) -> bool:
        from modelserver.frames import with_example_values

        try:
            self._predict(with_example_values(frame, columns, self.input_dtype))
        except Exception:
            return False
        return True

    def _predict(self, rows: Features) -> Prediction:
        with warnings.catch_warnings():
            # Estimators fitted on a DataFrame warn about plain arrays; columns are positional.
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            values = np.asarray(self._estimator.predict(rows))
            probabilities = (
                np.asarray(self._estimator.predict_proba(rows), dtype=np.float64)
                if self.has_probabilities
                else None
            )
        return Prediction(values, probabilities)


def _refusal(columns: list[Column], error: Exception) -> str:
    names = ", ".join(repr(column.name) for column in columns)
    inputs, their = ("inputs", "their") if len(columns) > 1 else ("input", "its")
    return (
        f"{inputs} {names}: the model refused {their} values: {type(error).__name__}: {error}"
        f" (the server cannot tell what such a column holds, passed through or given to a"
        f" FunctionTransformer, so its values reach the model as sent)"
    )


def load_skops(path: Path, extra_trusted_types: list[str]) -> SklearnModel:
    """Load without running code: every type outside skops' safe set must be trusted by name."""
    untrusted = skops.io.get_untrusted_types(file=path)
    refused = sorted(set(untrusted) - set(extra_trusted_types))
    if refused:
        raise StartupError(
            f"{path} contains types that are not trusted: {', '.join(refused)};"
            " review them and list them in MODELSERVER_SKOPS_TRUSTED_TYPES to load it"
        )
    return SklearnModel(skops.io.load(path, trusted=untrusted), "sklearn", path)


def load_joblib(path: Path) -> SklearnModel:
    return SklearnModel(joblib.load(path), "sklearn-joblib", path)
