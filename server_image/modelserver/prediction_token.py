"""Signed prediction tokens: what a response predicted, so that its labels can be scored
later on any pod of the ModelDeployment (docs/server.md, "Feedback").

A token is `v1.<payload>.<signature>`, both parts base64url without padding; the
signature is HMAC-SHA256 of `v1.<payload>` with the deployment's key. The payload is
JSON: the response's id (`id`), the model version (`v`) and track (`t`) that answered,
in an experiment the variant (`a`, the arm; absent outside experiments), the issue time in
Unix seconds (`at`) and the predicted outputs of all its rows:

- classifiers: the classes (`c`) and each row's predicted class as its position among
  them (`p`: one byte per row, two beyond 256 classes); binary classifiers with
  probabilities also each row's positive-class probability (`s`: 16 bits, 1/65535 steps);
- regressors: each row's predicted value (`p`: float32).
"""

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from modelserver.model import Prediction, Task
from modelserver.profile_bins import class_bin_index

FORMAT = b"v1"
MIN_KEY_BYTES = 16
CLOCK_SKEW_SECONDS = 300
"""How far in the future an issue time may be (clocks of pods differ a little)."""
_SCORE_STEPS = 65535


class TokenRejected(Exception):
    """A token that cannot be counted: 403 forged or malformed, 410 expired."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class TokenContent:
    request_id: str
    model_version: str
    track: str
    issued_at: int
    classes: list[Any] | None
    """Classifiers: the model's classes."""
    predicted: npt.NDArray[Any]
    """Per row: the predicted class's position in `classes`, or the predicted value."""
    scores: npt.NDArray[np.float64] | None
    """Binary classifiers with probabilities: each row's positive-class probability."""
    signature: bytes
    variant: str = ""
    """The experiment arm that answered; empty outside experiments."""

    @property
    def rows(self) -> int:
        return len(self.predicted)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))


def _position_dtype(classes: int) -> type[np.unsignedinteger]:
    return np.uint8 if classes <= 256 else np.uint16


class TokenSigner:
    """Signs the predictions of one served model."""

    def __init__(
        self,
        key: bytes,
        model_version: str,
        track: str,
        task: Task,
        classes: list[Any] | None,
        variant: str = "",
    ) -> None:
        self._key = key
        self._header: dict[str, Any] = {"v": model_version, "t": track}
        if variant:
            self._header["a"] = variant
        self._classes: npt.NDArray[Any] | None = None
        if task is not Task.REGRESSION:
            assert classes is not None  # classifiers have classes
            self._header["c"] = classes
            self._classes = np.asarray(classes)
            self._position_dtype = _position_dtype(len(classes))
            # XGBoost's classes are 0 .. n-1: a predicted class is its own position.
            self._values_are_positions = classes == list(range(len(classes)))
        self._binary = task is Task.BINARY

    def sign(self, request_id: str, prediction: Prediction, now: float) -> str:
        payload: dict[str, Any] = {"id": request_id, **self._header, "at": int(now)}
        if self._classes is None:
            payload["p"] = _b64(np.asarray(prediction.values, dtype="<f4").tobytes()).decode()
        else:
            values = prediction.values
            positions = (
                values
                if self._values_are_positions and values.dtype.kind in "iu"
                else class_bin_index(self._classes, values)
            )
            payload["p"] = _b64(positions.astype(self._position_dtype).tobytes()).decode()
            if self._binary and prediction.probabilities is not None:
                scores = np.rint(np.clip(prediction.probabilities[:, 1], 0, 1) * _SCORE_STEPS)
                payload["s"] = _b64(scores.astype("<u2").tobytes()).decode()
        signed = FORMAT + b"." + _b64(orjson.dumps(payload))
        signature = hmac.new(self._key, signed, hashlib.sha256).digest()
        return (signed + b"." + _b64(signature)).decode()


def verify(key: bytes, token: Any, now: float, max_age_seconds: float) -> TokenContent:
    """The content of a token this deployment signed, or TokenRejected saying why not."""
    if not isinstance(token, str) or not token.isascii():
        raise TokenRejected("the token must be the string `prediction_token` of a response", 403)
    parts = token.encode().split(b".")
    if len(parts) != 3 or parts[0] != FORMAT:
        raise TokenRejected(
            "not a prediction token: expected v1.<payload>.<signature> as a response's"
            " `prediction_token` gives it",
            403,
        )
    try:
        signature = _unb64(parts[2])
        payload_bytes = _unb64(parts[1])
    except (binascii.Error, ValueError):
        raise TokenRejected("the token is damaged: it is not base64url", 403) from None
    expected = hmac.new(key, parts[0] + b"." + parts[1], hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise TokenRejected(
            "the token's signature does not match: it was altered, or signed by another"
            " ModelDeployment (each has its own key)",
            403,
        )
    content = _content(payload_bytes, signature)
    age = now - content.issued_at
    if age > max_age_seconds:
        raise TokenRejected(
            f"the token expired: it was issued {age:.0f} s ago and feedback is taken for"
            f" {max_age_seconds:g} s (MODELSERVER_FEEDBACK_MAX_AGE_SECONDS)",
            410,
        )
    if age < -CLOCK_SKEW_SECONDS:
        raise TokenRejected(
            f"the token was issued {-age:.0f} s in the future; are the pods' clocks apart?", 403
        )
    return content


def _content(payload_bytes: bytes, signature: bytes) -> TokenContent:
    """Our own signed payload; a malformed one means a signer of another format."""
    try:
        payload = orjson.loads(payload_bytes)
        classes = payload.get("c")
        predicted_bytes = _unb64(payload["p"].encode())
        if classes is None:
            predicted: npt.NDArray[Any] = np.frombuffer(predicted_bytes, dtype="<f4")
        else:
            predicted = np.frombuffer(predicted_bytes, dtype=_position_dtype(len(classes)))
        scores = None
        if "s" in payload:
            steps = np.frombuffer(_unb64(payload["s"].encode()), dtype="<u2")
            scores = steps.astype(np.float64) / _SCORE_STEPS
        return TokenContent(
            request_id=str(payload["id"]),
            model_version=str(payload["v"]),
            track=str(payload["t"]),
            issued_at=int(payload["at"]),
            classes=classes,
            predicted=predicted,
            scores=scores,
            signature=signature,
            variant=str(payload.get("a", "")),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise TokenRejected(f"the token's content is not readable: {error}", 403) from error
