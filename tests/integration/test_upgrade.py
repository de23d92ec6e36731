"""Objects stored by an older release that today's rules reject, met by today's operator.

The API server checks validation rules only on writes, so after an upgrade the stored
objects may break rules that did not exist when they were written. These tests store
such objects through a CRD without today's new rules (what the older release
installed), put today's CRD back, then start today's operator.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml

from tests.integration.conftest import CRDS_DIR
from tests.integration.operator_harness import Objects, OperatorProcess, objects, operator, wait_for
from tests.integration.test_canary import deploy_stable, new_version, prometheus
from tests.support.scripted_prometheus import ScriptedPrometheus

pytestmark = pytest.mark.integration
__all__ = ["objects", "operator", "prometheus"]  # fixtures used by the tests below

CRD_FILE = CRDS_DIR / "modeldeploy.dev_modeldeployments.yaml"
# Rules this release added; the older release's CRD did not have them.
NEW_RULE_MARKERS = ("upperAscii", "duration(self)", "contains('?')", "contains('@')", "isURL")


def _without_new_rules(node: Any) -> Any:
    if isinstance(node, dict):
        rules = node.get("x-kubernetes-validations")
        if rules is not None:
            kept = [r for r in rules if not any(m in r["rule"] for m in NEW_RULE_MARKERS)]
            node = {k: v for k, v in node.items() if k != "x-kubernetes-validations"}
            if kept:
                node["x-kubernetes-validations"] = kept
        return {k: _without_new_rules(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_without_new_rules(v) for v in node]
    return node


@contextmanager
def older_release_crd(objects: Objects) -> Iterator[None]:
    """The CRD as the older release installed it; today's is put back on exit."""
    today = yaml.safe_load(CRD_FILE.read_text())
    older = _without_new_rules(copy.deepcopy(today))
    apply = ("apply", "--server-side", "--force-conflicts", "-f", "-")
    objects.cluster.kubectl(*apply, input=json.dumps(older))
    try:
        yield
    finally:
        objects.cluster.kubectl(*apply, input=json.dumps(today))


def store(objects: Objects, name: str, spec_patch: dict[str, Any]) -> None:
    """Write `spec_patch` as the older release's API server would have accepted it."""
    patch = json.dumps({"spec": spec_patch})

    def stored() -> bool:
        args = ("patch", "md", name, "--type", "merge", "-p", patch)
        done = objects.cluster.kubectl("-n", objects.namespace, *args, check=False)
        return done.returncode == 0

    # The API server takes a moment to use a replaced CRD's schema.
    wait_for(stored, 30, f"the older release's API server to store {spec_patch}")


def walking_canary(
    objects: Objects, operator: OperatorProcess, prom: ScriptedPrometheus, name: str
) -> None:
    """A canary at its first step, then the operator stopped, as for an upgrade."""
    prom.healthy()
    deploy_stable(objects, name, prom, rollout={"steps": [20, 50], "interval": "30s"})
    new_version(objects, name)
    wait_for(
        lambda: (objects.status(name).get("canary") or {}).get("readyAt"),
        60,
        "the canary to walk",
    )
    operator.stop()


def test_a_canary_whose_stored_spec_cannot_be_acted_on_is_rolled_back_saying_why(
    objects, operator, prometheus
):
    walking_canary(objects, operator, prometheus, "sneaky")
    with older_release_crd(objects):
        # Exact-case names were refused already; the older release compared case-sensitively.
        store(
            objects,
            "sneaky",
            {"server": {"env": [{"name": "modelserver_model_uri", "value": "http://x/m.pkl"}]}},
        )
    operator.start()

    entry = wait_for(lambda: objects.outcome("sneaky", "2.0.0"), 60, "the rollback")
    assert entry["outcome"] == "RolledBack"
    assert entry["reason"].startswith("InvalidSpec")
    assert "modelserver_model_uri" in entry["reason"]
    wait_for(
        lambda: (
            (objects.get("deployment", "sneaky-canary") or {"spec": {"replicas": 0}})["spec"][
                "replicas"
            ]
            == 0
        ),
        30,
        "the canary scaled to zero",
    )
    status = wait_for(
        lambda: (s := objects.status("sneaky")).get("phase") == "Failed" and s,
        30,
        "the spec reported invalid",
    )
    assert "server.env may not set variables the operator sets" in status["message"]
    stable = objects.get("deployment", "sneaky-stable")
    assert stable is not None
    (container,) = stable["spec"]["template"]["spec"]["containers"]
    names = [e["name"] for e in container["env"]]
    assert "modelserver_model_uri" not in names, "the stable never serves an unpinned model"
    rollbacks = [e["message"] for e in objects.events("sneaky") if e["reason"] == "RolledBack"]
    assert any("breaks a rule this operator enforces" in m for m in rollbacks)


def test_a_stored_interval_below_the_minimum_is_clamped_with_a_warning(
    objects, operator, prometheus
):
    walking_canary(objects, operator, prometheus, "hasty")
    with older_release_crd(objects):
        store(objects, "hasty", {"rollout": {"interval": "0s"}})
    operator.start()

    entry = wait_for(lambda: objects.outcome("hasty", "2.0.0"), 60, "the promotion")
    assert entry["outcome"] == "Promoted"
    warnings = [e["message"] for e in objects.events("hasty") if e["reason"] == "SpecAdjusted"]
    assert warnings == [
        "spec.rollout.interval 0s is outside at least 1s, which this operator enforces; "
        "using 1s. Set spec.rollout.interval within that range"
    ]
