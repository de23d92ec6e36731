"""Every Prometheus metric of the server: names, labels and buckets live here only.

The operator's PromQL reads these series; docs/server.md documents them. Each series has
the labels in BASE_LABELS; Prometheus adds `namespace` and `pod` at scrape time.
"""

import bisect
import math
import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

REQUESTS_TOTAL = "modelserver_requests_total"
REQUEST_DURATION_SECONDS = "modelserver_request_duration_seconds"
INFLIGHT_REQUESTS = "modelserver_inflight_requests"
REQUEST_ROWS = "modelserver_request_rows"
BATCH_ROWS = "modelserver_batch_rows"
MODEL_LOAD_SECONDS = "modelserver_model_load_seconds"
PREDICTION_VALUE = "modelserver_prediction_value"
MODEL_INFO = "modelserver_model_info"
# With a reference profile (profile_metrics.py):
FEATURE_BIN_TOTAL = "modelserver_feature_bin_total"
PREDICTION_CLASS_TOTAL = "modelserver_prediction_class_total"
PREDICTION_BIN_TOTAL = "modelserver_prediction_bin_total"
PROFILE_INFO = "modelserver_profile_info"
# The profile's reference numbers, for the operator, which cannot read the profile file.
PROFILE_FEATURE_SHARE = "modelserver_profile_feature_share"
PROFILE_PREDICTION_SHARE = "modelserver_profile_prediction_share"
PROFILE_QUALITY = "modelserver_profile_quality"
# With a feedback key (feedback.py); model_version and track are those of the prediction.
FEEDBACK_ROWS_TOTAL = "modelserver_feedback_rows_total"
FEEDBACK_SCORE = "modelserver_feedback_score"
FEEDBACK_ABSOLUTE_ERROR = "modelserver_feedback_absolute_error"
FEEDBACK_REQUESTS_TOTAL = "modelserver_feedback_requests_total"
FEEDBACK_REPLAYED_TOTAL = "modelserver_feedback_replayed_total"
FEEDBACK_REMEMBERED_TOKENS = "modelserver_feedback_remembered_tokens"
# Shadow traffic (mirror.py on the stable, shadow_compare.py on the shadow).
MIRROR_REQUESTS_TOTAL = "modelserver_mirror_requests_total"
MIRROR_QUEUE_DEPTH = "modelserver_mirror_queue_depth"
SHADOW_ROWS_TOTAL = "modelserver_shadow_rows_total"
SHADOW_ABSOLUTE_DIFFERENCE = "modelserver_shadow_absolute_difference"

# `variant` is the experiment arm (settings.variant), empty outside experiments: Prometheus
# treats an empty label as absent, so queries that do not name it match as before.
BASE_LABELS = ("model", "model_version", "track", "modeldeployment", "variant")

ENDPOINT_V2_INFER = "v2_infer"
ENDPOINT_V1_PREDICT = "v1_predict"

# Values of the `protocol` label: how the request came. A gRPC answer's `code` is the HTTP
# status that the same answer has over REST, so analyses count both protocols alike.
PROTOCOL_REST = "rest"
PROTOCOL_GRPC = "grpc"

# Values of the `outcome` label of REQUESTS_TOTAL: whose doing the answer was.
OUTCOME_OK = "ok"
OUTCOME_REJECTED = "rejected"
"""The model refused an input that the protocol accepts (422)."""
OUTCOME_CLIENT_ERROR = "client_error"
"""Not a valid request, or it never reached the model: 400, 404, 405, 408, 413, 499."""
OUTCOME_SERVER_ERROR = "server_error"

# Values of the `output` label of PROFILE_PREDICTION_SHARE: the profile's share of each
# `class` of PREDICTION_CLASS_TOTAL, or of each `bin` of PREDICTION_BIN_TOTAL.
OUTPUT_CLASS = "class"
OUTPUT_SCORE = "score"

# Values of the `result` label of MIRROR_REQUESTS_TOTAL and SHADOW_ROWS_TOTAL.
MIRROR_SENT = "sent"
"""The shadow answered the copy (whatever its status: its errors are in its own metrics)."""
MIRROR_DROPPED = "dropped"
"""The queue was full, or mirroring was turned off or moved while the copy waited."""
MIRROR_FAILED = "failed"
"""No answer: the shadow could not be reached, or did not answer within the timeout."""
SHADOW_AGREE = "agree"
SHADOW_DISAGREE = "disagree"
SHADOW_UNMATCHED = "unmatched"
"""Rows whose reference could not be parsed or did not have one label per row."""

DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
ROWS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
PROBABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
_MAGNITUDES = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
REGRESSION_BUCKETS = (*(-m for m in reversed(_MAGNITUDES)), 0.0, *_MAGNITUDES)

# The *_created series double the scrape size and no query of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Set by the launcher when several worker processes share the counters (prometheus_client).
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


_FEW_VALUES = 8
"""Arrays up to this size are observed value by value (BulkHistogram.observe_many)."""


