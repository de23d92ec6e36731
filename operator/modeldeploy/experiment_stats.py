"""The verdict of an A/B experiment (issue 16): each variant's success rate against the
control's, judged honestly.

Per variant: a two-sided two-proportion z-test (pooled standard error) against control,
Wilson score intervals for each rate, Newcombe's hybrid score interval for the
difference, and Holm's step-down correction across the variants, so that testing four
variants does not quadruple the chance of a false winner. The unit of analysis is the
request: each request is one trial, success or not.

A variant is Better or Worse only when its Holm-adjusted p-value is below the
significance level AND the difference is at least the minimum effect; otherwise it is
NoSignificantDifference, or InsufficientData while either side has fewer than the
minimum samples. Pure: counts in, comparisons out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from scipy.stats import binomtest, norm


class Outcome(StrEnum):
    BETTER = "Better"
    WORSE = "Worse"
    NO_SIGNIFICANT_DIFFERENCE = "NoSignificantDifference"
    INSUFFICIENT_DATA = "InsufficientData"


@dataclass(frozen=True)
class Arm:
    """One side of the experiment: how many requests succeeded of how many."""

    name: str
    successes: int
    total: int

    def __post_init__(self) -> None:
        if self.total < 0 or not 0 <= self.successes <= max(self.total, 0):
            raise ValueError(
                f"{self.name}: successes must lie within 0..total; got {self.successes} of "
                f"{self.total}"
            )

    @property
    def rate(self) -> float | None:
        return self.successes / self.total if self.total > 0 else None

    @classmethod
    def counted(cls, name: str, successes: float, total: float) -> Arm:
        """An arm from Prometheus increases, which extrapolate to fractions: whole requests,
        never more successes than requests."""
        whole = max(round(total), 0)
        return cls(name, min(max(round(successes), 0), whole), whole)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class Comparison:
    variant: str
    outcome: Outcome
    rate: float | None
    rate_interval: Interval | None
    control_rate: float | None
    control_interval: Interval | None
    difference: float | None
    """variant rate - control rate."""
    difference_interval: Interval | None
    p_value: float | None
    """Two-sided, of the z-test of this variant against control alone."""
    adjusted_p_value: float | None
    """Holm-adjusted across the variants compared."""
    samples: int
    control_samples: int


def wilson(arm: Arm, confidence: float) -> Interval | None:
    """Wilson score interval of the arm's rate; None without trials."""
    if arm.total == 0:
        return None
    ci = binomtest(arm.successes, arm.total).proportion_ci(
        confidence_level=confidence, method="wilson"
    )
    return Interval(float(ci.low), float(ci.high))


def newcombe(variant: Arm, control: Arm, confidence: float) -> Interval | None:
    """Newcombe's hybrid score interval (his method 10) for variant rate - control rate,
    from the two Wilson intervals."""
    v, c = wilson(variant, confidence), wilson(control, confidence)
    if v is None or c is None or variant.rate is None or control.rate is None:
        return None
    difference = variant.rate - control.rate
    low = difference - math.hypot(variant.rate - v.low, c.high - control.rate)
    high = difference + math.hypot(v.high - variant.rate, control.rate - c.low)
    return Interval(low, high)


def two_proportion_p_value(variant: Arm, control: Arm) -> float:
    """Two-sided p-value of the pooled two-proportion z-test. Equal rates of 0 or 1 on
    both sides (no variance at all) give 1: nothing tells them apart."""
    pooled = (variant.successes + control.successes) / (variant.total + control.total)
    variance = pooled * (1 - pooled) * (1 / variant.total + 1 / control.total)
    if variance <= 0:
        return 1.0
    assert variant.rate is not None
    assert control.rate is not None
    z = (variant.rate - control.rate) / math.sqrt(variance)
    return float(2 * norm.sf(abs(z)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the i-th smallest of m is
    multiplied by m - i + 1, made non-decreasing, and capped at 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def compare(
    control: Arm,
    variants: Sequence[Arm],
    *,
    significance: float = 0.05,
    min_samples: int = 1000,
    min_effect: float = 0.0,
) -> list[Comparison]:
    """Each variant against control, corrected across the variants that have enough
    samples (those without take no part in the correction)."""
    if not 0 < significance < 1:
        raise ValueError(f"significance must lie within 0..1; got {significance}")
    if min_samples < 1 or min_effect < 0:
        raise ValueError("min_samples must be at least 1 and min_effect at least 0")
    confidence = 1 - significance
    judged = [v for v in variants if v.total >= min_samples and control.total >= min_samples]
    raw = {v.name: two_proportion_p_value(v, control) for v in judged}
    adjusted = dict(zip(raw, holm(list(raw.values())), strict=True))
    control_interval = wilson(control, confidence)
    out = []
    for variant in variants:
        difference = (
            variant.rate - control.rate
            if variant.rate is not None and control.rate is not None
            else None
        )
        outcome = Outcome.INSUFFICIENT_DATA
        if variant.name in adjusted:
            assert difference is not None
            significant = adjusted[variant.name] < significance
            if significant and abs(difference) >= min_effect and difference != 0:
                outcome = Outcome.BETTER if difference > 0 else Outcome.WORSE
            else:
                outcome = Outcome.NO_SIGNIFICANT_DIFFERENCE
        out.append(
            Comparison(
                variant=variant.name,
                outcome=outcome,
                rate=variant.rate,
                rate_interval=wilson(variant, confidence),
                control_rate=control.rate,
                control_interval=control_interval,
                difference=difference,
                difference_interval=newcombe(variant, control, confidence),
                p_value=raw.get(variant.name),
                adjusted_p_value=adjusted.get(variant.name),
                samples=variant.total,
                control_samples=control.total,
            )
        )
    return out
