"""XGBoost Booster models (native JSON/UBJ) with in-place prediction."""

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import xgboost

from modelserver.fatal import StartupError
from modelserver.model import Prediction, Task


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


def load_xgboost(path: Path, threads: int) -> XGBoostModel:
    booster = xgboost.Booster()
    try:
        booster.load_model(path)
    except xgboost.core.XGBoostError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unknown"
        raise StartupError(f"cannot load XGBoost model {path}: {first_line}") from error
    return XGBoostModel(booster, threads)
