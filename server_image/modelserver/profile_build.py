"""Build a reference profile from a model and its training data (callable from Python;
`modelserver profile` is the command around it, profile_cli.py).

    from modelserver.profile_build import build_profile
    profile = build_profile(model, features, labels=labels)

Every feature gets quantile bins (default 10) unless it is categorical: a text column, a
column named in `categorical`, or one with no more distinct values than bins. Those get a
bin for each of their most frequent values (default 10) and `other`. Every feature also
has a `missing` bin.
"""

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from modelserver.model import Model, Prediction, Task
from modelserver.profile import (
    MAX_BINS,
    PROFILE_SCHEMA_VERSION,
    CategoryBins,
    ClassBins,
    FeatureProfile,
    ModelIdentity,
    OutputProfile,
    Profile,
    Quality,
    QuantileBins,
)
from modelserver.profile_bins import (
    category_bin_index,
    category_bin_names,
    class_bin_index,
    proportions,
    quantile_bin_index,
    quantile_bin_names,
    quantile_edges,
    top_categories,
)
from modelserver.profile_data import ProfileError, Table

DEFAULT_BINS = 10
DEFAULT_TOP_CATEGORIES = 10
_PREDICT_CHUNK_ROWS = 65536


def build_profile(
    model: Model,
    features: npt.NDArray[np.floating],
    *,
    labels: Sequence[Any] | npt.NDArray[Any] | None = None,
    names: Sequence[str] | None = None,
    categorical: Collection[str] = (),
    texts: dict[str, list[str]] | None = None,
    bins: int = DEFAULT_BINS,
    top: int = DEFAULT_TOP_CATEGORIES,
    model_sha256: str | None = None,
) -> Profile:
    """The profile of `model` on `features` [rows, model.n_features].

    `names` name the columns (default: the model's feature names, else f0, f1, ...);
    `categorical` names columns to bin by category; `texts` gives, for a column of text
    codes, the text of each code; `labels`, aligned with the rows, add the model's quality.
    """
    _check_arguments(model, features, bins, top)
    rows = np.asarray(features).astype(model.input_dtype).astype(np.float64)
    column_names = _names(model, names, rows.shape[1])
    unknown = sorted(set(categorical) - set(column_names))
    if unknown:
        raise ProfileError(f"--categorical names no column {unknown[0]!r}")
    _check_missing(model, rows, column_names)
    texts = texts or {}
    feature_profiles = [
        FeatureProfile(
            name=name,
            binning=_binning(rows[:, i], bins, top, name in categorical, texts.get(name)),
        )
        for i, name in enumerate(column_names)
    ]
    prediction = _predict(model, rows)
    return Profile(
        schema_version=PROFILE_SCHEMA_VERSION,
        model=ModelIdentity(
            sha256=model_sha256,
            format=model.format,
            task=model.task.value,
            n_features=model.n_features,
            feature_names=model.feature_names,
            classes=model.classes,
        ),
        rows=len(rows),
        features=feature_profiles,
        prediction=_output_profile(model, prediction, bins),
        quality=None if labels is None else _quality(model, prediction, _as_list(labels)),
    )


def build_profile_of_table(
    model: Model,
    table: Table,
    *,
    labels: Sequence[Any] | None = None,
    categorical: Collection[str] = (),
    bins: int = DEFAULT_BINS,
    top: int = DEFAULT_TOP_CATEGORIES,
    model_sha256: str | None = None,
) -> Profile:
    """build_profile on a table read by profile_data.read_table."""
    given = labels if labels is not None else table.labels
    names = [column.name for column in table.columns]
    if len(names) != model.n_features:
        hint = "" if given is not None else "; is one of them the label (--label-column)?"
        raise ProfileError(
            f"the data has {len(names)} feature columns, the model takes {model.n_features}" + hint
        )
    numpy_default = names == [f"f{i}" for i in range(len(names))]
    return build_profile(
        model,
        np.column_stack([column.values for column in table.columns]),
        labels=given,
        names=None if numpy_default else names,
        categorical=categorical,
        texts={column.name: column.texts for column in table.columns if column.texts},
        bins=bins,
        top=top,
        model_sha256=model_sha256,
    )


