"""Labels as files write them, matched to a model's classes, and the metrics computed on
them, against scikit-learn on the same labels and answers."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

from modelserver.validate_client import ModelInfo, Predictions
from modelserver.validate_errors import ValidateError
from modelserver.validate_metrics import check_metric_fits, score


def classifier(classes: list, probabilities: bool = True) -> ModelInfo:
    task = "binary" if len(classes) == 2 else "multiclass"
    return ModelInfo("m", task, 4, None, classes, probabilities, "input-0")


REGRESSOR = ModelInfo("r", "regression", 4, None, None, False, "input-0")


def test_string_classes_match_labels_and_answers():
    model = classifier(["cat", "dog", "eel"])
    labels = ["dog", "cat", "eel", "dog"]
    answers = Predictions(
        np.array(["dog", "dog", "eel", "cat"]),
        np.array([[0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]]),
    )
    truth = [1, 0, 2, 1]
    predicted = [1, 1, 2, 0]
    assert score("accuracy", model, labels, answers, "candidate") == 0.5
    assert score("f1", model, labels, answers, "candidate") == pytest.approx(
        f1_score(truth, predicted, average="macro")
    )
    assert score("logLoss", model, labels, answers, "candidate") == pytest.approx(
        log_loss(truth, answers.probabilities)
    )
    assert score("auc", model, labels, answers, "candidate") == pytest.approx(
        roc_auc_score(truth, answers.probabilities, multi_class="ovr")
    )


def test_numeric_classes_take_labels_written_as_text_or_floats():
    model = classifier([0, 1])
    answers = Predictions(np.array([1, 0, 1]), np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]))
    for labels in (["1", "0", "0"], [1.0, 0.0, 0.0], ["1.0", " 0", "0"]):
        assert score("accuracy", model, labels, answers, "candidate") == pytest.approx(2 / 3)


def test_binary_f1_and_auc_are_of_the_second_class():
    model = classifier(["no", "yes"])
    labels = ["yes", "yes", "no", "no"]
    answers = Predictions(
        np.array(["yes", "no", "yes", "no"]),
        np.array([[0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.9, 0.1]]),
    )
    assert score("f1", model, labels, answers, "candidate") == pytest.approx(
        f1_score([1, 1, 0, 0], [1, 0, 1, 0])
    )
    assert score("auc", model, labels, answers, "candidate") == pytest.approx(
        roc_auc_score([1, 1, 0, 0], [0.8, 0.4, 0.7, 0.1])
    )
    assert score("accuracy", model, labels, answers, "candidate") == accuracy_score(
        [1, 1, 0, 0], [1, 0, 1, 0]
    )


def test_regression_needs_numeric_labels():
    answers = Predictions(np.array([1.0, 2.0]), None)
    assert score("mae", REGRESSOR, ["1.5", 2], answers, "candidate") == pytest.approx(0.25)
    with pytest.raises(ValidateError) as raised:
        score("rmse", REGRESSOR, ["1.5", "n/a"], answers, "candidate")
    assert raised.value.kind == "dataset"
    assert raised.value.message == "row 2 has the label 'n/a'; rmse needs numeric labels"


def test_a_model_answering_non_finite_values_is_named():
    answers = Predictions(np.array([1.0, np.inf]), None)
    with pytest.raises(ValidateError) as raised:
        score("rmse", REGRESSOR, [1, 2], answers, "stable")
    assert raised.value.kind == "metric"
    assert "stable model" in raised.value.message


def test_a_classifier_without_classes_in_its_metadata_is_refused():
    with pytest.raises(ValidateError, match="names no classes"):
        check_metric_fits("accuracy", classifier([]), "candidate")
