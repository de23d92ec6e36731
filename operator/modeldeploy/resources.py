"""Pure builders of the objects a ModelDeployment owns.

Names, for a ModelDeployment `NAME`:
- Deployment `NAME-stable` and, during a canary, Deployment `NAME-canary`;
- Service `NAME`: what clients call; selects the serving pods of both tracks, so with the
  replicas router the canary's share of ready pods is its share of traffic;
- Services `NAME-stable` and `NAME-canary`: one track each (Gateway API backends, debugging);
- HTTPRoute and GRPCRoute `NAME` with the gatewayAPI router.
Each Service has the port `http` (80, REST) and `grpc` (8081, the V2 protocol over gRPC).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from modeldeploy.api import (
    API_VERSION,
    CONTROL,
    KIND,
    AddedLater,
    AutoscalingSpec,
    ModelDeploymentSpec,
    ServerSpec,
    TrackTemplate,
    duration_seconds,
)

SERVER_PORT = 8080
GRPC_PORT = 8081
CACHE_DIR = "/var/cache/modelserver"
PVC_MOUNT = "/mnt/models"
PROFILE_PVC_MOUNT = "/mnt/profile"
FEEDBACK_KEY_MOUNT = "/var/run/modeldeploy/feedback"
MIRROR_MOUNT = "/etc/modelserver/mirror"
MIRROR_ITEM = "mirror.json"
FEEDBACK_KEY_ITEM = "key"
SERVER_USER = 65532
FIELD_MANAGER = "modeldeploy"
HASH_ANNOTATION = "modeldeploy.dev/applied-hash"
MD_LABEL = "modeldeploy.dev/modeldeployment"
TRACK_LABEL = "modeldeploy.dev/track"
REVISION_LABEL = "modeldeploy.dev/revision"
MANAGED_BY = "modeldeploy"
STARTUP_PERIOD_SECONDS = 5
# The server's own default for MODELSERVER_GRACEFUL_TIMEOUT_SECONDS: how long it lets
# in-flight requests finish after SIGTERM.
SERVER_GRACEFUL_TIMEOUT_SECONDS = 25.0
GRACEFUL_TIMEOUT_ENV = "MODELSERVER_GRACEFUL_TIMEOUT_SECONDS"
# Time left after the drain for the process to exit before the kubelet kills it.
TERMINATION_MARGIN_SECONDS = 5


def revision_of(template: TrackTemplate) -> str:
    """A stable hash of what shapes the pods; replicas and rollout settings are not in it."""
    canonical = json.dumps(_hashed_form(template), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def _hashed_form(model: BaseModel) -> dict[str, Any]:
    """The model's JSON, less the fields added later that still hold their default."""
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True)
    _drop_defaulted_additions(model, dumped)
    return dumped


def _drop_defaulted_additions(model: BaseModel, dumped: dict[str, Any]) -> None:
    for name, info in type(model).model_fields.items():
        key = info.alias or name
        value = getattr(model, name)
        added_later = any(isinstance(marker, AddedLater) for marker in info.metadata)
        if added_later and value == info.get_default(call_default_factory=True):
            del dumped[key]
        elif isinstance(value, BaseModel):
            _drop_defaulted_additions(value, dumped[key])
        elif isinstance(value, list):
            for item, item_dump in zip(value, dumped[key], strict=True):
                if isinstance(item, BaseModel):
                    _drop_defaulted_additions(item, item_dump)


def template_of(spec: ModelDeploymentSpec, default_image: str) -> TrackTemplate:
    server = spec.server.model_copy(update={"image": spec.server.image or default_image})
    return TrackTemplate(model=spec.model, server=server)


def deployment_name(name: str, track: str) -> str:
    return f"{name}-{track}"


VARIANT_TRACK_PREFIX = "v-"


def variant_track(variant: str) -> str:
    """An experiment variant's track: its Deployment and Service are NAME-v-VARIANT."""
    return f"{VARIANT_TRACK_PREFIX}{variant}"


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selector_labels(name: str) -> dict[str, str]:
    return {MD_LABEL: name, "app.kubernetes.io/component": "model-server"}


def track_selector(name: str, track: str) -> dict[str, str]:
    return {**selector_labels(name), TRACK_LABEL: track}


def common_labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelserver",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "modeldeploy",
        MD_LABEL: name,
    }


