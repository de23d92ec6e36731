"""metrics-server in the node tier's cluster: the resource metrics API (``metrics.k8s.io``)
that HorizontalPodAutoscalers and ``kubectl top`` read.

The image is ``modeldeploy-metrics-server`` (``scripts/node-tier-images.sh``, from the module
version ``scripts/versions.env`` pins). It is registered with the API server's aggregation
layer by the APIService ``v1beta1.metrics.k8s.io`` and reads each kubelet's
``/metrics/resource`` with its ServiceAccount's token, which the kubelet checks with the API
server (webhook authentication and authorization: ``nodes/metrics``).

Where it runs and how it trusts the kubelet:

- **The local real node**: the kubelet listens on 127.0.0.1 only (``scripts/node/templates/
  kubelet.yaml``), which no pod network namespace reaches. So metrics-server runs in the
  host's network namespace and reaches the kubelet at the node's Hostname address
  (``localhost``); it serves on the node's own address (``NODE_IP``, on a device that exists
  only on this machine), where the API server's aggregation layer reaches it through its
  Service. The kubelet's serving certificate is self-signed; its certificate file (which
  holds the certificate and the CA that signed it) is given to metrics-server as
  ``--kubelet-certificate-authority``, so the connection is verified, not
  ``--kubelet-insecure-tls``.
- **Other clusters** (kind): the usual setup in the pod network, the kubelet at the node's
  InternalIP, with ``--kubelet-insecure-tls``: kind's kubelets serve self-signed
  certificates and no CA for them is at hand.

A cluster that already serves ``metrics.k8s.io`` from an APIService of its own keeps it:
nothing is installed, and that one is used.

The local cluster's API server has no request-header CA (kwokctl sets only its proxy client
certificate), so metrics-server authenticates the aggregation layer's requests by that
certificate (``kwok-admin``, ``system:masters``) rather than as the user who asked: fine
for a test cluster, not how a production cluster is set up.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.node.realnode import wait_for
from tests.node.tier import RESTRICTED, TierCluster, placed

NAME = "metrics-server"
PORT = 4443
API_SERVICE = "v1beta1.metrics.k8s.io"
PART_OF = "modeldeploy-node-tier"
CA_MOUNT = "/etc/kubelet-ca"
# Scrape every 10 s, the least metrics-server allows: an HPA sees load sooner.
RESOLUTION = "10s"
KUBELET_TIMEOUT = "5s"


def cluster_object_names(namespace: str) -> dict[str, str]:
    """Cluster-wide objects carry the namespace in their names: runs may share a cluster."""
    return {
        "role": f"{namespace}-metrics-server",
        "auth_delegator": f"{namespace}-metrics-server-auth-delegator",
        "auth_reader": f"{namespace}-metrics-server-auth-reader",
    }


def objects(namespace: str, image: str, kubelet_ca: str | None) -> list[dict[str, Any]]:
    """Every object of metrics-server in `namespace`; with `kubelet_ca` (the real node's
    kubelet certificate, PEM) in the host's network, else in the pod network."""
    labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": PART_OF}
    names = cluster_object_names(namespace)
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}]
    args = [
        "--cert-dir=/tmp",
        f"--secure-port={PORT}",
        "--kubelet-use-node-status-port",
        f"--metric-resolution={RESOLUTION}",
        # it must be shorter than the resolution (metrics-server refuses to start otherwise)
        f"--kubelet-request-timeout={KUBELET_TIMEOUT}",
    ]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    extra: list[dict[str, Any]] = []
    pod: dict[str, Any] = {}
    if kubelet_ca is not None:
        args += [
            "--bind-address=$(HOST_IP)",
            "--kubelet-preferred-address-types=Hostname",
            f"--kubelet-certificate-authority={CA_MOUNT}/kubelet.crt",
        ]
        volumes.append({"name": "kubelet-ca", "configMap": {"name": f"{NAME}-kubelet-ca"}})
        mounts.append({"name": "kubelet-ca", "mountPath": CA_MOUNT, "readOnly": True})
        extra.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"{NAME}-kubelet-ca", "labels": labels},
                "data": {"kubelet.crt": kubelet_ca},
            }
        )
        pod = {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}
    else:
        args += [
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
            "--kubelet-insecure-tls",
        ]
    container = {
        "name": NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "env": [{"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}],
        "ports": [{"name": "https", "containerPort": PORT}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "https", "scheme": "HTTPS"},
            "periodSeconds": 2,
        },
        "securityContext": {**RESTRICTED, "runAsNonRoot": True, "runAsUser": 65534},
        "volumeMounts": mounts,
    }
    pod_spec = placed(
        {
            **pod,
            "serviceAccountName": NAME,
            "containers": [container],
            "volumes": volumes,
            "terminationGracePeriodSeconds": 2,
        }
    )

    def binding(kind: str, name: str, role_kind: str, role: str, **meta: str) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": name, "labels": labels, **meta},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": subject,
        }

    return [
        *extra,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": names["role"], "labels": labels},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                {
                    "apiGroups": [""],
                    "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        binding("ClusterRoleBinding", names["role"], "ClusterRole", names["role"]),
        # to check the tokens and permissions of whoever asks it (delegated authn/authz)
        binding(
            "ClusterRoleBinding", names["auth_delegator"], "ClusterRole", "system:auth-delegator"
        ),
        # to read the API server's client CA (the configmap extension-apiserver-authentication)
        binding(
            "RoleBinding",
            names["auth_reader"],
            "Role",
            "extension-apiserver-authentication-reader",
            namespace="kube-system",
        ),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME, "labels": labels},
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
            "metadata": {"name": NAME, "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": "https", "port": 443, "targetPort": "https"}],
            },
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": API_SERVICE, "labels": labels},
            "spec": {
                "service": {"name": NAME, "namespace": namespace, "port": 443},
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                # its serving certificate is self-signed (--cert-dir); upstream does the same
                "insecureSkipTLSVerify": True,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


def available(api_service: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Available" and c.get("status") == "True"
        for c in api_service.get("status", {}).get("conditions", []) or []
    )


def ours(api_service: dict[str, Any]) -> bool:
    return api_service["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == PART_OF


_CPU = re.compile(r"^(\d+(?:\.\d+)?)(n|u|m|)$")


def millicores(quantity: str) -> float:
    """A CPU quantity of the metrics API (`12345678n`, `5m`, `1`) in millicores."""
    match = _CPU.match(quantity)
    if not match:
        raise ValueError(f"not a CPU quantity: {quantity!r}")
    scale = {"n": 1e-6, "u": 1e-3, "m": 1.0, "": 1000.0}[match.group(2)]
    return float(match.group(1)) * scale


@dataclass
class MetricsServer:
    tier: TierCluster
    namespace: str
    installed: bool  # False: the cluster's own metrics API is used

    def pod_cpu(self, namespace: str) -> dict[str, float]:
        """CPU use of each pod of `namespace` (millicores), from the metrics API."""
        done = self.tier.kubectl(
            "get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"
        )
        return {
            item["metadata"]["name"]: sum(
                millicores(c["usage"]["cpu"]) for c in item.get("containers", [])
            )
            for item in json.loads(done.stdout)["items"]
        }

    def node_names(self) -> list[str]:
        done = self.tier.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes")
        return [item["metadata"]["name"] for item in json.loads(done.stdout)["items"]]


def deploy(tier: TierCluster, namespace: str, kubelet_certificate: Path | None) -> MetricsServer:
    """metrics-server in `namespace`, or the cluster's own; returns once the metrics API
    reports the tier's node. `kubelet_certificate`: the real node's (local cluster only)."""
    existing = tier.get("apiservice", API_SERVICE)
    if existing is not None and not ours(existing):
        assert available(existing), (
            f"the cluster has an APIService {API_SERVICE} of its own that is not Available: "
            f"{existing.get('status')}"
        )
        return MetricsServer(tier, namespace, installed=False)
    ca = kubelet_certificate.read_text() if kubelet_certificate is not None else None
    found = objects(namespace, tier.images.metrics_server, ca)
    # the reader of the API server's client CA is bound in kube-system, everything else here
    elsewhere = [o for o in found if "namespace" in o["metadata"]]
    server = MetricsServer(tier, namespace, installed=True)
    try:
        tier.apply(*[o for o in found if o not in elsewhere], namespace=namespace)
        tier.apply(*elsewhere)
        tier.kubectl(
            "rollout",
            "status",
            f"deployment/{NAME}",
            "-n",
            namespace,
            "--timeout=120s",
            timeout=130,
        )
        wait_for(
            lambda: available(tier.get("apiservice", API_SERVICE) or {}),
            60,
            f"the APIService {API_SERVICE} to be Available",
        )
        node = tier.check_node()
        wait_for(lambda: node in server.node_names(), 60, f"metrics of node {node}", interval=1)
    except Exception as error:
        logs = tier.kubectl("logs", f"deployment/{NAME}", "-n", namespace, check=False)
        # A bad flag prints the error and then pages of usage, all indented: skip those.
        said = [line for line in logs.stdout.splitlines() if line and not line[0].isspace()]
        remove(tier, server)
        raise AssertionError(
            f"metrics-server did not serve ({error}); its log:\n"
            + "\n".join(said[-40:])
            + logs.stderr
        ) from error
    return server


def remove(tier: TierCluster, server: MetricsServer) -> None:
    """Its cluster-wide objects (the namespace's go with it). The APIService goes first: one
    whose Service is gone fails discovery, which holds up namespace deletion."""
    if not server.installed:
        return
    names = cluster_object_names(server.namespace)
    for args in (
        ("apiservice", API_SERVICE),
        ("clusterrolebinding", names["role"], names["auth_delegator"]),
        ("clusterrole", names["role"]),
        ("rolebinding", names["auth_reader"], "-n", "kube-system"),
    ):
        tier.kubectl("delete", *args, "--ignore-not-found", "--wait=false", check=False)
