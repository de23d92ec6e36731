"""What `get`, `history` and `list` show, built from API objects: pure, no I/O.

`get` shows a summary, a tree, the experiment (status.experiment), what monitoring found
and recent events. The tree follows `kubectl argo rollouts get`: the ModelDeployment, its
Deployments (stable first, then canary, then an experiment's variants NAME-v-VARIANT)
with their pods, and the last analysis with each check's value, bounds and verdict.
The experiment's arms and verdict (`experiment_view`) and monitoring (spec.monitoring:
status.drift and status.slo, about the serving stable, not the rollout) are sections of
their own. Rendering (colours, tree guides) is `render.py`'s job; a `Tone` here says what
a status means, not how it looks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modeldeploy.cli.experiment import list_text
from modeldeploy.cli.experiment_view import experiment_fields, experiment_grids, root_info
from modeldeploy.cli.names import (
    FEATURE_DRIFT_CHECK,
    REFERENCE_SUFFIX,
    REVISION_LABEL,
    TRACK_LABEL,
    VERSION_LABEL,
)
from modeldeploy.cli.shapes import Field, Grid, Tone
from modeldeploy.cli.state import Canary, FeedbackWait, Json, Rollout
from modeldeploy.cli.text import (
    age_since,
    bounds,
    human_age,
    number,
    parse_time,
    percent,
    when,
)

RECENT_EVENTS = 8
TRACK_ORDER = ("stable", "canary")


PHASE_TONES = {
    "Available": Tone.GOOD,
    "Pending": Tone.BUSY,
    "Progressing": Tone.BUSY,
    "Promoting": Tone.BUSY,
    "Experimenting": Tone.BUSY,
    "RolledBack": Tone.BAD,
    "Failed": Tone.BAD,
}
VERDICT_TONES = {"Pass": Tone.GOOD, "Fail": Tone.BAD, "NoData": Tone.PAUSED, "Error": Tone.BAD}


@dataclass(frozen=True)
class Snapshot:
    """Everything `get` reads, as the API server returned it."""

    md: Json
    deployments: Sequence[Json] = ()
    pods: Sequence[Json] = ()
    events: Sequence[Json] = ()


@dataclass(frozen=True)
class Row:
    name: str
    kind: str
    status: str
    tone: Tone
    age: str = ""
    info: str = ""


@dataclass(frozen=True)
class Node:
    row: Row
    children: tuple[Node, ...] = ()


@dataclass(frozen=True)
class EventRow:
    age: str
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class View:
    summary: tuple[Field, ...]
    tree: Node
    events: tuple[EventRow, ...] = field(default=())
    monitoring: tuple[Field, ...] = field(default=())
    experiment: tuple[Field, ...] = field(default=())
    """status.experiment: where it stands or its verdict, and its winner."""
    arms: tuple[Grid, ...] = field(default=())
    """The experiment's arms: their traffic while it runs, their numbers once judged."""


def build_view(snapshot: Snapshot, now: datetime) -> View:
    rollout = Rollout.of(snapshot.md)
    experiment = rollout.experiment
    return View(
        summary=summary(rollout, now),
        tree=tree(rollout, snapshot, now),
        events=recent_events(snapshot.events, rollout.uid, now),
        monitoring=monitoring(rollout, now),
        experiment=() if experiment is None else tuple(experiment_fields(rollout, experiment, now)),
        arms=() if experiment is None else experiment_grids(rollout, experiment),
    )


def phase_status(rollout: Rollout) -> tuple[str, Tone]:
    if rollout.canary is not None and rollout.paused_by and rollout.phase == "Progressing":
        return "Paused", Tone.PAUSED
    return rollout.phase, PHASE_TONES.get(rollout.phase, Tone.QUIET)


