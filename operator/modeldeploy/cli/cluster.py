"""The plugin's only I/O with Kubernetes: credentials as kubectl finds them, reads, the
request annotations, and watches. Every failure becomes a `CliError` that says what went
wrong and how to fix it; the wording is decided by the pure `explain_*` functions."""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from modeldeploy.cli.names import GROUP, KIND, MD_LABEL, PLURAL, VERSION
from modeldeploy.cli.state import Json
from modeldeploy.cli.view import Snapshot

REQUEST_TIMEOUT = 30.0
# Long enough to be cheap, short enough that a silently dropped watch is replaced.
WATCH_SECONDS = 240
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class CliError(Exception):
    """A failure the user can act on; `str()` says what and how."""


@dataclass(frozen=True)
class Target:
    """Where requests go, for messages: the API server, the context and the namespace."""

    server: str
    context: str
    namespace: str


def explain_config_error(error: str, kubeconfig: str | None, context: str | None) -> str:
    if "No configuration found" in error:
        where = f"--kubeconfig {kubeconfig}" if kubeconfig else _default_kubeconfig_text()
        return (
            f"no Kubernetes credentials: {where} holds no configuration. Pass --kubeconfig "
            "PATH, set KUBECONFIG, or run where ~/.kube/config exists."
        )
    if context and "contexts list" in error:
        return f"context {context!r} is not in the kubeconfig: {error}"
    return f"cannot use the kubeconfig: {error}"


def _default_kubeconfig_text() -> str:
    value = os.environ.get("KUBECONFIG")
    return f"KUBECONFIG={value}" if value else "~/.kube/config (KUBECONFIG is not set)"


def explain_api_error(status: int, reason: str, body: object, action: str, target: Target) -> str:
    """Words for an API error answer: which object, which permission, which CRD."""
    where = f"(context {target.context}, API server {target.server})"
    answer = _status_body(body)
    message = str(answer.get("message") or reason or "").strip()
    if status == 401:
        return (
            f"the API server refused the credentials of context {target.context} "
            f"(401 Unauthorized) {where}: log in again or pick another context with --context."
        )
    if status == 403:
        return f"not allowed to {action} {where}: {message}. Ask for the RBAC permission."
    if status == 404 and not answer:
        # A 404 without a Status object is the API server's "page not found": no such
        # resource type is served at all.
        return (
            f"the API server does not serve {PLURAL}.{GROUP}/{VERSION}: the ModelDeployment "
            f"CRD is not installed {where}. Install it with "
            "`kubectl apply --server-side -f crds/` or the modeldeploy Helm chart."
        )
    if status == 409:
        return (
            f"could not {action}: it changed after the plugin read it (409 Conflict) {where}; "
            f"run the command again to decide on what it is now. {message}"
        )
    if status == 404:
        details = answer.get("details") or {}
        name = details.get("name")
        if name:
            return (
                f'modeldeployment "{name}" not found in namespace {target.namespace} {where}; '
                "pick the namespace with -n NAMESPACE."
            )
        return f"not found while trying to {action} {where}: {message}"
    return f"could not {action}: the API server answered {status} {reason} {where}: {message}"


def _status_body(body: object) -> Json:
    """The metav1.Status the API server sends with an error; {} when it sent none."""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if not isinstance(body, str):
        return {}
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) and parsed.get("kind") == "Status" else {}


