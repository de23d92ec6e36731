"""Loading each format, reading features and task from the artifact, refusing bad artifacts."""

from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io
import xgboost
from pydantic import ValidationError
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression

from modelserver.fatal import StartupError
from modelserver.loading import load_configured_model
from modelserver.model import Task
from tests.server.data import iris_rows
from tests.server.helpers import make_settings, serving_app, v2_body


def train_xgboost(path: Path, objective: str, **data_options) -> Path:
    rows = iris_rows(150)
    labels = np.repeat([0, 1, 2], 50)
    if objective.startswith("binary"):
        labels = (labels > 0).astype(int)
    matrix = xgboost.DMatrix(rows, label=labels, **data_options)
    params = {"objective": objective, "max_depth": 2, "nthread": 1}
    if objective.startswith("multi"):
        params["num_class"] = 3
    xgboost.train(params, matrix, num_boost_round=3).save_model(path)
    return path


@pytest.mark.parametrize(
    ("model", "task", "features"),
    [
        ("xgb-classifier.ubj", Task.BINARY, 30),
        ("xgb-regressor.ubj", Task.REGRESSION, 10),
        ("sklearn-pipeline.skops", Task.MULTICLASS, 4),
    ],
)
def test_sample_models_report_their_task_and_feature_count(
    models_dir: Path, model: str, task: Task, features: int
):
    loaded = load_configured_model(make_settings(models_dir / model))
    assert loaded.model.task is task
    assert loaded.model.n_features == features
    assert loaded.load_seconds > 0


def test_feature_names_are_read_from_the_artifact(tmp_path: Path):
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    path = train_xgboost(tmp_path / "named.json", "multi:softprob", feature_names=names)
    with serving_app(make_settings(path)) as (client, _):
        metadata = client.get("/v2/models/named").json()
    assert metadata["parameters"]["feature_names"] == names


@pytest.mark.parametrize("objective", ["multi:softmax", "multi:softprob"])
def test_multiclass_xgboost_gives_labels_and_probabilities(tmp_path: Path, objective: str):
    path = train_xgboost(tmp_path / "multi.ubj", objective)
    rows = iris_rows(150)[::50]
    with serving_app(make_settings(path)) as (client, _):
        outputs = client.post("/v2/models/multi/infer", json=v2_body(rows.tolist())).json()
    by_name = {output["name"]: output for output in outputs["outputs"]}
    assert by_name["predict"]["data"] == [0, 1, 2]
    probabilities = np.asarray(by_name["predict_proba"]["data"]).reshape(3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_hinge_classifier_has_labels_but_no_probabilities(tmp_path: Path):
    path = train_xgboost(tmp_path / "hinge.ubj", "binary:hinge")
    loaded = load_configured_model(make_settings(path))
    assert loaded.model.task is Task.BINARY
    assert not loaded.model.has_probabilities
    rows = iris_rows(150)
    booster = xgboost.Booster(model_file=path)
    expected = booster.inplace_predict(rows).astype(int)
    assert set(expected.tolist()) <= {0, 1}
    np.testing.assert_array_equal(loaded.model.predict(rows).values, expected)


@pytest.mark.parametrize(
    ("model", "model_format", "reason"),
    [
        ("sklearn-pipeline.skops", "xgboost", "cannot load XGBoost model"),
        ("xgb-classifier.ubj", "sklearn", "cannot load sklearn model .*BadZipFile"),
        ("sample-request.json", "xgboost", "cannot load XGBoost model"),
    ],
)
def test_artifact_of_another_format_is_refused(
    models_dir: Path, model: str, model_format: str, reason: str
):
    with pytest.raises(StartupError, match=reason):
        load_configured_model(make_settings(models_dir / model, model_format=model_format))


def test_corrupt_artifact_is_refused(models_dir: Path, tmp_path: Path):
    corrupt = tmp_path / "corrupt.ubj"
    corrupt.write_bytes((models_dir / "xgb-classifier.ubj").read_bytes()[:5000])
    with pytest.raises(StartupError, match=r"cannot load XGBoost model .*corrupt\.ubj"):
        load_configured_model(make_settings(corrupt))


def test_skops_types_outside_the_safe_set_must_be_trusted_by_name(tmp_path: Path):
    path = tmp_path / "hgb.skops"
    skops.io.dump(HistGradientBoostingRegressor(max_iter=3).fit(iris_rows(150), range(150)), path)
    untrusted = skops.io.get_untrusted_types(file=path)
    with pytest.raises(StartupError, match=f"not trusted: {untrusted[0]}"):
        load_configured_model(make_settings(path))
    loaded = load_configured_model(make_settings(path, skops_trusted_types=untrusted))
    assert loaded.model.task is Task.REGRESSION
    assert loaded.model.accepts_missing  # HistGradientBoosting handles NaN itself


def test_joblib_needs_the_unsafe_opt_in(tmp_path: Path):
    path = tmp_path / "linear.joblib"
    joblib.dump(LinearRegression().fit(iris_rows(150), range(150)), path)
    with pytest.raises(ValidationError, match="MODELSERVER_ALLOW_UNSAFE_FORMATS=true"):
        make_settings(path)
    loaded = load_configured_model(make_settings(path, allow_unsafe_formats=True))
    assert loaded.model.format == "sklearn-joblib"
    assert loaded.model.n_features == 4


def test_pickle_of_something_else_than_an_estimator_is_refused(tmp_path: Path):
    path = tmp_path / "dict.joblib"
    joblib.dump({"weights": [1, 2]}, path)
    with pytest.raises(StartupError, match="not a scikit-learn estimator"):
        load_configured_model(make_settings(path, allow_unsafe_formats=True))


def test_warm_up_prediction_failure_is_refused(tmp_path: Path):
    path = tmp_path / "broken.joblib"
    joblib.dump(BrokenEstimator(), path)
    with pytest.raises(StartupError, match="failed its warm-up prediction"):
        load_configured_model(make_settings(path, allow_unsafe_formats=True))


class BrokenEstimator(LinearRegression):  # type: ignore[misc]
    """Looks fitted (it has n_features_in_) but cannot predict."""

    n_features_in_ = 3

    def predict(self, X):
        raise ValueError("cannot predict")
