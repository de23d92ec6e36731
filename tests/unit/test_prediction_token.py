"""Prediction tokens: signed by one deployment's key, refused when altered, forged or
expired; feedback bodies checked item by item; a replayed token counted once."""

import base64
import json
from typing import Any

import numpy as np
import pytest

from modelserver.feedback import FeedbackRefused, ReplayGuard, parse_feedback
from modelserver.model import Prediction, Task
from modelserver.prediction_token import (
    CLOCK_SKEW_SECONDS,
    TokenContent,
    TokenRejected,
    TokenSigner,
    verify,
)

KEY = b"k" * 32
NOW = 1_800_000_000.0
DAY = 86400.0


def binary_prediction(positive: list[float]) -> Prediction:
    score = np.asarray(positive, dtype=np.float32)
    return Prediction((score > 0.5).astype(np.int64), np.column_stack((1 - score, score)))


def signed(
    prediction: Prediction | None = None,
    *,
    task: Task = Task.BINARY,
    classes: list[Any] | None = None,
    key: bytes = KEY,
    at: float = NOW,
    version: str = "2",
    track: str = "canary",
) -> str:
    signer = TokenSigner(key, version, track, task, [0, 1] if classes is None else classes)
    return signer.sign("req-1", prediction or binary_prediction([0.9, 0.2, 0.6]), at)


def test_a_token_holds_who_predicted_what_for_all_rows():
    content = verify(KEY, signed(), NOW + 60, DAY)
    assert (content.request_id, content.model_version, content.track) == ("req-1", "2", "canary")
    assert content.issued_at == int(NOW)
    assert content.classes == [0, 1]
    assert content.predicted.tolist() == [1, 0, 1]
    assert content.scores is not None
    np.testing.assert_allclose(content.scores, [0.9, 0.2, 0.6], atol=1e-4)


def test_class_labels_of_any_kind_travel_as_their_positions():
    classes = ["setosa", "versicolor", "virginica"]
    prediction = Prediction(np.asarray(["virginica", "setosa"]), np.full((2, 3), 1 / 3))
    token = signed(prediction, task=Task.MULTICLASS, classes=classes)
    content = verify(KEY, token, NOW, DAY)
    assert content.classes == classes
    assert content.predicted.tolist() == [2, 0]
    assert content.scores is None, "no score histogram for multiclass"


def test_a_regressors_token_holds_its_predicted_values():
    prediction = Prediction(np.asarray([152.25, -3.5, 0.0], dtype=np.float32), None)
    content = verify(KEY, signed(prediction, task=Task.REGRESSION), NOW, DAY)
    assert content.classes is None
    assert content.predicted.tolist() == [152.25, -3.5, 0.0]


def test_one_token_covers_100_rows_compactly():
    prediction = binary_prediction(np.linspace(0, 1, 100).tolist())
    token = signed(prediction)
    assert len(token) < 800
    assert verify(KEY, token, NOW, DAY).rows == 100


def payload_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def with_payload(token: str, payload: dict[str, Any]) -> str:
    encoded = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    version, _, signature = token.split(".")
    return f"{version}.{encoded}.{signature}"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: p.update(t="stable"),
        lambda p: p.update(v="1"),
        lambda p: p.update(p="AQEB"),
        lambda p: p.update(at=p["at"] + 3600),
    ],
    ids=["track", "version", "predictions", "issue time"],
)
def test_an_altered_payload_is_refused(tamper: Any):
    token = signed()
    payload = payload_of(token)
    tamper(payload)
    with pytest.raises(TokenRejected) as raised:
        verify(KEY, with_payload(token, payload), NOW, DAY)
    assert raised.value.status_code == 403
    assert "signature does not match" in str(raised.value)


def test_a_token_of_another_deployments_key_is_refused():
    with pytest.raises(TokenRejected, match="signed by another ModelDeployment") as raised:
        verify(KEY, signed(key=b"x" * 32), NOW, DAY)
    assert raised.value.status_code == 403


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "must be the string `prediction_token` of a response"),
        (42, "must be the string `prediction_token` of a response"),
        ("héllo", "must be the string `prediction_token` of a response"),
        ("", "not a prediction token: expected v1.<payload>.<signature>"),
        ("v2.abc.def", "not a prediction token"),
        ("v1.abc", "not a prediction token"),
        ("v1.YWJj.ZGVm", "signature does not match"),
        ("v1.a!c.def", "the token is damaged: it is not base64url"),
        ("v1.abcde.x", "the token is damaged: it is not base64url"),
    ],
)
def test_things_that_are_not_tokens_are_refused_with_why(token: Any, message: str):
    with pytest.raises(TokenRejected) as raised:
        verify(KEY, token, NOW, DAY)
    assert raised.value.status_code == 403
    assert message in str(raised.value)


