"""Leader election against a real local HTTP server standing in for the API server.

Timings are scaled down (a 2 s Lease) so a stalled API server shows within seconds.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client as k8s_client

from modeldeploy.__main__ import stop_leading
from modeldeploy.config import parse_args
from modeldeploy.health import Health
from modeldeploy.kube import Kube
from modeldeploy.leader import LeaderLease, LeaseTimings
from modeldeploy.scheduler import Scheduler
from tests.support import LocalServer, Reply, Request

TIMINGS = LeaseTimings(duration=2, renew_deadline=1.0, retry_period=0.2)
LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/ml/leases/modeldeploy-operator"
STATUS_PATH = "/apis/modeldeploy.dev/v1alpha1/namespaces/ml/modeldeployments/fraud/status"
NEVER = 3600.0  # the server wakes sleeping handlers when it stops


@dataclass
class Arrival:
    method: str
    path: str
    at: float
    attempt: int | None = None
    """For a status write: which write of the reconcile it was."""


@dataclass
class FakeApiServer:
    """Serves one Lease (GET, create, PUT with resourceVersion checks) and status patches,
    records every request as it arrives, and can stall: accept requests, never answer."""

    lease: dict[str, Any] | None = None
    arrivals: list[Arrival] = field(default_factory=list)
    stalled: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stall(self, *paths: str) -> None:
        with self._lock:
            self.stalled.update(paths)

    def expiry(self) -> float:
        """When a standby may take the Lease: its last renewTime plus its duration."""
        with self._lock:
            assert self.lease is not None
            spec = self.lease["spec"]
            renewed = datetime.fromisoformat(spec["renewTime"].replace("Z", "+00:00"))
            return renewed.timestamp() + spec["leaseDurationSeconds"]

    def renewals(self) -> int:
        with self._lock:
            return sum(a.method == "PUT" and a.path == LEASE_PATH for a in self.arrivals)

    def lease_requests(self) -> int:
        with self._lock:
            return sum(a.path == LEASE_PATH for a in self.arrivals)

    def status_writes(self) -> int:
        with self._lock:
            return sum(a.path == STATUS_PATH for a in self.arrivals)

    def answer(self, request: Request) -> Reply:
        body: dict[str, Any] | None = json.loads(request.body) if request.body else None
        with self._lock:
            attempt = body["status"]["attempt"] if body and request.path == STATUS_PATH else None
            self.arrivals.append(Arrival(request.method, request.path, time.time(), attempt))
            if request.path in self.stalled:
                return Reply(200, delay=NEVER, close=True)
            if request.path == STATUS_PATH:
                return Reply(200, json.dumps({"metadata": {"resourceVersion": "1"}}))
            return self._lease(request.method, body)

    def _lease(self, method: str, body: dict[str, Any] | None) -> Reply:
        if method == "GET":
            if self.lease is None:
                return Reply(404, json.dumps({"kind": "Status", "code": 404}))
            return Reply(200, json.dumps(self.lease))
        assert body is not None
        version = int((self.lease or {}).get("metadata", {}).get("resourceVersion", "0"))
        sent = body["metadata"].get("resourceVersion")
        if (method == "POST" and self.lease is not None) or (
            method == "PUT" and sent != str(version)
        ):
            return Reply(409, json.dumps({"kind": "Status", "code": 409, "message": "conflict"}))
        body["metadata"]["resourceVersion"] = str(version + 1)
        self.lease = body
        return Reply(200, json.dumps(body))


def configuration(url: str) -> k8s_client.Configuration:
    config = k8s_client.Configuration()
    config.host = url
    return config


async def eventually(condition: Any, what: str) -> None:
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Outcome:
    stopped_at: float
    expiry: float
    attempts_when_lost: int
    lease_requests_when_lost: int
    api: FakeApiServer


def lead_then_stall(stalled: tuple[str, ...]) -> Outcome:
    """A leader whose reconciles write status continuously; after a few renewals the API
    server stalls the given paths. Returns once the stopped leader's Lease has expired."""
    api = FakeApiServer()
    attempts = 0
    seen: dict[str, int] = {}

    with LocalServer(api.answer) as server:

        async def scenario() -> Outcome:
            nonlocal attempts
            reconciles = Kube(configuration(server.url))
            lease = LeaderLease(
                Kube(configuration(server.url), timeout=TIMINGS.renew_deadline),
                "ml",
                "modeldeploy-operator",
                "replica-a",
                TIMINGS,
            )

            async def reconcile(_: dict[str, Any]) -> tuple[None, None]:
                """One status write per watch event, like a rollout making progress."""
                nonlocal attempts
                attempts += 1
                await reconciles.patch_status("ml", "fraud", {"attempt": attempts})
                return None, None

            scheduler = Scheduler(reconcile, resync_seconds=60)
            stop = asyncio.Event()
            health = Health()
            health.leading = True
            give_up = stop_leading(reconciles, scheduler, health, stop)

            async def lost() -> None:
                seen["attempts"] = attempts
                seen["lease requests"] = api.lease_requests()
                await give_up()

            async def watch() -> None:
                """Like kopf, which hands over events until it has stopped watching."""
                for version in range(1, 1_000_000):
                    scheduler.observe(
                        {
                            "metadata": {
                                "namespace": "ml",
                                "name": "fraud",
                                "resourceVersion": f"{version}",
                            }
                        }
                    )
                    await asyncio.sleep(0.05)

            await lease.acquire()
            keeper = asyncio.create_task(lease.keep(lost))
            watcher = asyncio.create_task(watch())
            try:
                await eventually(
                    lambda: api.renewals() >= 2 and api.status_writes() >= 3,
                    "renewals and reconciles",
                )
                api.stall(*stalled)
                await asyncio.wait_for(stop.wait(), timeout=60)
                stopped_at = time.time()
                assert not health.leading
                await asyncio.wait_for(keeper, timeout=10)
                expiry = api.expiry()
                # Anything still writing would show up by the time a standby takes over.
                await asyncio.sleep(max(expiry - time.time(), 0) + 0.5)
            finally:
                keeper.cancel()
                watcher.cancel()
                await scheduler.stop()
                await reconciles.close()
                await lease.kube.close()
            return Outcome(stopped_at, expiry, seen["attempts"], seen["lease requests"], api)

        return asyncio.run(scenario())


