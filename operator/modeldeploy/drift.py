"""Drift and quality statistics over binned counts: pure arithmetic, no I/O.

The inputs are per-bin counts, usually the increases of the inference server's per-bin
counters over one analysis window (floats: Prometheus extrapolates increases), or the
shares of a training profile. Every statistic is defined exactly in docs/analysis.md;
each function returns the value and what explains it (the worst bin, the worst features,
the rows behind it), so a verdict can say why.

Plain Python on purpose: the operator image has no numpy, and the inputs are small
(tens of features of about ten bins each).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from modeldeploy.api import DriftStatistic

PSI_EPSILON = 1e-4
"""Added to every share before PSI is computed, then the shares are renormalised.

Without it a bin that is empty on one side makes PSI infinite, so one stray row would
fail any bound. 0.0001 (one row in 10,000) is below any share a real window resolves,
so bins with rows on both sides barely move, and an empty bin's term is capped at about
q*ln(q/0.0001) for the share q on the other side: a bin holding 5 % on one side and
nothing on the other adds 0.31 (a shift worth failing on its own at the default bound
0.2), one holding 1 % adds 0.046 (noise).
"""

MISSING_BIN = "missing"
"""Label of the bin that counts missing values (NaN, null); it sorts before all others."""


class NotEnoughData(ValueError):
    """A side of the comparison has no rows (or lacks a label): nothing to judge."""


class UnorderedBins(ValueError):
    """KS needs bins with an order; these are categories."""


# --- arrays of counts -----------------------------------------------------------------


@dataclass(frozen=True)
class PSIResult:
    """Population stability index of `observed` against `reference`."""

    value: float
    terms: tuple[float, ...]
    """Each bin's share of the value, in the bins' order; all are >= 0."""
    reference_rows: float
    observed_rows: float

    @property
    def worst_bin(self) -> int:
        """Index of the bin that adds most to the value."""
        return max(range(len(self.terms)), key=self.terms.__getitem__)


def psi(
    reference: Sequence[float], observed: Sequence[float], *, epsilon: float = PSI_EPSILON
) -> PSIResult:
    """PSI = sum over bins of (o - r) * ln(o / r), o and r the smoothed shares.

    Counts or shares alike: each side is divided by its own total. Smoothing: every share
    gets `epsilon` added, then each side is renormalised to sum to 1 (PSI_EPSILON says
    why). Raises NotEnoughData when a side has no rows.
    """
    _same_length(reference, observed)
    reference_shares = _smoothed_shares(reference, epsilon, "reference")
    observed_shares = _smoothed_shares(observed, epsilon, "observed")
    terms = tuple(
        (o - r) * math.log(o / r) for r, o in zip(reference_shares, observed_shares, strict=True)
    )
    return PSIResult(math.fsum(terms), terms, math.fsum(reference), math.fsum(observed))


def psi_noise_floor(bins: int, reference_rows: float, observed_rows: float) -> float:
    """What PSI averages when both sides are samples of ONE distribution: (B - 1)(1/n1 + 1/n2).

    For small differences PSI is close to a chi-square statistic scaled by (1/n1 + 1/n2),
    with B - 1 degrees of freedom, so sampling noise alone gives this much. A bound near
    it judges noise: docs/analysis.md says how many rows a bound needs. A profile's side
    counts as infinitely many rows (pass math.inf).
    """
    if bins < 1 or reference_rows <= 0 or observed_rows <= 0:
        raise ValueError("the noise floor needs at least one bin and rows on both sides")
    return (bins - 1) * (1 / reference_rows + 1 / observed_rows)


@dataclass(frozen=True)
class KSResult:
    """Largest gap between the binned cumulative distributions of two sides."""

    value: float
    at_bin: int
    """Index of the bin at whose upper edge the gap is largest (the first such bin)."""
    reference_cdf: float
    observed_cdf: float
    """The two cumulative shares at that edge."""
    reference_rows: float
    observed_rows: float


def binned_ks(reference: Sequence[float], observed: Sequence[float]) -> KSResult:
    """max over bin edges of |F_observed - F_reference|, bins in ascending order.

    Not a sample KS test: no p-value, and rows inside one bin are not told apart, so the
    value is the sample KS statistic evaluated at the bin edges only (a lower bound of
    it). Raises NotEnoughData when a side has no rows.
    """
    _same_length(reference, observed)
    reference_cdf = _cumulative(_shares(reference, "reference"))
    observed_cdf = _cumulative(_shares(observed, "observed"))
    gaps = [abs(o - r) for r, o in zip(reference_cdf, observed_cdf, strict=True)]
    at = max(range(len(gaps)), key=gaps.__getitem__)
    return KSResult(
        gaps[at],
        at,
        reference_cdf[at],
        observed_cdf[at],
        math.fsum(reference),
        math.fsum(observed),
    )


@dataclass(frozen=True)
class AUCResult:
    """Area under the ROC curve of a binary classifier, from score histograms."""

    value: float
    positives: float
    negatives: float
    tied_pairs: float
    """Share of (positive, negative) pairs whose scores fell into the same bin; each such
    pair counts half, so this is how far the bins' width can blur the value."""


