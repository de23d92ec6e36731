"""Scenario tests of the shadow phase (strategy.shadow and type shadow): no live traffic,
copies only from ready pods, promotion or the follow-up strategy only after its passes,
rejection with the values of its failing analysis."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, cast

from modeldeploy import model_promql as mq
from modeldeploy import resources, shadow_checks
from modeldeploy.analysis import PrometheusClient, QueryFailed
from modeldeploy.api import AnalysisStatus, CheckResult, ShadowStrategy, Verdict
from modeldeploy.model_promql import Sample
from modeldeploy.promql import QueryContext
from modeldeploy.rollout import Decision, Track, analysis_due, analysis_track, decide
from tests.unit.rollout_sim import Simulator, make_spec, with_rollout

V1, V2 = "1.0.0", "2.0.0"


def shadowed(kind: str = "shadow", **settings: Any) -> Simulator:
    strategy: dict[str, Any] = {"type": kind, "shadow": {"analyses": 2, **settings}}
    return Simulator(make_spec(V1, replicas=4, strategy=strategy)).deployed()


def new_version(sim: Simulator) -> None:
    sim.set_spec(sim.spec.model_copy(update={"model": make_spec(V2).model}))


def reasons(decision: Decision) -> list[str]:
    return [str(e.reason) for e in decision.events]


def in_shadow(sim: Simulator) -> bool:
    canary = sim.status.canary
    return canary is not None and canary.stage == "Shadow"


def test_a_shadow_gets_copies_only_once_ready_and_never_live_traffic():
    sim = shadowed(mirrorPercent=50)
    new_version(sim)
    started = sim.step().decision
    assert "ShadowStarted" in reasons(started)
    assert started.mirror_percent is None, "no copies to pods that are not ready"
    ticks = sim.run(lambda s: s.status.canary is not None and s.status.canary.ready_at is not None)
    ready = ticks[-1].decision
    assert "ShadowReady" in reasons(ready)
    assert ready.mirror_percent == 50
    for tick in [*ticks, sim.step()]:
        d = tick.decision
        assert d.live_tracks == (Track.STABLE,), "the clients' Service never selects a shadow"
        assert d.weight == 0
        assert d.canary is not None
        assert d.canary.replicas == 2, "half the traffic copied: half the stable's 4 pods"
        assert d.stable is not None
        assert d.stable.replicas == 4
    assert analysis_track(sim.observation()) == Track.CANARY


def test_type_shadow_is_promoted_after_its_passes_and_the_copies_stop():
    sim = shadowed()
    new_version(sim)
    sim.script(Verdict.PASS, Verdict.NO_DATA, Verdict.PASS)
    ticks = sim.run(lambda s: s.status.phase == "Available" and s.status.canary is None)
    judged = [t.verdict for t in ticks if t.verdict is not None]
    assert judged == [Verdict.PASS, Verdict.NO_DATA, Verdict.PASS]
    every = [r for t in ticks for r in reasons(t.decision)]
    assert every.index("ShadowPassed") < every.index("PromotionStarted")
    assert ticks[-1].decision.outcome == "Promoted"
    assert sim.status.stable is not None
    assert sim.status.stable.version == V2
    assert ticks[-1].decision.mirror_percent is None


def test_a_canary_with_a_shadow_walks_its_steps_after_the_shadow_passed():
    sim = shadowed("canary")
    new_version(sim)
    sim.script(Verdict.PASS, Verdict.PASS)
    ticks = sim.run(lambda s: s.status.canary is not None and s.status.canary.stage is None)
    after = ticks[-1].decision
    assert reasons(after)[:2] == ["ShadowPassed", "CanaryStarted"]
    assert after.mirror_percent is None
    assert sim.status.canary is not None
    assert sim.status.canary.shadow_passes == 0
    walking = sim.run(lambda s: s.status.canary is not None and s.status.canary.weight > 0)
    assert walking[-1].decision.weight == 10, "the canary's first step"
    assert Track.CANARY in walking[-1].decision.live_tracks


def test_a_shadow_that_fails_is_rejected_and_its_analysis_stays_in_status():
    sim = shadowed("canary")
    new_version(sim)
    sim.script(Verdict.FAIL, Verdict.FAIL, Verdict.FAIL)
    ticks = sim.run(lambda s: s.status.phase == "RolledBack")
    done = ticks[-1].decision
    assert done.outcome == "RolledBack"
    assert done.mirror_percent is None
    assert done.live_tracks == (Track.STABLE,)
    assert sim.status.rejected_revision == sim.revision
    assert sim.status.last_analysis is not None
    assert sim.status.last_analysis.verdict == Verdict.FAIL
    assert not any("CanaryStarted" in reasons(t.decision) for t in ticks[1:])
    assert all(t.decision.weight == 0 for t in ticks), "no client ever reached it"


def test_a_paused_shadow_is_judged_but_not_moved_on():
    sim = shadowed("shadow")
    new_version(sim)
    sim.set_spec(with_rollout(sim.spec, paused=True))
    sim.script(*[Verdict.PASS] * 4)
    ticks = sim.run(lambda s: not s.verdicts)
    assert in_shadow(sim)
    assert sim.status.canary is not None
    assert sim.status.canary.shadow_passes == 0
    assert ticks[-1].decision.mirror_percent == 100, "a paused shadow keeps receiving copies"
    sim.set_spec(with_rollout(sim.spec, paused=False))
    sim.script(Verdict.PASS, Verdict.PASS)
    sim.run(lambda s: s.status.phase == "Available" and s.status.canary is None)
    assert sim.status.stable is not None
    assert sim.status.stable.version == V2


def test_an_operator_upgrade_changes_no_revision_and_mounts_nothing_without_a_shadow():
    plain = make_spec(V1)
    with_shadow = make_spec(V1, strategy={"type": "canary", "shadow": {}})
    template = resources.template_of(plain, "img")
    assert resources.revision_of(template) == resources.revision_of(
        resources.template_of(with_shadow, "img")
    )
    pod = resources.pod_template("fraud", "stable", "r", template)
    assert all(v["name"] != "mirror" for v in pod["spec"]["volumes"])
    mirrored = resources.pod_template("fraud", "stable", "r", template, mirror=True)
    (volume,) = [v for v in mirrored["spec"]["volumes"] if v["name"] == "mirror"]
    assert volume["configMap"] == {"name": "fraud-mirror", "optional": True}
    env = {e["name"]: e.get("value") for e in mirrored["spec"]["containers"][0]["env"]}
    assert env["MODELSERVER_MIRROR_CONFIG_FILE"] == "/etc/modelserver/mirror/mirror.json"


def test_the_mirror_config_names_the_shadows_service_only_while_it_runs():
    on = resources.mirror_config_map("fraud", "ml", "uid", 25.0, "fraud-detector")
    assert on["metadata"]["name"] == "fraud-mirror"
    assert json.loads(on["data"]["mirror.json"]) == {
        "url": "http://fraud-canary.ml.svc:80",
        "percent": 25.0,
        "model": "fraud-detector",
    }
    off = resources.mirror_config_map("fraud", "ml", "uid", None)
    assert off["data"]["mirror.json"] == "{}"


CONTEXT = QueryContext(
    namespace="ml", name="fraud", track="canary", interval="60s", model="fraud", version="2"
)


def rows(**counts: float) -> list[Sample]:
    return [Sample({"result": result}, value) for result, value in counts.items()]


def test_agreement_is_the_share_of_compared_rows_that_agree():
    spec = ShadowStrategy(min_agreement=0.95, min_rows=100)
    query = mq.shadow_rows(CONTEXT)
    assert 'track="canary"' in query
    assert 'model_version="2"' in query
    passing = shadow_checks.judge_agreement(spec, query, rows(agree=980, disagree=20, unmatched=5))
    assert (passing.verdict, passing.value) == (Verdict.PASS, 0.98)
    failing = shadow_checks.judge_agreement(spec, query, rows(agree=900, disagree=100))
    assert failing.verdict == Verdict.FAIL
    assert "0.9" in failing.message
    assert "900 of 1000" in failing.message
    few = shadow_checks.judge_agreement(spec, query, rows(agree=50, disagree=0, unmatched=500))
    assert few.verdict == Verdict.NO_DATA, "unmatched rows were not compared"
    broken = shadow_checks.judge_agreement(spec, query, QueryFailed("Prometheus answered 503"))
    assert broken.verdict == Verdict.ERROR


def test_mean_absolute_difference_is_sum_over_count():
    spec = ShadowStrategy(max_mean_abs_diff=1.5, min_rows=10)
    query = mq.shadow_difference(CONTEXT)
    close = shadow_checks.judge_difference(spec, query, Sample({}, 12.0), Sample({}, 20.0))
    assert (close.verdict, close.value) == (Verdict.PASS, 0.6)
    far = shadow_checks.judge_difference(spec, query, Sample({}, 80.0), Sample({}, 20.0))
    assert (far.verdict, far.value) == (Verdict.FAIL, 4.0)
    none_yet = shadow_checks.judge_difference(spec, query, None, None)
    assert none_yet.verdict == Verdict.NO_DATA


def no_copies_yet(at: datetime) -> AnalysisStatus:
    volume = CheckResult(
        name="request-volume", value=0.0, min=20, verdict=Verdict.NO_DATA, message="0 < 20"
    )
    return AnalysisStatus(at=at, verdict=Verdict.NO_DATA, requests=0.0, checks=[volume])


def test_analyses_before_the_first_copy_are_held_until_the_progress_deadline():
    sim = shadowed()  # make_spec: progressDeadline 60s, interval 30s
    new_version(sim)
    sim.run(lambda s: s.status.canary is not None and s.status.canary.ready_at is not None)
    while not analysis_due(sim.observation()):
        sim.step()
    held = decide(replace(sim.observation(), analysis=no_copies_yet(sim.now)))
    assert held.status.canary is not None
    assert held.status.canary.inconclusive_checks == 0
    assert any("no copy reached" in e.message for e in held.events)
    ready_at = held.status.canary.ready_at
    assert ready_at is not None
    sim.status = held.status
    sim.now = ready_at + timedelta(seconds=61)
    counted = decide(replace(sim.observation(), analysis=no_copies_yet(sim.now)))
    assert counted.status.canary is not None
    assert counted.status.canary.inconclusive_checks == 1, "a target never reached counts"


class OneAnswer:
    """A Prometheus that answers every vector query with the same samples."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples
        self.queries: list[str] = []

    async def vector(self, promql: str) -> list[Sample]:
        self.queries.append(promql)
        return self.samples


def test_the_difference_comes_from_one_query_told_apart_by_part():
    spec = ShadowStrategy(max_mean_abs_diff=1.5, min_rows=10)
    prometheus = OneAnswer(
        [Sample({"part": "count", "track": "canary"}, 20.0), Sample({"part": "sum"}, 12.0)]
    )
    client = cast(PrometheusClient, prometheus)
    (check,) = asyncio.run(shadow_checks.shadow_checks(client, spec, CONTEXT))
    assert (check.name, check.verdict, check.value) == ("shadow-mean-abs-diff", Verdict.PASS, 0.6)
    assert prometheus.queries == [mq.shadow_difference(CONTEXT)]
