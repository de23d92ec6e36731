"""Strategies end to end (issue 14): the offline champion-challenger check and a blue-green
switch and switch-back, with the chart's operator, the built images on the tier's node, the
in-cluster Prometheus and load from a pod through the model's Service.

Each scenario prints what the clients saw: requests by answer per phase, and for every
switch the time from the operator's decision to the last request the side it switched
away from answered (``tests/node/traffic_switch.py``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xgboost
from sklearn.datasets import load_breast_cancer
from tests.integration.conftest import _print
from tests.node import model_store as model_store_module
from tests.node.load import Outcome, failed
from tests.node.model_store import CLAIM, ModelStore
from tests.node.monitoring import InClusterPrometheus
from tests.node.realnode import wait_for
from tests.node.scenario import Scenario, manifest
from tests.node.tier import TierCluster, pod_ready
from tests.node.traffic_switch import Switch, between, by_answer, switch_of, unix_time

pytestmark = pytest.mark.node

GOOD = "xgb-classifier.ubj"
REJECTS_INPUTS = "xgb-classifier-bad-features.ubj"
# Trained here: the sample classifier's data and features, two stumps instead of 100 trees.
WEAK = "xgb-classifier-weak.ubj"
HOLDOUT = "breast-cancer-holdout.csv"
LABEL = "label"

RATE = 20  # requests per second, each on a new connection
# Short intervals keep the scenarios to about a minute each; the latency bound is loose as
# in test_rollouts.py (pods starting beside a serving pod on this 2-core host).
ANALYSIS = {"minRequests": 10, "slo": {"maxErrorRate": 0.05, "maxLatencyP99": "1s"}}
ROLLOUT = {
    "steps": [50],
    "interval": "5s",
    "failureThreshold": 1,
    "inconclusiveLimit": 6,
    "progressDeadline": "120s",
}
VALIDATION = {"metric": "auc", "min": 0.9, "maxDropVsStable": 0.01, "timeout": "2m"}
SCALE_DOWN_DELAY = 20.0  # seconds the previous version stands by after a blue-green switch


def train_weak_classifier(path: Path) -> Path:
    """A poorer breast cancer classifier: the sample one's data and (unnamed) features, two
    depth-1 trees."""
    features, labels = load_breast_cancer(return_X_y=True)
    weak = xgboost.XGBClassifier(n_estimators=2, max_depth=1, n_jobs=1, random_state=0)
    weak.fit(features, labels).get_booster().save_model(path)
    return path


def write_holdout(path: Path) -> Path:
    """Every fourth row of the sample model's data set (143 rows): 30 feature columns in the
    model's order, then the label. The sample model was trained on all rows, so it scores
    near 1 here; what matters is that the weak one scores lower on the same rows."""
    features, labels = load_breast_cancer(return_X_y=True)
    names = [f"f{i}" for i in range(features.shape[1])]
    lines = [",".join([*names, LABEL])]
    for row, label in zip(features[::4], labels[::4], strict=True):
        lines.append(",".join([*(repr(float(v)) for v in row), str(int(label))]))
    path.write_text("\n".join(lines) + "\n")
    return path


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def challenger_files(
    tier: TierCluster, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The weak model and the hold-out set in the tier's model store: name -> sha256."""
    workdir = tmp_path_factory.mktemp("challengers")
    digests = {}
    for path in (train_weak_classifier(workdir / WEAK), write_holdout(workdir / HOLDOUT)):
        model_store_module.upload(tier, model_store.namespace, path)
        digests[path.name] = sha256_file(path)
    return digests


def served_over_http(model_store: ModelStore, name: str, sha256: str) -> dict[str, str]:
    """`uri` and `sha256` of a file the store's file server serves."""
    uri = model_store.http(GOOD)["uri"].rsplit("/", 1)[0] + f"/{name}"
    return {"uri": uri, "sha256": sha256}


