"""Status conditions: one setter, and the names GitOps tools read."""

from __future__ import annotations

from datetime import datetime

from modeldeploy.api import Condition, ConditionStatus, ModelDeploymentStatus

# Conditions: Available (stable serves), Ready (this generation serves in full), and the
# two kstatus reads (Flux, cli-utils): Reconciling (a rollout is in flight) and Stalled
# (it ended in failure and will not go on by itself).
AVAILABLE, READY, RECONCILING, STALLED, PROGRESSING = (
    "Available",
    "Ready",
    "Reconciling",
    "Stalled",
    "Progressing",
)
DROPPED_CONDITIONS = ("Reconciled",)


def set_condition(
    status: ModelDeploymentStatus,
    kind: str,
    true: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None = None,
) -> None:
    """Set one condition; its transition time moves only when its status changes."""
    value = ConditionStatus.TRUE if true else ConditionStatus.FALSE
    for existing in status.conditions:
        if existing.type == kind:
            if existing.status != value:
                existing.last_transition_time = now
            existing.status, existing.reason, existing.message = value, reason, message
            if generation is not None:
                existing.observed_generation = generation
            return
    status.conditions.append(
        Condition(
            type=kind,
            status=value,
            reason=reason,
            message=message,
            last_transition_time=now,
            observed_generation=generation,
        )
    )