def histogram_auc(negatives: Sequence[float], positives: Sequence[float]) -> AUCResult:
    """P(a positive's score > a negative's) + half P(same bin), bins ascending by score.

    `negatives[i]` and `positives[i]` count the rows of true label 0 and 1 whose score
    fell into bin i. Equal to the ROC AUC of the rows with each score replaced by its
    bin's index. Raises NotEnoughData unless both labels have rows.
    """
    _same_length(negatives, positives)
    _check_counts(negatives, "negatives")
    _check_counts(positives, "positives")
    total_negatives, total_positives = math.fsum(negatives), math.fsum(positives)
    if total_negatives <= 0 or total_positives <= 0:
        raise NotEnoughData(
            f"AUC needs rows of both labels; got {total_negatives:g} of label 0 and "
            f"{total_positives:g} of label 1"
        )
    below = 0.0
    wins, ties = [], []
    for negative, positive in zip(negatives, positives, strict=True):
        wins.append(positive * below)
        ties.append(positive * negative)
        below += negative
    pairs = total_negatives * total_positives
    tied = math.fsum(ties)
    value = (math.fsum(wins) + 0.5 * tied) / pairs
    return AUCResult(value, total_positives, total_negatives, tied / pairs)


@dataclass(frozen=True)
class AccuracyResult:
    value: float
    correct: float
    incorrect: float

    @property
    def rows(self) -> float:
        return self.correct + self.incorrect


def accuracy(correct: float, incorrect: float) -> AccuracyResult:
    """correct / (correct + incorrect). Raises NotEnoughData without any labelled row."""
    _check_counts([correct, incorrect], "feedback counts")
    if correct + incorrect <= 0:
        raise NotEnoughData("accuracy needs labelled rows; no feedback was counted")
    return AccuracyResult(correct / (correct + incorrect), correct, incorrect)


def error_budget_remaining(compliance: float, objective: float) -> float:
    """Share of the error budget left: 1 - (1 - compliance) / (1 - objective).

    The budget is the share of windows allowed to break the SLO (1 - objective); the
    value is 1 with no bad window, 0 when exactly the budget is spent and below 0 when
    overspent.
    """
    if not 0 <= compliance <= 1:
        raise ValueError(f"compliance is a share within 0..1; got {compliance!r}")
    if not 0 <= objective < 1:
        raise ValueError(f"the objective must be within 0..1 and below 1; got {objective!r}")
    return 1 - (1 - compliance) / (1 - objective)


# --- labelled bins (as Prometheus returns them) ---------------------------------------

Bins = Mapping[str, float]
"""Counts (or shares) by bin label."""


def bin_order(labels: Iterable[str]) -> list[str]:
    """Labels in ascending order of the bins they name, for KS.

    Ordered bins are labelled by a number (their upper edge, `+Inf` for the last, or their
    index); the missing-value bin sorts first. Raises UnorderedBins for any other label
    (categories have no order, so their cumulative distribution means nothing).
    """
    keyed: list[tuple[float, str]] = []
    categories = []
    for label in set(labels):
        if label == MISSING_BIN:
            keyed.append((-math.inf, label))
            continue
        try:
            edge = float(label)
        except ValueError:
            edge = math.nan
        if math.isnan(edge):
            categories.append(label)
        else:
            keyed.append((edge, label))
    if categories:
        raise UnorderedBins(
            f"bins {sorted(categories)} are categories, which have no order; KS needs "
            "ordered bins: use the psi statistic"
        )
    # The missing bin's -inf ties with a bin labelled -Inf; it goes first all the same.
    return [
        label for _, label in sorted(keyed, key=lambda kv: (kv[0], kv[1] != MISSING_BIN, kv[1]))
    ]


def aligned(
    reference: Bins, observed: Bins, order: Sequence[str]
) -> tuple[list[float], list[float]]:
    """Both sides' counts in `order`; a bin a side does not list counts 0 there."""
    return (
        [reference.get(label, 0.0) for label in order],
        [observed.get(label, 0.0) for label in order],
    )


@dataclass(frozen=True)
class BinnedComparison:
    """One statistic of one variable (a feature or an output), with its worst bin."""

    name: str
    statistic: DriftStatistic
    value: float
    worst_bin: str
    """PSI: the bin adding most; KS: the bin at whose upper edge the gap is largest."""
    reference_share: float
    observed_share: float
    """PSI: the two sides' shares of that bin; KS: their cumulative shares at its edge."""
    observed_rows: float


