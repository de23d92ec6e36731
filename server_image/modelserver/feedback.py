"""Ground truth for past predictions: `POST /v2/models/{name}/feedback` with
`{"token": ..., "labels": [...]}` (or a list of such objects) scores each token's
predictions against its labels, for the model version and track that made them.

Any pod of the ModelDeployment can take feedback for any other, since the token carries
the predictions and is signed with the deployment's key. A list is taken whole or not
at all: the first bad item decides the answer, whose message names it. A token counts
once per server process while it is remembered: until it expires, or until `capacity`
newer tokens have been counted there.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from modelserver.fatal import StartupError
from modelserver.metrics import (
    BASE_LABELS,
    FEEDBACK_ABSOLUTE_ERROR,
    FEEDBACK_REMEMBERED_TOKENS,
    FEEDBACK_REPLAYED_TOTAL,
    FEEDBACK_REQUESTS_TOTAL,
    FEEDBACK_ROWS_TOTAL,
    FEEDBACK_SCORE,
    BulkHistogram,
)
from modelserver.prediction_token import MIN_KEY_BYTES, TokenContent, TokenRejected, verify
from modelserver.settings import Settings

SCORE_BUCKETS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9,
    0.925, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999, 1.0,
)  # fmt: skip
"""Finer towards 0 and 1, where a good classifier puts most of its scores."""
ABSOLUTE_ERROR_BUCKETS = tuple(
    round(mantissa * 10.0**exponent, 6) for exponent in range(-3, 5) for mantissa in (1, 2.5, 5)
)
RESULT_CORRECT = "correct"
RESULT_INCORRECT = "incorrect"
RESULT_SCORED = "scored"
"""Regressors' rows: their error goes to the absolute-error histogram."""


class FeedbackRefused(Exception):
    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def read_feedback_key(settings: Settings) -> bytes | None:
    """The signing key from the setting or its file; None when feedback is off."""
    if settings.feedback_key is not None:
        key = settings.feedback_key.strip().encode()
        source = "MODELSERVER_FEEDBACK_KEY"
    elif settings.feedback_key_file is not None:
        key = _read_key_file(settings.feedback_key_file)
        source = f"MODELSERVER_FEEDBACK_KEY_FILE {settings.feedback_key_file}"
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise StartupError(
            f"the feedback key ({source}) has {len(key)} bytes; use at least {MIN_KEY_BYTES}"
            " random bytes (32 recommended), e.g. from `openssl rand -base64 32`"
        )
    return key


def _read_key_file(path: Path) -> bytes:
    try:
        # A trailing newline (echo > file) is not part of the key.
        return path.read_bytes().strip()
    except OSError as error:
        raise StartupError(f"cannot read the feedback key file {path}: {error}") from error


class ReplayGuard:
    """The tokens counted here lately, so that one sent again is not counted again.

    At most `capacity` are remembered, the oldest forgotten first; one older than the
    tokens' maximum age is forgotten anyway, as it would be refused as expired.
    """

    def __init__(self, capacity: int, max_age_seconds: float) -> None:
        self._capacity = capacity
        self._max_age_seconds = max_age_seconds
        self._seen: dict[bytes, int] = {}
        """First 16 bytes of each token's signature -> its issue time, oldest first."""

    def __len__(self) -> int:
        return len(self._seen)

    def first_time(self, token: TokenContent, now: float) -> bool:
        key = token.signature[:16]
        if key in self._seen:
            return False
        self._forget_expired(now)
        self._seen[key] = token.issued_at
        if len(self._seen) > self._capacity:
            del self._seen[next(iter(self._seen))]
        return True

    def _forget_expired(self, now: float) -> None:
        oldest_kept = now - self._max_age_seconds
        while self._seen:
            first = next(iter(self._seen))
            if self._seen[first] >= oldest_kept:
                return
            del self._seen[first]


@dataclass(frozen=True)
class LabelledToken:
    token: TokenContent
    labels: npt.NDArray[Any]
    """Classifiers: the true class's position per row; regressors: the true value."""


