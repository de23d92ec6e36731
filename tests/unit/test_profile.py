"""Reference profiles: the bins and proportions they record, and the checks that refuse a
profile that is broken or made for another model."""

import json
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import mean_absolute_error, roc_auc_score

from modelserver.fatal import StartupError
from modelserver.model import Prediction, Task
from modelserver.profile import (
    MAX_BINS,
    Profile,
    QuantileBins,
    check_profile_fits,
    parse_profile,
    profile_json,
)
from modelserver.profile_bins import (
    category_bin_index,
    class_bin_index,
    quantile_bin_index,
    quantile_bin_names,
    quantile_edges,
    top_categories,
)
from modelserver.profile_build import build_profile, build_profile_of_table
from modelserver.profile_data import Column, ProfileError, Table
from modelserver.profile_metrics import _QuantileColumns
from modelserver.sklearn_model import SklearnModel

RNG = np.random.default_rng(7)


class ThresholdClassifier:
    """A binary classifier: class 1 when the first feature is positive."""

    format = "test"
    accepts_missing = True
    has_probabilities = True
    input_dtype = np.float32

    def __init__(
        self,
        n_features: int = 2,
        task: Task = Task.BINARY,
        classes: list[int] | list[str] | None = None,
        feature_names: list[str] | None = None,
    ) -> None:
        self.n_features = n_features
        self.task = task
        self.classes: list[int] | list[str] | None = [0, 1] if classes is None else classes
        self.feature_names = feature_names

    def predict(self, rows: npt.NDArray[np.floating]) -> Prediction:
        positive = 1 / (1 + np.exp(-np.nan_to_num(rows[:, 0])))
        probabilities = np.column_stack((1 - positive, positive)).astype(np.float32)
        return Prediction(probabilities.argmax(axis=1), probabilities)


def fitted_classifier(features: npt.NDArray[np.float64], labels: Any) -> SklearnModel:
    return SklearnModel(LogisticRegression().fit(features, labels), "sklearn", "memory")  # type: ignore[arg-type]


# --- binning ----------------------------------------------------------------------------------


def test_quantile_edges_cut_the_data_into_bins_of_equal_counts():
    values = np.arange(1000, dtype=np.float64)
    edges = quantile_edges(values, 10)
    assert len(edges) == 9
    counts = np.bincount(quantile_bin_index(np.asarray(edges), values), minlength=11)
    assert counts.tolist() == [100] * 10 + [0]


def test_quantile_bins_put_a_value_on_an_edge_in_the_upper_bin_and_nan_in_missing():
    edges = np.asarray([1.0, 2.0])
    values = np.asarray([-math.inf, 0.5, 1.0, 1.5, 2.0, math.inf, math.nan])
    assert quantile_bin_index(edges, values).tolist() == [0, 0, 1, 1, 2, 2, 3]


def test_repeated_values_merge_bins_and_a_constant_has_one():
    assert len(quantile_edges(np.asarray([0.0] * 90 + [1.0] * 10), 10)) == 1
    assert quantile_edges(np.asarray([3.0] * 50), 10) == []
    assert quantile_edges(np.asarray([math.nan] * 5), 10) == []


def test_top_categories_are_the_most_frequent_first_ties_to_the_smaller_value():
    values = np.asarray([5.0, 5, 5, 2, 2, 9, 9, 1, math.nan, math.nan, math.nan, math.nan])
    assert top_categories(values, 3) == [5.0, 2.0, 9.0]
    index = category_bin_index(np.asarray([5.0, 2.0, 9.0]), values)
    assert index.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 4, 4, 4, 4]


def test_class_bins_find_labels_of_any_type_and_others_go_to_other():
    assert class_bin_index(np.asarray(["b", "a"]), np.asarray(["a", "b", "z"])).tolist() == [
        1,
        0,
        2,
    ]
    assert class_bin_index(np.asarray([0, 1, 2]), np.asarray([2, 0, 7])).tolist() == [2, 0, 3]


# --- building ---------------------------------------------------------------------------------


def test_a_profile_records_each_features_training_proportions_and_the_outputs():
    features = RNG.normal(size=(2000, 2))
    features[:100, 1] = math.nan
    profile = build_profile(ThresholdClassifier(), features)
    first, second = (feature.binning for feature in profile.features)
    assert [feature.name for feature in profile.features] == ["f0", "f1"]
    assert first.kind == "quantile"
    assert len(first.edges) == 9
    assert first.proportions[:10] == pytest.approx([0.1] * 10, abs=0.002)
    assert first.proportions[-1] == 0.0
    assert second.bins[-1] == "missing"
    assert second.proportions[-1] == pytest.approx(0.05)
    classes = profile.prediction.classes
    assert classes is not None
    assert classes.bins == ["0", "1", "other"]
    predicted_positive = float(np.mean(features[:, 0].astype(np.float32) > 0))
    assert classes.proportions == pytest.approx([1 - predicted_positive, predicted_positive, 0])
    assert profile.prediction.score is not None
    assert sum(profile.prediction.score.proportions) == pytest.approx(1)
    assert profile.quality is None


