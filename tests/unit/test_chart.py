"""The Helm chart in charts/modeldeploy: its CRD, its RBAC, the operator's Deployment and
the opt-in monitoring objects (dashboard ConfigMap, PrometheusRule, ServiceMonitor).

The rendering tests run the pinned helm binary (scripts/build-binaries.sh). Without it
they are skipped, or fail when CI=true, like the integration tests.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy import crdgen

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "modeldeploy"
CHART_CRD = CHART / "files" / "crds" / "modeldeploy.dev_modeldeployments.yaml"
REPO_CRD = REPO_ROOT / "crds" / "modeldeploy.dev_modeldeployments.yaml"
DASHBOARD = CHART / "files" / "dashboards" / "modeldeploy-rollouts.json"
RELEASE_NAMESPACE = "modeldeploy-system"

ALL_WRITE = {"get", "list", "watch", "create", "patch", "update", "delete"}
EVENT_VERBS = {"create", "patch"}


def test_chart_crd_is_what_make_crds_writes():
    assert CHART_CRD.read_text() == crdgen.render(chart=True), (
        "charts/modeldeploy/files/crds/ is stale: run `make crds` and commit"
    )


def test_chart_has_no_crds_directory():
    # Helm installs crds/ before the templates and never upgrades it; with the CRD also
    # in the templates, a fresh install would fail on the CRD it has just created.
    assert not (CHART / "crds").exists()


@cache
def _helm_bin() -> str | None:
    done = subprocess.run(
        [str(REPO_ROOT / "scripts" / "build-binaries.sh"), "--no-build"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return None
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        if key == "HELM_BIN":
            parts = shlex.split(value)
            if parts and Path(parts[0]).is_file():
                return parts[0]
    return None


@pytest.fixture(scope="module")
def helm() -> str:
    found = _helm_bin()
    if found is None:
        reason = "the pinned helm is not built (run scripts/build-binaries.sh)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true", pytrace=False)
        pytest.skip(reason)
    return found


def _run(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [helm, *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=60
    )
    if check and done.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


def _render(helm: str, *sets: str) -> list[dict[str, Any]]:
    args = ["template", "md", str(CHART), "--namespace", RELEASE_NAMESPACE]
    for value in sets:
        args += ["--set", value]
    docs = yaml.safe_load_all(_run(helm, *args).stdout)
    return [d for d in docs if isinstance(d, dict)]


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def _grants(role: dict[str, Any], *, named: bool = False) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs; rules limited by resourceNames only when `named`."""
    verbs: dict[tuple[str, str], set[str]] = defaultdict(set)
    for rule in role["rules"]:
        if rule.get("resourceNames") and not named:
            continue
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                verbs[(group, resource)] |= set(rule["verbs"])
    return verbs


def _args(deployment: dict[str, Any]) -> list[str]:
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def _namespaced_rules_hold(grants: dict[tuple[str, str], set[str]]) -> None:
    """The rules of the default values."""
    assert {"get", "list", "watch", "patch", "update"} <= grants[
        ("modeldeploy.dev", "modeldeployments")
    ]
    assert {"get", "patch", "update"} <= grants[("modeldeploy.dev", "modeldeployments/status")]
    assert grants[("apps", "deployments")] == ALL_WRITE
    assert grants[("", "services")] == ALL_WRITE
    assert grants[("gateway.networking.k8s.io", "httproutes")] == ALL_WRITE
    assert grants[("gateway.networking.k8s.io", "grpcroutes")] == ALL_WRITE
    assert grants[("", "pods")] == {"get", "list"}
    assert grants[("batch", "jobs")] == {"get", "create", "patch"}
    assert grants[("autoscaling", "horizontalpodautoscalers")] == {
        "get",
        "create",
        "patch",
        "delete",
    }
    assert grants[("", "events")] == EVENT_VERBS
    assert grants[("events.k8s.io", "events")] == EVENT_VERBS
    # Secrets are read by name (Prometheus token and CA, webhook URL), never listed; the
    # feedback key is created, never updated.
    assert grants[("", "secrets")] == {"get", "create"}
    # NAME-mirror (strategy.shadow) is applied and read back by name, never listed or deleted
    # (it goes with its ModelDeployment).
    assert grants[("", "configmaps")] == {"get", "create", "patch"}
    assert not any(
        verb in {"*", "escalate", "bind", "impersonate"} for v in grants.values() for verb in v
    )


def test_helm_lint_passes(helm):
    done = _run(helm, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in done.stdout


def test_cluster_wide_rbac_grants_what_the_operator_uses(helm):
    docs = _render(helm)
    assert not [
        d
        for d in docs
        if d["kind"] in ("Role", "RoleBinding") and d["metadata"]["namespace"] != RELEASE_NAMESPACE
    ]
    _namespaced_rules_hold(_grants(_one(docs, "ClusterRole", "md-modeldeploy")))
    cluster = _grants(_one(docs, "ClusterRole", "md-modeldeploy-cluster"))
    assert cluster == {
        ("", "namespaces"): {"list", "watch"},
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    }
    binding = _one(docs, "ClusterRoleBinding", "md-modeldeploy")
    assert binding["roleRef"]["name"] == "md-modeldeploy"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "md-modeldeploy", "namespace": RELEASE_NAMESPACE}
    ]
    assert _one(docs, "ServiceAccount")["metadata"]["name"] == "md-modeldeploy"


