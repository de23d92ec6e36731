"""Kubernetes access: server-side apply, reads, deletes, status patches, events, secrets.

Credentials come from the official client's config loaders (kubeconfig or in-cluster);
requests go through one aiohttp session (kopf's own HTTP stack): its C parser and pooled
TLS connections keep the operator's CPU per request low when hundreds of objects change.
"""

from __future__ import annotations

import base64
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client import Configuration as Configuration
from kubernetes.config import ConfigException as ConfigException

from modeldeploy import metrics
from modeldeploy.api import GROUP, PLURAL, VERSION
from modeldeploy.resources import FIELD_MANAGER

_PLURALS = {
    ("v1", "Service"): "services",
    ("v1", "Secret"): "secrets",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Event"): "events",
    ("v1", "Pod"): "pods",
    ("apps/v1", "Deployment"): "deployments",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("batch/v1", "Job"): "jobs",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproutes",
    ("gateway.networking.k8s.io/v1", "GRPCRoute"): "grpcroutes",
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


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any


def _error_message(reply: Reply) -> str:
    if isinstance(reply.body, dict) and reply.body.get("message"):
        return str(reply.body["message"])
    return str(reply.body)


def _authorization(configuration: k8s_client.Configuration) -> str | None:
    """The bearer token, refreshed per request: bound service account tokens rotate."""
    hook = getattr(configuration, "refresh_api_key_hook", None)
    if hook is not None:
        hook(configuration)
    # The client's loaders keep the token under "BearerToken" (in-cluster: "bearer <token>");
    # "authorization" is the older spelling some callers still set.
    token: str | None = configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    return token or None


def load_configuration(kubeconfig: str | None) -> Configuration:
    """Credentials from `kubeconfig`, else in-cluster, else the default kubeconfig;
    ConfigException says why when none can be had."""
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
    """False skips verification (aiohttp's spelling), as the kubeconfig asked."""
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
    # Connections to the API server: as many as reconciles run at once and then some, all
    # kept alive, so a burst never pays for a TLS handshake per request.
    CONNECTIONS = 48

    def __init__(self, configuration: k8s_client.Configuration, timeout: float = 30.0) -> None:
        self._configuration = configuration
        self._base = configuration.host.rstrip("/")
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                ssl=_ssl_context(configuration), limit=self.CONNECTIONS, keepalive_timeout=60
            ),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def close(self) -> None:
        await self._http.close()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> Reply:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        token = _authorization(self._configuration)
        if token:
            headers["Authorization"] = token
        started = time.monotonic()
        try:
            async with self._http.request(
                method,
                self._base + path,
                data=None if body is None else orjson.dumps(body),
                headers=headers,
                params=params,
            ) as response:
                raw = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as error:
            metrics.API_ERRORS.labels(method, _resource_of(path), "unreachable").inc()
            raise KubeError(f"{method} {path}: {error!r}", None, transient=True) from error
        finally:
            metrics.API_REQUESTS.labels(method, _resource_of(path)).observe(
                time.monotonic() - started
            )
        try:
            reply = Reply(status, orjson.loads(raw) if raw else None)
        except orjson.JSONDecodeError:
            reply = Reply(status, raw.decode(errors="replace"))
        if status >= 400 and status != 404:
            metrics.API_ERRORS.labels(method, _resource_of(path), str(status)).inc()
            transient = status in (409, 429) or status >= 500
            raise KubeError(f"{method} {path}: {status} {_error_message(reply)}", status, transient)
        return reply

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str, *, cached: bool = False
    ) -> dict[str, Any] | None:
        """The object, or None if it does not exist.

        `cached` reads the API server's watch cache instead of etcd: much cheaper under load,
        and at most as stale as a watch, which is all an existence check needs.
        """
        params = {"resourceVersion": "0"} if cached else None
        path = resource_path(api_version, kind, namespace, name)
        reply = await self._request("GET", path, params=params)
        return None if reply.status == 404 else dict(reply.body)

    async def apply(
        self, manifest: dict[str, Any], *, force: bool = True, manager: str = FIELD_MANAGER
    ) -> dict[str, Any]:
        """Server-side apply under the operator's one field manager.

        Without `force`, a field another manager set to a different value is a 409 instead
        of being taken over: the safe way to create an object that was just seen absent.
        """
        metadata = manifest["metadata"]
        path = resource_path(
            manifest["apiVersion"], manifest["kind"], metadata["namespace"], metadata["name"]
        )
        reply = await self._request(
            "PATCH",
            path,
            body=manifest,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": manager, "force": "true" if force else "false"},
        )
        if reply.status == 404:
            raise KubeError(
                f"apply {manifest['kind']} {metadata['name']}: the API does not serve "
                f"{manifest['apiVersion']} (is its CRD installed?)",
                404,
                transient=False,
            )
        return dict(reply.body)

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
        reply = await self._request(
            "PATCH",
            path,
            body={"status": status_patch},
            content_type="application/merge-patch+json",
        )
        return None if reply.status == 404 else dict(reply.body)

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        metadata = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], manifest["kind"], metadata["namespace"])
        return dict((await self._request("POST", path, body=manifest)).body)

    async def replace(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """PUT with the manifest's resourceVersion: fails with 409 if someone wrote in between."""
        metadata = manifest["metadata"]
        path = resource_path(
            manifest["apiVersion"], manifest["kind"], metadata["namespace"], metadata["name"]
        )
        return dict((await self._request("PUT", path, body=manifest)).body)

    async def list(
        self, api_version: str, kind: str, namespace: str, labels: dict[str, str]
    ) -> list[dict[str, Any]]:
        """The objects whose labels include `labels`, read from the API server's cache."""
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        params = {"labelSelector": selector, "resourceVersion": "0"}
        reply = await self._request(
            "GET", resource_path(api_version, kind, namespace), params=params
        )
        items: list[dict[str, Any]] = (reply.body or {}).get("items") or []
        return items

    async def read_secret_key(self, namespace: str, name: str, key: str) -> bytes:
        """The raw bytes of one key: Secrets hold PEM, DER and tokens alike, and what they
        mean is for the caller to judge (without ever quoting them)."""
        secret = await self.get("v1", "Secret", namespace, name)
        if secret is None:
            raise KubeError(f"Secret {namespace}/{name} not found", 404, transient=True)
        encoded = (secret.get("data") or {}).get(key)
        if encoded is None:
            raise KubeError(f"Secret {namespace}/{name} has no key {key!r}", 404, transient=True)
        return base64.b64decode(encoded)

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