def serve_under_load(
    scenario: Scenario, prometheus: InClusterPrometheus, spec: dict[str, Any], replicas: int
) -> None:
    """Version 1.0.0 serving, under load, scraped by Prometheus."""
    scenario.deploy(spec)
    scenario.start_load(rate=RATE)
    namespace = scenario.namespace
    wait_for(
        lambda: (
            len(prometheus.scraped(namespace)) == replicas
            and prometheus.value(
                f'sum(modelserver_requests_total{{namespace="{namespace}", track="stable"}})'
            )
        ),
        60,
        "Prometheus to discover and scrape the stable pods",
    )


def serving_pods(scenario: Scenario) -> list[dict[str, Any]]:
    """The ModelDeployment's serving pods (not its validation Jobs' pods)."""
    return [
        p
        for p in scenario.pods()
        if p["metadata"]["labels"].get("app.kubernetes.io/component") != "validation"
    ]


def stop_load_once_settled(scenario: Scenario, replicas: int) -> list[Outcome]:
    """Once only the stable's pods serve and a little more load went through: every
    request's outcome."""

    def settled() -> bool:
        pods = serving_pods(scenario)
        return len(pods) == replicas and all(
            pod_ready(p) and p["metadata"]["labels"].get("modeldeploy.dev/track") == "stable"
            for p in pods
        )

    wait_for(settled, 180, "only the stable's pods to be left", interval=1)
    time.sleep(3)
    assert scenario.load is not None
    scenario.load.stop()
    scenario.stop()
    return scenario.load.outcomes()


@pytest.fixture
def with_claim(scenario: Scenario, model_store: ModelStore) -> Iterator[Scenario]:
    """The scenario with the store's files on the claim `models` (for pvc:// URIs)."""
    model_store.claim(scenario.namespace)
    try:
        yield scenario
    finally:
        model_store.release(scenario.namespace)


def test_a_challenger_worse_on_the_holdout_set_never_serves_and_a_better_one_is_promoted(
    request: pytest.FixtureRequest,
    with_claim: Scenario,
    prometheus: InClusterPrometheus,
    model_store: ModelStore,
    challenger_files: dict[str, str],
) -> None:
    scenario = with_claim
    spec = manifest(scenario.name, model_store.http(GOOD), "1.0.0", 1, ROLLOUT, ANALYSIS)
    dataset = {
        "uri": f"pvc://{CLAIM}/{HOLDOUT}",
        "sha256": challenger_files[HOLDOUT],
        "format": "csv",
        "labelColumn": LABEL,
    }
    spec["spec"]["validation"] = {"dataset": dataset, **VALIDATION}
    serve_under_load(scenario, prometheus, spec, 1)

    weak = served_over_http(model_store, WEAK, challenger_files[WEAK])
    scenario.roll_out("2.0.0", weak)
    rejected = scenario.wait_outcome("2.0.0")
    checked_weak = scenario.status().get("validation") or {}
    scenario.roll_out("2.1.0", model_store.http(GOOD))
    promoted = scenario.wait_outcome("2.1.0")
    checked_good = scenario.status().get("validation") or {}
    outcomes = stop_load_once_settled(scenario, 1)
    _print(
        request.config,
        f"\noffline check: weak {checked_weak.get('message')!r}; "
        f"good {checked_good.get('message')!r}\nclient requests by answer: {by_answer(outcomes)}",
    )

    # rejected before any live request reached it, with the metric and the bound named
    assert rejected["outcome"] == "RolledBack", rejected
    assert rejected["reason"].startswith("ValidationFailed"), rejected
    assert "auc" in rejected["reason"], rejected
    assert "maxDropVsStable 0.01" in rejected["reason"], rejected
    assert checked_weak["revision"] == rejected["revision"], checked_weak
    assert checked_weak["verdict"] == "Fail", checked_weak
    assert checked_weak["metric"] == "auc", checked_weak
    assert checked_weak["candidate"] < checked_weak["stable"] - 0.01, checked_weak
    assert checked_weak["maxDropVsStable"] == 0.01, checked_weak
    assert checked_weak["rows"] == 143, checked_weak
    served = by_answer(outcomes)
    assert "2.0.0" not in served, served

    # the good one passed the same check, and only then served
    assert promoted["outcome"] == "Promoted", promoted
    assert checked_good["revision"] == promoted["revision"], checked_good
    assert checked_good["verdict"] == "Pass", checked_good
    assert served.get("2.1.0", 0) > 0, served
    first_answer = min(o.at for o in outcomes if o.version == "2.1.0")
    assert first_answer > unix_time(checked_good["at"]), (first_answer, checked_good)
    assert failed(outcomes) == []