def summary(rollout: Rollout, now: datetime) -> tuple[Field, ...]:
    status, tone = phase_status(rollout)
    fields = [
        Field("Name", rollout.name),
        Field("Namespace", rollout.namespace),
        Field("Phase", status, tone),
        Field("Message", rollout.message or "(none yet)"),
        Field("Generation", _generation(rollout)),
    ]
    if rollout.stable is not None:
        stable = rollout.stable
        fields.append(
            Field(
                "Stable",
                f"{stable.version} (revision {stable.revision}), "
                f"{stable.ready_replicas}/{stable.replicas} ready",
            )
        )
    canary = rollout.canary
    if canary is not None:
        fields += [
            Field(
                "Canary",
                f"{canary.version} (revision {canary.revision}), "
                f"{canary.ready_replicas}/{canary.replicas} ready",
            ),
            *_position(rollout, canary),
            Field(
                "Analyses",
                f"failed {canary.failed_checks}/{rollout.failure_threshold}, "
                f"inconclusive {canary.inconclusive_checks}/{rollout.inconclusive_limit}",
                Tone.BAD if canary.failed_checks else None,
            ),
        ]
    if rollout.feedback_wait is not None:
        fields.append(Field("Feedback", feedback_text(rollout.feedback_wait, now), Tone.BUSY))
    if rollout.paused_by:
        fields.append(Field("Paused", f"by {rollout.paused_by}", Tone.PAUSED))
    if rollout.rejected_revision:
        fields.append(
            Field("Rejected", f"revision {rollout.rejected_revision} (`retry` tries it again)")
        )
    true = [kind for kind, c in rollout.conditions.items() if c.get("status") == "True"]
    if true:
        fields.append(Field("Conditions", ", ".join(sorted(true))))
    if rollout.pending:
        names = ", ".join(a.split("/", 1)[1] for a in rollout.pending)
        fields.append(Field("Requests", f"{names} (not acted on yet)", Tone.BUSY))
    return tuple(fields)


def _position(rollout: Rollout, canary: Canary) -> list[Field]:
    """Where the new revision stands: its shadow's analyses, or its step and weight."""
    if canary.shadow_passes is not None:
        return [
            Field(
                "Shadow",
                f"{canary.shadow_passes}/{rollout.shadow_analyses} analyses of mirrored "
                "traffic passed; no live traffic, clients never see its answers",
            )
        ]
    return [
        Field("Step", f"{rollout.step_text(canary)} (steps {_steps(rollout.steps)})"),
        Field("Weight", f"set {canary.weight}%, achieved {percent(canary.actual_weight)}"),
    ]


def feedback_text(wait: FeedbackWait, now: datetime) -> str:
    """The hold for quality labels: since when, and until when it is not counted."""
    if wait.since is None:
        return "waiting for quality labels"
    words = f"waiting for quality labels since {when(wait.since, now)}"
    if wait.deadline is None:
        return words
    if now < wait.deadline:
        return f"{words}; not counted as inconclusive until {when(wait.deadline, now)}"
    return (
        f"{words}; feedbackDeadline passed {when(wait.deadline, now)}: "
        "each analysis still waiting counts as inconclusive"
    )


def _generation(rollout: Rollout) -> str:
    if rollout.observed_generation is None:
        return f"{rollout.generation} (not observed yet)"
    if rollout.generation is not None and rollout.observed_generation < rollout.generation:
        return f"{rollout.generation} (status is of {rollout.observed_generation})"
    return f"{rollout.generation} (observed)"


def _steps(steps: Sequence[int]) -> str:
    return ", ".join(f"{s}%" for s in steps)


def tree(rollout: Rollout, snapshot: Snapshot, now: datetime) -> Node:
    status, tone = phase_status(rollout)
    children: list[Node] = []
    pods_by_track: dict[str, list[Json]] = {}
    for pod in snapshot.pods:
        pods_by_track.setdefault(_labels(pod).get(TRACK_LABEL, ""), []).append(pod)
    deployments = sorted(snapshot.deployments, key=lambda d: _track_rank(_labels(d)))
    shown_tracks = set()
    for deployment in deployments:
        track = _labels(deployment).get(TRACK_LABEL, "")
        shown_tracks.add(track)
        version = _labels(deployment).get(VERSION_LABEL)
        pod_nodes = tuple(pod_node(p, now, version) for p in _by_name(pods_by_track.get(track, [])))
        children.append(Node(deployment_row(deployment, now), pod_nodes))
    # Pods of no listed Deployment (one being deleted, say) still belong in the picture.
    for track, pods in sorted(pods_by_track.items()):
        if track not in shown_tracks:
            children += [pod_node(p, now) for p in _by_name(pods)]
    if rollout.last_analysis is not None:
        children.append(analysis_node(rollout.last_analysis, now))
    root = Row(
        name=rollout.name,
        kind="ModelDeployment",
        status=status,
        tone=tone,
        age=age_since(rollout.created, now),
        info=_root_info(rollout),
    )
    return Node(root, tuple(children))


def _root_info(rollout: Rollout) -> str:
    canary = rollout.canary
    experiment = rollout.experiment
    if canary is None and experiment is not None and experiment.running:
        return root_info(experiment)
    if canary is None:
        return f"serving {rollout.stable.version}" if rollout.stable else ""
    if canary.shadow_passes is not None:
        return f"{rollout.step_text(canary)}, mirrored traffic only"
    return (
        f"step {rollout.step_text(canary)}, weight {canary.weight}% "
        f"(achieved {percent(canary.actual_weight)})"
    )


