"""`modeldeploy-operator` / `python -m modeldeploy`: run the operator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

import kopf
from prometheus_client import start_http_server

import modeldeploy.handlers  # noqa: F401  (registers the kopf handlers)
from modeldeploy.config import OperatorConfig, parse_args
from modeldeploy.health import Health
from modeldeploy.kube import Kube, load_configuration
from modeldeploy.leader import LeaderLease
from modeldeploy.reconciler import Reconciler
from modeldeploy.scheduler import Scheduler

log = logging.getLogger("modeldeploy")


async def run(config: OperatorConfig) -> int:
    health = Health()
    await health.start(config.bind_address, config.health_port)
    start_http_server(config.metrics_port, addr=config.bind_address)
    kube = Kube(load_configuration(config.kubeconfig))
    reconciler = Reconciler(kube, config)
    scheduler = Scheduler(reconciler.reconcile, config.resync_seconds)
    stop = asyncio.Event()
    lease: LeaderLease | None = None
    keeper: asyncio.Task[None] | None = None
    exit_code = 0
    try:
        if config.leader_election:
            namespace = config.lease_namespace or (config.namespaces or ["default"])[0]
            lease = LeaderLease(kube, namespace, config.lease_name, config.identity)
            await lease.acquire()
            keeper = asyncio.create_task(lease.keep())
            keeper.add_done_callback(lambda _: stop.set())
        health.leading = True

        await kopf.operator(
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            standalone=True,
            stop_flag=stop,
            memo=kopf.Memo(scheduler=scheduler, reconciler=reconciler, config=config),
        )
        if keeper is not None and keeper.done():
            log.error("stopping: leadership lost")
            exit_code = 1
    finally:
        await scheduler.stop()
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if lease is not None and exit_code == 0:
            with contextlib.suppress(Exception):
                await lease.release()
        await kube.close()
        await health.stop()
    return exit_code


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    if config.kubeconfig:
        # kopf logs in through the kubernetes client's defaults, which read this variable.
        os.environ["KUBECONFIG"] = config.kubeconfig
    kopf.configure(
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL,
        verbose=False,
    )
    # One line per API request drowns the decisions; keep httpx to warnings.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # kopf logs every handled watch event; at hundreds of objects that costs real CPU.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    sys.exit(asyncio.run(run(config)))


if __name__ == "__main__":
    main()
