"""`helm install` and `helm upgrade` of charts/modeldeploy into a real API server.

The chart is installed (`crds.install=false`: the `crds_installed` fixture applies the
CRD) into a fresh namespace that it also watches; the API server then answers, for the
operator's ServiceAccount, exactly what the operator may and may not do. The operator
image does not exist here, so the pods never run; that is not what these tests look at.

The CRD tests hand the cluster's CRD to Helm: a fresh install, an upgrade from chart
0.1.0 (taken from git) whose CRD was never upgraded, and a CRD applied with kubectl
before the chart; each puts the repository's CRD back, owned by no release, when done.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import CRDS_DIR, REPO_ROOT, Cluster
from tests.integration.operator_harness import model_deployment

pytestmark = pytest.mark.integration

CHART = REPO_ROOT / "charts" / "modeldeploy"
CRD_FILE = CRDS_DIR / "modeldeploy.dev_modeldeployments.yaml"


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
        "--set",
        "crds.install=false",
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
        ("patch", "grpcroutes.gateway.networking.k8s.io"),
        ("get", "secrets"),
        ("list", "pods"),
        ("create", "jobs.batch"),
        ("patch", "jobs.batch"),
        ("create", "horizontalpodautoscalers.autoscaling"),
        ("delete", "horizontalpodautoscalers.autoscaling"),
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
        ("delete", "jobs.batch"),
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
    install = ["install", name, str(CHART), "--namespace", namespace, "--set", "crds.install=false"]
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


# Chart 0.1.0 as first published, and as it was just before its CRD became a template.
FIRST_RELEASE = "71265aceba709531128695b213bf8720766b9e1a"
LAST_CRDS_DIRECTORY = "d2d47ac190cda3c00f2203f1c9a3f5d23a7f16c1"
CRD = "modeldeployments.modeldeploy.dev"
# Added to the API after the first 0.1.0, with a default: served once the CRD is upgraded.
NEW_FIELD = "drainDelay"


def chart_at(commit: str, into: Path) -> Path:
    """charts/modeldeploy as committed at `commit`, written under `into`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", commit, "charts/modeldeploy"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    if archive.returncode != 0:
        reason = f"git history without {commit} (a shallow clone? git fetch --unshallow)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}: {archive.stderr.decode()}", pytrace=False)
        pytest.skip(reason)
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "charts" / "modeldeploy"