def track_labels(name: str, track: str, revision: str, version: str) -> dict[str, str]:
    return {
        **common_labels(name),
        "app.kubernetes.io/version": _label_value(version),
        TRACK_LABEL: track,
        REVISION_LABEL: revision,
    }


def _label_value(value: str) -> str:
    """Label values allow 63 of [A-Za-z0-9_.-], starting and ending alphanumeric."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in value)[:63]
    return cleaned.strip("-_.") or "unknown"


def _metadata(
    name: str, namespace: str, labels: dict[str, str], owner: dict[str, Any]
) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels, "ownerReferences": [owner]}


def with_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    """Stamp the manifest with a hash of itself, so an unchanged child is not re-applied."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    annotations = manifest["metadata"].setdefault("annotations", {})
    annotations[HASH_ANNOTATION] = digest
    return manifest


def model_location(
    uri: str, volume: str = "model", mount: str = PVC_MOUNT
) -> tuple[str, dict[str, Any] | None]:
    """The URI the server is given and, for pvc://claim/path, the volume to mount."""
    if not uri.startswith("pvc://"):
        return uri, None
    # Split by hand: a path is a path, `#` and `?` in a file name are not URL syntax here.
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    claimed = {
        "name": volume,
        "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
    }
    return f"{mount}/{path}", claimed


def collects_feedback(spec: ModelDeploymentSpec) -> bool:
    """Whether ground truth is judged (analysis or monitoring quality), so pods must sign
    prediction tokens that feedback can be matched with."""
    monitoring = spec.monitoring
    return spec.analysis.quality is not None or (
        monitoring is not None and monitoring.quality is not None
    )


def mirror_config_map_name(name: str) -> str:
    """`NAME-mirror`: where NAME's stable pods learn whether and where to copy requests."""
    return f"{name}-mirror"


def mirror_config_map(
    name: str, namespace: str, uid: str, percent: float | None, model: str | None = None
) -> dict[str, Any]:
    """The mirror target the pods re-read at run time: the canary track's Service while a
    shadow runs (`percent` of live requests, to the name `model` the shadow serves),
    nothing otherwise."""
    target: dict[str, Any] = {}
    if percent is not None:
        url = f"http://{name}-canary.{namespace}.svc:80"
        target = {"url": url, "percent": percent}
        if model is not None:
            target["model"] = model
    return with_hash(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(
                mirror_config_map_name(name),
                namespace,
                common_labels(name),
                owner_reference(name, uid),
            ),
            "data": {MIRROR_ITEM: json.dumps(target, sort_keys=True)},
        }
    )


def feedback_key_secret_name(name: str) -> str:
    """`NAME-feedback`: the key that signs the prediction tokens of NAME's pods."""
    return f"{name}-feedback"


