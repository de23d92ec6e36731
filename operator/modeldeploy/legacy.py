"""Objects that older releases stored and today's validation rules reject.

The API server checks new rules only when an object is written, so an upgrade leaves
objects behind that break them. Each must still be handled safely: a value that can be
clamped is clamped (with a warning that says how to fix the spec); anything else makes
the spec unusable, and a canary running under it is rolled back rather than left with
traffic and nothing judging it. Pure: the reconciler decides what to do with the result.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from modeldeploy import api

# Durations today's API bounds; older objects may hold anything the pattern allowed.
_CLAMPED_DURATIONS: tuple[tuple[tuple[str, ...], float, float | None], ...] = (
    (("rollout", "interval"), 1.0, None),
    (("rollout", "progressDeadline"), 1.0, None),
    (("analysis", "prometheus", "timeout"), 1.0, 60.0),
)


@dataclass
class Repaired:
    """A copy of the object made to pass today's rules, and what was changed in it."""

    body: dict[str, Any]
    clamped: list[str] = field(default_factory=list)
    """Spec values moved into bounds: the spec still means what the user wrote, nearly."""
    unusable: list[str] = field(default_factory=list)
    """Spec values removed because no bound can fix them: the spec cannot be acted on."""
    status_fixed: list[str] = field(default_factory=list)
    """The operator's own records (the stable's template) stripped of what is refused now."""


def repair(body: dict[str, Any]) -> Repaired:
    repaired = Repaired(copy.deepcopy(body))
    spec = repaired.body.get("spec") or {}
    for path, low, high in _CLAMPED_DURATIONS:
        _clamp(spec, path, low, high, repaired.clamped)
    for entry in _reserved_env(spec.get("server") or {}):
        repaired.unusable.append(
            f"spec.server.env sets {entry}, which the operator sets itself (names are compared "
            "in any letter case): remove it, or use the matching spec field"
        )
    prometheus = (spec.get("analysis") or {}).get("prometheus")
    url = prometheus.get("url") if isinstance(prometheus, dict) else None
    problem = api.prometheus_url_problem(url) if isinstance(url, str) else None
    if problem is not None:
        del spec["analysis"]["prometheus"]
        repaired.unusable.append(f"{problem} (got {url!r})")
    template = ((repaired.body.get("status") or {}).get("stable") or {}).get("template") or {}
    for entry in _reserved_env(template.get("server") or {}):
        repaired.status_fixed.append(
            f"the stable's recorded template set {entry}; the stable is deployed without it"
        )
    return repaired


def _clamp(
    spec: dict[str, Any],
    path: tuple[str, ...],
    low: float,
    high: float | None,
    notes: list[str],
) -> None:
    parent: Any = spec
    for key in path[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
    value = parent.get(path[-1]) if isinstance(parent, dict) else None
    if not isinstance(parent, dict) or not isinstance(value, str):
        return
    try:
        seconds = api.duration_seconds(value)
    except ValueError:
        return  # not a duration at all: the validation error says so
    bound = f"{low:g}s" if seconds < low else None
    if high is not None and seconds > high:
        bound = f"{high:g}s"
    if bound is None:
        return
    parent[path[-1]] = bound
    where = "spec." + ".".join(path)
    notes.append(
        f"{where} {value} is outside {_range(low, high)}, which this operator enforces; "
        f"using {bound}. Set {where} within that range"
    )


def _range(low: float, high: float | None) -> str:
    if high is None:
        return f"at least {low:g}s"
    return f"{low:g}s..{high:g}s"


def _reserved_env(server: dict[str, Any]) -> list[str]:
    """Removes, and names, the env entries that reuse an operator variable's name."""
    env = server.get("env")
    if not isinstance(env, list):
        return []
    kept, dropped = [], []
    for entry in env:
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str) and name.upper() in api.OPERATOR_ENV:
            dropped.append(name)
        else:
            kept.append(entry)
    server["env"] = kept
    return dropped
