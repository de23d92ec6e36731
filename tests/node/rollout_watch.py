"""What a rollout did, step by step: the operator's status over time, and the share of
requests the canary really served at each step (from Prometheus) against its weight.

``StatusRecorder`` polls a ModelDeployment's status four times a second and keeps every
change. ``step_windows`` (pure) cuts that timeline into the canary's steps: from the moment
a step began (the canary ready, or an analysis passed) to the next change, with the moment
its pods settled (the ready-pod share the operator reports, ``actualWeight``, reached its
final value for the step). ``step_shares`` asks Prometheus how many requests each track
served in those windows: the difference of ``modelserver_requests_total`` summed by track
at both ends (no pod goes away during a step, and a new pod's counter starts at zero).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from tests.node.monitoring import InClusterPrometheus

GROUP, VERSION, PLURAL = "modeldeploy.dev", "v1alpha1", "modeldeployments"


@dataclass(frozen=True)
class Snapshot:
    at: float  # unix time it was seen
    phase: str
    stable_version: str
    canary_version: str  # "" without a canary
    ready: bool  # the canary's pods became ready (it walks its steps)
    step: int  # 0-based
    weight: int
    actual_weight: int

    @classmethod
    def of(cls, at: float, status: dict[str, Any]) -> Snapshot:
        canary = status.get("canary") or {}
        return cls(
            at=at,
            phase=str(status.get("phase", "")),
            stable_version=str((status.get("stable") or {}).get("version", "")),
            canary_version=str(canary.get("version", "")),
            ready=bool(canary.get("readyAt")),
            step=int(canary.get("step") or 0),
            weight=int(canary.get("weight") or 0),
            actual_weight=int(canary.get("actualWeight") or 0),
        )

    def same_state(self, other: Snapshot) -> bool:
        return (
            self.phase,
            self.stable_version,
            self.canary_version,
            self.ready,
            self.step,
            self.weight,
            self.actual_weight,
        ) == (
            other.phase,
            other.stable_version,
            other.canary_version,
            other.ready,
            other.step,
            other.weight,
            other.actual_weight,
        )


@dataclass
class StatusRecorder:
    kubeconfig: str
    namespace: str
    name: str
    period: float = 0.25
    snapshots: list[Snapshot] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> StatusRecorder:
        self._thread = threading.Thread(target=self._run, name="status-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def latest(self) -> Snapshot | None:
        return self.snapshots[-1] if self.snapshots else None

    def _run(self) -> None:
        # a client of its own: this thread polls while the test uses the other
        api = k8s_config.new_client_from_config(config_file=self.kubeconfig)
        custom = k8s_client.CustomObjectsApi(api)
        try:
            while not self._stop.is_set():
                obj: Any
                try:
                    obj = custom.get_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, PLURAL, self.name, _request_timeout=5
                    )
                except (ApiException, urllib3.exceptions.HTTPError, OSError):
                    obj = None  # a moment without the API server: the next poll tells
                if obj is not None:
                    seen = Snapshot.of(time.time(), obj.get("status") or {})
                    last = self.latest()
                    if last is None or not seen.same_state(last):
                        self.snapshots.append(seen)
                self._stop.wait(self.period)
        finally:
            api.close()


@dataclass(frozen=True)
class StepWindow:
    canary_version: str
    step: int  # 0-based
    weight: int  # what the operator set
    actual_weight: int  # the ready-pod share it reported at the end of the step
    start: float
    settled: float  # when actual_weight reached its value for the step
    end: float


def step_windows(snapshots: list[Snapshot], now: float) -> list[StepWindow]:
    """The steps a canary walked, in order; a step ends at the next status change of step,
    canary or phase (an analysis passed, a promotion or rollback started)."""
    windows: list[StepWindow] = []
    run: list[Snapshot] = []

    def close(end: float) -> None:
        if run:
            final = run[-1].actual_weight
            settled = next(s.at for s in run if s.actual_weight == final)
            first = run[0]
            windows.append(
                StepWindow(
                    first.canary_version, first.step, first.weight, final, first.at, settled, end
                )
            )
            run.clear()

    for snap in snapshots:
        walking = snap.phase == "Progressing" and snap.ready and bool(snap.canary_version)
        continues = (
            run
            and walking
            and (snap.canary_version, snap.step)
            == (
                run[0].canary_version,
                run[0].step,
            )
        )
        if not continues:
            close(snap.at)
        if walking:
            run.append(snap)
    close(now)
    return windows


@dataclass(frozen=True)
class StepShare:
    window: StepWindow
    canary: float  # requests the canary served in the whole step
    total: float
    settled_canary: float  # the same once its pods had settled
    settled_total: float

    @property
    def share(self) -> float | None:
        return 100 * self.canary / self.total if self.total else None

    @property
    def settled_share(self) -> float | None:
        return 100 * self.settled_canary / self.settled_total if self.settled_total else None


def _served_by_track(
    prometheus: InClusterPrometheus, namespace: str, name: str, at: float
) -> dict[str, float]:
    promql = (
        f'sum by (track) (modelserver_requests_total{{namespace="{namespace}", '
        f'modeldeployment="{name}", outcome!="client_error"}})'
    )
    return {
        r["metric"].get("track", ""): float(r["value"][1]) for r in prometheus.query(promql, at)
    }


def step_shares(
    prometheus: InClusterPrometheus, namespace: str, name: str, windows: list[StepWindow]
) -> list[StepShare]:
    shares = []
    for w in windows:
        start, settled, end = (
            _served_by_track(prometheus, namespace, name, t) for t in (w.start, w.settled, w.end)
        )

        def served(track: str, a: dict[str, float], b: dict[str, float]) -> float:
            return max(0.0, b.get(track, 0.0) - a.get(track, 0.0))

        shares.append(
            StepShare(
                window=w,
                canary=served("canary", start, end),
                total=served("canary", start, end) + served("stable", start, end),
                settled_canary=served("canary", settled, end),
                settled_total=served("canary", settled, end) + served("stable", settled, end),
            )
        )
    return shares


def mean_abs_difference(shares: list[StepShare], against: str = "weight") -> float | None:
    """Mean |share - weight| in percentage points over the steps that served requests
    (`against` "actual_weight": the ready-pod share the operator reported)."""
    diffs = [abs(s.share - getattr(s.window, against)) for s in shares if s.share is not None]
    return sum(diffs) / len(diffs) if diffs else None


def share_table(title: str, shares: list[StepShare]) -> str:
    lines = [
        title,
        "| step | weight set % | ready-pod share % | canary / all requests | share % | "
        "settled: canary / all | settled share % |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in shares:
        w = s.window
        share = f"{s.share:.1f}" if s.share is not None else "-"
        settled = f"{s.settled_share:.1f}" if s.settled_share is not None else "-"
        lines.append(
            f"| {w.step + 1} | {w.weight} | {w.actual_weight} | {s.canary:.0f} / {s.total:.0f} "
            f"| {share} | {s.settled_canary:.0f} / {s.settled_total:.0f} | {settled} |"
        )
    for against, label in (("weight", "set weight"), ("actual_weight", "ready-pod share")):
        mad = mean_abs_difference(shares, against)
        if mad is not None:
            lines.append(f"mean |share - {label}|: {mad:.1f} percentage points")
    return "\n".join(lines)
