"""The drift and quality statistics (modeldeploy.drift) against references computed
independently: numpy for PSI, and for KS and MAE on rows expanded from the same bins,
scikit-learn's roc_auc_score for AUC on such rows."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from modeldeploy import drift
from modeldeploy.api import DriftStatistic

counts = st.integers(min_value=0, max_value=400)


def bins_pair(min_bins: int = 1, max_bins: int = 12):
    """Two count lists of one length, each with at least one row."""
    return st.integers(min_bins, max_bins).flatmap(
        lambda n: st.tuples(
            st.lists(counts, min_size=n, max_size=n).filter(any),
            st.lists(counts, min_size=n, max_size=n).filter(any),
        )
    )


def expanded(bin_counts) -> np.ndarray:
    """One row per count, valued by its bin's index."""
    return np.repeat(np.arange(len(bin_counts)), bin_counts)


def sample_ks(first: np.ndarray, second: np.ndarray) -> float:
    """The two-sample KS statistic: the largest gap of the empirical CDFs at any row."""
    points = np.concatenate([first, second])
    first_cdf = np.searchsorted(np.sort(first), points, side="right") / first.size
    second_cdf = np.searchsorted(np.sort(second), points, side="right") / second.size
    return float(np.max(np.abs(first_cdf - second_cdf)))


# --- PSI --------------------------------------------------------------------------------


def reference_psi(reference, observed, epsilon=drift.PSI_EPSILON):
    def smoothed(c):
        c = np.asarray(c, dtype=float)
        return (c / c.sum() + epsilon) / (1 + epsilon * c.size)

    r, o = smoothed(reference), smoothed(observed)
    # PSI is the symmetrised Kullback-Leibler divergence of the smoothed shares.
    return np.sum(o * np.log(o / r)) + np.sum(r * np.log(r / o))


@settings(max_examples=200, deadline=None)
@given(bins_pair())
def test_psi_is_the_symmetric_kl_divergence_of_the_smoothed_shares(pair):
    reference, observed = pair
    result = drift.psi(reference, observed)
    assert result.value == pytest.approx(reference_psi(reference, observed), rel=1e-9, abs=1e-12)
    assert math.fsum(result.terms) == pytest.approx(result.value)
    assert all(term >= 0 for term in result.terms)
    assert (result.reference_rows, result.observed_rows) == (sum(reference), sum(observed))


def test_psi_of_a_known_shift():
    # 50/50 -> 90/10: 0.4 ln(0.9/0.5) + 0.4 ln(0.5/0.1), barely moved by the smoothing
    expected = 0.4 * math.log(1.8) + 0.4 * math.log(5)
    result = drift.psi([50, 50], [90, 10])
    assert result.value == pytest.approx(expected, rel=1e-3)
    assert result.worst_bin == 1


def test_psi_takes_counts_or_shares_alike():
    assert drift.psi([1, 3], [2, 2]).value == pytest.approx(drift.psi([0.25, 0.75], [50, 50]).value)


def test_identical_distributions_have_psi_zero():
    assert drift.psi([10, 20, 30], [1, 2, 3]).value == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize(("share", "term"), [(0.05, 0.31), (0.01, 0.046)])
def test_an_empty_bin_adds_a_bounded_term_as_docs_analysis_says(share, term):
    reference = [1.0, 0.0]
    observed = [1 - share, share]
    result = drift.psi(reference, observed)
    assert math.isfinite(result.value)
    assert result.terms[1] == pytest.approx(term, rel=0.05)


def test_psi_of_two_samples_of_one_distribution_is_near_its_noise_floor():
    """docs/analysis.md: with no drift, PSI averages about (B - 1)(1/n1 + 1/n2)."""
    rng = np.random.default_rng(15)
    bins, n1, n2 = 10, 200, 1800
    values = [
        drift.psi(
            rng.multinomial(n1, [0.1] * bins).tolist(), rng.multinomial(n2, [0.1] * bins).tolist()
        ).value
        for _ in range(2000)
    ]
    assert np.mean(values) == pytest.approx(drift.psi_noise_floor(bins, n1, n2), rel=0.1)
    assert np.quantile(values, 0.999) < 0.2  # the default bound is far above the noise


def test_against_a_profile_only_the_live_rows_make_noise():
    assert drift.psi_noise_floor(11, math.inf, 200) == pytest.approx(10 / 200)


# --- KS ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(bins_pair())
def test_binned_ks_is_the_two_sample_ks_statistic_of_the_bin_indices(pair):
    reference, observed = pair
    result = drift.binned_ks(reference, observed)
    expected = sample_ks(expanded(observed), expanded(reference))
    assert result.value == pytest.approx(expected, abs=1e-12)
    gap = abs(result.observed_cdf - result.reference_cdf)
    assert gap == pytest.approx(result.value)


def test_binned_ks_names_the_edge_of_the_largest_gap():
    result = drift.binned_ks([10, 10, 10, 10], [0, 0, 20, 20])
    assert result.value == pytest.approx(0.5)
    assert result.at_bin == 1
    assert result.reference_cdf == pytest.approx(0.5)
    assert result.observed_cdf == 0


def test_binned_ks_ignores_how_rows_move_inside_one_bin():
    # A sample KS test would see these apart; one bin cannot.
    assert drift.binned_ks([100], [3]).value == 0