@pytest.mark.parametrize(
    "stalled",
    [(LEASE_PATH,), (LEASE_PATH, STATUS_PATH)],
    ids=["only-the-lease-stalls", "the-whole-api-stalls"],
)
def test_a_leader_that_cannot_renew_stops_before_its_lease_expires_and_writes_nothing_after(
    stalled: tuple[str, ...],
) -> None:
    outcome = lead_then_stall(stalled)

    assert outcome.stopped_at < outcome.expiry, (
        f"the leader stopped {outcome.stopped_at - outcome.expiry:.1f} s after its Lease "
        "expired: a standby could already be reconciling"
    )
    writes = [a for a in outcome.api.arrivals if a.path == STATUS_PATH]
    assert writes, "the reconciles never wrote: the scenario did not run"
    assert all(a.at < outcome.expiry for a in writes), "a write reached the API after expiry"
    late = [a.attempt for a in writes if (a.attempt or 0) > outcome.attempts_when_lost]
    assert not late, f"writes begun after the leader gave up reached the API: {late}"
    assert outcome.api.lease_requests() == outcome.lease_requests_when_lost, (
        "it kept renewing after giving up"
    )


def test_a_leader_whose_lease_another_replica_took_stops_at_its_next_renewal() -> None:
    api = FakeApiServer()
    with LocalServer(api.answer) as server:

        async def scenario() -> None:
            lease = LeaderLease(
                Kube(configuration(server.url)), "ml", "modeldeploy-operator", "a", TIMINGS
            )
            stopped = asyncio.Event()

            async def lost() -> None:
                stopped.set()

            try:
                await lease.acquire()
                keeper = asyncio.create_task(lease.keep(lost))
                await eventually(lambda: api.renewals() >= 1, "a renewal")
                with api._lock:
                    assert api.lease is not None
                    api.lease["spec"]["holderIdentity"] = "b"
                    api.lease["metadata"]["resourceVersion"] = "1000"
                await asyncio.wait_for(stopped.wait(), timeout=30)
                await asyncio.wait_for(keeper, timeout=10)
            finally:
                await lease.kube.close()
            assert api.lease["spec"]["holderIdentity"] == "b"

        asyncio.run(scenario())


def test_a_failed_renewal_is_retried_and_the_leader_keeps_leading() -> None:
    api = FakeApiServer()
    failures = 0

    def flaky(request: Request) -> Reply:
        nonlocal failures
        if request.method == "PUT" and failures < 2:
            failures += 1
            return Reply(500, json.dumps({"kind": "Status", "message": "etcd hiccup"}))
        return api.answer(request)

    with LocalServer(flaky) as server:

        async def scenario() -> None:
            lease = LeaderLease(
                Kube(configuration(server.url)), "ml", "modeldeploy-operator", "a", TIMINGS
            )
            stopped = asyncio.Event()

            async def lost() -> None:
                stopped.set()

            try:
                await lease.acquire()
                keeper = asyncio.create_task(lease.keep(lost))
                await eventually(lambda: failures == 2 and api.renewals() >= 4, "renewals")
                assert not stopped.is_set()
                keeper.cancel()
            finally:
                await lease.kube.close()

        asyncio.run(scenario())


@pytest.mark.parametrize(
    "flags",
    [
        ["--renew-deadline-seconds", "15"],
        ["--retry-period-seconds", "10"],
        ["--lease-duration-seconds", "0"],
    ],
)
def test_timings_that_would_let_two_leaders_act_are_refused(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(flags)
    assert "retry period < renew deadline < lease duration" in capsys.readouterr().err


def test_timings_come_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDEPLOY_LEASE_DURATION_SECONDS", "30")
    config = parse_args(["--renew-deadline-seconds", "20", "--retry-period-seconds", "4"])
    assert config.lease_timings == LeaseTimings(duration=30, renew_deadline=20, retry_period=4)
    monkeypatch.delenv("MODELDEPLOY_LEASE_DURATION_SECONDS")
    assert parse_args([]).lease_timings == LeaseTimings()
