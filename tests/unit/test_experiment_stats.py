"""The experiment's statistics against values computed independently (published examples,
scipy's chi-square test of the same 2x2 table, the closed-form Wilson interval) and the
verdicts a user relies on."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import chi2_contingency, norm

from modeldeploy.experiment_stats import (
    Arm,
    Interval,
    Outcome,
    compare,
    holm,
    newcombe,
    two_proportion_p_value,
    wilson,
)


def closed_form_wilson(successes: int, total: int, confidence: float) -> Interval:
    z = norm.ppf(1 - (1 - confidence) / 2)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z / (1 + z * z / total) * math.sqrt(p * (1 - p) / total + z * z / (4 * total**2))
    return Interval(centre - half, centre + half)


def test_newcombes_published_example_of_the_difference_interval():
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 - 48/80, method 10
    interval = newcombe(Arm("a", 56, 70), Arm("b", 48, 80), 0.95)
    assert interval is not None
    assert (round(interval.low, 4), round(interval.high, 4)) == (0.0524, 0.3339)


@given(st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_matches_its_closed_form(counts):
    successes, total = counts
    got = wilson(Arm("a", successes, total), 0.95)
    expected = closed_form_wilson(successes, total, 0.95)
    assert got is not None
    assert got.low == pytest.approx(expected.low, abs=1e-9)
    assert got.high == pytest.approx(expected.high, abs=1e-9)


@pytest.mark.parametrize(
    ("variant", "control"),
    [((56, 70), (48, 80)), ((530, 10_000), (500, 10_000)), ((3, 40), (9, 41))],
)
def test_the_z_test_is_the_chi_square_test_of_the_same_table(variant, control):
    table = [[s, n - s] for s, n in (variant, control)]
    expected = chi2_contingency(table, correction=False).pvalue
    got = two_proportion_p_value(Arm("v", *variant), Arm("c", *control))
    assert got == pytest.approx(expected, rel=1e-9)


def test_holm_adjusts_step_down_in_the_order_given():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_identical_rates_make_no_significant_difference():
    (result,) = compare(Arm("control", 500, 10_000), [Arm("b", 500, 10_000)], min_samples=1000)
    assert result.outcome == Outcome.NO_SIGNIFICANT_DIFFERENCE
    assert result.p_value == pytest.approx(1.0)
    assert result.difference == 0
    assert result.difference_interval is not None
    assert result.difference_interval.low < 0 < result.difference_interval.high


def test_a_large_well_sampled_lift_is_better_and_a_drop_worse():
    control = Arm("control", 1000, 20_000)  # 5 %
    better, worse = Arm("better", 1300, 20_000), Arm("worse", 800, 20_000)
    results = {r.variant: r for r in compare(control, [better, worse], min_samples=1000)}
    assert results["better"].outcome == Outcome.BETTER
    assert results["worse"].outcome == Outcome.WORSE
    assert results["better"].adjusted_p_value is not None
    assert results["better"].adjusted_p_value < 1e-6
    interval = results["better"].difference_interval
    assert interval is not None
    assert 0 < interval.low < 0.015 < interval.high


def test_too_few_samples_are_insufficient_data_and_take_no_part_in_the_correction():
    control = Arm("control", 100, 2000)
    results = compare(control, [Arm("few", 40, 300), Arm("enough", 150, 2000)], min_samples=1000)
    few, enough = results
    assert few.outcome == Outcome.INSUFFICIENT_DATA
    assert few.p_value is None
    assert few.rate == pytest.approx(40 / 300)
    # one variant judged: Holm leaves its p-value as it is
    assert enough.adjusted_p_value == pytest.approx(enough.p_value)


def test_several_variants_are_corrected_so_a_lone_lucky_one_is_not_a_winner():
    control = Arm("control", 500, 10_000)
    lucky = Arm("lucky", 565, 10_000)  # p about 0.04 on its own
    alike = [Arm(f"same-{i}", 500 + i, 10_000) for i in range(3)]
    alone = compare(control, [lucky], min_samples=1000)[0]
    assert alone.p_value is not None
    assert 0.01 < alone.p_value < 0.05
    assert alone.outcome == Outcome.BETTER
    corrected = compare(control, [lucky, *alike], min_samples=1000)[0]
    assert corrected.adjusted_p_value == pytest.approx(4 * alone.p_value)
    assert corrected.outcome == Outcome.NO_SIGNIFICANT_DIFFERENCE


def test_a_significant_difference_below_the_minimum_effect_is_no_significant_difference():
    control, tiny = Arm("control", 50_000, 1_000_000), Arm("tiny", 51_000, 1_000_000)
    (plain,) = compare(control, [tiny], min_samples=1000)
    assert plain.outcome == Outcome.BETTER
    (bounded,) = compare(control, [tiny], min_samples=1000, min_effect=0.005)
    assert bounded.outcome == Outcome.NO_SIGNIFICANT_DIFFERENCE


def test_counts_from_prometheus_become_whole_requests():
    arm = Arm.counted("b", successes=12.7, total=12.4)
    assert (arm.successes, arm.total) == (12, 12)
    with pytest.raises(ValueError, match=r"within 0\.\.total"):
        Arm("b", 5, 3)
