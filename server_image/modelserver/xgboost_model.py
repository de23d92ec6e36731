"""XGBoost Booster models (native JSON/UBJ) with in-place prediction."""

import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import xgboost

from modelserver.fatal import StartupError
from modelserver.model import Column, ColumnKind, Features, ModelColumns, Prediction, Task

if TYPE_CHECKING:
    from pandas import DataFrame

_CATEGORICAL = "c"
"""XGBoost's feature type of a categorical feature."""


def _sigmoid(margin: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    return np.asarray(1.0 / (1.0 + np.exp(-margin)), dtype=np.float32)


def _softmax(margin: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    shifted = np.exp(margin - margin.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True), dtype=np.float32)


class XGBoostModel:
    format = "xgboost"
    accepts_missing = True  # XGBoost treats NaN as a missing value natively
    input_dtype = np.float32

    def __init__(self, booster: xgboost.Booster, threads: int) -> None:
        booster.set_param({"nthread": threads})
        self._booster = booster
        config = json.loads(booster.save_config())["learner"]
        self._objective: str = config["objective"]["name"]
        num_class = int(config["learner_model_param"]["num_class"])
        self.n_features: int = booster.num_features()
        names = booster.feature_names
        self.feature_names: list[str] | None = None if names is None else list(names)
        self.columns = _columns(booster)
        if self._objective.startswith("binary:"):
            self.task = Task.BINARY
            self.classes: list[str] | list[int] | None = [0, 1]
        elif self._objective.startswith("multi:"):
            self.task = Task.MULTICLASS
            self.classes = list(range(num_class))
        else:
            self.task = Task.REGRESSION
            self.classes = None
        # binary:hinge answers 0/1 only; every other classifier objective has probabilities.
        self.has_probabilities = (
            self.task is not Task.REGRESSION and self._objective != "binary:hinge"
        )

    def predict(self, rows: npt.NDArray[np.floating]) -> Prediction:
        return self._predict(rows)

    def predict_frame(self, frame: "DataFrame") -> Prediction:
        return self._predict(frame)

    def _predict(self, rows: Features) -> Prediction:
        if self.task is Task.REGRESSION:
            return Prediction(self._booster.inplace_predict(rows), None)
        if not self.has_probabilities:
            labels = self._booster.inplace_predict(rows).astype(np.int64)
            return Prediction(labels, None)
        if self.task is Task.BINARY:
            if self._objective == "binary:logitraw":
                positive = _sigmoid(self._booster.inplace_predict(rows))
            else:
                positive = self._booster.inplace_predict(rows)
            probabilities = np.column_stack((1.0 - positive, positive)).astype(np.float32)
        else:
            # Margins give probabilities for multi:softmax too, whose plain output is a label.
            margin = self._booster.inplace_predict(rows, predict_type="margin")
            probabilities = _softmax(margin)
        return Prediction(probabilities.argmax(axis=1).astype(np.int64), probabilities)


def _columns(booster: xgboost.Booster) -> ModelColumns | None:
    """Named features; categorical ones (trained on a DataFrame of pandas categories) make
    the model take a DataFrame, with the categories it stored (XGBoost 3.1 and later
    store them and map them to its codes itself; older models take the codes as numbers)."""
    names = booster.feature_names
    if names is None:
        return None
    types = booster.feature_types or []
    if _CATEGORICAL not in types:
        return ModelColumns(tuple(Column(name, ColumnKind.NUMBER) for name in names), frame=False)
    stored = _stored_categories(booster)
    columns = []
    for index, name in enumerate(names):
        categories = stored.get(index) if types[index] == _CATEGORICAL else None
        if categories is None:
            columns.append(Column(name, ColumnKind.NUMBER))
            continue
        kind = ColumnKind.STRING if isinstance(categories[0], str) else ColumnKind.NUMBER
        columns.append(Column(name, kind, categories, categorical=True))
    return ModelColumns(tuple(columns), frame=any(column.categorical for column in columns))


def _stored_categories(booster: xgboost.Booster) -> dict[int, tuple[Any, ...]]:
    """The categories of each categorical feature, as the model's JSON holds them
    (`cats.enc`: strings as UTF-8 bytes cut at `offsets`, numbers as `values`); none for
    a model that stored none."""
    model = json.loads(bytes(booster.save_raw("json")))["learner"]["gradient_booster"]
    encodings: list[dict[str, Any]] = model.get("model", model).get("cats", {}).get("enc", [])
    stored: dict[int, tuple[Any, ...]] = {}
    for index, encoding in enumerate(encodings):
        values = encoding.get("values", [])
        if not values:
            continue
        offsets = encoding.get("offsets")
        if offsets:
            text = bytes(values)
            stored[index] = tuple(
                text[start:stop].decode() for start, stop in itertools.pairwise(offsets)
            )
        else:
            # Integer categories as integers: XGBoost refuses float categories of a frame.
            stored[index] = tuple(
                int(value) if float(value).is_integer() else float(value) for value in values
            )
    return stored


def load_xgboost(path: Path, threads: int) -> XGBoostModel:
    booster = xgboost.Booster()
    try:
        booster.load_model(path)
    except xgboost.core.XGBoostError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unknown"
        raise StartupError(f"cannot load XGBoost model {path}: {first_line}") from error
    return XGBoostModel(booster, threads)
