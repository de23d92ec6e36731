"""The rollout decision core: (spec, status, observations, now) -> next status and actions.

Pure: no I/O, no clock, no randomness. The shell (`reconciler.py`) observes the cluster,
runs an analysis when `analysis_due` says so, calls `decide`, and applies the result.
All state that must survive a restart lives in the returned status.

- `model`: what is observed and what is decided;
- `machine`: the state machine every strategy shares (first deployment, steady state,
  manual requests, supersession, rollback, history, conditions) and `decide`;
- `canary`: the canary strategy;
- `requests`: the manual-request annotations; `conditions`: the condition names and setter.
"""

from modeldeploy.rollout.canary import analysis_due, next_analysis_at
from modeldeploy.rollout.conditions import (
    AVAILABLE,
    DROPPED_CONDITIONS,
    PROGRESSING,
    READY,
    RECONCILING,
    STALLED,
    set_condition,
)
from modeldeploy.rollout.machine import decide
from modeldeploy.rollout.model import (
    POLL_SECONDS,
    STABLE_RECHECK_SECONDS,
    Decision,
    EventRecord,
    Notification,
    Observation,
    Reason,
    Track,
    TrackObservation,
    TrackPlan,
    interval_seconds,
)
from modeldeploy.rollout.requests import (
    ABORT_ANNOTATION,
    MANUAL_ANNOTATIONS,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    PROMOTE_STEP_ANNOTATION,
    RESUME_ANNOTATION,
    RETRY_ANNOTATION,
    new_requests,
)

__all__ = [
    "ABORT_ANNOTATION",
    "AVAILABLE",
    "DROPPED_CONDITIONS",
    "MANUAL_ANNOTATIONS",
    "PAUSE_ANNOTATION",
    "POLL_SECONDS",
    "PROGRESSING",
    "PROMOTE_ANNOTATION",
    "PROMOTE_STEP_ANNOTATION",
    "READY",
    "RECONCILING",
    "RESUME_ANNOTATION",
    "RETRY_ANNOTATION",
    "STABLE_RECHECK_SECONDS",
    "STALLED",
    "Decision",
    "EventRecord",
    "Notification",
    "Observation",
    "Reason",
    "Track",
    "TrackObservation",
    "TrackPlan",
    "analysis_due",
    "decide",
    "interval_seconds",
    "new_requests",
    "next_analysis_at",
    "set_condition",
]
