"""Properties of the experiment state machine under drawn SLO verdicts, counts, crashes and
manual requests: no verdict before duration and minSamples (or maxDuration), a winner only
when Better, traffic only to ready variants, control always at full size, the spec's model
never promoted by the experiment, and crashes change nothing a user sees."""

from __future__ import annotations

from collections import deque
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from modeldeploy.api import ModelDeploymentSpec, Verdict
from modeldeploy.rollout.experiment import ExperimentDue
from modeldeploy.rollout.model import ArmCount
from modeldeploy.rollout.requests import ABORT_ANNOTATION, RETRY_ANNOTATION
from tests.unit.rollout_sim import Simulator, Tick
from tests.unit.test_experiment import experiment_spec
from tests.unit.test_rollout_properties import PROPERTY_SETTINGS


@st.composite
def experiments(draw: st.DrawFn) -> ModelDeploymentSpec:
    names = draw(st.lists(st.sampled_from("abcd"), min_size=1, max_size=3, unique=True))
    arms = [(name, draw(st.integers(5, 30))) for name in names]
    settings: dict[str, Any] = {
        "duration": draw(st.sampled_from(["3m", "10m"])),
        "minSamples": draw(st.sampled_from([100, 1000, 5000])),
        "minEffect": draw(st.sampled_from([0, 0.01])),
    }
    if draw(st.booleans()):
        settings["maxDuration"] = "20m"
    return experiment_spec(
        *arms, router=draw(st.sampled_from(["replicas", "gatewayAPI"])), **settings
    )


rates = st.floats(0.01, 0.5)
growth = st.integers(10, 400)  # trials each arm gains per minute of counting


def counter(arm_rates: dict[str, float], per_minute: int):
    def counts(due: ExperimentDue) -> dict[str, ArmCount]:
        # Whole minutes: an operator that crashed reads a few seconds later than one that
        # did not, and must reach the same verdict from the same counts.
        total = per_minute * (due.window_seconds // 60)
        return {
            arm: ArmCount(successes=rate * total, total=total) for arm, rate in arm_rates.items()
        }

    return counts


def check(tick: Tick) -> None:
    o, d = tick.observation, tick.decision
    assert d.canary is None, "an experiment never starts a canary of its own"
    assert d.outcome is None, "nothing is promoted or rolled back by an experiment"
    if d.stable is not None and o.stable.exists:
        assert d.stable.replicas == 4, "control keeps its full size"
    experiment = d.status.experiment
    for plan in d.variants:
        observed = o.variants.get(plan.name)
        if plan.weight > 0:
            assert observed is not None
            assert observed.ready_replicas > 0, "traffic to ready pods only"
    if experiment is None:
        assert d.variants == ()
        return
    if experiment.phase != "Running":
        assert d.variants == (), "a finished experiment runs no variant"
        assert d.live_tracks == ("stable",)
    cut = {a.name for a in experiment.variants if a.state == "Cut"}
    assert not cut & {p.name for p in d.variants}, "a cut variant gets no pods"
    if experiment.phase == "Concluded":
        settings = o.spec.strategy.experiment
        assert settings is not None
        assert experiment.ready_at is not None
        assert experiment.concluded_at is not None
        waited = (experiment.concluded_at - experiment.ready_at).total_seconds()
        assert waited >= 60 * float(settings.duration.removesuffix("m"))
        if experiment.winner is not None:
            winner = next(a for a in experiment.variants if a.name == experiment.winner)
            assert winner.outcome == "Better"
            assert winner.adjusted_p_value is not None
            assert winner.adjusted_p_value < settings.significance
        short = [
            a
            for a in [experiment.control, *experiment.variants]
            if a.state == "Running" and (a.samples or 0) < settings.min_samples
        ]
        if short:
            assert waited >= settings.max_duration_seconds(), (
                "a verdict short of samples waits for maxDuration"
            )
            assert all(a.outcome in (None, "InsufficientData") for a in experiment.variants)


def run(
    spec: ModelDeploymentSpec,
    arm_rates: list[float],
    per_minute: int,
    slo: list[Verdict],
    crashes: list[str],
    requests: list[str | None],
) -> Simulator:
    settings = spec.strategy.experiment
    assert settings is not None
    names = ["control", *(v.name for v in settings.variants)]
    sim = Simulator(spec)
    sim.arm_counts = counter(dict(zip(names, arm_rates, strict=False)), per_minute)
    sim.guardrails[settings.variants[0].name] = deque(slo)
    previous = "none"
    for index in range(400):
        crash = crashes[index] if index < len(crashes) else "none"
        if previous != "none":
            crash = "none"  # at most one crash in a row
        request = requests[index] if index < len(requests) else None
        if request is not None:
            sim.annotate(request, str(index))
        tick = sim.step(persist=crash != "lost-write", apply=crash != "not-applied")
        if crash != "lost-write":
            check(tick)
        if crash == "replayed":
            check(sim.replay())
        previous = crash
        ended = sim.status.experiment is not None and sim.status.experiment.phase != "Running"
        if ended and index >= len(requests):
            break
    return sim


slo_verdicts = st.lists(
    st.sampled_from([Verdict.PASS, Verdict.PASS, Verdict.FAIL, Verdict.NO_DATA]), max_size=30
)
crash_lists = st.lists(
    st.sampled_from(["none", "none", "lost-write", "not-applied", "replayed"]), max_size=120
)


@PROPERTY_SETTINGS
@given(
    spec=experiments(),
    arm_rates=st.lists(rates, min_size=4, max_size=4),
    per_minute=growth,
    slo=slo_verdicts,
    crashes=crash_lists,
)
def test_operator_crashes_change_no_experiment_verdict(spec, arm_rates, per_minute, slo, crashes):
    """An operator that dies after deciding, after writing status, or decides again with
    the reading it already used, reaches the same verdict as one that never failed."""
    calm = run(spec, arm_rates, per_minute, slo, [], [])
    crashed = run(spec, arm_rates, per_minute, slo, crashes, [])
    a, b = calm.status.experiment, crashed.status.experiment
    assert a is not None
    assert b is not None
    assert (a.phase, a.winner, a.attempt) == (b.phase, b.winner, b.attempt)
    assert [(v.state, v.outcome) for v in a.variants] == [(v.state, v.outcome) for v in b.variants]
    concluded = [t for t in crashed.ticks if t.decision.status.experiment and t.decision.events]
    assert (
        sum("ExperimentConcluded" in [str(e.reason) for e in t.decision.events] for t in concluded)
        <= 1
    ), "a verdict is reached once"


@PROPERTY_SETTINGS
@given(
    spec=experiments(),
    arm_rates=st.lists(rates, min_size=4, max_size=4),
    per_minute=growth,
    slo=slo_verdicts,
    requests=st.lists(
        st.sampled_from([None, None, None, None, ABORT_ANNOTATION, RETRY_ANNOTATION]),
        max_size=120,
    ),
)
def test_invariants_hold_whatever_users_ask(spec, arm_rates, per_minute, slo, requests):
    sim = run(spec, arm_rates, per_minute, slo, [], requests)
    assert sim.status.experiment is not None
