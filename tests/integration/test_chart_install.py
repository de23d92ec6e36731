"""`helm install` of charts/modeldeploy into a real API server.

The chart is installed (CRDs skipped: the `crds_installed` fixture applies them) into a
fresh namespace that it also watches; the API server then answers, for the operator's
ServiceAccount, exactly what the operator may and may not do. The operator image does not
exist here, so the pods never run; that is not what these tests look at.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import REPO_ROOT, Cluster

pytestmark = pytest.mark.integration

CHART = REPO_ROOT / "charts" / "modeldeploy"


@dataclass
class Release:
    name: str
    namespace: str
    service_account: str
    notes: str


def _helm(
    cluster: Cluster, home: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    if cluster.helm_bin is None:
        reason = "the pinned helm is not built (scripts/build-binaries.sh)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true", pytrace=False)
        pytest.skip(reason)
    env = dict(os.environ)
    # helm keeps its own state; keep it out of the user's home
    for var, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config")):
        env[var] = str(home / sub)
    env["HELM_DATA_HOME"] = str(home / "data")
    cmd = [cluster.helm_bin, "--kubeconfig", str(cluster.kubeconfig), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180, check=False)
    if check and done.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


@pytest.fixture
def release(
    cluster: Cluster, crds_installed: list[str], namespace: str, tmp_path: Path
) -> Iterator[Release]:
    name = f"md-{uuid.uuid4().hex[:6]}"
    done = _helm(
        cluster,
        tmp_path,
        "install",
        name,
        str(CHART),
        "--namespace",
        namespace,
        "--skip-crds",
        "--set",
        f"watchNamespaces={{{namespace}}}",
        "--set",
        "defaultPrometheusUrl=http://prometheus.monitoring:9090",
    )
    try:
        yield Release(name, namespace, f"{name}-modeldeploy", done.stdout)
    finally:
        # the ClusterRole and ClusterRoleBinding outlive the namespace otherwise
        _helm(cluster, tmp_path, "uninstall", name, "--namespace", namespace, check=False)


def _can(cluster: Cluster, release: Release, verb: str, resource: str, namespace: str) -> bool:
    subject = f"system:serviceaccount:{release.namespace}:{release.service_account}"
    done = cluster.kubectl(
        "auth", "can-i", verb, resource, "--namespace", namespace, "--as", subject, check=False
    )
    answer = done.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i: {done.stdout}{done.stderr}"
    return answer == "yes"


def test_install_creates_the_operator_and_its_identity(cluster, release):
    ns = release.namespace
    assert "modeldeploy operator" in release.notes
    assert "may read Secrets (get by name) in those namespaces" in release.notes
    cluster.kubectl("get", "serviceaccount", release.service_account, "-n", ns)
    cluster.kubectl("get", "role", release.service_account, "-n", ns)
    cluster.kubectl("get", "rolebinding", release.service_account, "-n", ns)
    cluster.kubectl("get", "role", f"{release.service_account}-leader-election", "-n", ns)
    cluster.kubectl("get", "clusterrole", f"{release.service_account}-cluster")
    # watching listed namespaces: no cluster-wide grant on the namespaced objects
    missing = cluster.kubectl("get", "clusterrole", release.service_account, check=False)
    assert missing.returncode != 0
    replicas = cluster.kubectl(
        "get", "deployment", release.service_account, "-n", ns, "-o", "jsonpath={.spec.replicas}"
    )
    assert replicas.stdout == "2"


def test_service_account_may_do_what_the_operator_does_and_no_more(cluster, release):
    ns = release.namespace
    allowed = [
        ("watch", "modeldeployments.modeldeploy.dev"),
        ("patch", "modeldeployments.modeldeploy.dev/status"),
        ("create", "deployments.apps"),
        ("delete", "deployments.apps"),
        ("patch", "services"),
        ("create", "httproutes.gateway.networking.k8s.io"),
        ("get", "secrets"),
        ("list", "pods"),
        ("create", "events"),
        ("create", "events.events.k8s.io"),
        ("create", "leases.coordination.k8s.io"),
        (
            "update",
            f"leases.coordination.k8s.io/{release.service_account}",
        ),
    ]
    for verb, resource in allowed:
        assert _can(cluster, release, verb, resource, ns), f"cannot {verb} {resource}"
    denied = [
        ("list", "secrets"),
        ("watch", "secrets"),
        ("delete", "modeldeployments.modeldeploy.dev"),
        ("create", "pods"),
        ("watch", "pods"),
        ("delete", "pods"),
        ("update", "leases.coordination.k8s.io/someone-elses-lease"),
    ]
    for verb, resource in denied:
        assert not _can(cluster, release, verb, resource, ns), f"may {verb} {resource}"
    # outside the watched namespace it may do nothing with models or their children
    assert not _can(cluster, release, "create", "deployments.apps", "default")
    assert not _can(cluster, release, "get", "secrets", "default")
    # kopf's cluster-wide reads
    assert _can(cluster, release, "watch", "namespaces", ns)
    assert _can(cluster, release, "list", "customresourcedefinitions.apiextensions.k8s.io", ns)


@pytest.mark.parametrize("secret_access", [True, False])
def test_cluster_wide_secret_access_is_announced_and_can_be_turned_off(
    cluster, crds_installed, namespace, tmp_path, secret_access
):
    name = f"md-{uuid.uuid4().hex[:6]}"
    install = ["install", name, str(CHART), "--namespace", namespace, "--skip-crds"]
    done = _helm(
        cluster, tmp_path, *install, "--set", f"secretAccess.enabled={str(secret_access).lower()}"
    )
    release = Release(name, namespace, f"{name}-modeldeploy", done.stdout)
    try:
        may_read = _can(cluster, release, "get", "secrets", "default")
        assert may_read is secret_access
        assert ("in EVERY namespace" in release.notes) is secret_access
        if not secret_access:
            assert "It reads no Secrets" in release.notes
    finally:
        _helm(cluster, tmp_path, "uninstall", name, "--namespace", namespace, check=False)
