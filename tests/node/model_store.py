"""The sample models inside the cluster, delivered the two ways users deliver them.

One directory on the tier's node (a hostPath) holds the models of `make models`. A file
server pod (``loadgen serve-files``) mounts it and serves it at
``http://models.<namespace>.svc.cluster.local/<file>``: the ``http://`` URIs with their
sha256. The same directory is a PersistentVolume for ``pvc://<claim>/<file>``, one
pre-bound read-only volume and claim per namespace that asks (the servers run as 65532 on
a read-only root; the files are world-readable).

The files reach the node from this host through ``kubectl exec -i`` (``loadgen receive``),
so this works on any cluster kubectl reaches. The file server runs as root: only root may
write into a directory the kubelet creates for a hostPath.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.harness.models import MODELS
from tests.node.tier import RESTRICTED, TierCluster, placed

PORT = 8000
MOUNT = "/models"
CLAIM = "models"
# what the scenarios use: the good model, one that rejects the stable's inputs, a slow one
FILES = ("xgb-classifier.ubj", "xgb-classifier-bad-features.ubj", "xgb-classifier-slow.ubj")


def sha256_of(name: str) -> str:
    path = MODELS / f"{name}.sha256"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make models`")
    return path.read_text().split()[0]


@dataclass
class ModelStore:
    tier: TierCluster
    namespace: str

    def http(self, name: str) -> dict[str, str]:
        """`uri` and `sha256` of a stored model, downloaded from the file server."""
        return {
            "uri": f"http://models.{self.namespace}.svc.cluster.local/{name}",
            "sha256": sha256_of(name),
        }

    def pvc(self, name: str) -> dict[str, str]:
        """`uri` and `sha256` of a stored model on the claim `claim(namespace)` makes."""
        return {"uri": f"pvc://{CLAIM}/{name}", "sha256": sha256_of(name)}

    def volume_name(self, namespace: str) -> str:
        return f"{namespace}-models"

    def claim(self, namespace: str) -> None:
        """The claim `models` in `namespace`, bound to a volume of the store's directory."""
        volume = self.volume_name(namespace)
        self.tier.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": volume,
                    "labels": {"app.kubernetes.io/part-of": "modeldeploy-node-tier"},
                },
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadOnlyMany"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "",
                    "hostPath": {"path": self.tier.store_path, "type": "Directory"},
                    "claimRef": {"namespace": namespace, "name": CLAIM},
                },
            }
        )
        self.tier.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": CLAIM},
                "spec": {
                    "accessModes": ["ReadOnlyMany"],
                    "storageClassName": "",
                    "volumeName": volume,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
            namespace=namespace,
        )

    def release(self, namespace: str) -> None:
        self.tier.kubectl(
            "delete",
            "pv",
            self.volume_name(namespace),
            "--ignore-not-found",
            "--wait=false",
            check=False,
        )


def objects(tier: TierCluster) -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": "models"}
    container = {
        "name": "files",
        "image": tier.images.loadgen,
        "imagePullPolicy": "IfNotPresent",
        "args": ["serve-files", "-dir", MOUNT, "-listen", f":{PORT}"],
        "ports": [{"name": "http", "containerPort": PORT}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
        "securityContext": {**RESTRICTED, "runAsUser": 0},
        "volumeMounts": [{"name": "store", "mountPath": MOUNT}],
    }
    spec = placed(
        {
            "containers": [container],
            "volumes": [
                {
                    "name": "store",
                    "hostPath": {"path": tier.store_path, "type": "DirectoryOrCreate"},
                }
            ],
            "terminationGracePeriodSeconds": 2,
        }
    )
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "models", "labels": labels},
            "spec": spec,
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "models", "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
    ]


def upload(tier: TierCluster, namespace: str, path: Path) -> None:
    """Copy a file into the store through the file server pod; checks its digest."""
    command = [
        tier.cluster.kubectl_bin,
        "--kubeconfig",
        str(tier.cluster.kubeconfig),
        "exec",
        "-i",
        "-n",
        namespace,
        "models",
        "--",
        "/loadgen",
        "receive",
        f"{MOUNT}/{path.name}",
    ]
    with path.open("rb") as source:
        done = subprocess.run(command, stdin=source, capture_output=True, check=False, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"copying {path.name} into the store failed: {done.stderr.decode()}")
    size, digest = done.stdout.decode().split()
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (int(size), digest) == (path.stat().st_size, expected), done.stdout


def deploy(tier: TierCluster, namespace: str) -> ModelStore:
    tier.apply(*objects(tier), namespace=namespace)
    tier.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/models", "--timeout=120s")
    for name in FILES:
        upload(tier, namespace, MODELS / name)
    return ModelStore(tier, namespace)