def feedback_key_secret(name: str, namespace: str, uid: str, key: str) -> dict[str, Any]:
    """The signing key's Secret; created once and never rewritten, because a new key
    would turn every token clients still hold into a 403."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(
            feedback_key_secret_name(name),
            namespace,
            common_labels(name),
            owner_reference(name, uid),
        ),
        "stringData": {FEEDBACK_KEY_ITEM: key},
    }


def server_env(
    name: str,
    track: str,
    template: TrackTemplate,
    model_uri: str,
    profile_uri: str | None = None,
    feedback: bool = False,
    mirror: bool = False,
    variant: str | None = None,
) -> list[dict[str, Any]]:
    model = template.model
    env: list[dict[str, Any]] = [
        {"name": "MODELSERVER_MODEL_URI", "value": model_uri},
        {"name": "MODELSERVER_MODEL_FORMAT", "value": str(model.format)},
        {"name": "MODELSERVER_MODEL_NAME", "value": model.name},
        {"name": "MODELSERVER_MODEL_VERSION", "value": model.version},
        {"name": "MODELSERVER_TRACK", "value": track},
        {"name": "MODELSERVER_DEPLOYMENT", "value": name},
        {
            "name": "MODELSERVER_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        {"name": "MODELSERVER_PORT", "value": str(SERVER_PORT)},
        {"name": "MODELSERVER_GRPC_PORT", "value": str(GRPC_PORT)},
        {"name": "MODELSERVER_CACHE_DIR", "value": CACHE_DIR},
    ]
    if model.sha256:
        env.append({"name": "MODELSERVER_MODEL_SHA256", "value": model.sha256.lower()})
    if model.allow_unpinned:
        env.append({"name": "MODELSERVER_ALLOW_UNPINNED", "value": "true"})
    if model.allow_unsafe_format:
        env.append({"name": "MODELSERVER_ALLOW_UNSAFE_FORMATS", "value": "true"})
    if template.server.workers is not None:
        env.append({"name": "MODELSERVER_WORKERS", "value": str(template.server.workers)})
    if model.profile is not None and profile_uri is not None:
        env.append({"name": "MODELSERVER_PROFILE_URI", "value": profile_uri})
        if model.profile.sha256:
            env.append(
                {"name": "MODELSERVER_PROFILE_SHA256", "value": model.profile.sha256.lower()}
            )
    if feedback:
        key_file = f"{FEEDBACK_KEY_MOUNT}/{FEEDBACK_KEY_ITEM}"
        env.append({"name": "MODELSERVER_FEEDBACK_KEY_FILE", "value": key_file})
    if mirror:
        mirror_file = f"{MIRROR_MOUNT}/{MIRROR_ITEM}"
        env.append({"name": "MODELSERVER_MIRROR_CONFIG_FILE", "value": mirror_file})
    if variant is not None:
        env.append({"name": "MODELSERVER_VARIANT", "value": variant})
    # api.ServerSpec refuses user entries that repeat a name or reuse one of these.
    return env + [
        extra.model_dump(by_alias=True, exclude_none=True) for extra in template.server.env
    ]


def termination_grace_seconds(server: ServerSpec) -> int:
    """Drain delay, then the server's graceful shutdown, then a margin to exit."""
    graceful = SERVER_GRACEFUL_TIMEOUT_SECONDS
    for variable in server.env:
        if variable.name == GRACEFUL_TIMEOUT_ENV and variable.value is not None:
            # A value the server cannot read makes it refuse to start, saying why.
            with contextlib.suppress(ValueError):
                graceful = max(float(variable.value), 0.0)
    drain = duration_seconds(server.drain_delay)
    return math.ceil(drain + graceful) + TERMINATION_MARGIN_SECONDS


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _resources(server: ServerSpec) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if server.resources.requests:
        resources["requests"] = dict(server.resources.requests)
    if server.resources.limits:
        resources["limits"] = dict(server.resources.limits)
    return resources


