"""Load from inside the cluster: a `loadgen run` pod posting to a model's Service.

Each request goes on a new connection, so kube-proxy balances every one of them over the
ready pods of both tracks, as it balances the connections of many clients. The pod keeps
every request's outcome and serves them (``/results``), read here through the API
server's proxy. It stops sending by itself after ``duration`` and exits ``linger`` later.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tests.e2e.harness.models import MODEL_NAME, single_row_request
from tests.node.realnode import wait_for
from tests.node.tier import RESTRICTED, TierCluster, placed

PORT = 8080


@dataclass(frozen=True)
class Outcome:
    at: float  # unix time the request started
    seconds: float
    status: int  # 0: no answer
    error: str  # "" (answered), "connect" (no connection), "request" (failed mid-request)
    version: str  # model_version of an answer that was served
    variant: str = ""  # the experiment arm its x-model-variant header named (none outside)


@dataclass
class LoadPod:
    tier: TierCluster
    namespace: str
    name: str = "load"

    def results(self, with_requests: bool = True) -> dict[str, Any]:
        body = self.tier.proxy(
            "pods",
            self.namespace,
            self.name,
            PORT,
            "results",
            [] if with_requests else [("requests", "0")],
            timeout=30,
        )
        found: dict[str, Any] = json.loads(body)
        return found

    def outcomes(self) -> list[Outcome]:
        return [
            Outcome(
                at=r["at"],
                seconds=r.get("seconds", 0.0),
                status=r.get("status", 0),
                error=r.get("error", ""),
                version=r.get("version", ""),
                variant=r.get("variant", ""),
            )
            for r in self.results()["requests"] or []
        ]

    def stop(self) -> None:
        self.tier.proxy("pods", self.namespace, self.name, PORT, "stop", method="POST")

    def delete(self) -> None:
        self.tier.kubectl(
            "delete",
            "pod",
            self.name,
            "-n",
            self.namespace,
            "--wait=false",
            "--ignore-not-found",
            check=False,
        )


ROWS_MOUNT = "/rows"


def rows_config_map(name: str, rows: Sequence[tuple[Any, Any]]) -> dict[str, Any]:
    """The bodies (and labels, None for none) a load pod sends in turn, one JSON line each."""
    lines = [
        json.dumps({"body": body, **({} if label is None else {"label": label})})
        for body, label in rows
    ]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"rows.jsonl": "\n".join(lines) + "\n"},
    }


def start(
    tier: TierCluster,
    namespace: str,
    service: str,
    rate: float = 20,
    duration: float = 600,
    name: str = "load",
    rows: Sequence[tuple[Any, Any]] | None = None,
    feedback: bool = False,
    conversions: Mapping[str, float] | None = None,
    seed: int = 1,
) -> LoadPod:
    """Load on the Service `service` (a ModelDeployment's name) of `namespace`: the sample
    row, or `rows` (bodies and labels) in turn; with `feedback` each answered row's label
    goes back with its prediction token. With `conversions` (probability by experiment
    arm) each answer is a visit that converts with its arm's probability, drawn with
    `seed`; Prometheus scrapes loadgen_visits_total and loadgen_orders_total by variant."""
    base = f"http://{service}.{namespace}.svc.cluster.local/v2/models/{MODEL_NAME}"
    url = f"{base}/infer"
    linger = 900
    what = ["-body", single_row_request().decode()]
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if rows is not None:
        tier.apply(rows_config_map(f"{name}-rows", rows), namespace=namespace)
        what = ["-rows", f"{ROWS_MOUNT}/rows.jsonl"]
        volumes = [{"name": "rows", "configMap": {"name": f"{name}-rows"}}]
        mounts = [{"name": "rows", "mountPath": ROWS_MOUNT, "readOnly": True}]
    if feedback:
        what += ["-feedback-url", f"{base}/feedback"]
    annotations: dict[str, str] = {}
    if conversions:
        pairs = ",".join(f"{arm}={p:g}" for arm, p in conversions.items())
        what += ["-conversions", pairs, "-seed", str(seed)]
        annotations = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(PORT),
            "prometheus.io/path": "/metrics",
        }
    container = {
        "name": "loadgen",
        "image": tier.images.loadgen,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "run",
            "-url",
            url,
            *what,
            "-rate",
            f"{rate:g}",
            "-duration",
            f"{duration:.0f}s",
            "-linger",
            f"{linger}s",
        ],
        "ports": [{"name": "http", "containerPort": PORT}],
        "volumeMounts": mounts,
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
        "securityContext": {**RESTRICTED, "runAsNonRoot": True},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": "loadgen"},
            "annotations": annotations,
        },
        "spec": placed(
            {
                "containers": [container],
                "volumes": volumes,
                "restartPolicy": "Never",
                # a bound on its life whatever happens to the test
                "activeDeadlineSeconds": int(duration + linger + 60),
                "terminationGracePeriodSeconds": 2,
            }
        ),
    }
    tier.apply(pod, namespace=namespace)
    tier.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"pod/{name}", "--timeout=60s")
    load = LoadPod(tier, namespace, name)
    wait_for(lambda: load.results(False).get("started"), 30, "the load to start")
    return load


def failed(outcomes: list[Outcome], allowed_status: frozenset[int] = frozenset()) -> list[Outcome]:
    """The requests that failed from the client's side: no answer, or an answer other than
    200 and the statuses allowed (the 422s of a canary that rejects the inputs, say)."""
    return [o for o in outcomes if o.status != 200 and o.status not in allowed_status]
