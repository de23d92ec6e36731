"""The shadow's side of mirroring: its predictions against the stable's, row by row.

A mirrored request carries the stable's prediction in REFERENCE_HEADER (mirror.py writes
it). Any server that receives one compares after predicting: classifiers count rows that
agree or disagree, regressors observe each row's absolute difference. A reference that
cannot be read, or has not one value per row, is counted as unmatched (classifiers) or
left out (regressors); the request itself is answered as any other.
"""

from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from prometheus_client import CollectorRegistry, Counter

from modelserver.metrics import (
    BASE_LABELS,
    SHADOW_ABSOLUTE_DIFFERENCE,
    SHADOW_AGREE,
    SHADOW_DISAGREE,
    SHADOW_ROWS_TOTAL,
    SHADOW_UNMATCHED,
    BulkHistogram,
)
from modelserver.model import Task
from modelserver.tensors import json_array

MIRROR_HEADER = b"modeldeploy-mirror"
"""Marks a mirrored copy (value 1); a server never mirrors a copy again."""
REFERENCE_HEADER = b"modeldeploy-mirror-reference"
"""The stable's predicted values, a JSON array with one value per row."""
REFERENCE_MAX_BYTES = 16 * 1024
"""A longer reference is not sent: the shadow cannot compare that request."""

ABSOLUTE_DIFFERENCE_BUCKETS = (
    0.0,
    1e-6,
    1e-5,
    1e-4,
    *(round(mantissa * 10.0**exponent, 6) for exponent in range(-3, 5) for mantissa in (1, 2.5, 5)),
)
"""0 holds the rows on which both models agree exactly (the same model sends its values
back as they were written); then 1-2.5-5 steps up to 5000."""


class ShadowComparison:
    """Compares predictions with the reference of mirrored requests, for one model's task.

    Its series appear with the first mirrored request, so servers that never shadow do not
    export them."""

    def __init__(self, registry: CollectorRegistry, base: tuple[str, ...], task: Task) -> None:
        self._registry = registry
        self._base = base
        self._regression = task == Task.REGRESSION
        self._rows: dict[str, Counter] | None = None
        self._difference: BulkHistogram | None = None

    def compare(self, reference: bytes, predicted: npt.NDArray[Any]) -> None:
        """Count the rows of `predicted` against the stable's values in `reference`."""
        expected = _values(reference, len(predicted))
        if self._regression:
            if expected is not None:
                self._observe_differences(expected, predicted)
            return
        rows = self._row_counters()
        if expected is None:
            rows[SHADOW_UNMATCHED].inc(len(predicted))
            return
        # The shadow's labels as its response writes them, so they compare with the JSON.
        labels = json_array(predicted)
        ours = labels.tolist() if isinstance(labels, np.ndarray) else labels
        agreeing = sum(1 for theirs, mine in zip(expected, ours, strict=True) if theirs == mine)
        if agreeing:
            rows[SHADOW_AGREE].inc(agreeing)
        if agreeing < len(ours):
            rows[SHADOW_DISAGREE].inc(len(ours) - agreeing)

    def _observe_differences(self, expected: list[Any], predicted: npt.NDArray[Any]) -> None:
        # Read in the prediction's own float type: the stable wrote the shortest decimal
        # of a float32, which comes back exactly as float32 (not as float64).
        dtype = predicted.dtype if predicted.dtype.kind == "f" else np.float64
        try:
            theirs = np.asarray(expected, dtype=dtype)
            difference = np.abs(theirs.astype(np.float64) - predicted.astype(np.float64))
        except (TypeError, ValueError):
            return  # not numbers, or not shaped like the prediction: nothing to compare
        if self._difference is None:
            self._difference = BulkHistogram(
                SHADOW_ABSOLUTE_DIFFERENCE,
                "Regressors in a shadow: absolute difference between this model's and the"
                " stable's prediction, per mirrored row (_sum / _count is the mean).",
                BASE_LABELS,
                buckets=ABSOLUTE_DIFFERENCE_BUCKETS,
                registry=self._registry,
            ).labels(*self._base)
        self._difference.observe_many(difference)

    def _row_counters(self) -> dict[str, Counter]:
        if self._rows is None:
            counter = Counter(
                SHADOW_ROWS_TOTAL,
                "Classifiers in a shadow: mirrored rows whose predicted class agrees or"
                " disagrees with the stable's, or that could not be matched with it.",
                (*BASE_LABELS, "result"),
                registry=self._registry,
            )
            # All three at once, so that a rate of disagreement reads 0, not nothing.
            self._rows = {
                result: counter.labels(*self._base, result)
                for result in (SHADOW_AGREE, SHADOW_DISAGREE, SHADOW_UNMATCHED)
            }
        return self._rows


def _values(reference: bytes, rows: int) -> list[Any] | None:
    """The reference's values when it is a JSON array of one value per row."""
    try:
        values = orjson.loads(reference)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(values, list) or len(values) != rows:
        return None
    return values