def pod_template(
    name: str,
    track: str,
    revision: str,
    template: TrackTemplate,
    feedback: bool = False,
    mirror: bool = False,
    variant: str | None = None,
) -> dict[str, Any]:
    """A track's pods; with `feedback` they sign prediction tokens with NAME-feedback's key,
    with `mirror` they copy requests to the target NAME-mirror names (a shadow), with
    `variant` they name the experiment arm they serve in metrics and answers."""
    server = template.server
    model_uri, model_volume = model_location(template.model.uri)
    profile = template.model.profile
    profile_uri, profile_volume = (
        model_location(profile.uri, "profile", PROFILE_PVC_MOUNT)
        if profile is not None
        else (None, None)
    )
    startup_failures = max(
        1, math.ceil(duration_seconds(server.startup_timeout) / STARTUP_PERIOD_SECONDS)
    )
    mounts: list[dict[str, Any]] = [
        {"name": "cache", "mountPath": CACHE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "cache", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if model_volume is not None:
        mounts.append({"name": "model", "mountPath": PVC_MOUNT, "readOnly": True})
        volumes.append(model_volume)
    if profile_volume is not None:
        mounts.append({"name": "profile", "mountPath": PROFILE_PVC_MOUNT, "readOnly": True})
        volumes.append(profile_volume)
    if feedback:
        mounts.append({"name": "feedback-key", "mountPath": FEEDBACK_KEY_MOUNT, "readOnly": True})
        volumes.append(
            {
                "name": "feedback-key",
                "secret": {"secretName": feedback_key_secret_name(name), "defaultMode": 0o440},
            }
        )
    if mirror:
        mounts.append({"name": "mirror", "mountPath": MIRROR_MOUNT, "readOnly": True})
        # optional: pods start before the operator's first write of NAME-mirror.
        config = {"name": mirror_config_map_name(name), "optional": True}
        volumes.append({"name": "mirror", "configMap": config})
    container: dict[str, Any] = {
        "name": "modelserver",
        "image": server.image,
        "ports": [
            {"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "env": server_env(name, track, template, model_uri, profile_uri, feedback, mirror, variant),
        "startupProbe": _probe("/v2/health/ready", STARTUP_PERIOD_SECONDS, startup_failures),
        "readinessProbe": _probe("/v2/health/ready", 5, 2),
        "livenessProbe": _probe("/v2/health/live", 10, 3),
        "resources": _resources(server),
        "volumeMounts": mounts,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if server.image_pull_policy is not None:
        container["imagePullPolicy"] = server.image_pull_policy
    drain = duration_seconds(server.drain_delay)
    if drain > 0:
        # Endpoint removal reaches kube-proxy and load balancers only after the pod is told
        # to stop; serving on meanwhile keeps those late requests from failing. An exec
        # sleep, not the newer `sleep` action: the chart supports Kubernetes 1.26.
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", f"{drain:g}"]}}}
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": termination_grace_seconds(server),
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SERVER_USER,
            "runAsGroup": SERVER_USER,
            "fsGroup": SERVER_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if server.node_selector:
        spec["nodeSelector"] = dict(server.node_selector)
    if server.tolerations:
        spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in server.tolerations
        ]
    return {
        "metadata": {
            "labels": track_labels(name, track, revision, template.model.version),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(SERVER_PORT),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": spec,
    }


def deployment(
    name: str,
    namespace: str,
    uid: str,
    track: str,
    revision: str,
    template: TrackTemplate,
    replicas: int | None,
    feedback: bool = False,
    mirror: bool = False,
    variant: str | None = None,
) -> dict[str, Any]:
    """A track's Deployment; `replicas` None leaves its size to a HorizontalPodAutoscaler."""
    labels = track_labels(name, track, revision, template.model.version)
    size = {} if replicas is None else {"replicas": replicas}
    return with_hash(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(
                deployment_name(name, track), namespace, labels, owner_reference(name, uid)
            ),
            "spec": {
                **size,
                "selector": {"matchLabels": track_selector(name, track)},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
                },
                "template": pod_template(
                    name, track, revision, template, feedback, mirror, variant
                ),
            },
        }
    )


def horizontal_pod_autoscaler(
    name: str, namespace: str, uid: str, autoscaling: AutoscalingSpec
) -> dict[str, Any]:
    """`NAME`: sizes the stable Deployment by CPU use; canaries follow its size."""
    return with_hash(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": _metadata(name, namespace, common_labels(name), owner_reference(name, uid)),
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": deployment_name(name, "stable"),
                },
                "minReplicas": autoscaling.min_replicas,
                "maxReplicas": autoscaling.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": autoscaling.target_cpu_utilization,
                            },
                        },
                    }
                ],
            },
        }
    )


PREVIEW_SUFFIX = "next"
# A track no pod carries: the clients' Service selects nothing while no track may serve.
NO_TRACK = "none"


def service(
    name: str,
    namespace: str,
    uid: str,
    track: str | None = None,
    *,
    live_tracks: Sequence[str] = ("stable", "canary"),
) -> dict[str, Any]:
    """The client Service (track None), selecting the pods of `live_tracks`, or one track's
    Service."""
    service_name = name if track is None else f"{name}-{track}"
    selector = selector_labels(name) if track is None else track_selector(name, track)
    if track is None and len(live_tracks) == 1:
        selector = track_selector(name, live_tracks[0])
    if track is None and not live_tracks:
        selector = track_selector(name, NO_TRACK)
    labels = common_labels(name) if track is None else {**common_labels(name), TRACK_LABEL: track}
    return _service(service_name, namespace, name, uid, selector, labels)


def preview_service(name: str, namespace: str, uid: str) -> dict[str, Any]:
    """`NAME-next`: the blue-green preview of the canary track's pods, for smoke tests and
    the offline check; no client traffic goes there. Short suffix: names stay within 63."""
    labels = {**common_labels(name), TRACK_LABEL: "preview"}
    selector = track_selector(name, "canary")
    return _service(f"{name}-{PREVIEW_SUFFIX}", namespace, name, uid, selector, labels)


