"""How a recorded rollout is cut into its steps, and what is reported of them (no cluster)."""

from __future__ import annotations

from tests.node.rollout_watch import (
    Snapshot,
    StepShare,
    StepWindow,
    mean_abs_difference,
    step_windows,
)


def snap(at, phase="Progressing", canary="1.1.0", ready=True, step=0, weight=25, actual=25):
    return Snapshot(
        at, phase, "1.0.0", canary if phase != "Available" else "", ready, step, weight, actual
    )


def test_each_step_runs_from_its_start_to_the_next_change_and_settles_when_its_pods_do():
    snapshots = [
        snap(0, phase="Available", canary=""),
        snap(1, ready=False, weight=0, actual=0),
        snap(5, step=0, weight=25, actual=25),
        snap(15, step=1, weight=50, actual=25),
        snap(19, step=1, weight=50, actual=50),
        snap(25, phase="Promoting", step=1, weight=50, actual=50),
        snap(40, phase="Available", canary=""),
    ]
    assert step_windows(snapshots, now=50) == [
        StepWindow("1.1.0", 0, 25, 25, start=5, settled=5, end=15),
        StepWindow("1.1.0", 1, 50, 50, start=15, settled=19, end=25),
    ]


def test_a_rollback_ends_the_step_and_a_step_seen_last_ends_now():
    snapshots = [snap(5), snap(20, phase="RolledBack", canary="")]
    assert [(w.start, w.end) for w in step_windows(snapshots, now=30)] == [(5, 20)]
    assert [(w.start, w.end) for w in step_windows([snap(5)], now=30)] == [(5, 30)]


def test_a_new_canary_starts_new_steps():
    snapshots = [snap(5, canary="2.0.0"), snap(9, canary="3.0.0")]
    windows = step_windows(snapshots, now=12)
    assert [(w.canary_version, w.start, w.end) for w in windows] == [
        ("2.0.0", 5, 9),
        ("3.0.0", 9, 12),
    ]


def test_the_mean_difference_skips_steps_without_requests():
    w25 = StepWindow("1.1.0", 0, 25, 25, 0, 0, 10)
    w50 = StepWindow("1.1.0", 1, 50, 40, 10, 12, 20)
    shares = [
        StepShare(w25, canary=30, total=100, settled_canary=30, settled_total=100),
        StepShare(w50, canary=45, total=100, settled_canary=40, settled_total=80),
        StepShare(w50, canary=0, total=0, settled_canary=0, settled_total=0),
    ]
    assert mean_abs_difference(shares) == 5.0
    assert mean_abs_difference(shares, "actual_weight") == 5.0
    assert shares[1].settled_share == 50.0