def roll_out_checked(
    scenario: Scenario, version: str, model: dict[str, str], validation: dict[str, Any]
) -> None:
    """A new model and the check it must pass, one change; a bad dataset is rejected on its
    first Error (inconclusiveLimit 1), as a real Job run on the node finds it."""
    scenario.patch(
        {
            "model": {"version": version, **model},
            "validation": validation,
            "rollout": {"inconclusiveLimit": 1},
        }
    )


def test_a_bad_hold_out_set_rejects_the_challenger_with_the_reason_and_no_client_sees_it(
    request: pytest.FixtureRequest,
    with_claim: Scenario,
    prometheus: InClusterPrometheus,
    model_store: ModelStore,
    challenger_files: dict[str, str],
) -> None:
    scenario = with_claim
    spec = manifest(scenario.name, model_store.http(GOOD), "1.0.0", 1, ROLLOUT, ANALYSIS)
    serve_under_load(scenario, prometheus, spec, 1)
    dataset = {"uri": f"pvc://{CLAIM}/{HOLDOUT}", "format": "csv", "labelColumn": LABEL}

    wrong_pin = {**dataset, "sha256": "0" * 64}
    roll_out_checked(
        scenario, "2.0.0", model_store.http(GOOD), {"dataset": wrong_pin, **VALIDATION}
    )
    mismatch = scenario.wait_outcome("2.0.0")
    no_label = {**dataset, "sha256": challenger_files[HOLDOUT], "labelColumn": "is_fraud"}
    roll_out_checked(scenario, "2.1.0", model_store.http(GOOD), {"dataset": no_label, **VALIDATION})
    missing = scenario.wait_outcome("2.1.0")
    outcomes = stop_load_once_settled(scenario, 1)
    _print(
        request.config,
        f"\nbad hold-out sets: {mismatch['reason']!r}; {missing['reason']!r}"
        f"\nclient requests by answer: {by_answer(outcomes)}",
    )

    for rejected in (mismatch, missing):
        assert rejected["outcome"] == "RolledBack", rejected
        assert rejected["reason"].startswith("ValidationInconclusive"), rejected
    assert "dataset sha256 mismatch" in mismatch["reason"], mismatch
    assert challenger_files[HOLDOUT] in mismatch["reason"], "the actual digest, to fix the pin"
    assert "label column 'is_fraud' not found" in missing["reason"], missing
    assert LABEL in missing["reason"], "the columns the file has"
    served = by_answer(outcomes)
    assert "2.0.0" not in served
    assert "2.1.0" not in served
    assert scenario.status()["stable"]["version"] == "1.0.0"
    assert failed(outcomes) == []


def switched_at(scenario: Scenario, version: str) -> float | None:
    """When the operator switched all traffic to `version` (status.canary.switchedAt, kept
    while the previous version stands by); None before."""
    canary = scenario.status().get("canary") or {}
    moment = canary.get("switchedAt") if canary.get("version") == version else None
    return unix_time(moment) if moment else None


def wait_switched(scenario: Scenario, version: str) -> float:
    """The switch to `version`: from status, or, if its switch-back came first (status no
    longer shows it), from the Switched Event, which has whole seconds only."""

    def seen() -> float | None:
        moment = switched_at(scenario, version)
        if moment is None and scenario.outcome(version) is not None:
            events = [e for e in scenario.events("Switched") if version in e["message"]]
            assert events, f"{version} ended without a Switched event"
            return unix_time(events[-1]["lastTimestamp"])
        return moment

    return wait_for(seen, 240, f"the switch to {version}", interval=0.25)


