"""Per-bin counters of what the model sees and answers, in the bins of its profile.

Counting a 100-row prediction value by value would cost more than the prediction, so
rows are binned with a few numpy operations (all features at once) and added to one
array of pending counts; `flush` moves them into the Prometheus counters. The numpy
calls cost about as much for one row as for hundreds, so predicted blocks wait (by
reference: the server never writes to a block again) until BIN_TOGETHER_ROWS rows are
there, and are binned together. The server flushes, binning whatever waits, before every
scrape and once a second (so that, with several worker processes, each worker's counts
reach the shared files).

Cardinality is fixed at start-up: every (feature, bin) series exists from then on, for
the first `max_features` features and the bins of the profile (at most MAX_BINS each).

The profile's own numbers (training shares of the same bins, reference quality) are
exported as gauges beside the counters: the operator judges drift and quality from
Prometheus alone, as it cannot read a profile file that may sit on a volume of the pod.
"""

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge

from modelserver.metrics import (
    BASE_LABELS,
    FEATURE_BIN_TOTAL,
    OUTPUT_CLASS,
    OUTPUT_SCORE,
    PREDICTION_BIN_TOTAL,
    PREDICTION_CLASS_TOTAL,
    PROFILE_FEATURE_SHARE,
    PROFILE_INFO,
    PROFILE_PREDICTION_SHARE,
    PROFILE_QUALITY,
)
from modelserver.model import Prediction
from modelserver.profile import CategoryBins, FeatureProfile, Profile, QuantileBins
from modelserver.profile_bins import category_bin_index, class_bin_index, quantile_bin_index

BIN_TOGETHER_ROWS = 512
"""Rows of predicted blocks that wait to be binned in one pass (see the module's doc)."""


@dataclass(frozen=True)
class _QuantileColumns:
    """The quantile-binned features, binned together: one comparison of every row's values
    with every edge, the edges padded to one length with NaN (which no value reaches)."""

    columns: npt.NDArray[np.intp]
    edges: npt.NDArray[np.floating]
    """[most edges, features], padded with NaN."""
    offsets: npt.NDArray[np.intp]
    """Per feature: where its bins start in the flat counts."""
    missing: npt.NDArray[np.intp]
    """Per feature: where its missing bin is in the flat counts."""

    @classmethod
    def of(
        cls,
        features: list[tuple[int, QuantileBins, int]],
        input_dtype: type[np.floating],
    ) -> "_QuantileColumns":
        width = max((len(binning.edges) for _, binning, _ in features), default=0)
        edges = np.full((width, len(features)), np.nan)
        for position, (_, binning, _) in enumerate(features):
            edges[: len(binning.edges), position] = binning.edges
        # Comparing in the model's float type costs half as much, and is exact when the
        # edges are values of that type (the profile builder makes them so).
        exact = np.array_equal(edges.astype(input_dtype).astype(np.float64), edges, equal_nan=True)
        offsets = np.asarray([offset for _, _, offset in features], dtype=np.intp)
        last_bin = np.asarray([len(b.edges) for _, b, _ in features], dtype=np.intp)
        return cls(
            columns=np.asarray([column for column, _, _ in features], dtype=np.intp),
            edges=edges.astype(input_dtype) if exact else edges,
            offsets=offsets,
            missing=offsets + last_bin + 1,
        )

    def flat_bins(self, rows: npt.NDArray[np.floating]) -> npt.NDArray[np.intp]:
        values = rows[:, self.columns]
        if values.dtype != self.edges.dtype:
            values = values.astype(np.float64)
        # How many edges each value reaches is its bin (NaN reaches none, and goes to the
        # missing bin). Summed in bytes (a profile has fewer than 256 edges per feature):
        # more than twice as fast as summing in machine words.
        reached = np.add.reduce(
            (values[:, None, :] >= self.edges).view(np.uint8), axis=1, dtype=np.uint8
        )
        flat: npt.NDArray[np.intp] = reached + self.offsets
        missing = np.isnan(values)
        if missing.any():
            flat = np.where(missing, self.missing, flat)
        return flat.ravel()


def export_reference(
    profile: Profile,
    counted: Sequence[FeatureProfile],
    registry: CollectorRegistry,
    base: Sequence[str],
) -> None:
    """Gauges of the profile's training shares, in exactly the series the counters count,
    and of its reference quality."""
    feature_share = Gauge(
        PROFILE_FEATURE_SHARE,
        "Training share of each feature's bin in the reference profile (the bins of"
        f" {FEATURE_BIN_TOTAL}).",
        (*BASE_LABELS, "feature", "bin"),
        registry=registry,
        multiprocess_mode="max",
    )
    for feature in counted:
        binning = feature.binning
        for name, share in zip(binning.bins, binning.proportions, strict=True):
            feature_share.labels(*base, feature.name, name).set(share)
    prediction_share = Gauge(
        PROFILE_PREDICTION_SHARE,
        f"Share of each output bin in the reference profile: output {OUTPUT_CLASS}, the"
        f" classes of {PREDICTION_CLASS_TOTAL}; output {OUTPUT_SCORE}, the bins of"
        f" {PREDICTION_BIN_TOTAL}.",
        (*BASE_LABELS, "output", "bin"),
        registry=registry,
        multiprocess_mode="max",
    )
    outputs = {OUTPUT_CLASS: profile.prediction.classes, OUTPUT_SCORE: profile.prediction.score}
    for output, bins in outputs.items():
        if bins is not None:
            for name, share in zip(bins.bins, bins.proportions, strict=True):
                prediction_share.labels(*base, output, name).set(share)
    reference = profile.quality
    if reference is None:
        return  # a profile built without labels has no reference quality
    quality = Gauge(
        PROFILE_QUALITY,
        "The model's quality on the reference profile's labelled data, by metric"
        " (accuracy, auc, mae).",
        (*BASE_LABELS, "metric"),
        registry=registry,
        multiprocess_mode="max",
    )
    values = {"accuracy": reference.accuracy, "auc": reference.auc, "mae": reference.mae}
    for metric, value in values.items():
        if value is not None:
            quality.labels(*base, metric).set(value)