def _service(
    service_name: str,
    namespace: str,
    owner: str,
    uid: str,
    selector: dict[str, str],
    labels: dict[str, str],
) -> dict[str, Any]:
    return with_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(service_name, namespace, labels, owner_reference(owner, uid)),
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [
                    {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                    # h2c: gRPC without TLS, so that Gateways and meshes speak HTTP/2 to it.
                    {
                        "name": "grpc",
                        "port": GRPC_PORT,
                        "targetPort": "grpc",
                        "protocol": "TCP",
                        "appProtocol": "kubernetes.io/h2c",
                    },
                ],
            },
        }
    )


def http_route(
    name: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    weight: int,
    live_tracks: Sequence[str] = ("stable", "canary"),
) -> dict[str, Any]:
    """Weighted HTTPRoute over the per-track Services, weight 0 for a track that may not
    serve (both 0: the gateway answers 500); owner reference added by the caller."""
    return _route("HTTPRoute", name, namespace, spec, _track_weights(name, weight, live_tracks))


GRPC_SERVICE = "inference.GRPCInferenceService"
"""The gRPC service of the Open Inference Protocol, which the servers answer on GRPC_PORT."""


def grpc_route(
    name: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    weight: int,
    live_tracks: Sequence[str] = ("stable", "canary"),
) -> dict[str, Any]:
    """The GRPCRoute beside http_route's HTTPRoute: the same Gateways, hostnames and split,
    for the V2 gRPC service; each call is routed by weight, as each HTTP request is."""
    return _route("GRPCRoute", name, namespace, spec, _track_weights(name, weight, live_tracks))


VARIANT_HEADER = "x-model-variant"
"""Names the experiment arm: clients send it to pin a request, servers answer with it."""


def experiment_routes(
    name: str, namespace: str, spec: ModelDeploymentSpec, weights: Mapping[str, int]
) -> list[dict[str, Any]]:
    """An experiment's HTTPRoute and GRPCRoute: a request whose x-model-variant header names
    an arm goes to that arm; every other is split by `weights` (by arm: control or a
    variant's name). Arms with weight 0 (pods not ready) take no request, pinned or not."""
    backends = {_arm_service(name, arm): share for arm, share in weights.items()}
    pinned = {arm: _arm_service(name, arm) for arm, share in weights.items() if share > 0}
    return [
        _route(kind, name, namespace, spec, backends, pinned) for kind in ("HTTPRoute", "GRPCRoute")
    ]


def _arm_service(name: str, arm: str) -> str:
    return f"{name}-stable" if arm == CONTROL else deployment_name(name, variant_track(arm))


def _track_weights(name: str, weight: int, live_tracks: Sequence[str]) -> dict[str, int]:
    return {
        f"{name}-stable": 100 - weight if "stable" in live_tracks else 0,
        f"{name}-canary": weight if "canary" in live_tracks else 0,
    }


def _route(
    kind: str,
    name: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    backends: Mapping[str, int],
    pinned: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A route of `kind` over `backends` (Service name: weight), after one rule per pinned
    arm (header value: Service name)."""
    gateway = spec.traffic.gateway_api
    assert gateway is not None, "the gatewayAPI router needs traffic.gatewayAPI"
    if kind == "HTTPRoute":
        match: dict[str, Any] = {"path": {"type": "PathPrefix", "value": gateway.path_prefix}}
        port = 80
    else:
        match = {"method": {"type": "Exact", "service": GRPC_SERVICE}}
        port = GRPC_PORT
    rules: list[dict[str, Any]] = [
        {
            "matches": [
                {**match, "headers": [{"type": "Exact", "name": VARIANT_HEADER, "value": arm}]}
            ],
            "backendRefs": [{"name": service_name, "port": port}],
        }
        for arm, service_name in (pinned or {}).items()
    ]
    rules.append(
        {
            "matches": [match],
            "backendRefs": [
                {"name": service_name, "port": port, "weight": share}
                for service_name, share in backends.items()
            ],
        }
    )
    parent_refs = [ref.model_dump(by_alias=True, exclude_none=True) for ref in gateway.parent_refs]
    route_spec: dict[str, Any] = {"parentRefs": parent_refs, "rules": rules}
    if gateway.hostnames:
        route_spec["hostnames"] = list(gateway.hostnames)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": common_labels(name)},
        "spec": route_spec,
    }


def owned(manifest: dict[str, Any], name: str, uid: str) -> dict[str, Any]:
    """Add the owner reference and hash to a manifest built without them (routes)."""
    manifest["metadata"]["ownerReferences"] = [owner_reference(name, uid)]
    return with_hash(manifest)
