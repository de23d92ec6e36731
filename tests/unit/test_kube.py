"""The operator's API client against a real local HTTP server standing in for the API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client as k8s_client
from kubernetes.config.incluster_config import InClusterConfigLoader
from prometheus_client import REGISTRY

from modeldeploy.kube import Kube, KubeError, load_configuration
from tests.support import LocalServer, Reply, Request
from tests.support.processes import free_port

T = TypeVar("T")
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "fraud", "namespace": "ml"},
    "spec": {"ports": [{"port": 80}]},
}


def call(url: str, action: Callable[[Kube], Awaitable[T]], token: str | None = None) -> T:
    configuration = k8s_client.Configuration()
    configuration.host = url
    if token:
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}

    async def run() -> T:
        kube = Kube(configuration)
        try:
            return await action(kube)
        finally:
            await kube.close()

    return asyncio.run(run())


def status(code: int, message: str) -> Reply:
    body = {"kind": "Status", "status": "Failure", "message": message, "code": code}
    return Reply(code, json.dumps(body))


def test_apply_is_a_server_side_apply_under_one_field_manager_with_the_token() -> None:
    seen: list[Request] = []

    def api(request: Request) -> Reply:
        seen.append(request)
        return Reply(201, request.body.decode())

    with LocalServer(api) as server:
        applied = call(server.url, lambda kube: kube.apply(SERVICE, force=False), "s3cret")

    assert applied == SERVICE
    (request,) = seen
    assert (request.method, request.path) == ("PATCH", "/api/v1/namespaces/ml/services/fraud")
    assert request.headers["content-type"] == "application/apply-patch+yaml"
    assert request.params == {"fieldManager": ["modeldeploy"], "force": ["false"]}
    assert request.headers["authorization"] == "Bearer s3cret"
    assert json.loads(request.body) == SERVICE


def _token_sent(configuration: k8s_client.Configuration) -> str | None:
    """The Authorization header a read sends with `configuration`, against a local server."""
    seen: list[Request] = []

    def api(request: Request) -> Reply:
        seen.append(request)
        return Reply(200, json.dumps(SERVICE))

    with LocalServer(api) as server:
        configuration.host = server.url
        configuration.ssl_ca_cert = None

        async def read() -> None:
            kube = Kube(configuration)
            try:
                await kube.get("v1", "Service", "ml", "fraud")
            finally:
                await kube.close()

        asyncio.run(read())
    return seen[0].headers.get("authorization")


def test_a_pod_sends_its_service_account_token(tmp_path: Path) -> None:
    """In-cluster credentials, as a Pod has them (the operator's chart install)."""
    (tmp_path / "token").write_text("pod-token")
    (tmp_path / "ca.crt").write_text("unused: the test server speaks plain HTTP")
    configuration = k8s_client.Configuration()
    InClusterConfigLoader(
        token_filename=str(tmp_path / "token"),
        cert_filename=str(tmp_path / "ca.crt"),
        environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"},
    ).load_and_set(configuration)

    assert _token_sent(configuration) == "bearer pod-token"


def test_a_kubeconfig_users_token_is_sent(tmp_path: Path) -> None:
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "user-token"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    (tmp_path / "kubeconfig").write_text(json.dumps(kubeconfig))

    configuration = load_configuration(str(tmp_path / "kubeconfig"))

    assert _token_sent(configuration) == "Bearer user-token"


def test_a_cached_read_asks_for_the_watch_cache_and_a_missing_object_is_none() -> None:
    seen: list[Request] = []

    def api(request: Request) -> Reply:
        seen.append(request)
        return status(404, 'services "fraud" not found')

    with LocalServer(api) as server:
        found = call(server.url, lambda kube: kube.get("v1", "Service", "ml", "fraud", cached=True))

    assert found is None
    assert seen[0].params == {"resourceVersion": ["0"]}


@pytest.mark.parametrize(
    ("reply", "transient"),
    [
        (status(422, 'Service "fraud" is invalid: spec.ports: Required value'), False),
        (status(403, 'services is forbidden: User "x" cannot patch'), False),
        (status(409, 'Apply failed with 1 conflict: conflict with "kubectl"'), True),
        (status(429, "storage is (re)initializing"), True),
        (Reply(503, "upstream connect error", "text/plain"), True),
    ],
)
def test_an_error_answer_names_the_request_and_the_api_servers_reason(
    reply: Reply, transient: bool
) -> None:
    with LocalServer(lambda _: reply) as server, pytest.raises(KubeError) as raised:
        call(server.url, lambda kube: kube.apply(SERVICE))

    error = raised.value
    assert (error.status, error.transient) == (reply.status, transient)
    assert str(error).startswith(f"PATCH /api/v1/namespaces/ml/services/fraud: {reply.status} ")
    reason = json.loads(reply.body)["message"] if reply.body.startswith("{") else reply.body
    assert reason in str(error)


def test_an_unreachable_api_server_is_a_transient_error_naming_the_request() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(KubeError) as raised:
        call(url, lambda kube: kube.get("apps/v1", "Deployment", "ml", "fraud-stable"))

    assert raised.value.transient
    assert raised.value.status is None
    assert "GET /apis/apps/v1/namespaces/ml/deployments/fraud-stable" in str(raised.value)


def test_the_api_servers_body_is_returned_as_json() -> None:
    def api(request: Request) -> Reply:
        body: dict[str, Any] = {**SERVICE, "status": {"phase": "Available"}}
        return Reply(200, json.dumps(body))

    with LocalServer(api) as server:
        patched = call(server.url, lambda kube: kube.patch_status("ml", "fraud", {"phase": "x"}))

    assert patched is not None
    assert patched["status"] == {"phase": "Available"}


def _api_errors(verb: str, resource: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "modeldeploy_kube_request_errors_total",
        {"verb": verb, "resource": resource, "code": code},
    )
    return value or 0.0


def test_failed_requests_are_counted_by_code_and_a_missing_object_is_not_a_failure() -> None:
    before = {code: _api_errors("GET", "deployments", code) for code in ("500", "404")}
    replies = iter([Reply(500, '{"message": "etcd timeout"}'), Reply(404, "{}")])
    with LocalServer(lambda _: next(replies)) as server:
        with pytest.raises(KubeError):
            call(server.url, lambda kube: kube.get("apps/v1", "Deployment", "ml", "x"))
        assert call(server.url, lambda kube: kube.get("apps/v1", "Deployment", "ml", "x")) is None
    assert _api_errors("GET", "deployments", "500") == before["500"] + 1
    assert _api_errors("GET", "deployments", "404") == before["404"]


def test_an_unreachable_api_server_is_counted_as_such() -> None:
    before = _api_errors("GET", "leases", "unreachable")
    with pytest.raises(KubeError):
        call(
            f"http://127.0.0.1:{free_port()}",
            lambda kube: kube.get("coordination.k8s.io/v1", "Lease", "ml", "x"),
        )
    assert _api_errors("GET", "leases", "unreachable") == before + 1