def connect(kubeconfig: str | None, context: str | None, namespace: str | None) -> Cluster:
    """A client configured as kubectl would be: --kubeconfig, else KUBECONFIG (several
    files merged), else ~/.kube/config, else a pod's service account; the namespace from
    -n, else the context's, else `default`."""
    if kubeconfig is not None and not Path(kubeconfig).is_file():
        raise CliError(f"--kubeconfig {kubeconfig}: no such file.")
    files = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    configuration = client.Configuration()
    try:
        if _in_cluster_only(files):
            config.load_incluster_config(client_configuration=configuration)
            context_name = "in-cluster"
            default_namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        else:
            contexts, active = config.list_kube_config_contexts(config_file=files)
            chosen = _context(contexts, active, context)
            config.load_kube_config(
                config_file=files,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
            context_name = str(chosen.get("name", context or "?"))
            default_namespace = str((chosen.get("context") or {}).get("namespace") or "default")
    except ConfigException as e:
        raise CliError(explain_config_error(str(e), kubeconfig, context)) from e
    target = Target(configuration.host, context_name, namespace or default_namespace)
    return Cluster(client.ApiClient(configuration), target)


def _in_cluster_only(files: str) -> bool:
    """kubectl's last resort: a pod's service account, when no kubeconfig file exists."""
    return "KUBERNETES_SERVICE_HOST" in os.environ and not any(
        Path(f).is_file() for f in files.split(os.pathsep) if f
    )


def _context(contexts: list[Json], active: Json, wanted: str | None) -> Json:
    if wanted is None:
        return active or {}
    for candidate in contexts:
        if candidate.get("name") == wanted:
            return candidate
    names = ", ".join(str(c.get("name")) for c in contexts) or "none"
    raise CliError(f"context {wanted!r} is not in the kubeconfig (contexts: {names}).")


class Cluster:
    def __init__(self, api: client.ApiClient, target: Target) -> None:
        self.api = api
        self.target = target
        self.namespace = target.namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)

    def _call(self, action: str, request: Callable[[], Any]) -> Any:
        try:
            return request()
        except ApiException as e:
            raise self._api_error(e, action) from e
        except urllib3.exceptions.HTTPError as e:
            raise self._unreachable(e) from e

    def _api_error(self, error: ApiException, action: str) -> CliError:
        return CliError(
            explain_api_error(
                error.status or 0, error.reason or "", error.body, action, self.target
            )
        )

    def _unreachable(self, error: urllib3.exceptions.HTTPError) -> CliError:
        reason = getattr(error, "reason", None) or error
        return CliError(
            f"cannot reach the API server at {self.target.server} "
            f"(context {self.target.context}): {reason}"
        )

    def _json(self, action: str, request: Callable[[], Any]) -> Json:
        response = self._call(action, request)
        data = json.loads(response.data)
        return data if isinstance(data, dict) else {}

    def get(self, name: str) -> Json:
        found: Json = self._call(
            f"get modeldeployment {name} in namespace {self.namespace}",
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        return found

    def list(self, all_namespaces: bool) -> list[Json]:
        if all_namespaces:
            answer = self._call(
                "list modeldeployments in all namespaces",
                lambda: self.custom.list_cluster_custom_object(
                    GROUP, VERSION, PLURAL, _request_timeout=REQUEST_TIMEOUT
                ),
            )
        else:
            answer = self._call(
                f"list modeldeployments in namespace {self.namespace}",
                lambda: self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, _request_timeout=REQUEST_TIMEOUT
                ),
            )
        return [item for item in answer.get("items", []) if isinstance(item, dict)]

    def snapshot(self, name: str) -> Snapshot:
        """The object, its Deployments and pods (by the operator's label) and its Events."""
        md = self.get(name)
        selector = f"{MD_LABEL}={name}"
        ns = self.namespace
        deployments = self._json(
            f"list Deployments in namespace {ns}",
            lambda: self.apps.list_namespaced_deployment(
                ns,
                label_selector=selector,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )
        pods = self._json(
            f"list pods in namespace {ns}",
            lambda: self.core.list_namespaced_pod(
                ns,
                label_selector=selector,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )
        events = self._json(
            f"list events in namespace {ns}",
            lambda: self.core.list_namespaced_event(
                ns,
                field_selector=_event_selector(name),
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )
        return Snapshot(
            md=md,
            deployments=deployments.get("items") or [],
            pods=pods.get("items") or [],
            events=events.get("items") or [],
        )

    def annotate(self, name: str, annotation: str, value: str) -> Json:
        patched: Json = self._call(
            f"annotate modeldeployment {name} in namespace {self.namespace}",
            lambda: self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                {"metadata": {"annotations": {annotation: value}}},
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )
        return patched

    def merge_patch(self, name: str, patch: Json) -> Json:
        """A JSON merge patch of the object: a null member removes that field."""
        patched: Json = self._call(
            f"patch modeldeployment {name} in namespace {self.namespace}",
            lambda: self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                patch,
                _content_type="application/merge-patch+json",
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )
        return patched

    def follow(self, name: str, seconds: float, resource_version: str) -> Iterator[Json | None]:
        """The object at each change for up to `seconds`; None when it is deleted. Ends
        early when the watch's resource version expired (the caller reads it again)."""
        stream = watch.Watch().stream(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            field_selector=f"metadata.name={name}",
            resource_version=resource_version,
            timeout_seconds=max(1, int(seconds)),
            _request_timeout=(REQUEST_TIMEOUT, seconds + REQUEST_TIMEOUT),
            deserialize=False,
        )
        try:
            for event in stream:
                obj = event.get("object")
                yield None if event.get("type") == "DELETED" else obj
        except ApiException as e:
            if e.status != 410:
                raise self._api_error(e, f"watch modeldeployment {name}") from e
        except urllib3.exceptions.HTTPError as e:
            raise self._unreachable(e) from e

    def notify_changes(self, name: str, changes: queue.Queue[str]) -> None:
        """Background watches of everything `get` shows; each change puts its kind on the
        queue. Daemon threads: they end with the process (Ctrl-C)."""
        ns = self.namespace
        selector = f"{MD_LABEL}={name}"
        sources: dict[str, tuple[Callable[..., Any], tuple[Any, ...], dict[str, str]]] = {
            KIND: (
                self.custom.list_namespaced_custom_object,
                (GROUP, VERSION, ns, PLURAL),
                {"field_selector": f"metadata.name={name}"},
            ),
            "Deployment": (
                self.apps.list_namespaced_deployment,
                (ns,),
                {"label_selector": selector},
            ),
            "Pod": (self.core.list_namespaced_pod, (ns,), {"label_selector": selector}),
            "Event": (
                self.core.list_namespaced_event,
                (ns,),
                {"field_selector": _event_selector(name)},
            ),
        }
        for kind, (list_call, args, selectors) in sources.items():
            thread = threading.Thread(
                target=_watch_forever,
                args=(kind, list_call, args, selectors, changes),
                name=f"watch-{kind}",
                daemon=True,
            )
            thread.start()


def _event_selector(name: str) -> str:
    return f"involvedObject.kind={KIND},involvedObject.name={name}"


def _watch_forever(
    kind: str,
    list_call: Callable[..., Any],
    args: tuple[Any, ...],
    selectors: dict[str, str],
    changes: queue.Queue[str],
) -> None:
    while True:
        try:
            for _ in watch.Watch().stream(
                list_call,
                *args,
                timeout_seconds=WATCH_SECONDS,
                _request_timeout=(REQUEST_TIMEOUT, WATCH_SECONDS + REQUEST_TIMEOUT),
                deserialize=False,
                **selectors,
            ):
                changes.put(kind)
        except (ApiException, urllib3.exceptions.HTTPError, OSError):
            # The display re-reads everything and shows the error; the watch tries again.
            changes.put(kind)
            time.sleep(2)
