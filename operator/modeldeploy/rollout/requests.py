"""Manual requests: annotations whose value changes each time one is made.

A value already recorded in `status.handledRequests` is not acted on again, and every
new value is recorded in the decision that first sees it, whether or not it changed
anything: an abort swallows a promote or retry made at the same time, and a promote made
while no canary runs does not linger to promote a later one.
"""

from __future__ import annotations

PROMOTE_ANNOTATION = "modeldeploy.dev/promote"
ABORT_ANNOTATION = "modeldeploy.dev/abort"
RETRY_ANNOTATION = "modeldeploy.dev/retry"
PAUSE_ANNOTATION = "modeldeploy.dev/pause"
RESUME_ANNOTATION = "modeldeploy.dev/resume"
PROMOTE_STEP_ANNOTATION = "modeldeploy.dev/promote-step"
MANUAL_ANNOTATIONS = (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    PROMOTE_STEP_ANNOTATION,
    RETRY_ANNOTATION,
    PAUSE_ANNOTATION,
    RESUME_ANNOTATION,
)


def new_requests(annotations: dict[str, str], handled: dict[str, str]) -> set[str]:
    return {
        name
        for name in MANUAL_ANNOTATIONS
        if name in annotations and handled.get(name) != annotations[name]
    }
