"""Helpers for the server tests: settings for a model file, in-process apps, request bodies."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from modelserver.app import create_app
from modelserver.loading import LoadedModel, load_configured_model, warm_up
from modelserver.model import Model, Prediction, Task
from modelserver.settings import Settings


def make_settings(model_file: Path, **overrides: Any) -> Settings:
    formats = {".skops": "sklearn", ".joblib": "sklearn-joblib"}
    values: dict[str, Any] = {
        "model_uri": str(model_file),
        "model_format": formats.get(model_file.suffix, "xgboost"),
        "cache_dir": model_file.parent / "cache",
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def serving_app(
    settings: Settings, loaded: LoadedModel | None = None
) -> Iterator[tuple[TestClient, CollectorRegistry]]:
    registry = CollectorRegistry()
    app = create_app(settings, loaded or load_configured_model(settings), registry)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, registry


def v2_body(rows: Any, datatype: str = "FP32", **fields: Any) -> dict[str, Any]:
    """A V2 infer body with one input tensor of shape [rows, features]; fields are added."""
    rows = [list(row) for row in rows]
    tensor = {
        "name": "input-0",
        "shape": [len(rows), len(rows[0])],
        "datatype": datatype,
        "data": rows,
    }
    return {"inputs": [tensor], **fields}


class FailingModel:
    """A regressor of 2 features whose predict raises when a row starts with `fail_on`."""

    format = "test"
    task = Task.REGRESSION
    n_features = 2
    feature_names: list[str] | None = None
    classes: list[str] | list[int] | None = None
    accepts_missing = False
    has_probabilities = False
    input_dtype = np.float64

    def __init__(self, fail_on: float = -1.0) -> None:
        self.fail_on = fail_on
        self.batch_sizes: list[int] = []

    def predict(self, rows: npt.NDArray[np.floating]) -> Prediction:
        self.batch_sizes.append(len(rows))
        if (rows[:, 0] == self.fail_on).any():
            raise RuntimeError("the model broke")
        return Prediction(rows.sum(axis=1), None)


def loaded(model: Model, tmp_path: Path) -> LoadedModel:
    return LoadedModel(model, tmp_path / "model", "0" * 64, 0.5, warm_up(model))
