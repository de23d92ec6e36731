"""The metrics of `modelserver validate`, computed with scikit-learn from the labels of the
hold-out set and a model's answers.

Classifiers (task binary or multiclass): accuracy and f1 from the `predict` output (the
model's own decision), auc and logLoss from `predict_proba`. Binary f1 is the f1 of the
second class of the model's `classes` (1 for 0/1 labels); multiclass f1 is the macro
average over the classes present in the labels or the predictions; multiclass auc is the
macro average of one-vs-rest AUCs. Regressors: rmse and mae.
"""

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    roc_auc_score,
    root_mean_squared_error,
)

from modelserver.validate_client import ModelInfo, Predictions
from modelserver.validate_errors import ValidateError

Metric = Literal["accuracy", "auc", "f1", "logLoss", "rmse", "mae"]
CLASSIFIER_METRICS: frozenset[str] = frozenset({"accuracy", "auc", "f1", "logLoss"})
REGRESSOR_METRICS: frozenset[str] = frozenset({"rmse", "mae"})
_PROBABILITY_METRICS: frozenset[str] = frozenset({"auc", "logLoss"})
_CLASSES_SHOWN = 10


def needs_probabilities(metric: Metric) -> bool:
    return metric in _PROBABILITY_METRICS


def check_metric_fits(metric: Metric, info: ModelInfo, role: str) -> None:
    """Refuse, before any row is sent, a metric that this model cannot produce."""
    if info.task == "regression" and metric in CLASSIFIER_METRICS:
        raise ValidateError(
            "metric",
            f"metric {metric} needs a classifier, and the {role} model {info.name!r} is a "
            "regressor; use rmse or mae",
        )
    if info.task != "regression" and metric in REGRESSOR_METRICS:
        raise ValidateError(
            "metric",
            f"metric {metric} is for regressors, and the {role} model {info.name!r} is a "
            f"{info.task} classifier; use accuracy, auc, f1 or logLoss",
        )
    if metric in CLASSIFIER_METRICS and not info.classes:
        raise ValidateError(
            "endpoint", f"the {role} model's metadata names no classes for its {info.task} task"
        )
    if needs_probabilities(metric) and not info.has_probabilities:
        raise ValidateError(
            "metric",
            f"metric {metric} needs class probabilities, and the {role} model {info.name!r} "
            "answers classes only (no predict_proba output); use accuracy or f1",
        )


def score(
    metric: Metric, info: ModelInfo, labels: Sequence[Any], predictions: Predictions, role: str
) -> float:
    """The metric of the model's answers against the labels."""
    if metric in REGRESSOR_METRICS:
        truth = _numeric_labels(labels, metric)
        predicted = np.asarray(predictions.values, dtype=np.float64)
        function = root_mean_squared_error if metric == "rmse" else mean_absolute_error
        return _finite(metric, role, lambda: function(truth, predicted))
    classes = list(info.classes or [])
    truth_index = _class_indices(labels, classes, role)
    if metric == "accuracy" or metric == "f1":
        predicted_index = _predicted_indices(predictions.values, classes, role)
        if metric == "accuracy":
            return _finite(metric, role, lambda: accuracy_score(truth_index, predicted_index))
        if len(classes) == 2:
            return _finite(
                metric,
                role,
                lambda: f1_score(truth_index, predicted_index, pos_label=1, zero_division=0.0),
            )
        return _finite(
            metric,
            role,
            lambda: f1_score(truth_index, predicted_index, average="macro", zero_division=0.0),
        )
    probabilities = _probabilities(predictions, len(classes), role)
    if metric == "logLoss":
        with warnings.catch_warnings():
            # Float32 answers sum to one within float32 precision, not float64's.
            warnings.filterwarnings("ignore", message="The y_prob values do not sum to one")
            return _finite(
                metric,
                role,
                lambda: log_loss(truth_index, probabilities, labels=list(range(len(classes)))),
            )
    _every_class_present(truth_index, classes)
    if len(classes) == 2:
        return _finite(metric, role, lambda: roc_auc_score(truth_index, probabilities[:, 1]))
    return _finite(
        metric,
        role,
        lambda: roc_auc_score(
            truth_index,
            probabilities,
            multi_class="ovr",
            average="macro",
            labels=list(range(len(classes))),
        ),
    )


