"""The operator as users install it: `helm install` of charts/modeldeploy with the built
image, two replicas on the tier's node with in-cluster configuration, one leader on the
chart's Lease, and exactly the permissions the chart grants."""

from __future__ import annotations

import pytest
from tests.node.monitoring import InClusterPrometheus
from tests.node.operator_release import OperatorRelease
from tests.node.realnode import wait_for
from tests.node.tier import TierCluster, pod_ready

pytestmark = pytest.mark.node


def test_the_chart_runs_the_built_operator_image_on_the_tier_node(
    tier: TierCluster, operator_release: OperatorRelease
):
    node = tier.check_node()
    pods = operator_release.pods()
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    for pod in pods:
        spec = pod["spec"]
        assert pod_ready(pod), pod["status"]
        assert spec["nodeName"] == node
        (container,) = spec["containers"]
        assert container["image"] == tier.images.operator
        # in-cluster configuration: the ServiceAccount's token, no kubeconfig
        assert spec["serviceAccountName"] == operator_release.name
        assert not any(e["name"] == "KUBECONFIG" for e in container.get("env", []))
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        statuses = pod["status"]["containerStatuses"]
        assert all(s["restartCount"] == 0 for s in statuses), statuses


def test_one_replica_leads_and_prometheus_scrapes_both(
    operator_release: OperatorRelease, prometheus: InClusterPrometheus
):
    names = {p["metadata"]["name"] for p in operator_release.pods()}
    assert operator_release.leader() in names
    namespace = operator_release.namespace

    def leaders() -> tuple[float | None, int] | None:
        found = (
            prometheus.value(f'sum(modeldeploy_leader{{namespace="{namespace}"}})'),
            len(prometheus.query(f'modeldeploy_leader{{namespace="{namespace}"}}')),
        )
        return found if found == (1.0, 2) else None

    # found by the pod annotations the chart's podAnnotations set
    wait_for(leaders, 60, "both replicas scraped, one of them leading")
    (leading,) = prometheus.query(f'modeldeploy_leader{{namespace="{namespace}"}} == 1')
    assert leading["metric"]["pod"] == operator_release.leader()


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("watch", "modeldeployments.modeldeploy.dev", True),
        ("patch", "modeldeployments.modeldeploy.dev", True),
        ("create", "deployments.apps", True),
        ("list", "pods", True),
        ("create", "events", True),
        ("get", "secrets", True),
        ("list", "secrets", False),
        ("create", "pods", False),
        ("delete", "pods", False),
        ("create", "modeldeployments.modeldeploy.dev", False),
        ("create", "clusterroles.rbac.authorization.k8s.io", False),
    ],
)
def test_the_operator_has_what_the_chart_grants_and_no_more(
    operator_release: OperatorRelease, verb: str, resource: str, allowed: bool
):
    assert operator_release.can_i(verb, resource, "default") is allowed


def test_the_operator_may_renew_only_its_own_lease(operator_release: OperatorRelease):
    namespace = operator_release.namespace
    assert operator_release.can_i("update", f"leases/{operator_release.name}", namespace)
    assert not operator_release.can_i("update", "leases/someone-else", namespace)
