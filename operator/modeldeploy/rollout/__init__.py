"""The rollout decision core: (spec, status, observations, now) -> next status and actions.

Pure: no I/O, no clock, no randomness. The shell (`reconciler.py`) observes the cluster,
runs an analysis when `analysis_due` says so, calls `decide`, and applies the result.
All state that must survive a restart lives in the returned status.

- `model`: what is observed and what is decided;
- `machine`: the state machine every strategy shares (first deployment, steady state,
  manual requests, supersession, rollback, history, conditions) and `decide`;
- `canary`, `blue_green`, `direct`: the strategies, behind the interface in `strategy`;
- `requests`: the manual-request annotations; `conditions`: the condition names and setter.
"""

from modeldeploy.rollout.canary import next_analysis_at
from modeldeploy.rollout.conditions import (
    AVAILABLE,
    DROPPED_CONDITIONS,
    PROGRESSING,
    READY,
    RECONCILING,
    STALLED,
    set_condition,
)
from modeldeploy.rollout.machine import analysis_due, analysis_track, decide, strategy_for
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
    "analysis_track",
    "decide",
    "interval_seconds",
    "new_requests",
    "next_analysis_at",
    "set_condition",
    "strategy_for",
]
