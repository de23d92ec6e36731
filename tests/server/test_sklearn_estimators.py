"""Common scikit-learn estimators, saved with skops, answer V1 and V2 like the estimator itself."""

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import skops.io
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from tests.server.helpers import make_settings, serving_app, v2_body

FEATURES = 6
X_BINARY, Y_BINARY = make_classification(80, FEATURES, random_state=0)
X_MULTI, Y_MULTI = make_classification(90, FEATURES, n_informative=4, n_classes=3, random_state=0)
Y_NAMES = np.array(["setosa", "versicolor", "virginica"])[Y_MULTI]
X_REGRESSION, Y_REGRESSION = make_regression(80, FEATURES, noise=0.1, random_state=0)

# Several of these (GaussianNB, binary MLPClassifier, multiclass HistGradientBoosting,
# OneVsRest) return predict_proba as a Fortran-ordered array.
ESTIMATORS: dict[str, tuple[BaseEstimator, npt.NDArray[Any], npt.NDArray[Any]]] = {
    "logistic-regression": (LogisticRegression(), X_BINARY, Y_BINARY),
    "gaussian-nb": (GaussianNB(), X_BINARY, Y_BINARY),
    "mlp-binary": (
        MLPClassifier(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=500, random_state=0),
        X_BINARY,
        Y_BINARY,
    ),
    "hist-gradient-boosting-binary": (
        HistGradientBoostingClassifier(max_iter=5, random_state=0),
        X_BINARY,
        Y_BINARY,
    ),
    "hist-gradient-boosting-multiclass": (
        HistGradientBoostingClassifier(max_iter=5, random_state=0),
        X_MULTI,
        Y_MULTI,
    ),
    "random-forest-multiclass": (
        RandomForestClassifier(n_estimators=5, random_state=0),
        X_MULTI,
        Y_MULTI,
    ),
    "one-vs-rest-multiclass": (OneVsRestClassifier(LogisticRegression()), X_MULTI, Y_MULTI),
    # SVC(probability=True) is deprecated since scikit-learn 1.9 in favour of this.
    "calibrated-svc-multiclass": (
        CalibratedClassifierCV(SVC(), ensemble=False),
        X_MULTI,
        Y_MULTI,
    ),
    "k-neighbors-multiclass": (KNeighborsClassifier(n_neighbors=3), X_MULTI, Y_MULTI),
    "pipeline-string-classes": (
        make_pipeline(StandardScaler(), LogisticRegression()),
        X_MULTI,
        Y_NAMES,
    ),
    "linear-regression": (LinearRegression(), X_REGRESSION, Y_REGRESSION),
    "ridge": (Ridge(), X_REGRESSION, Y_REGRESSION),
    "gradient-boosting-regressor": (
        GradientBoostingRegressor(n_estimators=5, random_state=0),
        X_REGRESSION,
        Y_REGRESSION,
    ),
}


@pytest.fixture(scope="module", params=sorted(ESTIMATORS))
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(name, fitted estimator, its training rows, a client of the server that serves it)."""
    name = request.param
    estimator, features, target = ESTIMATORS[name]
    estimator.fit(features, target)
    artifact = tmp_path_factory.mktemp("estimators") / f"{name}.skops"
    skops.io.dump(estimator, artifact)
    # What a user does after reviewing the types that skops does not trust by itself.
    trusted = skops.io.get_untrusted_types(file=artifact)
    with serving_app(make_settings(artifact, skops_trusted_types=trusted)) as (client, _):
        yield name, estimator, features, client


def has_probabilities(estimator: BaseEstimator) -> bool:
    return hasattr(estimator, "predict_proba")


@pytest.mark.parametrize("count", [1, 7])
def test_v1_predict_answers_like_the_estimator(served, count: int):
    name, estimator, features, client = served
    rows = features[:count]
    response = client.post(f"/v1/models/{name}:predict", json={"instances": rows.tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predictions"] == pytest.approx(estimator.predict(rows).tolist())
    if has_probabilities(estimator):
        np.testing.assert_allclose(body["probabilities"], estimator.predict_proba(rows))
    else:
        assert "probabilities" not in body


@pytest.mark.parametrize("count", [1, 7])
def test_v2_infer_answers_like_the_estimator(served, count: int):
    name, estimator, features, client = served
    rows = features[:count]
    response = client.post(f"/v2/models/{name}/infer", json=v2_body(rows.tolist(), "FP64"))
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    assert outputs["predict"]["shape"] == [count]
    assert outputs["predict"]["data"] == pytest.approx(estimator.predict(rows).tolist())
    if has_probabilities(estimator):
        expected = estimator.predict_proba(rows)
        assert outputs["predict_proba"]["shape"] == list(expected.shape)
        np.testing.assert_allclose(outputs["predict_proba"]["data"], expected.ravel())
    else:
        assert set(outputs) == {"predict"}