def test_edges_are_values_the_model_receives():
    """float32 models: edges compare exactly with the float32 values sent to the server."""
    profile = build_profile(ThresholdClassifier(), RNG.normal(size=(500, 2)))
    edges = np.asarray(profile.features[0].binning.edges)  # type: ignore[union-attr]
    assert np.array_equal(edges.astype(np.float32).astype(np.float64), edges)


def test_few_distinct_values_text_and_named_columns_get_category_bins():
    codes = np.asarray([0.0, 1, 1, 2, 2, 2] * 50)
    table = Table(
        [Column("colour", codes, ["blue", "green", "red"]), Column("size", codes * 1.5)],
        labels=None,
    )
    model = fitted_classifier(np.column_stack([codes, codes * 1.5]), codes > 1)
    profile = build_profile_of_table(model, table, top=2)
    colour, size = (feature.binning for feature in profile.features)
    assert colour.kind == "categories"
    assert colour.values == [2.0, 1.0]
    assert colour.labels == ["red", "green"]
    assert colour.bins == ["0", "1", "other", "missing"]
    assert colour.proportions == pytest.approx([0.5, 1 / 3, 1 / 6, 0])
    assert size.kind == "categories", "3 distinct values: no more than the bins"
    assert size.values == [3.0, 1.5, 0.0]
    named = build_profile(
        model, RNG.normal(size=(300, 2)), names=["colour", "size"], categorical=["size"], top=5
    )
    assert named.features[1].binning.kind == "categories"
    assert named.features[0].binning.kind == "quantile"


def test_labels_give_the_reference_quality_as_scikit_learn_computes_it():
    features = RNG.normal(size=(400, 3))
    labels = (features[:, 0] + RNG.normal(scale=0.8, size=400) > 0).astype(int)
    model = fitted_classifier(features, labels)
    profile = build_profile(model, features, labels=[str(label) for label in labels])
    assert profile.quality is not None
    estimator = model._estimator
    assert profile.quality.accuracy == pytest.approx(estimator.score(features, labels))
    expected_auc = roc_auc_score(labels, estimator.predict_proba(features)[:, 1])
    assert profile.quality.auc == pytest.approx(expected_auc)
    assert profile.quality.mae is None


def test_a_regressors_profile_has_output_bins_and_its_mae():
    features = RNG.normal(size=(300, 2))
    target = features @ [2.0, -1.0] + RNG.normal(size=300)
    estimator = LinearRegression().fit(features, target)
    model = SklearnModel(estimator, "sklearn", "memory")  # type: ignore[arg-type]
    profile = build_profile(model, features, labels=target)
    assert profile.prediction.classes is None
    assert profile.prediction.score is not None
    assert len(profile.prediction.score.edges) == 9
    assert profile.quality is not None
    assert profile.quality.mae == pytest.approx(
        mean_absolute_error(target, estimator.predict(features))
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda m: build_profile(m, np.zeros((5, 3))),
            "the data has 3 features, the model takes 2",
        ),
        (lambda m: build_profile(m, np.zeros((5, 2)), labels=[0]), "1 labels for 5 rows"),
        (
            lambda m: build_profile(m, np.zeros((5, 2)), labels=[0, 1, 2, 0, 1]),
            "label 2 at row 3 is not one of the model's classes (0, 1)",
        ),
        (lambda m: build_profile(m, np.zeros((5, 2)), bins=1), "bins must be between 2 and 99"),
        (
            lambda m: build_profile(m, np.zeros((5, 2)), categorical=["x"]),
            "--categorical names no column 'x'",
        ),
    ],
)
def test_bad_arguments_are_refused_with_what_to_fix(call: Any, message: str):
    with pytest.raises(ProfileError) as raised:
        call(ThresholdClassifier())
    assert message in str(raised.value)


def test_missing_values_are_refused_for_a_model_that_does_not_take_them():
    features = RNG.normal(size=(50, 2))
    model = fitted_classifier(features, features[:, 0] > 0)
    features[7, 1] = math.nan
    with pytest.raises(ProfileError, match="column 'f1' has a missing value at row 8"):
        build_profile(model, features)


def test_column_names_must_be_the_models_in_its_order():
    named = ThresholdClassifier(feature_names=["age", "income"])
    with pytest.raises(ProfileError, match=r"column 0 of the data is 'income'.*'age'"):
        build_profile(named, np.zeros((3, 2)), names=["income", "age"])


# --- the JSON document ------------------------------------------------------------------------


def test_the_json_round_trips_and_the_same_data_give_the_same_bytes():
    features = RNG.normal(size=(300, 2))
    first = profile_json(build_profile(ThresholdClassifier(), features, labels=[0, 1] * 150))
    second = profile_json(build_profile(ThresholdClassifier(), features, labels=[0, 1] * 150))
    assert first == second
    assert profile_json(parse_profile(first, "p.json")) == first
    document = json.loads(first)
    assert document["kind"] == "modelserver-profile"
    assert document["schema_version"] == 1
    assert document["model"]["n_features"] == 2