class BulkHistogram(Histogram):
    """A histogram that takes a whole array of observations at once.

    Observing a 100-row prediction one value at a time costs more than the prediction;
    this counts the values per bucket with numpy and adds each count once.
    """

    def observe_many(self, values: npt.NDArray[np.floating]) -> None:
        if values.size <= _FEW_VALUES:
            # A few values (1-row requests: most of them) cost less one by one than the
            # several numpy calls below cost at all.
            upper_bounds = self._upper_bounds
            for value in values.tolist():
                if math.isfinite(value):
                    self._sum.inc(value)
                    self._buckets[bisect.bisect_left(upper_bounds, value)].inc(1)
            return
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return
        # Bucket i counts bound[i-1] < v <= bound[i], as Histogram.observe does.
        bucket_index = np.searchsorted(self._bounds_array(), finite, side="left")
        counts = np.bincount(bucket_index)
        self._sum.inc(float(finite.sum()))
        for bucket in np.flatnonzero(counts).tolist():
            self._buckets[bucket].inc(int(counts[bucket]))

    def _bounds_array(self) -> npt.NDArray[np.float64]:
        bounds: npt.NDArray[np.float64] | None = getattr(self, "_bounds", None)
        if bounds is None:
            bounds = np.asarray(self._upper_bounds, dtype=np.float64)
            self._bounds = bounds
        return bounds


class ServerMetrics:
    """The metrics of one served model, with the base labels bound once."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        model: str,
        model_version: str,
        track: str,
        modeldeployment: str,
        variant: str,
        model_format: str,
        task: str,
        sha256: str,
        prediction_buckets: Sequence[float],
    ) -> None:
        base = (model, model_version, track, modeldeployment, variant)
        self._requests = Counter(
            REQUESTS_TOTAL,
            "Inference requests by endpoint, protocol (rest, grpc), HTTP status code and"
            " outcome (ok, rejected, client_error, server_error).",
            (*BASE_LABELS, "endpoint", "protocol", "code", "outcome"),
            registry=registry,
        )
        self._duration = Histogram(
            REQUEST_DURATION_SECONDS,
            "Time from receiving an inference request to its response, in seconds; requests"
            " that failed by the client's doing (outcome client_error) are not observed.",
            (*BASE_LABELS, "endpoint", "protocol"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.inflight = Gauge(
            INFLIGHT_REQUESTS,
            "Inference requests being handled now.",
            BASE_LABELS,
            registry=registry,
            multiprocess_mode="livesum",
        ).labels(*base)
        self.request_rows = Histogram(
            REQUEST_ROWS,
            "Rows per accepted inference request.",
            BASE_LABELS,
            buckets=ROWS_BUCKETS,
            registry=registry,
        ).labels(*base)
        self.batch_rows = Histogram(
            BATCH_ROWS,
            "Rows per model predict call after merging concurrent requests.",
            BASE_LABELS,
            buckets=ROWS_BUCKETS,
            registry=registry,
        ).labels(*base)
        self.model_load_seconds = Gauge(
            MODEL_LOAD_SECONDS,
            "Seconds spent fetching, verifying, loading and warming up the model.",
            BASE_LABELS,
            registry=registry,
            multiprocess_mode="max",
        ).labels(*base)
        self.prediction_value = BulkHistogram(
            PREDICTION_VALUE,
            "Predicted values; for classifiers the positive-class (binary) or top-class"
            " (multiclass) probability.",
            BASE_LABELS,
            buckets=prediction_buckets,
            registry=registry,
        ).labels(*base)
        Gauge(
            MODEL_INFO,
            "Always 1; labels describe the served model.",
            (*BASE_LABELS, "format", "task", "sha256"),
            registry=registry,
            multiprocess_mode="max",
        ).labels(*base, model_format, task, sha256).set(1)
        self.base = base
        """Values of BASE_LABELS for this server."""
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._duration_children: dict[tuple[str, str], Histogram] = {}

    def record_request(
        self, endpoint: str, status_code: int, seconds: float, protocol: str = PROTOCOL_REST
    ) -> None:
        # Children are cached: labels() costs more than the increment itself.
        key = (endpoint, protocol, status_code)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._requests.labels(
                *self.base, endpoint, protocol, str(status_code), outcome(status_code)
            )
            self._request_children[key] = counter
        counter.inc()
        if outcome(status_code) == OUTCOME_CLIENT_ERROR:
            # A client that sends its body slowly, or garbage, must not move the model's
            # latency: analyses judge the p99 of requests that reached the model.
            return
        duration = self._duration_children.get(key[:2])
        if duration is None:
            duration = self._duration.labels(*self.base, endpoint, protocol)
            self._duration_children[key[:2]] = duration
        duration.observe(seconds)


def outcome(status_code: int) -> str:
    """The one place that decides whose doing an answer was; analyses count on it."""
    if status_code >= 500:
        return OUTCOME_SERVER_ERROR
    if status_code == 422:
        return OUTCOME_REJECTED
    if status_code >= 400:
        return OUTCOME_CLIENT_ERROR
    return OUTCOME_OK


def default_prediction_buckets(task: str) -> tuple[float, ...]:
    return REGRESSION_BUCKETS if task == "regression" else PROBABILITY_BUCKETS


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The exposition text; with several workers, the sum over all of them."""
    multiprocess_dir = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