def test_an_expired_token_is_gone_and_a_future_one_refused():
    token = signed(at=NOW)
    verify(KEY, token, NOW + DAY, DAY)
    with pytest.raises(TokenRejected) as expired:
        verify(KEY, token, NOW + DAY + 1, DAY)
    assert expired.value.status_code == 410
    assert "the token expired: it was issued 86401 s ago" in str(expired.value)
    assert "MODELSERVER_FEEDBACK_MAX_AGE_SECONDS" in str(expired.value)
    verify(KEY, token, NOW - CLOCK_SKEW_SECONDS, DAY)
    with pytest.raises(TokenRejected, match="900 s in the future") as future:
        verify(KEY, token, NOW - 900, DAY)
    assert future.value.status_code == 403


# --- feedback bodies --------------------------------------------------------------------------


def feedback(document: Any) -> list[Any]:
    return parse_feedback(json.dumps(document).encode(), KEY, NOW, DAY)


def refusal(document: Any) -> tuple[int, str]:
    with pytest.raises(FeedbackRefused) as raised:
        feedback(document)
    return raised.value.status_code, str(raised.value)


def test_labels_become_class_positions_or_values():
    (item,) = feedback({"token": signed(), "labels": [1, 1, 0]})
    assert item.labels.tolist() == [1, 1, 0]
    regression = signed(Prediction(np.asarray([1.5], np.float32), None), task=Task.REGRESSION)
    (item,) = feedback([{"token": regression, "labels": [2]}])
    assert item.labels.tolist() == [2.0]


@pytest.mark.parametrize(
    ("document", "status", "message"),
    [
        ([], 400, "the list is empty"),
        ({"token": "x"}, 400, 'expected an object {"token"'),
        ("text", 400, 'expected an object {"token"'),
        ({"token": "v1.YWJj.ZGVm", "labels": [0, 1, 0]}, 403, "signature does not match"),
        ({"token": "TOKEN", "labels": "0,1,0"}, 422, "labels must be a list"),
        ({"token": "TOKEN", "labels": [0, 1]}, 422, "2 labels for a response of 3 rows"),
        ({"token": "TOKEN", "labels": [0, 1, "1"]}, 422, 'label 2 is "1", not a class'),
        ({"token": "TOKEN", "labels": [0, 1, True]}, 422, "label 2 is true, not a class"),
        ({"token": "TOKEN", "labels": [0, 1, 1.5]}, 422, "label 2 is 1.5, not a class"),
        ({"token": "TOKEN", "labels": [0, 1, 2]}, 422, "its classes are 0, 1"),
    ],
)
def test_every_bad_feedback_item_is_refused_with_its_status(
    document: Any, status: int, message: str
):
    if isinstance(document, dict) and document.get("token") == "TOKEN":
        document = {**document, "token": signed()}
    assert refusal(document)[0] == status
    assert message in refusal(document)[1]


def test_a_regressors_labels_are_finite_numbers():
    token = signed(Prediction(np.asarray([1.5], np.float32), None), task=Task.REGRESSION)
    for label in ("2", None, True):
        status, message = refusal({"token": token, "labels": [label]})
        assert status == 422
        assert "a regressor's labels are the true values, finite numbers" in message


def test_a_list_is_refused_whole_by_its_first_bad_item_named():
    good = {"token": signed(), "labels": [1, 0, 1]}
    late = {"token": signed(at=NOW - 2 * DAY), "labels": [1, 0, 1]}
    status, message = refusal([good, good, late])
    assert status == 410
    assert message.startswith("item 2: the token expired")


def test_malformed_json_is_a_bad_request():
    with pytest.raises(FeedbackRefused, match="malformed JSON") as raised:
        parse_feedback(b"{", KEY, NOW, DAY)
    assert raised.value.status_code == 400


# --- replays ----------------------------------------------------------------------------------


def token_content(signature: bytes, at: float = NOW) -> TokenContent:
    return TokenContent("id", "1", "stable", int(at), None, np.zeros(1), None, signature)


def test_a_replayed_token_counts_once():
    guard = ReplayGuard(capacity=10, max_age_seconds=DAY)
    first = verify(KEY, signed(), NOW, DAY)
    again = verify(KEY, signed(), NOW, DAY)
    assert guard.first_time(first, NOW)
    assert not guard.first_time(again, NOW + 5)
    other = verify(KEY, signed(binary_prediction([0.1, 0.1, 0.1])), NOW, DAY)
    assert guard.first_time(other, NOW)


def test_the_guard_remembers_at_most_its_capacity_oldest_forgotten_first():
    guard = ReplayGuard(capacity=3, max_age_seconds=DAY)
    tokens = [token_content(bytes([i]) * 32) for i in range(4)]
    for token in tokens:
        assert guard.first_time(token, NOW)
    assert len(guard) == 3
    assert guard.first_time(tokens[0], NOW), "forgotten: counted again"
    assert not guard.first_time(tokens[3], NOW)


def test_expired_tokens_are_forgotten():
    guard = ReplayGuard(capacity=100, max_age_seconds=60)
    guard.first_time(token_content(b"a" * 32, at=NOW), NOW)
    guard.first_time(token_content(b"b" * 32, at=NOW + 30), NOW + 30)
    guard.first_time(token_content(b"c" * 32, at=NOW + 70), NOW + 70)
    assert len(guard) == 2, "the first expired at NOW + 60"