def _labels(obj: Json) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def _name(obj: Json) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _by_name(objs: Sequence[Json]) -> list[Json]:
    return sorted(objs, key=_name)


def _track_rank(labels: dict[str, str]) -> tuple[int, str]:
    track = labels.get(TRACK_LABEL, "")
    return (TRACK_ORDER.index(track) if track in TRACK_ORDER else len(TRACK_ORDER), track)


def deployment_row(deployment: Json, now: datetime) -> Row:
    labels = _labels(deployment)
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    total = int(status.get("replicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    # As `kubectl rollout status` judges it: the controller has seen the latest template,
    # and every pod runs it and is ready (no pod of the old template is left).
    seen = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    if desired == 0:
        state, tone = "ScaledDown", Tone.QUIET
    elif seen and updated >= desired and ready >= desired and total <= updated:
        state, tone = "Ready", Tone.GOOD
    else:
        state, tone = "Progressing", Tone.BUSY
    # The track is in the name; version and revision say what the pods serve.
    parts = [
        labels.get(VERSION_LABEL, "?"),
        f"revision {labels.get(REVISION_LABEL, '?')}",
        f"ready {ready}/{desired}",
    ]
    return Row(
        name=_name(deployment),
        kind="Deployment",
        status=state,
        tone=tone,
        age=age_since(meta.get("creationTimestamp"), now),
        info=", ".join(parts),
    )


def pod_node(pod: Json, now: datetime, expected_version: str | None = None) -> Node:
    """A pod's readiness; its version too when it is not its Deployment's (a pod of the
    old template while the Deployment rolls)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    containers = [c for c in status.get("containerStatuses") or [] if isinstance(c, dict)]
    total = len((pod.get("spec") or {}).get("containers") or []) or len(containers)
    ready = sum(1 for c in containers if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in containers)
    state, tone = _pod_state(meta, status, containers, ready, total)
    info = f"ready {ready}/{total}" + (f", restarts {restarts}" if restarts else "")
    version = _labels(pod).get(VERSION_LABEL)
    if expected_version and version and version != expected_version:
        info += f", serves {version}"
    row = Row(
        name=str(meta.get("name", "")),
        kind="Pod",
        status=state,
        tone=tone,
        age=age_since(meta.get("creationTimestamp"), now),
        info=info,
    )
    return Node(row)


def _pod_state(
    meta: Json, status: Json, containers: list[Json], ready: int, total: int
) -> tuple[str, Tone]:
    if meta.get("deletionTimestamp"):
        return "Terminating", Tone.QUIET
    for container in containers:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason and reason != "ContainerCreating":
            return str(reason), Tone.BAD
    phase = str(status.get("phase") or "Pending")
    if phase == "Running" and total and ready == total:
        return "Running", Tone.GOOD
    if phase in ("Failed", "Unknown"):
        return phase, Tone.BAD
    return phase if phase != "Running" else "Running (not ready)", Tone.BUSY


def analysis_node(analysis: Json, now: datetime) -> Node:
    verdict = str(analysis.get("verdict", "?"))
    parts = [f"step {int(analysis.get('step') or 0) + 1}"]
    requests = analysis.get("requests")
    if isinstance(requests, int | float):
        parts.append(f"{number(requests)} canary requests")
    if analysis.get("awaitingFeedback") is True:
        parts.append("waiting for quality labels")
    row = Row(
        name="analysis",
        kind="Analysis",
        status=verdict,
        tone=VERDICT_TONES.get(verdict, Tone.QUIET),
        age=age_since(analysis.get("at"), now),
        info=", ".join(parts),
    )
    checks = tuple(Node(check_row(c)) for c in analysis.get("checks") or [] if isinstance(c, dict))
    return Node(row, checks)


def check_row(check: Json) -> Row:
    verdict = str(check.get("verdict", "?"))
    info = f"{number(check.get('value'))} ({bounds(check.get('min'), check.get('max'))})"
    message = check.get("message")
    if verdict != "Pass" and message:
        info += f": {message}"
    return Row(
        name=str(check.get("name", "?")),
        kind="Check",
        status=verdict,
        tone=VERDICT_TONES.get(verdict, Tone.QUIET),
        info=info,
    )


def monitoring(rollout: Rollout, now: datetime) -> tuple[Field, ...]:
    """What spec.monitoring last found on the stable: drift against its profile, live
    quality, SLO compliance and the error budget, and since when a crossing lasts."""
    drift, slo = rollout.drift, rollout.slo
    if drift is None and slo is None:
        return ()
    fields = [_last_pass(drift, slo, now)]
    if drift is not None:
        fields += _drift_fields(drift, now)
    if slo is not None:
        fields += _slo_fields(slo, now)
    return tuple(fields)


def _last_pass(drift: Json | None, slo: Json | None, now: datetime) -> Field:
    source = drift if drift is not None else slo
    assert source is not None
    at = parse_time(source.get("at"))
    parts = [f"stable {source.get('version', '?')}"]
    if drift is not None:
        parts.append(f"window {drift.get('window', '?')}")
        rows = drift.get("rows")
        if isinstance(rows, int | float):
            parts.append(f"{_count(rows)} rows")
    elif slo is not None:
        parts.append(f"over {slo.get('period', '?')}")
    where = ", ".join(parts)
    return Field("Last pass", f"{when(at, now)}: {where}" if at else where)


def _drift_fields(drift: Json, now: datetime) -> list[Field]:
    verdict = str(drift.get("verdict", "?"))
    message = str(drift.get("message") or "")
    crossed = parse_time(drift.get("breachedSince"))
    if crossed is not None and verdict == "Fail":
        said, tone = f"Fail since {when(crossed, now)}: {message}", Tone.BAD
    elif crossed is not None:
        # a pass without enough rows or labels neither confirms nor clears a crossing
        said = f"{verdict}: {message}; the crossing found {when(crossed, now)} stands"
        tone = Tone.BAD
    else:
        said = f"{verdict}: {message}" if message else verdict
        tone = VERDICT_TONES.get(verdict, Tone.QUIET)
    fields = [Field("Drift", said, tone)]
    checks = {str(c.get("name")): c for c in drift.get("checks") or [] if isinstance(c, dict)}
    features = [f for f in drift.get("features") or [] if isinstance(f, dict)]
    if features:
        bound = (checks.get(FEATURE_DRIFT_CHECK) or {}).get("max")
        fields.append(Field("Features", "\n".join(_feature_line(f, bound) for f in features)))
    prediction = drift.get("prediction")
    if isinstance(prediction, dict):
        statistic = str(prediction.get("statistic", "psi"))
        words = f"{statistic} {number(prediction.get('value'))}"
        if prediction.get("max") is not None:
            words += f" ({bounds(None, prediction.get('max'))})"
        if prediction.get("output"):
            words += f", output {prediction['output']}"
        fields.append(Field("Prediction", words))
    quality = drift.get("quality")
    if isinstance(quality, dict):
        fields.append(Field("Quality", _quality_text(quality, checks)))
    return fields


def _share(value: object) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "?"


def _feature_line(feature: Json, bound: object) -> str:
    psi = feature.get("psi")
    words = f"{feature.get('feature', '?')}: PSI {number(psi)}"
    if isinstance(psi, int | float) and isinstance(bound, int | float) and psi > bound:
        words += f" > max {number(bound)}"
    if feature.get("bin"):
        words += (
            f" (bin {feature['bin']}: profile {_share(feature.get('profileShare'))}, "
            f"live {_share(feature.get('liveShare'))})"
        )
    return words


def _quality_text(quality: Json, checks: dict[str, Json]) -> str:
    """`accuracy 0.92 (min 0.88) on 388 labelled rows; reference 0.94, drop 0.02 (max 0.03)`"""
    metric = str(quality.get("metric", "?"))
    check = checks.get(metric) or {}
    value = quality.get("value")
    if value is None:
        words = f"{metric}: none yet"
    else:
        words = f"{metric} {number(value)} ({bounds(check.get('min'), check.get('max'))})"
    feedback = quality.get("feedback")
    if isinstance(feedback, int | float):
        words += f" on {_count(feedback)} labelled rows"
    against = []
    if quality.get("reference") is not None:
        against.append(f"reference {number(quality['reference'])}")
    drop = checks.get(metric + REFERENCE_SUFFIX) or {}
    if drop.get("value") is not None:
        against.append(f"drop {number(drop['value'])} ({bounds(None, drop.get('max'))})")
    return f"{words}; {', '.join(against)}" if against else words


def _slo_fields(slo: Json, now: datetime) -> list[Field]:
    compliance, objective = slo.get("compliance"), slo.get("objective")
    remaining = slo.get("errorBudgetRemaining")
    spent = parse_time(slo.get("breachedSince"))
    if isinstance(compliance, int | float) and isinstance(objective, int | float):
        said = (
            f"{compliance:.2%} of {_count(slo.get('windows'))} windows kept the SLO over "
            f"{slo.get('period', '?')} (objective {objective:.2%})"
        )
        fields = [Field("SLO", said)]
    else:
        # a pass that could not count (no traffic, a failed query) keeps an earlier crossing
        fields = [Field("SLO", str(slo.get("message") or "not measured yet"), Tone.QUIET)]
    left = f"{remaining:.0%} left" if isinstance(remaining, int | float) else "not measured"
    if spent is not None:
        fields.append(Field("Error budget", f"{left}, spent since {when(spent, now)}", Tone.BAD))
    elif isinstance(remaining, int | float):
        fields.append(Field("Error budget", left, Tone.GOOD))
    return fields


def _count(value: object) -> str:
    return f"{value:.0f}" if isinstance(value, int | float) else "?"


def _event_time(event: Json) -> datetime | None:
    meta = event.get("metadata") or {}
    for value in (
        event.get("lastTimestamp"),
        event.get("eventTime"),
        meta.get("creationTimestamp"),
    ):
        moment = parse_time(value)
        if moment is not None:
            return moment
    return None


def _event_order(pair: tuple[datetime | None, Json]) -> tuple[float, int]:
    """By time, then by the order the API server stored them: event times have whole
    seconds, and one reconcile often records several events in the same second."""
    moment, event = pair
    version = str((event.get("metadata") or {}).get("resourceVersion", ""))
    return (moment.timestamp() if moment else 0.0, int(version) if version.isdigit() else 0)


def recent_events(events: Sequence[Json], uid: str, now: datetime) -> tuple[EventRow, ...]:
    """The newest events of this object (not of an earlier one of the same name), oldest
    first as `kubectl describe` lists them."""
    own = [e for e in events if (e.get("involvedObject") or {}).get("uid") in (None, "", uid)]
    dated = sorted(((_event_time(e), e) for e in own), key=_event_order)[-RECENT_EVENTS:]
    rows = []
    for moment, event in dated:
        age = "" if moment is None else human_age((now - moment).total_seconds())
        count = int(event.get("count") or 1)
        if count > 1:
            age += f" (x{count})"
        rows.append(
            EventRow(
                age=age,
                type=str(event.get("type", "")),
                reason=str(event.get("reason", "")),
                message=str(event.get("message", "")),
            )
        )
    return tuple(rows)


def tree_lines(node: Node) -> Iterator[tuple[str, Row]]:
    """Each row with the guide that draws the tree in front of its name."""
    yield "", node.row
    yield from _child_lines(node.children, "")


def _child_lines(children: Sequence[Node], indent: str) -> Iterator[tuple[str, Row]]:
    for index, child in enumerate(children):
        last = index == len(children) - 1
        yield indent + ("└── " if last else "├── "), child.row
        yield from _child_lines(child.children, indent + ("    " if last else "│   "))


HISTORY_COLUMNS = ("AGE", "AT", "VERSION", "REVISION", "OUTCOME", "REASON")


def history_rows(md: Json, now: datetime) -> list[tuple[str, ...]]:
    """status.history, newest first as the operator keeps it."""
    rows: list[tuple[str, ...]] = []
    for entry in Rollout.of(md).history:
        at = parse_time(entry.get("at"))
        rows.append(
            (
                age_since(entry.get("at"), now),
                at.strftime("%Y-%m-%d %H:%M:%S") if at else "",
                str(entry.get("version", "")),
                str(entry.get("revision", "")),
                str(entry.get("outcome", "")),
                str(entry.get("reason", "")),
            )
        )
    return rows


LIST_COLUMNS = (
    "NAME",
    "PHASE",
    "STABLE",
    "CANARY",
    "STEP",
    "WEIGHT",
    "ACHIEVED",
    "EXPERIMENT",
    "AGE",
)


def list_row(md: Json, now: datetime, with_namespace: bool) -> tuple[str, ...]:
    rollout = Rollout.of(md)
    status, _ = phase_status(rollout)
    canary = rollout.canary
    row: tuple[str, ...] = (
        rollout.name,
        status,
        rollout.stable.version if rollout.stable else "",
        canary.version if canary else "",
        rollout.step_text(canary) if canary else "",
        f"{canary.weight}%" if canary else "",
        percent(canary.actual_weight) if canary else "",
        list_text(rollout.experiment) if rollout.experiment else "",
        age_since(rollout.created, now),
    )
    return (rollout.namespace, *row) if with_namespace else row


def list_rows(items: Sequence[Any], now: datetime, with_namespace: bool) -> list[tuple[str, ...]]:
    rows = [list_row(md, now, with_namespace) for md in items if isinstance(md, dict)]
    return sorted(rows)
