"""`modeldeploy-operator` / `python -m modeldeploy`: run the operator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable

import kopf
from prometheus_client import start_http_server

import modeldeploy.handlers  # noqa: F401  (registers the kopf handlers)
from modeldeploy.config import OperatorConfig, parse_args
from modeldeploy.health import Health
from modeldeploy.kube import ConfigException, Configuration, Kube, load_configuration
from modeldeploy.leader import LeaderLease
from modeldeploy.reconciler import Reconciler
from modeldeploy.scheduler import Scheduler

log = logging.getLogger("modeldeploy")


def stop_leading(
    kube: Kube, scheduler: Scheduler, health: Health, stop: asyncio.Event
) -> Callable[[], Awaitable[None]]:
    """What the leader does the moment it loses the Lease: from then on, nothing writes."""

    async def stopped() -> None:
        stop.set()  # kopf stops watching
        health.leading = False
        # Closing the session refuses every new request and drops those in flight before
        # its first await, so no reconcile sends anything once this line has started.
        await kube.close()
        await scheduler.stop()

    return stopped


async def run(config: OperatorConfig, configuration: Configuration) -> int:
    health = Health()
    await health.start(config.bind_address, config.health_port)
    start_http_server(config.metrics_port, addr=config.bind_address)
    kube = Kube(configuration)
    reconciler = Reconciler(kube, config)
    scheduler = Scheduler(reconciler.reconcile, config.resync_seconds)
    stop = asyncio.Event()
    lease: LeaderLease | None = None
    keeper: asyncio.Task[None] | None = None
    exit_code = 0
    try:
        if config.leader_election:
            namespace = config.lease_namespace or (config.namespaces or ["default"])[0]
            timings = config.lease_timings
            lease = LeaderLease(
                # A session of its own: a renewal never queues behind reconciles' requests.
                Kube(configuration, timeout=timings.renew_deadline),
                namespace,
                config.lease_name,
                config.identity,
                timings,
            )
            await lease.acquire()
            keeper = asyncio.create_task(lease.keep(stop_leading(kube, scheduler, health, stop)))
        health.leading = True

        await kopf.operator(
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            standalone=True,
            stop_flag=stop,
            memo=kopf.Memo(scheduler=scheduler, reconciler=reconciler, config=config),
        )
        if stop.is_set():  # only a lost Lease sets it; kopf handles SIGTERM by itself
            log.error("stopping: leadership lost")
            exit_code = 1
    finally:
        await scheduler.stop()
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if lease is not None:
            if exit_code == 0:
                with contextlib.suppress(Exception):
                    await lease.release()
            await lease.kube.close()
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
    try:
        configuration = load_configuration(config.kubeconfig)
    except ConfigException as error:
        reason = str(error).rstrip(".")
        sys.exit(
            f"modeldeploy-operator: no Kubernetes credentials: {reason}. Run it in a Pod "
            "with a ServiceAccount, or give --kubeconfig (or KUBECONFIG) a kubeconfig file"
        )
    sys.exit(asyncio.run(run(config, configuration)))


if __name__ == "__main__":
    main()