def test_leader_lease_is_granted_in_the_release_namespace_only(helm):
    docs = _render(helm)
    role = _one(docs, "Role", "md-modeldeploy-leader-election")
    assert role["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert _grants(role, named=True)[("coordination.k8s.io", "leases")] == {
        "get",
        "create",
        "update",
    }
    lease_name = _args(_one(docs, "Deployment"))
    assert lease_name[lease_name.index("--lease-name") + 1] == "md-modeldeploy"
    assert _one(docs, "RoleBinding", "md-modeldeploy-leader-election")["roleRef"]["name"] == (
        "md-modeldeploy-leader-election"
    )
    for rule in role["rules"]:
        if rule.get("resourceNames"):
            assert rule["resourceNames"] == ["md-modeldeploy"]


def test_deployment_is_hardened_probed_and_leader_elected(helm):
    deployment = _one(_render(helm), "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "md-modeldeploy"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}

    env = {
        e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        for e in container["env"]
    }
    assert env["POD_NAMESPACE"] == "metadata.namespace"  # where the Lease lives
    assert env["HOSTNAME"] == "metadata.name"  # each replica's Lease identity

    args = _args(deployment)
    assert "--no-leader-election" not in args
    assert "--namespace" not in args  # every namespace
    assert args[args.index("--metrics-port") + 1] == "8080"
    assert args[args.index("--health-port") + 1] == "8081"
    assert args[args.index("--log-format") + 1] == "json"


def test_no_service_link_variable_reaches_the_operator(helm):
    # Released as "modeldeploy" (the README's name), the metrics Service is
    # modeldeploy-metrics, whose Service link MODELDEPLOY_METRICS_PORT=tcp://... the
    # operator would read as its --metrics-port and exit.
    docs = yaml.safe_load_all(
        _run(helm, "template", "modeldeploy", str(CHART), "--namespace", RELEASE_NAMESPACE).stdout
    )
    deployment = _one([d for d in docs if isinstance(d, dict)], "Deployment")
    assert deployment["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_metrics_service_and_pdb_and_no_servicemonitor_by_default(helm):
    docs = _render(helm)
    service = _one(docs, "Service", "md-modeldeploy-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    deployment = _one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert _one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert not [d for d in docs if d["kind"] == "ServiceMonitor"]

    monitored = _render(helm, "serviceMonitor.enabled=true")
    endpoints = _one(monitored, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoints[0]["port"] == "metrics"
    # the ModelDeployment's namespace label of the operator's series survives the scrape
    assert endpoints[0]["honorLabels"] is True


def test_watch_namespaces_get_roles_instead_of_a_cluster_role(helm):
    docs = _render(helm, "watchNamespaces={a,b}")
    cluster_roles = {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"}
    # Only the cluster-scoped reads kopf needs remain cluster wide.
    assert cluster_roles == {"md-modeldeploy-cluster"}
    roles = {
        d["metadata"]["namespace"]: d
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"] == "md-modeldeploy"
    }
    assert set(roles) == {"a", "b"}
    for role in roles.values():
        _namespaced_rules_hold(_grants(role))
    bindings = {
        d["metadata"]["namespace"]: d
        for d in docs
        if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "md-modeldeploy"
    }
    assert set(bindings) == {"a", "b"}
    for binding in bindings.values():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "md-modeldeploy",
        }
        assert binding["subjects"][0]["namespace"] == RELEASE_NAMESPACE

    args = _args(_one(docs, "Deployment"))
    pairs = [args[i + 1] for i, arg in enumerate(args) if arg == "--namespace"]
    assert pairs == ["a", "b"]


def test_defaults_for_server_image_and_prometheus_reach_the_operator(helm):
    args = _args(_one(_render(helm), "Deployment"))
    assert "--default-image" not in args  # the operator's own default applies
    assert "--default-prometheus-url" not in args
    args = _args(
        _one(
            _render(
                helm,
                "defaultServerImage=registry.example/modelserver:1.2.3",
                "defaultPrometheusUrl=http://prometheus.monitoring:9090",
                "logFormat=plain",
            ),
            "Deployment",
        )
    )
    assert args[args.index("--default-image") + 1] == "registry.example/modelserver:1.2.3"
    assert args[args.index("--default-prometheus-url") + 1] == "http://prometheus.monitoring:9090"
    assert args[args.index("--log-format") + 1] == "plain"


def test_several_replicas_without_leader_election_are_refused(helm):
    args = ["template", "md", str(CHART), "--set", "leaderElection.enabled=false"]
    refused = _run(helm, *args, check=False)
    assert refused.returncode != 0
    assert "leaderElection" in refused.stderr

    single = _render(helm, "leaderElection.enabled=false", "replicas=1")
    assert "--no-leader-election" in _args(_one(single, "Deployment"))
    assert not [d for d in single if d["kind"] in ("PodDisruptionBudget", "Role")]


def test_secret_access_can_be_turned_off_and_then_no_role_grants_secrets(helm):
    for docs in (
        _render(helm, "secretAccess.enabled=false"),
        _render(helm, "secretAccess.enabled=false", "watchNamespaces={a,b}"),
    ):
        roles = [d for d in docs if d["kind"] in ("Role", "ClusterRole")]
        assert roles
        assert not any(resource == "secrets" for role in roles for (_, resource) in _grants(role))
        assert "--no-secret-access" in _args(_one(docs, "Deployment"))
    assert "--no-secret-access" not in _args(_one(_render(helm), "Deployment"))


def test_allowed_prometheus_urls_reach_the_operator_as_one_flag(helm):
    docs = _render(helm, "allowedPrometheusUrls={http://prom-a:9090,https://gw.example/prom}")
    args = _args(_one(docs, "Deployment"))
    assert args[args.index("--allowed-prometheus-urls") + 1] == (
        "http://prom-a:9090,https://gw.example/prom"
    )
    assert "--allowed-prometheus-urls" not in _args(_one(_render(helm), "Deployment"))


def test_crd_is_rendered_as_make_crds_writes_it_and_kept_on_uninstall(helm):
    crd = _one(_render(helm), "CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    repo_crd = yaml.safe_load(REPO_CRD.read_text())
    # the same object as crds/, for kubectl users, but for the annotation
    del crd["metadata"]["annotations"]
    assert crd == repo_crd
    assert not [
        d for d in _render(helm, "crds.install=false") if d["kind"] == "CustomResourceDefinition"
    ]


def test_dashboard_and_alerts_are_opt_in(helm):
    kinds = {d["kind"] for d in _render(helm)}
    assert "PrometheusRule" not in kinds
    assert "ConfigMap" not in kinds


def test_dashboard_configmap_carries_the_dashboard_for_the_grafana_sidecar(helm):
    configmap = _one(_render(helm, "grafanaDashboard.enabled=true"), "ConfigMap")
    assert configmap["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = configmap["data"].values()
    assert json.loads(text) == json.loads(DASHBOARD.read_text())

    moved = _one(
        _render(
            helm,
            "grafanaDashboard.enabled=true",
            "grafanaDashboard.namespace=monitoring",
            "grafanaDashboard.labels.grafana_dashboard=null",
            "grafanaDashboard.labels.dashboards=modeldeploy",
            "grafanaDashboard.annotations.grafana_folder=MLOps",
        ),
        "ConfigMap",
    )
    assert moved["metadata"]["namespace"] == "monitoring"
    assert moved["metadata"]["labels"]["dashboards"] == "modeldeploy"
    assert "grafana_dashboard" not in moved["metadata"]["labels"]
    assert moved["metadata"]["annotations"] == {"grafana_folder": "MLOps"}


def test_prometheus_rule_goes_where_prometheus_looks(helm):
    rule = _one(
        _render(
            helm,
            "prometheusRule.enabled=true",
            "prometheusRule.namespace=monitoring",
            "prometheusRule.labels.release=kube-prometheus-stack",
        ),
        "PrometheusRule",
    )
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("logFormat=yaml", "at '/logFormat': value must be one of 'json', 'plain'"),
        ("replicas=two", "at '/replicas': got string, want integer"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy': value must be one of"),
        ("image.digest=sha256:abc", "at '/image/digest'"),
        ("watchNamespaces={Team_A}", "at '/watchNamespaces/0'"),
        ("metrics.port=0", "at '/metrics/port': minimum: got 0, want 1"),
        ("podLabels.tier=1", "at '/podLabels/tier': got number, want string"),
        ("crds.install=maybe", "at '/crds/install': got string, want boolean"),
        ("serviceMonitor.interval=30 seconds", "at '/serviceMonitor/interval'"),
        ("prometheusRule.servingErrorRate=5", "at '/prometheusRule/servingErrorRate'"),
        ("allowedPrometheusUrls={prometheus:9090}", "at '/allowedPrometheusUrls/0'"),
        # a misspelt key would otherwise be ignored without a word
        ("imagePullPolicy=Always", "additional properties 'imagePullPolicy' not allowed"),
        ("grafanaDashboard.enable=true", "additional properties 'enable' not allowed"),
    ],
)
def test_bad_values_are_refused_naming_the_key(helm, value, message):
    done = _run(helm, "template", "md", str(CHART), "--set", value, check=False)
    assert done.returncode != 0, f"--set {value} was accepted"
    assert "values don't meet the specifications of the schema" in done.stderr
    assert message in done.stderr


def test_the_documented_values_pass_the_schema(helm):
    _render(
        helm,
        "watchNamespaces={team-a,team-b}",
        "allowedPrometheusUrls={http://prometheus.monitoring:9090}",
        "secretAccess.enabled=false",
        "image.tag=2",  # --set makes it a number
        "prometheusRule.enabled=true",
        "prometheusRule.servingErrorRate=0.05",  # --set makes it a string
        "podDisruptionBudget.minAvailable=50%",
    )
    # every top-level value of values.yaml is in the schema, and no more
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(schema["properties"]) - {"global"} == set(defaults)