def valid_document() -> dict[str, Any]:
    profile = build_profile(ThresholdClassifier(), RNG.normal(size=(200, 2)))
    document: dict[str, Any] = json.loads(profile_json(profile))
    return document


def broken(change: Any) -> str:
    document = valid_document()
    change(document)
    with pytest.raises(StartupError) as raised:
        parse_profile(json.dumps(document).encode(), "p.json")
    return str(raised.value)


def test_a_profile_of_another_schema_version_says_to_build_it_again():
    message = broken(lambda d: d.update(schema_version=2))
    assert "schema_version 2 is not supported" in message
    assert "build the profile again" in message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["features"].pop(), "1 feature profiles for a model of 2 features"),
        (
            lambda d: d["features"][0]["binning"]["proportions"].pop(),
            "11 bins but 10 proportions",
        ),
        (
            lambda d: d["features"][0]["binning"]["edges"].reverse(),
            "edges must be strictly ascending",
        ),
        (lambda d: d["features"][0]["binning"]["bins"].reverse(), "bins must be ['0', '1'"),
        (
            lambda d: d["features"][0]["binning"].update(proportions=[0.5] * 11),
            "proportions sum to 5.5, not 1",
        ),
        (
            lambda d: d["features"][0]["binning"].update(edges=list(range(MAX_BINS))),
            "at most 99 items",
        ),
        (lambda d: d.update(rows="many"), "rows: Input should be a valid integer"),
    ],
)
def test_a_broken_profile_is_refused_with_where_and_what(change: Any, message: str):
    assert message in broken(change)
    assert broken(change).startswith("profile p.json is not a valid modelserver profile")


def test_not_json_at_all_is_refused():
    with pytest.raises(StartupError, match=r"profile p\.json is not a valid modelserver profile"):
        parse_profile(b"<html>", "p.json")


# --- fit with the served model ----------------------------------------------------------------


def profile_of(model: Any, sha256: str | None = "a" * 64) -> Profile:
    features = RNG.normal(size=(100, model.n_features))
    return build_profile(model, features, model_sha256=sha256)


def test_a_profile_fits_its_own_model():
    check_profile_fits(profile_of(ThresholdClassifier()), ThresholdClassifier(), "a" * 64)
    check_profile_fits(profile_of(ThresholdClassifier(), None), ThresholdClassifier(), "b" * 64)


def test_a_profile_of_another_model_is_refused_naming_every_difference():
    wider = ThresholdClassifier(n_features=3, task=Task.MULTICLASS, classes=[0, 1, 2])
    with pytest.raises(StartupError) as raised:
        check_profile_fits(profile_of(ThresholdClassifier()), wider, "b" * 64)
    message = str(raised.value)
    assert message.startswith("the profile does not fit the model:")
    assert f"it was built from model sha256 {'a' * 64}, this is {'b' * 64}" in message
    assert "it describes 2 features, the model takes 3" in message
    assert "it describes a binary model, this one is multiclass" in message
    assert "its classes are [0, 1], the model's are [0, 1, 2]" in message
    assert "modelserver profile --model MODEL --data DATA" in message


def test_feature_names_and_class_types_must_match():
    named = ThresholdClassifier(feature_names=["a", "b"])
    renamed = ThresholdClassifier(feature_names=["a", "c"], classes=["0", "1"])
    with pytest.raises(StartupError) as raised:
        check_profile_fits(profile_of(named), renamed, None)
    assert "feature 1 is 'b' in the profile, 'c' in the model" in str(raised.value)
    assert "its classes are [0, 1], the model's are ['0', '1']" in str(raised.value)


def test_live_binning_of_many_features_at_once_matches_the_profile_definition():
    """The server bins every feature of a block in one comparison (edges padded to one
    length); each value must land where quantile_bin_index, the builder's definition,
    puts it: below the first edge, on an edge, between, above the last, +-inf, NaN."""
    edges_of = [[-1.0, 0.0, 2.5], [10.0], [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]]
    features = []
    offset = 0
    for column, edges in enumerate(edges_of):
        names = quantile_bin_names(edges)
        binning = QuantileBins(edges=edges, bins=names, proportions=[1 / len(names)] * len(names))
        features.append((column, binning, offset))
        offset += len(names)
    probes = [-np.inf, -5.0, -1.0, -0.5, 0.0, 1.0, 2.5, 3.0, 10.0, 11.0, np.inf, np.nan]
    rows = np.array([[p, p, p] for p in probes], dtype=np.float32)
    for dtype in (np.float32, np.float64):
        flat = _QuantileColumns.of(features, dtype).flat_bins(rows).reshape(len(probes), 3)
        for column, (_, binning, start) in enumerate(features):
            expected = quantile_bin_index(np.asarray(binning.edges), rows[:, column]) + start
            assert flat[:, column].tolist() == expected.tolist(), f"feature {column}"
