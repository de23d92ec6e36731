"""How a switch is measured from the clients' records (no cluster)."""

from __future__ import annotations

from tests.node.load import Outcome
from tests.node.traffic_switch import between, by_answer, switch_of, unix_time


def answer(at: float, version: str = "", status: int = 200, error: str = "") -> Outcome:
    return Outcome(at=at, seconds=0.01, status=status, error=error, version=version)


def old(o: Outcome) -> bool:
    return o.version == "1.0.0"


def test_a_switch_lasts_until_the_last_answer_of_the_old_side_after_the_decision():
    outcomes = [
        answer(9.0, "1.0.0"),
        answer(10.2, "1.0.0"),
        answer(10.4, "2.0.0"),
        answer(10.7, "1.0.0"),
        answer(11.0, "2.0.0"),
    ]
    switch = switch_of(outcomes, decided=10.0, away=old)
    assert abs(switch.seconds - 0.7) < 1e-9
    assert switch.answered_after == 2


def test_a_switch_after_which_the_old_side_answered_nothing_takes_no_time():
    outcomes = [answer(9.0, "1.0.0"), answer(10.5, "2.0.0")]
    switch = switch_of(outcomes, decided=10.0, away=old)
    assert switch.last_from is None
    assert switch.seconds == 0.0
    assert switch.answered_after == 0


def test_rejections_count_as_the_side_that_sent_them():
    outcomes = [answer(20.0, status=422), answer(20.3, status=422), answer(20.6, "1.0.0")]
    switch = switch_of(outcomes, decided=20.1, away=lambda o: o.status == 422)
    assert abs(switch.seconds - 0.2) < 1e-9


def test_phases_and_answers():
    outcomes = [answer(1, "1.0.0"), answer(2, status=422), answer(3, status=0, error="connect")]
    assert between(outcomes, 1, 3) == outcomes[:2]
    assert by_answer(outcomes) == {"1.0.0": 1, "422": 1, "connect": 1}


def test_timestamps_with_and_without_fractions():
    assert unix_time("1970-01-01T00:00:01Z") == 1.0
    assert unix_time("1970-01-01T00:00:01.250000Z") == 1.25
