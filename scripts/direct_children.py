"""The peer bench-operator compares against: each ModelDeployment's children created by
a bare client the moment it appears, with no reads, status, events or priorities.

It builds the very manifests the operator would (same builders, same owner), applies
them with the operator's API client and handles as many objects at once as the operator
reconciles at once, so what is left to compare is the operator's own work.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from kubernetes import client, watch

from modeldeploy import resources
from modeldeploy.api import ModelDeployment
from modeldeploy.config import DEFAULT_IMAGE
from modeldeploy.kube import Kube, load_configuration
from modeldeploy.rollout import Track
from modeldeploy.scheduler import CONCURRENT_RECONCILES


def children_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    md = ModelDeployment.model_validate(body)
    name, namespace, uid = md.metadata.name, md.metadata.namespace, body["metadata"]["uid"]
    template = resources.template_of(md.spec, DEFAULT_IMAGE)
    revision = resources.revision_of(template)
    return [
        resources.deployment(
            name, namespace, uid, Track.STABLE, revision, template, md.spec.replicas
        ),
        resources.service(name, namespace, uid),
        resources.service(name, namespace, uid, Track.STABLE),
    ]


class DirectCreator:
    """Watches ModelDeployments in one namespace and creates their children at once."""

    def __init__(self, api_client: client.ApiClient, kubeconfig: str, namespace: str) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._kubeconfig = kubeconfig
        self._namespace = namespace
        self._loop = asyncio.new_event_loop()
        self._kube: Kube | None = None
        self.errors: list[str] = []
        self._stop = threading.Event()
        # As many objects at once as the operator reconciles at once, so the comparison
        # is of the work per object, not of how hard each side pushes the API server.
        self._slots = asyncio.Semaphore(CONCURRENT_RECONCILES)

    def __enter__(self) -> DirectCreator:
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self._kube = asyncio.run_coroutine_threadsafe(self._open(), self._loop).result()
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._kube is not None:
            asyncio.run_coroutine_threadsafe(self._kube.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _open(self) -> Kube:
        return Kube(load_configuration(self._kubeconfig))

    def _watch(self) -> None:
        stream = watch.Watch()
        list_call = self._custom.list_namespaced_custom_object
        args = ("modeldeploy.dev", "v1alpha1", self._namespace, "modeldeployments")
        try:
            for event in stream.stream(list_call, *args, timeout_seconds=900):
                if self._stop.is_set():
                    break
                if event["type"] == "ADDED":
                    asyncio.run_coroutine_threadsafe(self._create(event["object"]), self._loop)
        except Exception as error:  # the cluster going away ends the watch
            if not self._stop.is_set():
                self.errors.append(f"watch ended: {error!r}")
        finally:
            stream.stop()

    async def _create(self, body: dict[str, Any]) -> None:
        assert self._kube is not None
        kube = self._kube
        async with self._slots:
            outcomes = await asyncio.gather(
                *(kube.apply(manifest, force=False) for manifest in children_of(body)),
                return_exceptions=True,
            )
        self.errors += [str(o) for o in outcomes if isinstance(o, BaseException)]
