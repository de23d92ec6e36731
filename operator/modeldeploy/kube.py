"""Kubernetes access: server-side apply, reads, deletes, status patches, events, secrets.

Credentials come from the official client's config loaders (kubeconfig or in-cluster);
requests go through one async httpx client so the operator never blocks a thread per call.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from modeldeploy import metrics
from modeldeploy.api import GROUP, PLURAL, VERSION
from modeldeploy.resources import FIELD_MANAGER

_PLURALS = {
    ("v1", "Service"): "services",
    ("v1", "Secret"): "secrets",
    ("v1", "Event"): "events",
    ("apps/v1", "Deployment"): "deployments",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproutes",
    (f"{GROUP}/{VERSION}", "ModelDeployment"): PLURAL,
    ("coordination.k8s.io/v1", "Lease"): "leases",
}


class KubeError(Exception):
    """An API request failed; `transient` says whether retrying can help."""

    def __init__(self, message: str, status: int | None, transient: bool) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


def _resource_of(path: str) -> str:
    """The resource a request path names (deployments, modeldeployments/status, ...)."""
    parts = path.strip("/").split("/")
    if "namespaces" in parts:
        rest = parts[parts.index("namespaces") + 2 :]
        return "/".join(rest[:1] + rest[2:3]) if rest else "namespaces"
    return parts[-1]


def resource_version(obj: dict[str, Any]) -> int:
    """An object's resourceVersion as a number, to tell newer copies from older ones."""
    value = str(obj.get("metadata", {}).get("resourceVersion", "0"))
    return int(value) if value.isdigit() else 0


def resource_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    plural = _PLURALS[(api_version, kind)]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return path if name is None else f"{path}/{name}"


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or response.text)
    except ValueError:
        return response.text


class _KubeAuth(httpx.Auth):
    """Bearer token from the client configuration, refreshed per request (bound tokens rotate)."""

    def __init__(self, configuration: k8s_client.Configuration) -> None:
        self.configuration = configuration

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        hook = getattr(self.configuration, "refresh_api_key_hook", None)
        if hook is not None:
            hook(self.configuration)
        token = self.configuration.get_api_key_with_prefix("authorization")
        if token:
            request.headers["Authorization"] = token
        yield request


def load_configuration(kubeconfig: str | None) -> k8s_client.Configuration:
    configuration = k8s_client.Configuration()
    if kubeconfig:
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)
    return configuration


def _ssl_context(configuration: k8s_client.Configuration) -> ssl.SSLContext | bool:
    if not configuration.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str


class Kube:
    def __init__(self, configuration: k8s_client.Configuration, timeout: float = 30.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=configuration.host,
            verify=_ssl_context(configuration),
            auth=_KubeAuth(configuration),
            timeout=timeout,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        content = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if content is not None else {}
        started = time.monotonic()
        try:
            response = await self._http.request(
                method, path, content=content, headers=headers, params=params
            )
        except httpx.HTTPError as error:
            raise KubeError(f"{method} {path}: {error!r}", None, transient=True) from error
        finally:
            metrics.API_REQUESTS.labels(method, _resource_of(path)).observe(
                time.monotonic() - started
            )
        if response.status_code >= 400 and response.status_code != 404:
            transient = response.status_code in (409, 429) or response.status_code >= 500
            raise KubeError(
                f"{method} {path}: {response.status_code} {_error_message(response)}",
                response.status_code,
                transient,
            )
        return response

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        response = await self._request("GET", resource_path(api_version, kind, namespace, name))
        if response.status_code == 404:
            return None
        result: dict[str, Any] = response.json()
        return result

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply under the operator's one field manager."""
        metadata = manifest["metadata"]
        path = resource_path(
            manifest["apiVersion"], manifest["kind"], metadata["namespace"], metadata["name"]
        )
        response = await self._request(
            "PATCH",
            path,
            body=manifest,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
        )
        if response.status_code == 404:
            raise KubeError(
                f"apply {manifest['kind']} {metadata['name']}: the API does not serve "
                f"{manifest['apiVersion']} (is its CRD installed?)",
                404,
                transient=False,
            )
        result: dict[str, Any] = response.json()
        return result

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        await self._request(
            "DELETE",
            resource_path(api_version, kind, namespace, name),
            body={"propagationPolicy": "Background"},
        )

    async def patch_status(
        self, namespace: str, name: str, status_patch: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource; the updated object, or None if it is gone."""
        path = resource_path(f"{GROUP}/{VERSION}", "ModelDeployment", namespace, name) + "/status"
        response = await self._request(
            "PATCH",
            path,
            body={"status": status_patch},
            content_type="application/merge-patch+json",
        )
        if response.status_code == 404:
            return None
        result: dict[str, Any] = response.json()
        return result

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        metadata = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], manifest["kind"], metadata["namespace"])
        result: dict[str, Any] = (await self._request("POST", path, body=manifest)).json()
        return result

    async def replace(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """PUT with the manifest's resourceVersion: fails with 409 if someone wrote in between."""
        metadata = manifest["metadata"]
        path = resource_path(
            manifest["apiVersion"], manifest["kind"], metadata["namespace"], metadata["name"]
        )
        result: dict[str, Any] = (await self._request("PUT", path, body=manifest)).json()
        return result

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        secret = await self.get("v1", "Secret", namespace, name)
        if secret is None:
            raise KubeError(f"Secret {namespace}/{name} not found", 404, transient=True)
        encoded = (secret.get("data") or {}).get(key)
        if encoded is None:
            raise KubeError(f"Secret {namespace}/{name} has no key {key!r}", 404, transient=True)
        return base64.b64decode(encoded).decode()

    async def event(
        self, involved: ObjectRef, event_type: str, reason: str, message: str, component: str
    ) -> None:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved.name}.", "namespace": involved.namespace},
            "involvedObject": {
                "apiVersion": involved.api_version,
                "kind": involved.kind,
                "namespace": involved.namespace,
                "name": involved.name,
                "uid": involved.uid,
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._request("POST", resource_path("v1", "Event", involved.namespace), body=body)