def _crd(cluster: Cluster) -> dict[str, Any] | None:
    done = cluster.kubectl("get", "crd", CRD, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def _owner(cluster: Cluster) -> tuple[str | None, str | None, str | None]:
    """(release, its namespace, resource policy) Helm recorded on the live CRD."""
    crd = _crd(cluster)
    assert crd is not None, f"the CRD {CRD} is gone"
    annotations = crd["metadata"].get("annotations", {})
    return (
        annotations.get("meta.helm.sh/release-name"),
        annotations.get("meta.helm.sh/release-namespace"),
        annotations.get("helm.sh/resource-policy"),
    )


def _wait_served(cluster: Cluster) -> None:
    cluster.kubectl("wait", "--for", "condition=Established", "--timeout=60s", f"crd/{CRD}")
    deadline = time.monotonic() + 30
    while CRD not in cluster.kubectl("api-resources", "-o", "name", check=False).stdout.split():
        assert time.monotonic() < deadline, f"{CRD} is not served"
        time.sleep(0.5)


def _delete_crd(cluster: Cluster) -> None:
    """Delete the CRD and every ModelDeployment with it, waiting until it is gone."""
    cluster.kubectl("delete", "crd", CRD, "--ignore-not-found", "--wait=true", timeout=180)


def _drain_delay_served(cluster: Cluster, namespace: str, name: str) -> object:
    """spec.server.drainDelay of a ModelDeployment as the API server serves it now."""
    md = json.loads(cluster.kubectl("get", "md", name, "-n", namespace, "-o", "json").stdout)
    return md["spec"].get("server", {}).get(NEW_FIELD)


def _create_model(cluster: Cluster, namespace: str, name: str) -> None:
    """Retried: an API server takes a moment to serve a CRD it has just stored."""
    manifest = json.dumps(model_deployment(name))
    deadline = time.monotonic() + 30
    while True:
        done = cluster.kubectl("create", "-n", namespace, "-f", "-", input=manifest, check=False)
        if done.returncode == 0:
            return
        assert time.monotonic() < deadline, done.stderr
        time.sleep(0.5)


@pytest.fixture
def crd_for_helm(
    cluster: Cluster, crds_installed: list[str], namespace: str, tmp_path: Path
) -> Iterator[str]:
    """A release name, and no CRD in the cluster; afterwards no release of that name and
    the repository's CRD, owned by no release, again."""
    name = f"md-{uuid.uuid4().hex[:6]}"
    _delete_crd(cluster)
    try:
        yield name
    finally:
        # the ClusterRoles outlive the namespace otherwise
        _helm(cluster, tmp_path, "uninstall", name, "--namespace", namespace, check=False)
        _delete_crd(cluster)
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
        _wait_served(cluster)


def test_a_fresh_install_creates_the_crd_and_uninstall_keeps_it(
    cluster, crd_for_helm, namespace, tmp_path
):
    name = crd_for_helm
    _helm(cluster, tmp_path, "install", name, str(CHART), "--namespace", namespace)
    _wait_served(cluster)
    assert _owner(cluster) == (name, namespace, "keep")
    _create_model(cluster, namespace, "fresh")
    assert _drain_delay_served(cluster, namespace, "fresh") == "5s"

    _helm(cluster, tmp_path, "uninstall", name, "--namespace", namespace)
    # deleting the CRD would have deleted every ModelDeployment, and their pods
    assert _crd(cluster) is not None
    assert _drain_delay_served(cluster, namespace, "fresh") == "5s"
    # the kept CRD still names the release: installing it again takes it back
    again = _helm(cluster, tmp_path, "install", name, str(CHART), "--namespace", namespace)
    assert "The ModelDeployment CRD belongs to this release" in again.stdout
    assert _owner(cluster) == (name, namespace, "keep")


def test_upgrade_from_0_1_0_upgrades_the_crd_once_the_release_owns_it(
    cluster, crd_for_helm, namespace, tmp_path
):
    name = crd_for_helm
    release = ["--namespace", namespace, "--set", f"watchNamespaces={{{namespace}}}"]
    first = chart_at(FIRST_RELEASE, tmp_path / "first")
    last = chart_at(LAST_CRDS_DIRECTORY, tmp_path / "last")
    _helm(cluster, tmp_path, "install", name, str(first), *release)
    _wait_served(cluster)
    _create_model(cluster, namespace, "early")
    assert _drain_delay_served(cluster, namespace, "early") is None

    # the problem: crds/ is installed once, so 0.1.0's own upgrades left the first CRD
    _helm(cluster, tmp_path, "upgrade", name, str(last), *release)
    assert _drain_delay_served(cluster, namespace, "early") is None
    assert _owner(cluster) == (None, None, None)

    # the CRD came from crds/, without Helm's ownership: Helm says so and changes nothing
    refused = _helm(cluster, tmp_path, "upgrade", name, str(CHART), *release, check=False)
    assert refused.returncode != 0
    assert f'CustomResourceDefinition "{CRD}"' in refused.stderr
    assert "cannot be imported into the current release" in refused.stderr
    assert _owner(cluster) == (None, None, None)

    # adopted once (docs: charts/modeldeploy/README.md), then upgraded with every release
    _helm(cluster, tmp_path, "upgrade", name, str(CHART), *release, "--take-ownership")
    assert _owner(cluster) == (name, namespace, "keep")
    assert _drain_delay_served(cluster, namespace, "early") == "5s"
    _helm(cluster, tmp_path, "upgrade", name, str(CHART), *release)

    # a release that stops installing the CRD leaves it in place
    _helm(cluster, tmp_path, "upgrade", name, str(CHART), *release, "--set", "crds.install=false")
    assert _crd(cluster) is not None
    assert _drain_delay_served(cluster, namespace, "early") == "5s"


def test_a_crd_applied_with_kubectl_is_adopted_by_labelling_it(
    cluster, crd_for_helm, namespace, tmp_path
):
    first = chart_at(FIRST_RELEASE, tmp_path / "first")
    older_crd = first / "crds" / "modeldeploy.dev_modeldeployments.yaml"
    cluster.kubectl("apply", "--server-side", "-f", str(older_crd))
    _wait_served(cluster)
    _create_model(cluster, namespace, "early")
    name = crd_for_helm
    install = ["install", name, str(CHART), "--namespace", namespace]
    refused = _helm(cluster, tmp_path, *install, check=False)
    assert "cannot be imported into the current release" in refused.stderr

    # the commands of charts/modeldeploy/README.md, for any Helm 3
    cluster.kubectl("label", "crd", CRD, "app.kubernetes.io/managed-by=Helm", "--overwrite")
    cluster.kubectl(
        "annotate",
        "crd",
        CRD,
        f"meta.helm.sh/release-name={name}",
        f"meta.helm.sh/release-namespace={namespace}",
        "--overwrite",
    )
    _helm(cluster, tmp_path, *install)
    assert _owner(cluster) == (name, namespace, "keep")
    assert _drain_delay_served(cluster, namespace, "early") == "5s"
    _helm(cluster, tmp_path, "uninstall", name, "--namespace", namespace)
    assert _crd(cluster) is not None