def parse_feedback(
    body: bytes, key: bytes, now: float, max_age_seconds: float
) -> list[LabelledToken]:
    """Every item of a feedback body, verified and with its labels checked, or
    FeedbackRefused for the first bad one (400, 403, 410 or 422)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise FeedbackRefused(f"malformed JSON: {error}", 400) from error
    items = document if isinstance(document, list) else [document]
    if not items:
        raise FeedbackRefused("the list is empty: send at least one {token, labels}", 400)
    many = isinstance(document, list)
    parsed = []
    for number, item in enumerate(items):
        where = f"item {number}: " if many else ""
        if not isinstance(item, dict) or "token" not in item or "labels" not in item:
            raise FeedbackRefused(
                f'{where}expected an object {{"token": "<prediction_token of a response>",'
                ' "labels": [<true label of each row>]}',
                400,
            )
        try:
            token = verify(key, item["token"], now, max_age_seconds)
            labels = _checked_labels(item["labels"], token)
        except (TokenRejected, FeedbackRefused) as error:
            raise FeedbackRefused(f"{where}{error}", error.status_code) from error
        parsed.append(LabelledToken(token, labels))
    return parsed


def _checked_labels(labels: Any, token: TokenContent) -> npt.NDArray[Any]:
    if not isinstance(labels, list):
        raise FeedbackRefused(
            f"labels must be a list with the true label of each of the {token.rows} rows"
            " that the response predicted",
            422,
        )
    if len(labels) != token.rows:
        raise FeedbackRefused(
            f"{len(labels)} labels for a response of {token.rows} rows; send one per row,"
            " in the order of the rows",
            422,
        )
    if token.classes is None:
        for position, label in enumerate(labels):
            if not _is_number(label):
                raise FeedbackRefused(
                    f"label {position} is {label!r}; a regressor's labels are the true values,"
                    " finite numbers",
                    422,
                )
        return np.asarray(labels, dtype=np.float64)
    positions = {_class_key(label): i for i, label in enumerate(token.classes)}
    found = []
    for position, label in enumerate(labels):
        index = positions.get(_class_key(label))
        if index is None:
            shown = ", ".join(orjson.dumps(c).decode() for c in token.classes[:10])
            raise FeedbackRefused(
                f"label {position} is {orjson.dumps(label).decode()}, not a class of the model"
                f" that predicted: its classes are {shown}",
                422,
            )
        found.append(index)
    return np.asarray(found, dtype=np.intp)


def _is_number(label: Any) -> bool:
    return isinstance(label, int | float) and not isinstance(label, bool) and math.isfinite(label)


def _class_key(label: Any) -> tuple[str, Any]:
    """A label matches a class of the same JSON type only: 1 is not "1", nor true."""
    if isinstance(label, bool):
        return ("bool", label)
    if isinstance(label, int | float):
        return ("number", label)
    if isinstance(label, str):
        return ("string", label)
    return ("other", id(label))


class FeedbackMetrics:
    """Quality counters, labelled with the version, track and variant that made each
    prediction."""

    def __init__(self, registry: CollectorRegistry, base: tuple[str, ...]) -> None:
        self._model, _, _, self._deployment, _ = base
        self._rows = Counter(
            FEEDBACK_ROWS_TOTAL,
            "Labelled rows by result: correct or incorrect (classifiers), scored (regressors).",
            (*BASE_LABELS, "result"),
            registry=registry,
        )
        self._score = BulkHistogram(
            FEEDBACK_SCORE,
            "Binary classifiers: the positive-class probability of labelled rows, by true class.",
            (*BASE_LABELS, "true_class"),
            buckets=SCORE_BUCKETS,
            registry=registry,
        )
        self._error = BulkHistogram(
            FEEDBACK_ABSOLUTE_ERROR,
            "Regressors: absolute error of labelled rows (sum / count is the MAE).",
            BASE_LABELS,
            buckets=ABSOLUTE_ERROR_BUCKETS,
            registry=registry,
        )
        self._requests = Counter(
            FEEDBACK_REQUESTS_TOTAL,
            "Feedback requests by HTTP status code.",
            (*BASE_LABELS, "code"),
            registry=registry,
        )
        self._replayed = Counter(
            FEEDBACK_REPLAYED_TOTAL,
            "Tokens not counted because this process had counted them already.",
            BASE_LABELS,
            registry=registry,
        ).labels(*base)
        self._remembered = Gauge(
            FEEDBACK_REMEMBERED_TOKENS,
            "Tokens this process remembers to refuse replays (bounded by"
            " MODELSERVER_FEEDBACK_REPLAY_CAPACITY).",
            BASE_LABELS,
            registry=registry,
            multiprocess_mode="livesum",
        ).labels(*base)
        self._base = base

    def request(self, status_code: int) -> None:
        self._requests.labels(*self._base, str(status_code)).inc()

    def replayed(self, remembered: int) -> None:
        self._replayed.inc()
        self._remembered.set(remembered)

    def count(self, item: LabelledToken, remembered: int) -> None:
        token = item.token
        base = (self._model, token.model_version, token.track, self._deployment, token.variant)
        self._remembered.set(remembered)
        if token.classes is None:
            self._rows.labels(*base, RESULT_SCORED).inc(token.rows)
            error = np.abs(token.predicted.astype(np.float64) - item.labels)
            self._error.labels(*base).observe_many(error)
            return
        correct = int(np.count_nonzero(token.predicted == item.labels))
        self._rows.labels(*base, RESULT_CORRECT).inc(correct)
        self._rows.labels(*base, RESULT_INCORRECT).inc(token.rows - correct)
        if token.scores is not None:
            positive = item.labels == 1
            self._score.labels(*base, "positive").observe_many(token.scores[positive])
            self._score.labels(*base, "negative").observe_many(token.scores[~positive])


class Feedback:
    """Takes feedback bodies: verifies, counts once, answers."""

    def __init__(
        self,
        key: bytes,
        settings: Settings,
        metrics: FeedbackMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self._max_age_seconds = settings.feedback_max_age_seconds
        self._guard = ReplayGuard(
            settings.feedback_replay_capacity, settings.feedback_max_age_seconds
        )
        self._metrics = metrics
        self._clock = clock

    def answer(self, body: bytes) -> tuple[int, dict[str, Any]]:
        now = self._clock()
        try:
            items = parse_feedback(body, self._key, now, self._max_age_seconds)
        except FeedbackRefused as error:
            self._metrics.request(error.status_code)
            return error.status_code, {"error": str(error)}
        rows = counted = replayed = 0
        for item in items:
            if not self._guard.first_time(item.token, now):
                replayed += 1
                self._metrics.replayed(len(self._guard))
                continue
            self._metrics.count(item, len(self._guard))
            counted += 1
            rows += item.token.rows
        self._metrics.request(200)
        return 200, {"tokens": counted, "rows": rows, "replayed": replayed}
