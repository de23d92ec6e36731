"""Why pods are not ready, in one line, from what the kubelet and scheduler report.

A canary whose pods never become ready is rolled back at its progress deadline; the user
needs to know why they did not: an image that cannot be pulled, a server that crashes
at start (its termination message says why: a checksum mismatch, an unreadable model),
or no node with room. Pure: the reconciler lists the pods.
"""

from __future__ import annotations

from typing import Any

# Waiting reasons that are part of every healthy start, not problems.
_STARTING = {"ContainerCreating", "PodInitializing"}
_MESSAGE_LIMIT = 300
SUMMARY_LIMIT = 600


def pod_problems(pods: list[dict[str, Any]]) -> str | None:
    """The problems of not-ready pods, one per kind, with how many pods share each."""
    seen: dict[str, list[str]] = {}
    for pod in sorted(pods, key=lambda p: str(p.get("metadata", {}).get("name", ""))):
        problem = _problem_of(pod)
        if problem is not None:
            seen.setdefault(problem, []).append(str(pod.get("metadata", {}).get("name", "?")))
    if not seen:
        return None
    parts = []
    for problem, names in seen.items():
        others = f" (and {len(names) - 1} more pods alike)" if len(names) > 1 else ""
        parts.append(f"pod {names[0]}: {problem}{others}")
    summary = "; ".join(parts)
    return summary if len(summary) <= SUMMARY_LIMIT else summary[: SUMMARY_LIMIT - 3] + "..."


def _problem_of(pod: dict[str, Any]) -> str | None:
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = condition.get("reason") or "not scheduled"
            return _joined(reason, condition.get("message"))
    statuses = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    for container in statuses:
        if container.get("ready"):
            continue
        problem = _container_problem(container)
        if problem is not None:
            return f"container {container.get('name', '?')} {problem}"
    return None


def _container_problem(container: dict[str, Any]) -> str | None:
    state = container.get("state") or {}
    waiting = state.get("waiting") or {}
    reason = waiting.get("reason")
    finished = state.get("terminated") or (container.get("lastState") or {}).get("terminated")
    exit_note = _exit(finished) if finished else None
    if reason in _STARTING:
        return None
    if reason == "CrashLoopBackOff" and exit_note:
        # Back-off's own message only repeats the pod's name; the last exit says why.
        return f"{reason}, {exit_note}"
    if reason:
        return _joined(reason, waiting.get("message"))
    return exit_note


def _exit(terminated: dict[str, Any]) -> str:
    code = terminated.get("exitCode")
    words = f"exited with code {code}" if code is not None else "exited"
    reason = terminated.get("reason")
    if reason and reason not in ("Error", "Completed"):
        words += f" ({reason})"
    return _joined(words, terminated.get("message"))


def _joined(head: str, message: Any) -> str:
    if not isinstance(message, str) or not message.strip():
        return head
    text = " ".join(message.split())
    if len(text) > _MESSAGE_LIMIT:
        text = text[: _MESSAGE_LIMIT - 3] + "..."
    return f"{head}: {text}"
