"""Thin kopf handlers: they only feed watch events to the scheduler."""

from __future__ import annotations

from typing import Any

import kopf

from modeldeploy.api import GROUP, PLURAL, VERSION
from modeldeploy.kopf_settings import tune
from modeldeploy.kube import _authorization, load_configuration
from modeldeploy.reconciler import Reconciler, observe_track
from modeldeploy.resources import MANAGED_BY, MD_LABEL
from modeldeploy.scheduler import Scheduler

# A Deployment reports several status changes in quick succession while its pods start;
# one reconcile after they settle records them all, instead of one status write each.
CHILD_SETTLE_SECONDS = 1.0


@kopf.on.login()
def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
    """Log kopf in with the same credentials as the rest of the operator."""
    configuration = load_configuration(memo.config.kubeconfig)
    # The same lookup as every other request: the client's loaders keep a token (a pod's
    # service account token above all) under "BearerToken", as "bearer <token>".
    token = _authorization(configuration)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        scheme="Bearer" if token else None,
        token=token.split(" ", 1)[-1] if token else None,
        default_namespace="default",
    )


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    tune(settings)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def model_deployment_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    scheduler: Scheduler = memo.scheduler
    body = event["object"]
    metadata = body["metadata"]
    if event.get("type") == "DELETED":
        await scheduler.forget((metadata["namespace"], metadata["name"]))
        return
    scheduler.observe(dict(body))


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def child_deployment_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    """A serving Deployment changed (pods became ready, say): look at its owner again."""
    scheduler: Scheduler = memo.scheduler
    reconciler: Reconciler = memo.reconciler
    deployment = event["object"]
    metadata = deployment["metadata"]
    key = ("Deployment", metadata["namespace"], metadata["name"])
    before = observe_track(reconciler.memory.objects.get(key))
    if event.get("type") == "DELETED":
        reconciler.memory.forget(key)
    else:
        reconciler.memory.remember({**deployment, "kind": "Deployment"})
    if observe_track(reconciler.memory.objects.get(key)) == before:
        return  # nothing the rollout decisions look at has changed
    owner = metadata.get("labels", {}).get(MD_LABEL)
    if owner:
        scheduler.wake((metadata["namespace"], owner), after=CHILD_SETTLE_SECONDS)