def _check_arguments(model: Model, features: npt.NDArray[np.floating], bins: int, top: int) -> None:
    if not 2 <= bins <= MAX_BINS - 1:
        raise ProfileError(f"bins must be between 2 and {MAX_BINS - 1}, got {bins}")
    if not 1 <= top <= MAX_BINS - 2:
        raise ProfileError(f"top categories must be between 1 and {MAX_BINS - 2}, got {top}")
    shape = np.shape(features)
    if len(shape) != 2 or shape[0] < 1:
        raise ProfileError(f"features must be [rows, features] with rows >= 1, got shape {shape}")
    if shape[1] != model.n_features:
        raise ProfileError(f"the data has {shape[1]} features, the model takes {model.n_features}")


def _names(model: Model, names: Sequence[str] | None, count: int) -> list[str]:
    if names is not None and len(names) != count:
        raise ProfileError(f"{len(names)} names for {count} feature columns")
    if model.feature_names is not None:
        if names is not None and list(names) != model.feature_names:
            position = next(
                i
                for i, (a, b) in enumerate(zip(names, model.feature_names, strict=False))
                if a != b
            )
            raise ProfileError(
                f"column {position} of the data is {names[position]!r}, the model's feature"
                f" {position} is {model.feature_names[position]!r}; the server takes features"
                " by position, so put the columns in the model's order"
            )
        return list(model.feature_names)
    return list(names) if names is not None else [f"f{i}" for i in range(count)]


def _check_missing(model: Model, rows: npt.NDArray[np.float64], names: list[str]) -> None:
    if model.accepts_missing:
        return
    missing = np.argwhere(np.isnan(rows))
    if len(missing):
        row, column = (int(i) for i in missing[0])
        raise ProfileError(
            f"column {names[column]!r} has a missing value at row {row + 1}, which this model"
            " does not accept; fill or drop such rows"
        )


def _binning(
    values: npt.NDArray[np.float64],
    bins: int,
    top: int,
    categorical: bool,
    texts: list[str] | None,
) -> QuantileBins | CategoryBins:
    distinct = np.unique(values[np.isfinite(values)])
    if categorical or texts is not None or len(distinct) <= bins:
        categories = top_categories(values, top if categorical or texts else bins)
        index = category_bin_index(np.asarray(categories), values)
        return CategoryBins(
            values=categories,
            labels=None if texts is None else [texts[int(code)] for code in categories],
            bins=category_bin_names(len(categories)),
            proportions=proportions(index, len(categories) + 2),
        )
    return _quantile_bins(values, bins)


def _quantile_bins(values: npt.NDArray[np.floating], bins: int) -> QuantileBins:
    numbers = np.asarray(values, dtype=np.float64)
    edges = quantile_edges(numbers, bins)
    index = quantile_bin_index(np.asarray(edges, dtype=np.float64), numbers)
    return QuantileBins(
        edges=edges,
        bins=quantile_bin_names(edges),
        proportions=proportions(index, len(edges) + 2),
    )


def _predict(model: Model, rows: npt.NDArray[np.float64]) -> Prediction:
    inputs = rows.astype(model.input_dtype)
    try:
        parts = [
            model.predict(inputs[start : start + _PREDICT_CHUNK_ROWS])
            for start in range(0, len(inputs), _PREDICT_CHUNK_ROWS)
        ]
    except Exception as error:
        raise ProfileError(
            f"the model failed on the data: {type(error).__name__}: {error}"
        ) from error
    values = np.concatenate([part.values for part in parts])
    if parts[0].probabilities is None:
        return Prediction(values, None)
    probabilities = [part.probabilities for part in parts if part.probabilities is not None]
    return Prediction(values, np.concatenate(probabilities))


