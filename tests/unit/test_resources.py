"""The child objects a ModelDeployment owns, as the cluster and the inference server see them."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from modeldeploy import resources
from modeldeploy.api import ModelDeploymentSpec, TrackTemplate
from modeldeploy.resources import (
    deployment,
    grpc_route,
    http_route,
    owned,
    revision_of,
    service,
    template_of,
)
from tests.unit.examples import EXAMPLES_DIR

NAME, NAMESPACE, UID = "fraud", "ml", "0d6f1c9e-5b7a-4c1e-9f4e-2a3b4c5d6e7f"
IMAGE = "ghcr.io/example/modelserver:1.0"
SHA = "3B1F4C0E8A5D2F7B9C6E1A0D4F8B2C7E5A9D3F1B6C8E0A2D4F7B9C1E3A5D7F9B"
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def spec(**overrides: Any) -> ModelDeploymentSpec:
    body: dict[str, Any] = {
        "model": {
            "name": "fraud-detector",
            "version": "2.1.0",
            "uri": "https://models.example.com/fraud/2.1.0/model.ubj",
            "sha256": SHA,
        },
        "replicas": 3,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return ModelDeploymentSpec.model_validate(body)


def template(**overrides: Any) -> TrackTemplate:
    return template_of(spec(**overrides), IMAGE)


def build(track: str = "canary", replicas: int = 2, **overrides: Any) -> dict[str, Any]:
    t = template(**overrides)
    return deployment(NAME, NAMESPACE, UID, track, revision_of(t), t, replicas)


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    (only,) = manifest["spec"]["template"]["spec"]["containers"]
    return only


def env(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = container(manifest)["env"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return {e["name"]: e for e in entries}


def env_values(manifest: dict[str, Any]) -> dict[str, str]:
    return {name: e["value"] for name, e in env(manifest).items() if "value" in e}


# --- revision -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"replicas": 7},
        {"rollout": {"steps": [5, 50], "interval": "5m", "failureThreshold": 9, "paused": True}},
        {"traffic": {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}},
        {"analysis": {"minRequests": 1, "slo": {"maxErrorRate": 0.5}}},
        {"notifications": {"webhook": {"urlSecretRef": {"name": "hook", "key": "url"}}}},
        {"analysis": {"quality": {"minAccuracy": 0.9, "maxDropVsStable": 0.02}}},
        {"monitoring": {"interval": "10m", "slo": {"objective": 0.999}}},
        {"model": {"format": "xgboost"}},  # the default, written out
        {"server": {"image": IMAGE}},  # the default image, written out
    ],
    ids=lambda c: ",".join(c),
)
def test_settings_that_do_not_shape_the_pods_keep_the_revision(change):
    assert revision_of(template(**change)) == revision_of(template())


@pytest.mark.parametrize(
    "change",
    [
        {"model": {"version": "2.2.0"}},
        {"model": {"uri": "https://models.example.com/fraud/2.2.0/model.ubj"}},
        {"model": {"sha256": "0" * 64}},
        {"model": {"name": "fraud-v2"}},
        {"model": {"format": "sklearn"}},
        {"server": {"image": "ghcr.io/example/modelserver:2.0"}},
        {"server": {"env": [{"name": "LOG_LEVEL", "value": "debug"}]}},
        {"server": {"resources": {"limits": {"memory": "2Gi"}}}},
        {"server": {"nodeSelector": {"pool": "gpu"}}},
        {"server": {"tolerations": [{"key": "ml", "operator": "Exists"}]}},
        {"server": {"workers": 4}},
        {"server": {"startupTimeout": "10m"}},
        {"model": {"profile": {"uri": "pvc://models/fraud/profile.json"}}},
    ],
    ids=lambda c: str(c),
)
def test_changes_to_what_shapes_the_pods_change_the_revision(change):
    assert revision_of(template(**change)) != revision_of(template())


def test_a_new_default_server_image_changes_the_revision():
    assert revision_of(template_of(spec(), "img:2")) != revision_of(template_of(spec(), "img:1"))


def test_revision_is_short_hex_and_survives_the_template_stored_in_status():
    t = template(server={"env": [{"name": "A", "value": "1"}], "resources": {"limits": {"cpu": 2}}})
    stored = TrackTemplate.model_validate(t.model_dump(mode="json", by_alias=True))

    assert re.fullmatch(r"[0-9a-f]{10}", revision_of(t))
    assert revision_of(stored) == revision_of(t)


def test_template_of_does_not_change_the_spec():
    s = spec()
    template_of(s, IMAGE)
    assert s.server.image is None


@settings(max_examples=100, deadline=None)
@given(
    replicas=st.integers(0, 1000),
    steps=st.lists(st.integers(1, 100), min_size=1, max_size=20, unique=True).map(sorted),
    threshold=st.integers(1, 100),
    paused=st.booleans(),
)
def test_no_replica_or_rollout_setting_changes_the_revision(replicas, steps, threshold, paused):
    changed = spec(
        replicas=replicas,
        rollout={"steps": steps, "failureThreshold": threshold, "paused": paused},
    )
    assert revision_of(template_of(changed, IMAGE)) == revision_of(template())


# --- Deployment ---------------------------------------------------------------------------


def test_deployment_is_named_per_track_owned_and_sized():
    manifest = build("canary", replicas=4)
    meta = manifest["metadata"]

    assert (manifest["apiVersion"], manifest["kind"]) == ("apps/v1", "Deployment")
    assert (meta["name"], meta["namespace"]) == ("fraud-canary", NAMESPACE)
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "modeldeploy.dev/v1alpha1",
            "kind": "ModelDeployment",
            "name": NAME,
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert manifest["spec"]["replicas"] == 4
    assert manifest["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_labels_name_the_app_the_track_the_revision_and_the_version():
    t = template()
    manifest = deployment(NAME, NAMESPACE, UID, "stable", revision_of(t), t, 3)
    for labels in (
        manifest["metadata"]["labels"],
        manifest["spec"]["template"]["metadata"]["labels"],
    ):
        assert labels["app.kubernetes.io/name"] == "modelserver"
        assert labels["app.kubernetes.io/instance"] == NAME
        assert labels["app.kubernetes.io/managed-by"] == "modeldeploy"
        assert labels["app.kubernetes.io/version"] == "2.1.0"
        assert labels["modeldeploy.dev/modeldeployment"] == NAME
        assert labels["modeldeploy.dev/track"] == "stable"
        assert labels["modeldeploy.dev/revision"] == revision_of(t)
        assert all(LABEL_VALUE.match(v) and len(v) <= 63 for v in labels.values())


def test_selector_matches_the_pods_and_does_not_change_with_the_revision():
    old = build("stable")
    new = build("stable", model={"version": "9.0.0", "uri": "https://models.example.com/m9"})
    selector = old["spec"]["selector"]["matchLabels"]
    pod_labels = old["spec"]["template"]["metadata"]["labels"]

    assert new["spec"]["selector"] == old["spec"]["selector"], "selectors are immutable"
    assert selector.items() <= pod_labels.items()
    assert "modeldeploy.dev/revision" not in selector
    assert "app.kubernetes.io/version" not in selector
    assert selector["modeldeploy.dev/track"] == "stable"
    assert build("canary")["spec"]["selector"]["matchLabels"]["modeldeploy.dev/track"] == "canary"


@pytest.mark.parametrize("version", ["2.1.0+build/7", "v" * 63, "-1.0-", "release candidate 2"])
def test_any_model_version_makes_a_valid_label(version):
    labels = build(model={"version": version})["spec"]["template"]["metadata"]["labels"]
    value = labels["app.kubernetes.io/version"]
    assert LABEL_VALUE.match(value)
    assert 1 <= len(value) <= 63
    assert env_values(build(model={"version": version}))["MODELSERVER_MODEL_VERSION"] == version


def test_server_env_carries_the_model_and_metric_identity():
    values = env_values(build("canary"))

    assert values["MODELSERVER_MODEL_URI"] == "https://models.example.com/fraud/2.1.0/model.ubj"
    assert values["MODELSERVER_MODEL_FORMAT"] == "xgboost"
    assert values["MODELSERVER_MODEL_NAME"] == "fraud-detector"
    assert values["MODELSERVER_MODEL_VERSION"] == "2.1.0"
    assert values["MODELSERVER_MODEL_SHA256"] == SHA.lower()
    assert values["MODELSERVER_TRACK"] == "canary"
    assert values["MODELSERVER_DEPLOYMENT"] == NAME
    namespace = env(build())["MODELSERVER_NAMESPACE"]
    assert namespace["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env_values(build("stable"))["MODELSERVER_TRACK"] == "stable"


def test_unpinned_and_unsafe_opt_ins_reach_the_server_only_when_set():
    plain = env_values(build(model={"uri": "file:///models/m.ubj", "sha256": None}))
    assert "MODELSERVER_MODEL_SHA256" not in plain
    assert "MODELSERVER_ALLOW_UNPINNED" not in plain
    assert "MODELSERVER_ALLOW_UNSAFE_FORMATS" not in plain

    opted = env_values(
        build(
            model={
                "sha256": None,
                "allowUnpinned": True,
                "format": "sklearn-joblib",
                "allowUnsafeFormat": True,
            }
        )
    )
    assert opted["MODELSERVER_ALLOW_UNPINNED"] == "true"
    assert opted["MODELSERVER_ALLOW_UNSAFE_FORMATS"] == "true"
    assert opted["MODELSERVER_MODEL_FORMAT"] == "sklearn-joblib"


def test_user_env_follows_the_contract_variables():
    manifest = build(
        server={
            "workers": 2,
            "env": [
                {"name": "LOG_LEVEL", "value": "debug"},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}}},
            ],
        }
    )
    entries = env(manifest)  # asserts each name appears once: server-side apply needs it

    assert entries["MODELSERVER_TRACK"]["value"] == "canary"
    assert entries["MODELSERVER_WORKERS"]["value"] == "2"
    assert entries["LOG_LEVEL"] == {"name": "LOG_LEVEL", "value": "debug"}
    assert entries["TOKEN"] == {
        "name": "TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}},
    }


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"name": "MODELSERVER_TRACK", "value": "stable"}], "may not set variables"),
        ([{"name": "A", "value": "1"}, {"name": "A", "value": "2"}], "lists a variable twice"),
    ],
)
def test_user_env_cannot_replace_the_contract_or_repeat_a_name(entries, message):
    with pytest.raises(ValidationError, match=message):
        build(server={"env": entries})


def test_probes_use_the_v2_health_endpoints_on_the_served_port():
    c = container(build())
    port, _ = c["ports"]

    assert (port["name"], port["containerPort"]) == ("http", resources.SERVER_PORT)
    assert c["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    env_port = env_values(build())["MODELSERVER_PORT"]
    assert env_port == str(port["containerPort"])


def test_pods_serve_grpc_on_the_port_named_grpc_that_they_are_told():
    _, port = container(build())["ports"]

    assert port == {"name": "grpc", "containerPort": resources.GRPC_PORT, "protocol": "TCP"}
    assert env_values(build())["MODELSERVER_GRPC_PORT"] == str(resources.GRPC_PORT)


@pytest.mark.parametrize(
    ("timeout", "seconds"), [("300s", 300), ("10m", 600), ("1m30s", 90), ("7s", 7), ("1h", 3600)]
)
def test_startup_probe_allows_the_startup_timeout_and_no_more_than_a_period_beyond(
    timeout, seconds
):
    probe = container(build(server={"startupTimeout": timeout}))["startupProbe"]
    allowed = probe["periodSeconds"] * probe["failureThreshold"]

    assert seconds <= allowed < seconds + probe["periodSeconds"]


@pytest.mark.parametrize("timeout", ["0s", "250ms"])
def test_a_tiny_startup_timeout_still_makes_a_valid_probe(timeout):
    probe = container(build(server={"startupTimeout": timeout}))["startupProbe"]
    assert probe["failureThreshold"] >= 1


def test_a_stopping_pod_serves_on_for_the_drain_delay_before_sigterm():
    lifecycle = container(build(server={"drainDelay": "7s"}))["lifecycle"]
    # An exec hook, not the `sleep` action: the chart supports Kubernetes 1.26.
    assert lifecycle == {"preStop": {"exec": {"command": ["sleep", "7"]}}}


def test_the_drain_delay_is_5s_by_default_and_0s_turns_it_off():
    assert container(build())["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert "lifecycle" not in container(build(server={"drainDelay": "0s"}))


@pytest.mark.parametrize(
    ("server", "grace"),
    [
        ({}, 5 + 25 + 5),
        ({"drainDelay": "0s"}, 25 + 5),
        (
            {
                "drainDelay": "10s",
                "env": [{"name": "MODELSERVER_GRACEFUL_TIMEOUT_SECONDS", "value": "60"}],
            },
            75,
        ),
        ({"env": [{"name": "MODELSERVER_GRACEFUL_TIMEOUT_SECONDS", "value": "2.5"}]}, 13),
    ],
)
def test_the_grace_period_covers_the_drain_delay_the_graceful_shutdown_and_a_margin(server, grace):
    assert (
        build(server=server)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace
    )


# Revisions the first release computed for the examples. An operator upgrade that changed
# them would start a canary on every existing object.
FIRST_RELEASE_REVISIONS = {
    "minimal.yaml": "a02a4e0314",
    "full.yaml": "9175e8e7c2",
    "sklearn-replicas.yaml": "20c144ab99",
    "pvc-model.yaml": "28856374e6",
}


@pytest.mark.parametrize(("example", "revision"), FIRST_RELEASE_REVISIONS.items())
def test_fields_added_since_the_first_release_leave_existing_revisions_alone(example, revision):
    manifest = yaml.safe_load((EXAMPLES_DIR / example).read_text())
    example_spec = ModelDeploymentSpec.model_validate(manifest["spec"])
    assert revision_of(template_of(example_spec, "ghcr.io/modeldeploy/modelserver:0.1.0")) == (
        revision
    )


def test_a_field_added_later_changes_the_revision_once_set_to_something_else():
    default = revision_of(template())
    assert revision_of(template(server={"drainDelay": "10s"})) != default
    assert revision_of(template(server={"drainDelay": "5s"})) == default
    profile = {"uri": "pvc://models/fraud/profile.json"}
    assert revision_of(template(model={"profile": profile})) != default
    assert revision_of(template(model={"profile": None})) == default


def test_pods_have_scrape_annotations_for_the_server_metrics():
    annotations = build()["spec"]["template"]["metadata"]["annotations"]

    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(resources.SERVER_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_pods_run_hardened():
    pod = build()["spec"]["template"]["spec"]
    c = container(build())
    security = c["securityContext"]

    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    # With a read-only root, everything the server writes lives on emptyDir volumes.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    cache = env_values(build())["MODELSERVER_CACHE_DIR"]
    assert "emptyDir" in volumes[mounts[cache]]
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_pvc_model_is_mounted_read_only_and_its_uri_rewritten():
    manifest = build(model={"uri": "pvc://model-store/fraud/2.1.0/model.ubj", "sha256": None})
    pod = manifest["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next(m for m in container(manifest)["volumeMounts"] if m["mountPath"] == "/mnt/models")

    assert mount["readOnly"] is True
    assert volumes[mount["name"]]["persistentVolumeClaim"] == {
        "claimName": "model-store",
        "readOnly": True,
    }
    assert env_values(manifest)["MODELSERVER_MODEL_URI"] == "/mnt/models/fraud/2.1.0/model.ubj"


@pytest.mark.parametrize("path", ["models/m#1.ubj", "a b/model?v=2.json", "deep/er/x.ubj"])
def test_pvc_paths_are_taken_literally(path):
    manifest = build(model={"uri": f"pvc://store/{path}", "sha256": None})
    assert env_values(manifest)["MODELSERVER_MODEL_URI"] == f"/mnt/models/{path}"


@pytest.mark.parametrize(
    "uri", ["https://models.example.com/m.ubj", "http://models/m.ubj", "file:///models/m.ubj"]
)
def test_non_pvc_models_mount_no_volume_and_keep_their_uri(uri):
    manifest = build(model={"uri": uri})
    pod = manifest["spec"]["template"]["spec"]

    assert env_values(manifest)["MODELSERVER_MODEL_URI"] == uri
    assert all("persistentVolumeClaim" not in v for v in pod["volumes"])
    assert all(m["mountPath"] != "/mnt/models" for m in container(manifest)["volumeMounts"])


def test_server_settings_reach_the_pod():
    manifest = build(
        server={
            "imagePullPolicy": "Always",
            "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi", "cpu": 2}},
            "nodeSelector": {"pool": "ml"},
            "tolerations": [
                {"key": "ml", "operator": "Equal", "value": "x", "effect": "NoSchedule"}
            ],
        }
    )
    pod = manifest["spec"]["template"]["spec"]
    c = container(manifest)

    assert c["image"] == IMAGE
    assert c["imagePullPolicy"] == "Always"
    assert c["resources"] == {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi", "cpu": 2}}
    assert pod["nodeSelector"] == {"pool": "ml"}
    assert pod["tolerations"] == [
        {"key": "ml", "operator": "Equal", "value": "x", "effect": "NoSchedule"}
    ]


def test_applied_hash_changes_with_the_object_and_only_then():
    first, again = build(replicas=2), build(replicas=2)
    scaled = build(replicas=3)
    key = resources.HASH_ANNOTATION

    assert first["metadata"]["annotations"][key] == again["metadata"]["annotations"][key]
    assert first["metadata"]["annotations"][key] != scaled["metadata"]["annotations"][key]


# --- Services -----------------------------------------------------------------------------


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_client_service_selects_both_tracks_and_track_services_one_each():
    stable_pods = build("stable")["spec"]["template"]["metadata"]["labels"]
    canary_pods = build("canary")["spec"]["template"]["metadata"]["labels"]
    client = service(NAME, NAMESPACE, UID)
    stable = service(NAME, NAMESPACE, UID, "stable")
    canary = service(NAME, NAMESPACE, UID, "canary")

    assert client["metadata"]["name"] == NAME
    assert selects(client["spec"]["selector"], stable_pods)
    assert selects(client["spec"]["selector"], canary_pods)
    assert stable["metadata"]["name"] == "fraud-stable"
    assert selects(stable["spec"]["selector"], stable_pods)
    assert not selects(stable["spec"]["selector"], canary_pods)
    assert canary["metadata"]["name"] == "fraud-canary"
    assert selects(canary["spec"]["selector"], canary_pods)
    assert not selects(canary["spec"]["selector"], stable_pods)
    for svc in (client, stable, canary):
        assert svc["spec"]["ports"] == [
            {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
            {
                "name": "grpc",
                "port": resources.GRPC_PORT,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",
            },
        ]
        assert svc["metadata"]["ownerReferences"][0]["uid"] == UID


# --- HTTPRoute ----------------------------------------------------------------------------


def gateway_spec(**gateway: Any) -> ModelDeploymentSpec:
    body = {"parentRefs": [{"name": "ml-gw", "namespace": "gateways", "sectionName": "http"}]}
    body.update(gateway)
    return spec(traffic={"router": "gatewayAPI", "gatewayAPI": body})


@given(weight=st.integers(0, 100))
def test_route_weights_split_all_traffic_between_stable_and_canary(weight):
    route = http_route(NAME, NAMESPACE, gateway_spec(), weight)
    (rule,) = route["spec"]["rules"]
    backends = {b["name"]: b for b in rule["backendRefs"]}

    assert set(backends) == {"fraud-stable", "fraud-canary"}
    assert backends["fraud-canary"]["weight"] == weight
    assert backends["fraud-stable"]["weight"] + backends["fraud-canary"]["weight"] == 100
    assert all(b["port"] == 80 for b in backends.values())


def test_route_attaches_to_the_gateways_with_hostnames_and_path():
    route = http_route(
        NAME,
        NAMESPACE,
        gateway_spec(hostnames=["fraud.example.com"], pathPrefix="/models"),
        25,
    )

    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["kind"] == "HTTPRoute"
    assert (route["metadata"]["name"], route["metadata"]["namespace"]) == (NAME, NAMESPACE)
    assert route["spec"]["parentRefs"] == [
        {"name": "ml-gw", "namespace": "gateways", "sectionName": "http"}
    ]
    assert route["spec"]["hostnames"] == ["fraud.example.com"]
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/models"}}]


@given(weight=st.integers(0, 100), live=st.sampled_from([(), ("stable",), ("canary",)]))
def test_grpc_route_splits_like_the_http_route_on_the_grpc_port(weight, live):
    def split(route: dict[str, Any]) -> dict[str, int]:
        (rule,) = route["spec"]["rules"]
        return {b["name"]: b["weight"] for b in rule["backendRefs"]}

    grpc = grpc_route(NAME, NAMESPACE, gateway_spec(), weight, live)
    http = http_route(NAME, NAMESPACE, gateway_spec(), weight, live)

    assert split(grpc) == split(http)
    assert all(b["port"] == resources.GRPC_PORT for b in grpc["spec"]["rules"][0]["backendRefs"])


def test_grpc_route_matches_the_v2_service_on_the_http_routes_gateways_and_hostnames():
    route = grpc_route(
        NAME, NAMESPACE, gateway_spec(hostnames=["fraud.example.com"], pathPrefix="/models"), 25
    )

    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["kind"] == "GRPCRoute"
    assert (route["metadata"]["name"], route["metadata"]["namespace"]) == (NAME, NAMESPACE)
    assert route["spec"]["parentRefs"] == [
        {"name": "ml-gw", "namespace": "gateways", "sectionName": "http"}
    ]
    assert route["spec"]["hostnames"] == ["fraud.example.com"]
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [
        {"method": {"type": "Exact", "service": "inference.GRPCInferenceService"}}
    ]


def test_route_without_hostnames_omits_them():
    route = http_route(NAME, NAMESPACE, gateway_spec(), 0)
    assert "hostnames" not in route["spec"]


def test_owned_route_gets_the_owner_reference_and_a_hash():
    route = owned(http_route(NAME, NAMESPACE, gateway_spec(), 10), NAME, UID)

    assert route["metadata"]["ownerReferences"][0]["uid"] == UID
    assert route["metadata"]["ownerReferences"][0]["controller"] is True
    assert resources.HASH_ANNOTATION in route["metadata"]["annotations"]
    other = owned(http_route(NAME, NAMESPACE, gateway_spec(), 20), NAME, UID)
    assert (
        other["metadata"]["annotations"][resources.HASH_ANNOTATION]
        != route["metadata"]["annotations"][resources.HASH_ANNOTATION]
    )


def test_the_clients_service_selects_one_track_while_the_other_must_get_no_live_traffic():
    both = service(NAME, NAMESPACE, UID)["spec"]["selector"]
    preview = service(NAME, NAMESPACE, UID, live_tracks=("stable",))["spec"]["selector"]
    switched = service(NAME, NAMESPACE, UID, live_tracks=("canary",))["spec"]["selector"]
    assert resources.TRACK_LABEL not in both
    assert preview[resources.TRACK_LABEL] == "stable"
    assert switched[resources.TRACK_LABEL] == "canary"
    assert service(NAME, NAMESPACE, UID) == service(
        NAME, NAMESPACE, UID, live_tracks=("stable", "canary")
    ), "objects that never switch keep the Service they had"
    held = service(NAME, NAMESPACE, UID, live_tracks=())["spec"]["selector"]
    assert held[resources.TRACK_LABEL] not in ("stable", "canary"), "no pod while nothing may serve"


def test_the_blue_green_preview_service_selects_the_new_pods_within_63_characters():
    longest = "a" * 56
    preview = resources.preview_service(longest, NAMESPACE, UID)
    assert preview["metadata"]["name"] == f"{longest}-next"
    assert len(preview["metadata"]["name"]) <= 63
    assert preview["spec"]["selector"][resources.TRACK_LABEL] == "canary"
    assert preview["metadata"]["ownerReferences"][0]["name"] == longest


def test_an_autoscaled_stable_deployment_leaves_its_size_to_the_hpa():
    t = template()
    sized = deployment(NAME, NAMESPACE, UID, "stable", revision_of(t), t, 3)
    unsized = deployment(NAME, NAMESPACE, UID, "stable", revision_of(t), t, None)
    assert sized["spec"]["replicas"] == 3
    assert "replicas" not in unsized["spec"]


def test_the_hpa_sizes_the_stable_deployment_by_cpu():
    autoscaling = spec(autoscaling={"minReplicas": 2, "maxReplicas": 9}).autoscaling
    assert autoscaling is not None
    hpa = resources.horizontal_pod_autoscaler(NAME, NAMESPACE, UID, autoscaling)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{NAME}-stable",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 9)
    target = hpa["spec"]["metrics"][0]["resource"]
    assert target == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}
    assert hpa["metadata"]["ownerReferences"][0]["uid"] == UID


def test_a_profile_reaches_the_server_pinned_and_from_its_own_claim():
    profile = {"uri": "pvc://profiles/fraud/2.1.0/profile.json", "sha256": SHA}
    manifest = build(model={"uri": "pvc://model-store/fraud/2.1.0/model.ubj", "profile": profile})
    values = env_values(manifest)
    assert values["MODELSERVER_PROFILE_URI"] == "/mnt/profile/fraud/2.1.0/profile.json"
    assert values["MODELSERVER_PROFILE_SHA256"] == SHA.lower()
    volumes = {v["name"]: v for v in manifest["spec"]["template"]["spec"]["volumes"]}
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in volumes.values()
        if "persistentVolumeClaim" in v
    }
    assert claims == {"model-store", "profiles"}
    https = build(model={"profile": {"uri": "https://models.example.com/p.json", "sha256": SHA}})
    assert env_values(https)["MODELSERVER_PROFILE_URI"] == "https://models.example.com/p.json"
    assert "MODELSERVER_PROFILE_URI" not in env_values(build())


def test_pods_sign_feedback_tokens_with_the_key_secret_only_when_asked():
    t = template()
    signing = deployment(NAME, NAMESPACE, UID, "canary", revision_of(t), t, 2, feedback=True)
    key_file = env_values(signing)["MODELSERVER_FEEDBACK_KEY_FILE"]
    mount = next(
        m for m in container(signing)["volumeMounts"] if key_file.startswith(m["mountPath"])
    )
    assert mount["readOnly"] is True
    volumes = {v["name"]: v for v in signing["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mount["name"]]["secret"]["secretName"] == "fraud-feedback"
    assert "MODELSERVER_FEEDBACK_KEY_FILE" not in env_values(build())

    secret = resources.feedback_key_secret(NAME, NAMESPACE, UID, "k3y")
    assert secret["metadata"]["name"] == "fraud-feedback"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == UID
    assert secret["stringData"] == {key_file.rsplit("/", 1)[1]: "k3y"}


def test_quality_gates_ask_for_feedback_and_other_specs_do_not():
    assert not resources.collects_feedback(spec())
    assert resources.collects_feedback(spec(analysis={"quality": {"minAccuracy": 0.9}}))
    monitored = spec(monitoring={"quality": {"minAccuracy": 0.9}})
    assert resources.collects_feedback(monitored)