# --- AUC --------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(bins_pair(max_bins=20))
def test_histogram_auc_is_roc_auc_of_rows_scored_by_their_bin(pair):
    negatives, positives = pair
    scores = np.concatenate([expanded(negatives), expanded(positives)])
    labels = np.concatenate([np.zeros(sum(negatives)), np.ones(sum(positives))])
    result = drift.histogram_auc(negatives, positives)
    assert result.value == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert (result.negatives, result.positives) == (sum(negatives), sum(positives))


def test_ties_inside_a_bin_count_half():
    result = drift.histogram_auc([10], [10])
    assert result.value == 0.5
    assert result.tied_pairs == 1.0


def test_a_perfect_and_an_inverted_ranking():
    assert drift.histogram_auc([5, 0], [0, 5]).value == 1.0
    assert drift.histogram_auc([0, 5], [5, 0]).value == 0.0


def test_auc_needs_both_labels():
    with pytest.raises(drift.NotEnoughData, match="rows of both labels"):
        drift.histogram_auc([0, 0], [3, 4])


# --- accuracy and MAE ---------------------------------------------------------------------


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_accuracy_is_the_share_of_correct_rows(correct, incorrect):
    if correct + incorrect == 0:
        with pytest.raises(drift.NotEnoughData, match="no feedback"):
            drift.accuracy(correct, incorrect)
        return
    outcomes = np.concatenate([np.ones(correct), np.zeros(incorrect)])
    result = drift.accuracy(correct, incorrect)
    assert result.value == pytest.approx(outcomes.mean())
    assert result.rows == correct + incorrect


@pytest.mark.parametrize(
    ("compliance", "objective", "left"),
    [(1.0, 0.99, 1.0), (0.995, 0.99, 0.5), (0.99, 0.99, 0.0), (0.98, 0.99, -1.0)],
)
def test_error_budget_remaining(compliance, objective, left):
    assert drift.error_budget_remaining(compliance, objective) == pytest.approx(left)


@pytest.mark.parametrize(("compliance", "objective"), [(1.2, 0.99), (0.9, 1.0), (0.9, -0.1)])
def test_error_budget_needs_shares(compliance, objective):
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        drift.error_budget_remaining(compliance, objective)


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("function", [drift.psi, drift.binned_ks])
def test_a_side_without_rows_is_not_enough_data(function):
    with pytest.raises(drift.NotEnoughData, match="observed side has no rows"):
        function([1, 2], [0, 0])


@pytest.mark.parametrize(
    ("reference", "observed", "message"),
    [
        ([1, 2], [1, 2, 3], "2 and 3 bins; bin them alike"),
        ([], [], "no bins"),
        ([1, -1], [1, 1], "finite and >= 0"),
        ([1, math.nan], [1, 1], "finite and >= 0"),
    ],
)
def test_malformed_counts_say_what_is_wrong(reference, observed, message):
    with pytest.raises(ValueError, match=message):
        drift.psi(reference, observed)


# --- labelled bins ----------------------------------------------------------------------


def test_bin_order_is_numeric_with_the_missing_bin_first():
    labels = ["+Inf", "10", "9", "missing", "0.5", "-Inf"]
    assert drift.bin_order(labels) == ["missing", "-Inf", "0.5", "9", "10", "+Inf"]


def test_categories_have_no_order():
    with pytest.raises(drift.UnorderedBins, match=r"\['cat', 'other'\] are categories"):
        drift.bin_order(["1", "cat", "other"])


def test_feature_drift_reports_the_worst_features_with_their_worst_bins():
    profile = {
        "age": {"0": 0.5, "1": 0.5},
        "income": {"0": 0.5, "1": 0.5},
        "country": {"de": 0.7, "fr": 0.3},
        "unused": {"0": 1.0},
    }
    live = {
        "age": {"0": 100, "1": 100},
        "income": {"0": 180, "1": 20},
        "country": {"de": 100, "fr": 100, "other": 0},
    }
    result = drift.feature_drift(profile, live, worst=2)
    assert [c.name for c in result.worst] == ["income", "country"]
    income = result.worst[0]
    assert result.value == income.value == pytest.approx(drift.psi([1, 1], [180, 20]).value)
    assert (income.worst_bin, income.reference_share) == ("1", 0.5)
    assert income.observed_share == pytest.approx(0.1)
    assert result.compared == 3
    assert result.without_rows == ("unused",)


def test_feature_drift_without_live_rows_is_not_enough_data():
    with pytest.raises(drift.NotEnoughData, match="no feature has rows"):
        drift.feature_drift({"age": {"0": 1.0}}, {"age": {"0": 0.0}})


def test_prediction_drift_matches_bins_by_label_whatever_their_order():
    stable = {"probability": {"0.5": 60, "1": 40}}
    canary = {"probability": {"1": 40, "0.5": 60}}
    assert drift.prediction_drift(stable, canary, DriftStatistic.PSI).value == pytest.approx(0)


def test_ks_on_predictions_skips_the_outputs_binned_by_category():
    stable = {"class": {"yes": 50, "no": 50}, "probability": {"0.5": 50, "1": 50}}
    canary = {"class": {"yes": 90, "no": 10}, "probability": {"0.5": 20, "1": 80}}
    result = drift.prediction_drift(stable, canary, DriftStatistic.KS)
    assert result.skipped == ("class",)
    (only,) = result.worst
    assert (only.name, only.worst_bin) == ("probability", "0.5")
    assert only.value == pytest.approx(0.3)


def test_ks_on_categories_only_is_refused_with_the_way_out():
    with pytest.raises(drift.UnorderedBins, match="use the psi statistic"):
        drift.prediction_drift({"class": {"a": 1}}, {"class": {"b": 1}}, DriftStatistic.KS)