@dataclass(frozen=True)
class _CategoryColumn:
    column: int
    categories: npt.NDArray[np.float64]
    offset: int


class ProfileCounters:
    """Counts each predicted block's features and outputs in the profile's bins."""

    def __init__(
        self,
        profile: Profile,
        registry: CollectorRegistry,
        base: Sequence[str],
        max_features: int,
        input_dtype: type[np.floating],
        sha256: str,
    ) -> None:
        counted = min(max_features, len(profile.features))
        Gauge(
            PROFILE_INFO,
            "Always 1; labels describe the reference profile whose bins are counted.",
            (*BASE_LABELS, "sha256", "features_counted"),
            registry=registry,
            multiprocess_mode="max",
        ).labels(*base, sha256, str(counted)).set(1)
        export_reference(profile, profile.features[:counted], registry, base)
        feature_bins = Counter(
            FEATURE_BIN_TOTAL,
            "Input values per feature and bin of the model's reference profile.",
            (*BASE_LABELS, "feature", "bin"),
            registry=registry,
        )
        self._children: list[Counter] = []
        quantile: list[tuple[int, QuantileBins, int]] = []
        self._categories: list[_CategoryColumn] = []
        for column, feature in enumerate(profile.features[:counted]):
            offset = len(self._children)
            binning = feature.binning
            if isinstance(binning, CategoryBins):
                values = np.asarray(binning.values, dtype=np.float64)
                self._categories.append(_CategoryColumn(column, values, offset))
            else:
                quantile.append((column, binning, offset))
            self._children += [feature_bins.labels(*base, feature.name, b) for b in binning.bins]
        self._quantile = _QuantileColumns.of(quantile, input_dtype)
        self._classes: npt.NDArray[np.generic] | None = None
        self._class_offset = len(self._children)
        classes = profile.prediction.classes
        if classes is not None:
            self._classes = np.asarray(classes.classes)
            class_counter = Counter(
                PREDICTION_CLASS_TOTAL,
                "Predicted rows per class of the model's reference profile (other: a class"
                " the profile does not list).",
                (*BASE_LABELS, "class"),
                registry=registry,
            )
            self._children += [class_counter.labels(*base, name) for name in classes.bins]
        self._score: QuantileBins | None = profile.prediction.score
        self._score_edges = np.asarray(self._score.edges if self._score else [], np.float64)
        self._score_offset = len(self._children)
        if self._score is not None:
            score_counter = Counter(
                PREDICTION_BIN_TOTAL,
                "Predicted rows per bin of the model's reference profile: the predicted"
                " value (regressors), the positive-class (binary) or predicted class's"
                " (multiclass) probability.",
                (*BASE_LABELS, "bin"),
                registry=registry,
            )
            self._children += [score_counter.labels(*base, name) for name in self._score.bins]
        self._pending = np.zeros(len(self._children), dtype=np.int64)
        self._waiting: list[tuple[npt.NDArray[np.floating], Prediction]] = []
        self._waiting_rows = 0
        # Blocks are counted on the predict thread, flushed on the event loop.
        self._lock = threading.Lock()

    @property
    def series(self) -> int:
        return len(self._children)

    def observe(self, rows: npt.NDArray[np.floating], prediction: Prediction) -> None:
        """Count a predicted block, once enough rows wait to bin them together."""
        with self._lock:
            self._waiting.append((rows, prediction))
            self._waiting_rows += len(rows)
            if self._waiting_rows < BIN_TOGETHER_ROWS:
                return
            waiting = self._take_waiting()
        self._bin(waiting)

    def _take_waiting(self) -> list[tuple[npt.NDArray[np.floating], Prediction]]:
        waiting, self._waiting, self._waiting_rows = self._waiting, [], 0
        return waiting

    def _bin(self, blocks: list[tuple[npt.NDArray[np.floating], Prediction]]) -> None:
        if len(blocks) == 1:
            rows, prediction = blocks[0]
            values, monitored = prediction.values, prediction.monitored_values()
        else:
            rows = np.concatenate([block for block, _ in blocks])
            values = np.concatenate([p.values for _, p in blocks])
            monitored = np.concatenate([p.monitored_values() for _, p in blocks])
        parts = [self._quantile.flat_bins(rows)]
        for category in self._categories:
            index = category_bin_index(category.categories, rows[:, category.column])
            parts.append(index + category.offset)
        if self._classes is not None:
            parts.append(class_bin_index(self._classes, values) + self._class_offset)
        if self._score is not None:
            score = quantile_bin_index(self._score_edges, monitored)
            parts.append(score + self._score_offset)
        counts = np.bincount(np.concatenate(parts), minlength=len(self._pending))
        with self._lock:
            self._pending += counts

    def flush(self) -> None:
        with self._lock:
            waiting = self._take_waiting()
        if waiting:
            self._bin(waiting)
        with self._lock:
            pending = self._pending
            if not pending.any():
                return
            self._pending = np.zeros_like(pending)
        for position in np.flatnonzero(pending).tolist():
            self._children[position].inc(int(pending[position]))