def _output_profile(model: Model, prediction: Prediction, bins: int) -> OutputProfile:
    if model.task is Task.REGRESSION:
        return OutputProfile(score=_quantile_bins(prediction.monitored_values(), bins))
    assert model.classes is not None  # classifiers have classes
    classes = _most_predicted(np.asarray(model.classes), prediction.values)
    index = class_bin_index(np.asarray(classes), prediction.values)
    class_bins = ClassBins(
        classes=classes,
        bins=[*(str(label) for label in classes), "other"],
        proportions=proportions(index, len(classes) + 1),
    )
    score = None
    if prediction.probabilities is not None:
        score = _quantile_bins(prediction.monitored_values(), bins)
    return OutputProfile(classes=class_bins, score=score)


def _most_predicted(classes: npt.NDArray[Any], predicted: npt.NDArray[Any]) -> list[Any]:
    """Every class, or the most predicted ones when there are too many for the bins."""
    if len(classes) <= MAX_BINS - 1:
        return list(classes.tolist())
    counts = np.bincount(class_bin_index(classes, predicted), minlength=len(classes) + 1)
    kept = sorted(np.argsort(-counts[:-1], kind="stable")[: MAX_BINS - 1].tolist())
    return list(classes[kept].tolist())


def _quality(model: Model, prediction: Prediction, labels: Sequence[Any]) -> Quality:
    if len(labels) != len(prediction.values):
        raise ProfileError(f"{len(labels)} labels for {len(prediction.values)} rows of data")
    if model.task is Task.REGRESSION:
        truth = _as_numbers(labels)
        error = np.abs(truth - np.asarray(prediction.values, dtype=np.float64))
        return Quality(rows=len(labels), mae=float(error.mean()))
    assert model.classes is not None
    classes = np.asarray(model.classes)
    truth_index = _class_positions(labels, model.classes)
    predicted_index = class_bin_index(classes, prediction.values)
    accuracy = float(np.mean(truth_index == predicted_index))
    auc = None
    if model.task is Task.BINARY and prediction.probabilities is not None:
        positive = truth_index == 1
        if positive.any() and not positive.all():
            from sklearn.metrics import roc_auc_score

            auc = float(roc_auc_score(positive, prediction.probabilities[:, 1]))
    return Quality(rows=len(labels), accuracy=accuracy, auc=auc)


def _as_list(labels: Sequence[Any] | npt.NDArray[Any]) -> list[Any]:
    return list(labels.tolist()) if isinstance(labels, np.ndarray) else list(labels)


def _as_numbers(labels: Sequence[Any]) -> npt.NDArray[np.float64]:
    try:
        return np.asarray([float(label) for label in labels], dtype=np.float64)
    except (TypeError, ValueError):
        row = next(i for i, label in enumerate(labels) if not _is_number(label))
        raise ProfileError(
            f"label {labels[row]!r} at row {row + 1} is not a number; a regressor's labels"
            " are the true values"
        ) from None


def _is_number(label: Any) -> bool:
    try:
        float(label)
    except (TypeError, ValueError):
        return False
    return True


def _class_positions(labels: Sequence[Any], classes: Sequence[Any]) -> npt.NDArray[np.intp]:
    """The position of each label among the classes; text labels ("1") match numbers."""
    position = {_class_key(label): i for i, label in enumerate(classes)}
    found = [position.get(_class_key(label)) for label in labels]
    for row, index in enumerate(found):
        if index is None:
            shown = ", ".join(repr(c) for c in classes[:10])
            raise ProfileError(
                f"label {labels[row]!r} at row {row + 1} is not one of the model's classes"
                f" ({shown})"
            )
    return np.asarray(found, dtype=np.intp)


def _class_key(label: Any) -> str:
    """Labels read from text ("1", "1.0") and the model's classes (1) compare alike."""
    if isinstance(label, str):
        try:
            number = float(label)
        except ValueError:
            return label
        return repr(int(number)) if number.is_integer() else repr(number)
    if isinstance(label, float) and label.is_integer():
        return repr(int(label))
    return repr(label.item() if isinstance(label, np.generic) else label)