def _finite(metric: str, role: str, compute: Any) -> float:
    try:
        value = float(compute())
    except ValueError as error:
        raise ValidateError(
            "metric", f"scikit-learn cannot compute {metric} for the {role} model: {error}"
        ) from error
    if not math.isfinite(value):
        raise ValidateError(
            "metric",
            f"{metric} of the {role} model is {value}: the model answered values that are not "
            "finite numbers",
        )
    return value


def _numeric_labels(labels: Sequence[Any], metric: str) -> npt.NDArray[np.float64]:
    values = np.empty(len(labels), dtype=np.float64)
    for row, label in enumerate(labels, start=1):
        try:
            values[row - 1] = float(label)
        except (TypeError, ValueError, OverflowError):
            raise ValidateError(
                "dataset", f"row {row} has the label {label!r}; {metric} needs numeric labels"
            ) from None
        if not math.isfinite(values[row - 1]):
            raise ValidateError(
                "dataset", f"row {row} has the label {label!r}; {metric} needs finite numbers"
            )
    return values


def _class_key(value: Any, numeric_classes: bool) -> Any:
    """A label and a class compare equal by this key: 1, 1.0 and "1" are the class 1."""
    if numeric_classes:
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            return ("not a number", str(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _lookup(classes: list[Any]) -> tuple[dict[Any, int], bool]:
    numeric = all(isinstance(c, int | float) and not isinstance(c, bool) for c in classes)
    return {_class_key(c, numeric): index for index, c in enumerate(classes)}, numeric


def _shown_classes(classes: list[Any]) -> str:
    shown = ", ".join(repr(c) for c in classes[:_CLASSES_SHOWN])
    return shown + (", ..." if len(classes) > _CLASSES_SHOWN else "")


def _class_indices(labels: Sequence[Any], classes: list[Any], role: str) -> npt.NDArray[np.int64]:
    lookup, numeric = _lookup(classes)
    indices = np.empty(len(labels), dtype=np.int64)
    for row, label in enumerate(labels, start=1):
        index = lookup.get(_class_key(label, numeric))
        if index is None:
            raise ValidateError(
                "dataset",
                f"row {row} has the label {label!r}, which is not one of the {role} model's "
                f"classes ({_shown_classes(classes)})",
            )
        indices[row - 1] = index
    return indices


def _predicted_indices(
    values: npt.NDArray[Any], classes: list[Any], role: str
) -> npt.NDArray[np.int64]:
    lookup, numeric = _lookup(classes)
    indices = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values.tolist(), start=1):
        index = lookup.get(_class_key(value, numeric))
        if index is None:
            raise ValidateError(
                "endpoint",
                f"the {role} model predicted {value!r} for row {row}, which is not one of its "
                f"classes ({_shown_classes(classes)})",
            )
        indices[row - 1] = index
    return indices


def _probabilities(predictions: Predictions, n_classes: int, role: str) -> npt.NDArray[np.float64]:
    probabilities = predictions.probabilities
    if probabilities is None or probabilities.shape[1] != n_classes:
        columns = None if probabilities is None else probabilities.shape[1]
        raise ValidateError(
            "endpoint",
            f"the {role} model answered {columns} probabilities per row for {n_classes} classes",
        )
    return probabilities


def _every_class_present(indices: npt.NDArray[np.int64], classes: list[Any]) -> None:
    present = set(np.unique(indices).tolist())
    absent = [c for index, c in enumerate(classes) if index not in present]
    if absent:
        raise ValidateError(
            "dataset",
            f"auc needs rows of every class, and no row has the label "
            f"{', '.join(repr(c) for c in absent[:_CLASSES_SHOWN])}",
        )