def report(switch: Switch, what: str, outcomes: list[Outcome]) -> str:
    return (
        f"{what}: {switch.seconds:.2f} s from the decision to the last answer of the side "
        f"switched away from ({switch.answered_after} answers after the decision); "
        f"requests by answer: {by_answer(outcomes)}"
    )


def test_blue_green_switches_all_traffic_at_once_and_back_at_once_under_load(
    request: pytest.FixtureRequest,
    scenario: Scenario,
    prometheus: InClusterPrometheus,
    model_store: ModelStore,
) -> None:
    replicas = 2
    spec = manifest(scenario.name, model_store.http(GOOD), "1.0.0", replicas, ROLLOUT, ANALYSIS)
    spec["spec"]["strategy"] = {
        "type": "blueGreen",
        "blueGreen": {"scaleDownDelay": f"{SCALE_DOWN_DELAY:.0f}s", "postPromotionAnalysis": "10s"},
    }
    serve_under_load(scenario, prometheus, spec, replicas)

    # a healthy version: all traffic moves to it at once, then it is promoted
    asked = scenario.roll_out("1.1.0", model_store.http(GOOD))
    switch_decided = wait_switched(scenario, "1.1.0")
    promoted = scenario.wait_outcome("1.1.0")

    # a version that rejects every input: switched to, judged on live traffic, switched back
    bad_asked = scenario.roll_out("2.0.0", model_store.http(REJECTS_INPUTS))
    bad_switch_decided = wait_switched(scenario, "2.0.0")
    rolled_back = scenario.wait_outcome("2.0.0")
    outcomes = stop_load_once_settled(scenario, replicas)

    healthy = between(outcomes, asked, bad_asked)
    bad = between(outcomes, bad_asked, float("inf"))
    switch = switch_of(healthy, switch_decided, lambda o: o.version == "1.0.0")
    back_decided = unix_time(rolled_back["at"])
    # until the switch-back, after which 1.1.0 answers again by design
    before_back = between(bad, bad_switch_decided, back_decided)
    to_bad = switch_of(before_back, bad_switch_decided, lambda o: o.version == "1.1.0")
    switch_back = switch_of(bad, back_decided, lambda o: o.status == 422)
    _print(
        request.config,
        "\n"
        + "\n".join(
            (
                report(switch, "blue-green switch to 1.1.0", healthy),
                report(to_bad, "switch to 2.0.0 (rejects inputs)", before_back),
                report(switch_back, "switch-back to 1.1.0 after its failed analysis", bad),
            )
        ),
    )

    assert promoted["outcome"] == "Promoted", promoted
    assert len(scenario.events("Switched")) == 2
    # no live request reached the preview before the switch
    assert min(o.at for o in healthy if o.version == "1.1.0") >= switch_decided
    # the previous version never served again after it stood by
    assert all(o.at < switch_decided + SCALE_DOWN_DELAY for o in healthy if o.version == "1.0.0"), (
        "1.0.0 answered after its standby ended"
    )
    assert failed(healthy) == []

    assert rolled_back["outcome"] == "RolledBack", rolled_back
    assert rolled_back["reason"].startswith("FailedChecks"), rolled_back
    assert "error-rate" in rolled_back["reason"], rolled_back
    assert scenario.status()["stable"]["version"] == "1.1.0"
    rejections = [o for o in bad if o.status == 422]
    assert rejections, "the bad version answered no live request"
    # its preview had no live traffic (the Event's time, if used, is rounded down)
    assert min(o.at for o in rejections) >= bad_switch_decided, "a 422 before the switch"
    # nothing failed but the bad version's own rejections
    assert failed(bad, allowed_status=frozenset({422})) == []