def compare(
    name: str, reference: Bins, observed: Bins, statistic: DriftStatistic
) -> BinnedComparison:
    """PSI or binned KS of one variable, bins matched by label."""
    if statistic == DriftStatistic.KS:
        order = bin_order([*reference, *observed])
        ks = binned_ks(*aligned(reference, observed, order))
        return BinnedComparison(
            name,
            statistic,
            ks.value,
            order[ks.at_bin],
            ks.reference_cdf,
            ks.observed_cdf,
            ks.observed_rows,
        )
    order = sorted({*reference, *observed})
    reference_counts, observed_counts = aligned(reference, observed, order)
    result = psi(reference_counts, observed_counts)
    worst = result.worst_bin
    return BinnedComparison(
        name,
        statistic,
        result.value,
        order[worst],
        reference_counts[worst] / result.reference_rows,
        observed_counts[worst] / result.observed_rows,
        result.observed_rows,
    )


@dataclass(frozen=True)
class DriftResult:
    """The largest statistic over several variables and the worst of them."""

    value: float
    worst: tuple[BinnedComparison, ...]
    """The variables with the largest values, largest first (ties by name)."""
    compared: int
    without_rows: tuple[str, ...]
    """Variables of the reference that had no observed rows, so were not compared."""
    skipped: tuple[str, ...] = ()
    """Variables left out because the statistic does not apply (KS on categories)."""


def feature_drift(
    profile: Mapping[str, Bins], observed: Mapping[str, Bins], *, worst: int = 5
) -> DriftResult:
    """PSI of each feature's observed bins against the training profile's shares.

    The value is the largest feature PSI; `worst` features are reported. Raises
    NotEnoughData when no feature of the profile has observed rows.
    """
    return _drift(profile, observed, DriftStatistic.PSI, worst, "feature")


def prediction_drift(
    stable: Mapping[str, Bins],
    canary: Mapping[str, Bins],
    statistic: DriftStatistic,
    *,
    worst: int = 5,
) -> DriftResult:
    """PSI or binned KS of each output of the canary against the stable's, the largest wins.

    With KS, outputs binned by category (a predicted class) are skipped and named in
    `skipped`; raises UnorderedBins when no output is ordered, NotEnoughData when no
    output has rows on both sides.
    """
    skipped = []
    if statistic == DriftStatistic.KS:
        for output in sorted({*stable, *canary}):
            try:
                bin_order([*stable.get(output, {}), *canary.get(output, {})])
            except UnorderedBins:
                skipped.append(output)
        if skipped and len(skipped) == len({*stable, *canary}):
            raise UnorderedBins(
                f"every output ({', '.join(skipped)}) is binned by category; KS needs "
                "ordered bins: use the psi statistic"
            )
    kept_stable = {k: v for k, v in stable.items() if k not in skipped}
    kept_canary = {k: v for k, v in canary.items() if k not in skipped}
    result = _drift(kept_stable, kept_canary, statistic, worst, "output")
    return replace(result, skipped=tuple(skipped))


def _drift(
    reference: Mapping[str, Bins],
    observed: Mapping[str, Bins],
    statistic: DriftStatistic,
    worst: int,
    kind: str,
) -> DriftResult:
    if worst < 1:
        raise ValueError("report at least the 1 worst variable")
    comparisons, without_rows = [], []
    for name in sorted(reference):
        seen = observed.get(name, {})
        if math.fsum(seen.values()) <= 0 or math.fsum(reference[name].values()) <= 0:
            without_rows.append(name)
            continue
        comparisons.append(compare(name, reference[name], seen, statistic))
    if not comparisons:
        raise NotEnoughData(f"no {kind} has rows on both sides of the comparison")
    ranked = sorted(comparisons, key=lambda c: (-c.value, c.name))
    return DriftResult(
        ranked[0].value, tuple(ranked[:worst]), len(comparisons), tuple(without_rows)
    )


# --- helpers --------------------------------------------------------------------------


def _check_counts(counts: Iterable[float], what: str) -> None:
    for count in counts:
        if not math.isfinite(count) or count < 0:
            raise ValueError(f"{what} must be finite and >= 0; got {count!r}")


def _shares(counts: Sequence[float], side: str) -> list[float]:
    _check_counts(counts, f"{side} counts")
    total = math.fsum(counts)
    if total <= 0:
        raise NotEnoughData(f"the {side} side has no rows")
    return [count / total for count in counts]


def _smoothed_shares(counts: Sequence[float], epsilon: float, side: str) -> list[float]:
    shares = _shares(counts, side)
    scale = 1 + epsilon * len(shares)
    return [(share + epsilon) / scale for share in shares]


def _cumulative(shares: Sequence[float]) -> list[float]:
    total, out = 0.0, []
    for share in shares:
        total += share
        out.append(total)
    return out


def _same_length(first: Sequence[float], second: Sequence[float]) -> None:
    if len(first) != len(second):
        raise ValueError(f"the two sides have {len(first)} and {len(second)} bins; bin them alike")
    if len(first) == 0:
        raise ValueError("there are no bins to compare")
