"""Properties of whole rollouts: hypothesis generates specs, verdict scripts, manual
requests, spec changes and operator crashes; every reconcile of every run is checked."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeldeploy.api import ModelDeploymentSpec, StrategySpec, Verdict
from modeldeploy.rollout import (
    ABORT_ANNOTATION,
    MANUAL_ANNOTATIONS,
    PROMOTE_ANNOTATION,
    PROMOTE_STEP_ANNOTATION,
    RETRY_ANNOTATION,
    Decision,
    Reason,
    Track,
    analysis_due,
    decide,
    new_requests,
)
from tests.unit.rollout_sim import Simulator, Tick, make_spec, roundtrip

PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

VERSIONS = ["1.0.0", "2.0.0", "3.0.0"]

steps_lists = st.lists(st.integers(1, 100), min_size=1, max_size=6, unique=True).map(sorted)
verdict_lists = st.lists(st.sampled_from(list(Verdict)), max_size=25)


@st.composite
def specs(draw: st.DrawFn, version: str = "1.0.0") -> ModelDeploymentSpec:
    return make_spec(
        version,
        steps=draw(steps_lists),
        replicas=draw(st.integers(0, 10)),
        interval=draw(st.sampled_from(["10s", "30s", "1m"])),
        failure_threshold=draw(st.integers(1, 5)),
        inconclusive_limit=draw(st.integers(1, 5)),
        progress_deadline="120s",
        router=draw(st.sampled_from(["replicas", "gatewayAPI"])),
        paused=draw(st.sampled_from([False, False, False, True])),
    )


@st.composite
def any_strategy_specs(draw: st.DrawFn) -> ModelDeploymentSpec:
    """Specs of every strategy, with their settings drawn too."""
    spec = draw(specs())
    kind = draw(st.sampled_from(["canary", "blueGreen", "direct", "shadow"]))
    strategy: dict[str, Any] = {"type": kind}
    if kind == "shadow" or draw(st.sampled_from([False, False, True])):
        strategy["shadow"] = {
            "analyses": draw(st.integers(1, 3)),
            "mirrorPercent": draw(st.sampled_from([10, 50, 100])),
        }
    if kind == "blueGreen":
        delay = draw(st.sampled_from([0, 30, 120]))
        strategy["blueGreen"] = {
            "previewDuration": f"{draw(st.sampled_from([0, 30, 60]))}s",
            "previewAnalysis": draw(st.booleans()),
            "autoPromote": draw(st.sampled_from([True, True, False])),
            "scaleDownDelay": f"{delay}s",
            "postPromotionAnalysis": f"{draw(st.sampled_from([0, delay]))}s",
        }
    if kind == "direct":
        strategy["direct"] = {"analysisIntervals": draw(st.integers(0, 4))}
    return spec.model_copy(update={"strategy": StrategySpec.model_validate(strategy)})


def new_version(spec: ModelDeploymentSpec, version: str) -> ModelDeploymentSpec:
    return spec.model_copy(update={"model": make_spec(version).model})


def snapshot(decision: Decision) -> dict[str, Any]:
    return {
        "status": decision.status.model_dump(mode="json", by_alias=True),
        "stable": decision.stable,
        "canary": decision.canary,
        "weight": decision.weight,
        "events": decision.events,
        "notifications": decision.notifications,
        "requeue_after": decision.requeue_after,
        "outcome": decision.outcome,
    }


@dataclass
class Expected:
    outcome: str | None
    reason: str
    consumed: int


def reference(verdicts: list[Verdict], spec: ModelDeploymentSpec) -> Expected:
    """What the issue says a canary does with these verdicts, written out plainly."""
    rollout = spec.rollout
    step = failed = inconclusive = 0
    for n, verdict in enumerate(verdicts, start=1):
        if verdict == Verdict.FAIL:  # counts, paused or not: safety never pauses
            failed += 1
            inconclusive = 0
            if failed >= rollout.failure_threshold:
                return Expected("RolledBack", "FailedChecks", n)
        elif verdict in (Verdict.NO_DATA, Verdict.ERROR):
            if rollout.paused:
                continue
            inconclusive += 1
            if inconclusive >= rollout.inconclusive_limit:
                return Expected("RolledBack", "AnalysisInconclusive", n)
        else:
            inconclusive = 0
            if rollout.paused:
                continue
            step += 1
            if step == len(rollout.steps):
                return Expected("Promoted", "", n)
    return Expected(None, "", len(verdicts))


class RunChecker:
    """Invariants of every reconcile, and of the run as a whole."""

    def __init__(self) -> None:
        self.passed_steps: set[int] = set()
        self.manually_promoted = False
        self.since_start: list[Verdict] = []  # verdicts judged since the revision started
        self.acted_on: set[tuple[str, str]] = set()

    def check(self, tick: Tick) -> None:
        o, d = tick.observation, tick.decision
        status = d.status
        steps = o.spec.rollout.steps
        reasons = {e.reason for e in d.events}

        # What GitOps tools read: exactly one of Ready (this generation serves in full),
        # Reconciling (a rollout is in flight) and Stalled (rolled back) holds.
        conditions = {c.type: c for c in status.conditions}
        assert "Reconciled" not in conditions
        assert status.observed_generation == o.generation
        ready, reconciling, stalled = (conditions[t] for t in ("Ready", "Reconciling", "Stalled"))
        assert sum(c.status == "True" for c in (ready, reconciling, stalled)) == 1
        if ready.status == "True":
            assert status.phase == "Available"
            assert status.canary is None
            assert status.stable is not None
            assert status.stable.revision == status.revision
        assert (stalled.status == "True") == (status.phase == "RolledBack")
        if status.canary is not None:
            assert reconciling.status == "True"
        paused = o.spec.rollout.paused or status.paused_by_request
        if status.canary is not None and paused and status.phase == "Progressing":
            assert ready.reason == reconciling.reason == "Paused"

        kind = o.spec.strategy.type
        shadow = status.canary is not None and status.canary.stage == "Shadow"
        # Copies go only to a ready shadow, and only while it is one.
        if d.mirror_percent is not None:
            assert shadow
            assert status.canary is not None
            assert status.canary.ready_at is not None
            assert d.mirror_percent == o.spec.strategy.shadow_settings().mirror_percent
        if status.canary is None:
            assert d.weight == 0
            kept = d.canary is not None and d.canary.replicas > 0
            # Without canary pods that serve, clients reach the stable only: a rejected
            # canary's pods go without the clients' Service picking them up.
            expected = (Track.STABLE, Track.CANARY) if kept else (Track.STABLE,)
            assert d.live_tracks == expected
        else:
            canary = status.canary
            assert canary.revision == o.revision or status.phase == "Promoting"
            assert canary.failed_checks < o.spec.rollout.failure_threshold
            if canary.ready_at is None:
                assert d.weight == 0, "no traffic to new pods that are not ready"
            if shadow:
                # Nobody sees a shadow's answers.
                assert d.weight == 0
                assert d.live_tracks == (Track.STABLE,)
            if kind == "canary":
                # Traffic never goes past the current step.
                assert d.weight in {0, *steps}
                assert 0 <= canary.step < len(steps)
                assert d.weight <= steps[canary.step]
            if kind == "blueGreen":
                # Nothing, or everything: no live request before the switch.
                switched = canary.switched_at is not None
                assert d.weight == (100 if switched else 0)
                assert d.live_tracks == ((Track.CANARY,) if switched else (Track.STABLE,))
            if kind == "direct" and not shadow:
                assert d.canary is None, "direct replaces stable in place"
                assert d.weight == 0
            else:
                assert d.canary is not None
                assert d.canary.revision == canary.revision

        # A stable track always runs once the first stable was decided: the previous
        # revision while a blue-green switch-back target stands by, else the stable one.
        assert d.stable is not None
        assert status.stable is not None
        previous = status.previous
        running = previous if previous is not None and previous.standby else status.stable
        assert d.stable.revision == running.revision

        # Rollback: all traffic to stable at once, canary scaled to zero, full stable;
        # the canary keeps its pods only while stable has none ready (never zero pods).
        if d.outcome == "RolledBack" or status.phase == "RolledBack":
            assert d.weight == 0
            assert d.canary is None or d.canary.replicas == 0 or o.stable.ready_replicas == 0
            assert d.stable.replicas == o.spec.replicas
            assert status.canary is None
        if d.outcome == "RolledBack":
            assert status.phase == "RolledBack"
            assert status.rejected_revision == o.revision
            assert Reason.ROLLED_BACK in reasons
            assert any(e.type == "Warning" for e in d.events)
        if d.canary is not None and d.canary.revision == status.rejected_revision:
            assert d.canary.replicas == 0 or o.stable.ready_replicas == 0

        # Promotion only after a Pass (or a user's step promotion) at every step, unless a
        # user asked for the whole promotion.
        started = {
            Reason.CANARY_STARTED,
            Reason.PREVIEW_STARTED,
            Reason.REPLACING,
            Reason.SHADOW_STARTED,
        }
        if Reason.SHADOW_PASSED in reasons and Reason.STEP_PROMOTED not in reasons:
            # No follow-up and no promotion without the shadow's verdicts, unless a user moved
            # it on (promote-step); the follow-up starts in the same reconcile, so count
            # before it resets the run.
            judged = [*self.since_start, tick.verdict]
            passes = [t for t in judged if t == Verdict.PASS]
            assert len(passes) >= o.spec.strategy.shadow_settings().analyses
        if started & reasons:
            self.passed_steps = set()
            self.manually_promoted = False
            self.since_start = []
        if tick.verdict is not None:
            self.since_start.append(tick.verdict)
        if Reason.MANUAL_PROMOTION in reasons or (
            kind != "canary" and Reason.STEP_PROMOTED in reasons
        ):
            self.manually_promoted = True
        was_shadow = o.status.canary is not None and o.status.canary.stage == "Shadow"
        if Reason.STEP_PROMOTED in reasons and o.status.canary is not None and not was_shadow:
            self.passed_steps.add(o.status.canary.step)
        if tick.verdict == Verdict.PASS and tick.step is not None:
            self.passed_steps.add(tick.step)
        if kind == "shadow" and Reason.PROMOTION_STARTED in reasons:
            assert Reason.SHADOW_PASSED in reasons or self.manually_promoted
        elif Reason.PROMOTION_STARTED in reasons and not self.manually_promoted:
            assert self.passed_steps == set(range(len(steps)))
        if kind == "direct" and d.outcome == "Promoted" and not self.manually_promoted:
            passes = [t for t in self.since_start if t == Verdict.PASS]
            assert len(passes) >= o.spec.strategy.direct_settings().analysis_intervals
        if kind == "blueGreen" and Reason.SWITCHED in reasons and not self.manually_promoted:
            settings = o.spec.strategy.blue_green_settings()
            assert settings.auto_promote
            if settings.preview_analysis:
                assert Verdict.PASS in self.since_start, "a judged preview passed first"
        if d.outcome == "Promoted" and not started & reasons:
            assert status.phase == "Available"
            assert d.canary is None
            assert d.weight == 0
            assert d.stable.replicas == o.spec.replicas
        if d.outcome == "Promoted" and started & reasons:
            # The spec moved on while the promotion finished: its canary starts right away.
            assert status.canary is not None
            assert status.canary.revision == o.revision
            assert d.weight == 0

        # Each manual request value is recorded when first seen, and acted on at most once.
        new = new_requests(o.annotations, o.status.handled_requests)
        for name in new:
            assert status.handled_requests[name] == o.annotations[name]
        acted = {
            ABORT_ANNOTATION: _aborted(d),
            PROMOTE_ANNOTATION: Reason.MANUAL_PROMOTION in reasons,
            PROMOTE_STEP_ANNOTATION: Reason.STEP_PROMOTED in reasons,
            RETRY_ANNOTATION: Reason.RETRY_REQUESTED in reasons,
        }
        for name, happened in acted.items():
            if happened:
                assert name in new, f"{name} acted on without a new request"
                assert (name, o.annotations[name]) not in self.acted_on
                self.acted_on.add((name, o.annotations[name]))

        # decide() is a pure function of the observation, and status survives JSON.
        assert snapshot(decide(o)) == snapshot(d)
        for exclude_none in (False, True):
            stored = roundtrip(o.status, exclude_none=exclude_none)
            assert snapshot(decide(dataclasses.replace(o, status=stored))) == snapshot(d)


def _aborted(decision: Decision) -> bool:
    return decision.outcome == "RolledBack" and decision.status.history[0].reason.startswith(
        "Aborted"
    )


def canary_of(sim: Simulator, version: str, verdicts: list[Verdict]) -> Simulator:
    sim.deployed()
    sim.set_spec(new_version(sim.spec, version))
    sim.script(*verdicts)
    sim.run_script()
    return sim


# --- the core properties --------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(spec=specs(), verdicts=verdict_lists, ready_after=st.integers(0, 3))
def test_a_canary_ends_exactly_as_its_verdicts_say(spec, verdicts, ready_after):
    sim = canary_of(Simulator(spec, canary_ready_after=ready_after), "2.0.0", verdicts)
    expected = reference(verdicts, spec)

    checker = RunChecker()
    for tick in sim.ticks:
        checker.check(tick)
    judged = [t.verdict for t in sim.ticks if t.verdict is not None]
    assert judged == verdicts[: expected.consumed]
    if expected.outcome is None:
        assert sim.outcomes() == []
        assert sim.status.phase == "Progressing"
        assert sim.status.canary is not None
        assert sim.status.canary.step == (
            0 if spec.rollout.paused else verdicts.count(Verdict.PASS)
        )
    else:
        assert sim.outcomes() == [(expected.outcome, expected.reason)]


@PROPERTY_SETTINGS
@given(spec=specs(), verdicts=verdict_lists)
def test_weight_follows_the_step_of_the_last_pass(spec, verdicts):
    sim = canary_of(Simulator(spec), "2.0.0", verdicts)
    passes = 0
    for tick in sim.ticks:
        if tick.verdict == Verdict.PASS and not spec.rollout.paused:
            passes += 1
        canary = tick.decision.status.canary
        if canary is not None and canary.ready_at is not None and tick.decision.outcome is None:
            assert canary.step == min(passes, len(spec.rollout.steps) - 1)
            assert tick.decision.weight == spec.rollout.steps[canary.step]


@settings(PROPERTY_SETTINGS, max_examples=60)
@given(spec=specs(), extra_ticks=st.integers(0, 20))
def test_a_canary_that_never_gets_ready_is_rolled_back_at_its_deadline(spec, extra_ticks):
    sim = Simulator(spec).deployed()
    bad = new_version(spec, "2.0.0")
    sim.set_spec(bad)
    sim.broken.add(sim.revision)
    started = sim.now
    ticks = sim.run(lambda s: s.status.phase == "RolledBack")
    for _ in range(extra_ticks):
        ticks.append(sim.step())

    checker = RunChecker()
    for tick in sim.ticks:
        checker.check(tick)
    ended = [t for t in ticks if t.decision.outcome is not None]
    assert len(ended) == 1
    assert (ended[0].observation.now - started).total_seconds() == 120
    assert sim.outcomes() == [("RolledBack", "ProgressDeadlineExceeded")]
    assert all(t.decision.weight == 0 for t in ticks)


@PROPERTY_SETTINGS
@given(
    spec=any_strategy_specs(),
    verdicts=verdict_lists,
    crashes=st.lists(
        st.sampled_from(["none", "lost-write", "not-applied", "replayed"]), max_size=200
    ),
)
def test_operator_crashes_change_nothing_a_user_sees(spec, verdicts, crashes):
    """An operator that dies after deciding (status not written), after writing status
    (children not applied), or reconciles again with the analysis it already used, resumes
    from the stored status: the same steps are walked, nothing is judged twice or skipped,
    a rollback is never lost."""
    calm = canary_of(Simulator(spec), "2.0.0", list(verdicts))

    sim = Simulator(spec).deployed()
    sim.set_spec(new_version(spec, "2.0.0"))
    sim.script(*verdicts)
    previous = "none"
    started = False
    plan = iter(crashes)
    checker = RunChecker()
    for _ in range(2000):
        crash = next(plan, "none")
        if previous != "none":
            crash = "none"  # at most one crash in a row, so pods get their chance
        tick = sim.step(persist=crash != "lost-write", apply=crash != "not-applied")
        previous = crash
        if crash != "lost-write":
            checker.check(tick)
        if crash == "replayed":
            checker.check(sim.replay())
        started = started or sim.status.canary is not None
        if started and (sim.idle() or (not sim.verdicts and crash == "none" and _due(sim))):
            break
        if started and crash == "none" and sim.holding() and not _due(sim):
            break

    assert sim.outcomes() == calm.outcomes()
    judged = [t.verdict for t in sim.ticks if t.verdict is not None]
    assert judged == [t.verdict for t in calm.ticks if t.verdict is not None]
    assert sim.status.phase == calm.status.phase
    if calm.status.canary is not None:
        assert sim.status.canary is not None
        assert sim.status.canary.step == calm.status.canary.step


def _due(sim: Simulator) -> bool:
    return analysis_due(sim.observation())


# --- manual requests and spec changes at random moments -----------------------------------

actions = st.one_of(
    st.tuples(st.just("verdict"), st.sampled_from(list(Verdict))),
    st.tuples(st.just("annotate"), st.sampled_from(MANUAL_ANNOTATIONS)),
    st.tuples(st.just("version"), st.sampled_from(VERSIONS)),
    st.tuples(st.just("pause"), st.booleans()),
    st.tuples(st.just("wait"), st.integers(1, 8)),
)


@PROPERTY_SETTINGS
@given(
    spec=any_strategy_specs(),
    script=st.lists(actions, max_size=30),
    ready_after=st.integers(0, 3),
)
def test_invariants_hold_whatever_users_do(spec, script, ready_after):
    sim = Simulator(spec, canary_ready_after=ready_after).deployed()
    checker = RunChecker()
    for tick in sim.ticks:
        checker.check(tick)
    serial = 0
    for kind, value in script:
        if kind == "verdict":
            sim.script(value)
        elif kind == "annotate":
            serial += 1
            sim.annotate(value, f"request-{serial}")
        elif kind == "version":
            sim.set_spec(new_version(sim.spec, value))
        elif kind == "pause":
            rollout = sim.spec.rollout.model_copy(update={"paused": value})
            sim.set_spec(sim.spec.model_copy(update={"rollout": rollout}))
        ticks = value if kind == "wait" else 2
        for _ in range(ticks):
            checker.check(sim.step())
        _check_manual_precedence(sim.ticks[-ticks:])
    for tick in sim.run_script():
        checker.check(tick)


def _check_manual_precedence(ticks: list[Tick]) -> None:
    """Abort beats promote beats analysis, for a canary of the current revision."""
    for tick in ticks:
        o, d = tick.observation, tick.decision
        new = new_requests(o.annotations, o.status.handled_requests)
        canary = o.status.canary
        walking = (
            canary is not None and canary.revision == o.revision and o.status.phase != "Promoting"
        )
        if not walking:
            continue
        if ABORT_ANNOTATION in new:
            assert _aborted(d)
        elif PROMOTE_ANNOTATION in new and o.spec.strategy.type == "blueGreen":
            # A switch needs ready pods: to unready ones it is refused, with a warning.
            switched = d.status.phase == "Promoting" or d.outcome == "Promoted"
            refused = Reason.STEP_PROMOTION_IGNORED in {e.reason for e in d.events}
            assert switched or refused
        elif PROMOTE_ANNOTATION in new:
            assert d.status.phase == "Promoting" or d.outcome == "Promoted"
            assert d.status.last_analysis == o.status.last_analysis, "analysis not applied"


@PROPERTY_SETTINGS
@given(spec=specs(), verdicts=verdict_lists, retries=st.integers(0, 3))
def test_a_rolled_back_revision_runs_again_only_on_a_retry(spec, verdicts, retries):
    sim = canary_of(Simulator(spec), "2.0.0", [*verdicts, Verdict.FAIL, *[Verdict.FAIL] * 5])
    if sim.status.phase != "RolledBack":
        return
    sim.verdicts.clear()
    started = 0
    for n in range(retries):
        for _ in range(5):
            tick = sim.step()
            assert tick.decision.status.canary is None
            assert tick.decision.weight == 0
        sim.annotate(RETRY_ANNOTATION, f"retry-{n}")
        tick = sim.step()
        assert tick.decision.status.canary is not None
        started += 1
        sim.script(*[Verdict.FAIL] * spec.rollout.failure_threshold)
        sim.run_script()
        assert sim.status.phase == "RolledBack"
    canaries = [
        t for t in sim.ticks if Reason.CANARY_STARTED in {e.reason for e in t.decision.events}
    ]
    assert len(canaries) == 1 + started
