"""A real Prometheus inside the cluster, finding what to scrape as a user's Prometheus does.

Kubernetes service discovery (role ``pod``) with the usual ``kubernetes-pods`` relabelling:
a pod is scraped when it is annotated ``prometheus.io/scrape: "true"`` (at
``prometheus.io/port`` and ``prometheus.io/path``), and its series get ``namespace`` and
``pod`` labels, plus its own labels. That is what the operator's default queries select
on (``namespace``, and the server's ``modeldeployment`` and ``track``), and how the
operator's pods are scraped too (the chart's ``podAnnotations``). A ServiceAccount with a
ClusterRole to list and watch pods is all it may do. Scrapes every second.

The image is ``modeldeploy-prometheus`` (``scripts/node-tier-images.sh``); tests query it
through the API server's Service proxy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml
from tests.node.realnode import wait_for
from tests.node.tier import RESTRICTED, TierCluster, placed

PORT = 9090
SCRAPE_INTERVAL = "1s"


def config() -> dict[str, Any]:
    def keep_annotated(annotation: str) -> str:
        return f"__meta_kubernetes_pod_annotation_{annotation}"

    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": "5s",
        },
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "kubernetes_sd_configs": [{"role": "pod"}],
                "relabel_configs": [
                    {
                        "source_labels": [keep_annotated("prometheus_io_scrape")],
                        "regex": "true",
                        "action": "keep",
                    },
                    # pods that ended keep their address for a while; nothing answers there
                    {
                        "source_labels": ["__meta_kubernetes_pod_phase"],
                        "regex": "Succeeded|Failed",
                        "action": "drop",
                    },
                    {
                        "source_labels": [keep_annotated("prometheus_io_path")],
                        "regex": "(.+)",
                        "target_label": "__metrics_path__",
                    },
                    {
                        "source_labels": ["__address__", keep_annotated("prometheus_io_port")],
                        "regex": r"([^:]+)(?::\d+)?;(\d+)",
                        "replacement": "$1:$2",
                        "target_label": "__address__",
                    },
                    {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                ],
            }
        ],
    }


def objects(namespace: str, image: str) -> list[dict[str, Any]]:
    name = "prometheus"
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "modeldeploy-node-tier"}
    # cluster-wide objects carry the namespace in their names: several runs may share a cluster
    cluster_name = f"{namespace}-prometheus"
    container = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            "--storage.tsdb.retention.time=3h",
            f"--web.listen-address=:{PORT}",
        ],
        "ports": [{"name": "http", "containerPort": PORT}],
        "readinessProbe": {"httpGet": {"path": "/-/ready", "port": "http"}, "periodSeconds": 1},
        "securityContext": {**RESTRICTED, "runAsNonRoot": True, "runAsUser": 65534},
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/prometheus", "readOnly": True},
            {"name": "data", "mountPath": "/prometheus"},
        ],
    }
    pod_spec = placed(
        {
            "serviceAccountName": name,
            "containers": [container],
            "volumes": [
                {"name": "config", "configMap": {"name": name}},
                {"name": "data", "emptyDir": {}},
            ],
            "terminationGracePeriodSeconds": 5,
        }
    )
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": cluster_name, "labels": labels},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": cluster_name, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"prometheus.yml": yaml.safe_dump(config(), sort_keys=False)},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod_spec},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": labels},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": PORT}]},
        },
    ]


@dataclass
class InClusterPrometheus:
    tier: TierCluster
    namespace: str

    @property
    def url(self) -> str:
        """Its address for pods (the operator's analyses)."""
        return f"http://prometheus.{self.namespace}.svc.cluster.local:{PORT}"

    def _get(self, path: str, params: list[tuple[str, str]] | None = None) -> Any:
        body = self.tier.proxy("services", self.namespace, "prometheus", PORT, path, params)
        return json.loads(body)

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """The result of an instant query (now, or at the unix time `at`)."""
        params = [("query", promql)]
        if at is not None:
            params.append(("time", f"{at:.3f}"))
        reply = self._get("api/v1/query", params)
        if reply.get("status") != "success":
            raise AssertionError(f"Prometheus refused {promql}: {reply}")
        result: list[dict[str, Any]] = reply["data"]["result"]
        return result

    def value(self, promql: str, at: float | None = None) -> float | None:
        """The query's single number, None when it has no series."""
        result = self.query(promql, at)
        if not result:
            return None
        assert len(result) == 1, f"{promql} returned {len(result)} series"
        return float(result[0]["value"][1])

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._get("api/v1/targets")["data"]["activeTargets"]
        return active

    def scraped(self, namespace: str) -> list[dict[str, Any]]:
        """The healthy targets of pods of `namespace`."""
        return [
            t
            for t in self.targets()
            if t["labels"].get("namespace") == namespace and t.get("health") == "up"
        ]


def deploy(tier: TierCluster, namespace: str) -> InClusterPrometheus:
    tier.apply(*objects(namespace, tier.images.prometheus), namespace=namespace)
    tier.kubectl(
        "rollout", "status", "deployment/prometheus", "-n", namespace, "--timeout=120s", timeout=130
    )
    prometheus = InClusterPrometheus(tier, namespace)
    wait_for(
        lambda: prometheus._get("api/v1/status/buildinfo").get("status") == "success",
        60,
        "Prometheus to answer through the API server's proxy",
    )
    return prometheus


def remove_cluster_objects(tier: TierCluster, namespace: str) -> None:
    name = f"{namespace}-prometheus"
    tier.kubectl(
        "delete",
        "clusterrolebinding,clusterrole",
        name,
        "--ignore-not-found",
        "--wait=false",
        check=False,
    )
