"""How the plugin writes ages, durations, check values and bounds."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from modeldeploy.cli.text import bounds, human_age, number, parse_duration, parse_time, when


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("1.5s", 1.5), ("250ms", 0.25)],
)
def test_durations_read_as_kubectl_takes_them(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "10x", "m5", "5m junk", "-5s"])
def test_a_bad_duration_says_what_is_expected(text):
    with pytest.raises(ValueError, match=r"e\.g\. 90s, 10m or 1h30m"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-3, "0s"),
        (45, "45s"),
        (119, "119s"),
        (192, "3m12s"),
        (300, "5m"),
        (45 * 60, "45m"),
        (3 * 3600 + 12 * 60, "3h12m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (40 * 86400, "40d"),
        (800 * 86400, "2y"),
    ],
)
def test_ages_read_like_kubectl_ages(seconds, text):
    assert human_age(seconds) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0021, "0.0021"),
        (0.012345678, "0.01235"),
        (120.0, "120"),
        (1234567.0, "1.235e+06"),
        (math.nan, "NaN"),
        (math.inf, "+Inf"),
        (None, "none"),
        (3, "3"),
    ],
)
def test_check_values_are_short_and_exact_enough(value, text):
    assert number(value) == text


def test_bounds_name_the_side_that_limits():
    assert bounds(None, 0.01) == "max 0.01"
    assert bounds(0.9, None) == "min 0.9"
    assert bounds(0.1, 0.9) == "0.1..0.9"
    assert bounds(None, None) == "no bounds"


def test_timestamps_as_the_api_server_writes_them():
    moment = parse_time("2026-03-01T12:00:00Z")
    assert moment is not None
    assert moment.isoformat() == "2026-03-01T12:00:00+00:00"
    assert parse_time("2026-03-01T12:00:00.586014Z") is not None
    assert parse_time(None) is None
    assert parse_time("yesterday") is None


def test_a_moment_is_shown_in_utc_with_how_far_it_lies_from_now():
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert when(now + timedelta(minutes=28), now) == "2026-03-01 12:28:00 UTC (in 28m)"
    assert when(now - timedelta(seconds=150), now) == "2026-03-01 11:57:30 UTC (2m30s ago)"
    # a time written with another offset is the same moment
    east = datetime(2026, 3, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert when(east, now) == "2026-03-01 12:00:00 UTC (0s ago)"
