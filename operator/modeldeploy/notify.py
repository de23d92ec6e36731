"""Rollout outcomes announced to a Slack-compatible incoming webhook.

Best effort by design: a failing webhook must never break or delay a rollout, so
`post_notification` never raises and gives up after its timeout.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx

from modeldeploy.outbound import Redactor


class NotificationKind(StrEnum):
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    ANALYSIS_FAILED = "AnalysisFailed"
    MODEL_DRIFT = "ModelDrift"
    MODEL_QUALITY_DEGRADED = "ModelQualityDegraded"
    MODEL_DRIFT_RECOVERED = "ModelDriftRecovered"
    SLO_BUDGET_SPENT = "SLOBudgetSpent"
    SLO_RECOVERED = "SLOBudgetRecovered"


@dataclass(frozen=True)
class Notification:
    kind: NotificationKind
    namespace: str
    name: str
    version: str
    revision: str
    message: str = ""


_HEADLINES = {
    NotificationKind.PROMOTED: "promoted model version {version} (revision {revision})",
    NotificationKind.ROLLED_BACK: "rolled back model version {version} (revision {revision})",
    NotificationKind.ANALYSIS_FAILED: (
        "analysis failed for model version {version} (revision {revision})"
    ),
    NotificationKind.MODEL_DRIFT: "live traffic moved away from the profile of version {version}",
    NotificationKind.MODEL_QUALITY_DEGRADED: "model version {version} got less accurate",
    NotificationKind.MODEL_DRIFT_RECOVERED: "model version {version} is back within its bounds",
    NotificationKind.SLO_BUDGET_SPENT: "model version {version} spent its SLO error budget",
    NotificationKind.SLO_RECOVERED: "model version {version} is within its SLO error budget",
}
# Monitoring's crossings: how urgent they are (docs/analysis.md).
_SEVERITY = {
    NotificationKind.MODEL_DRIFT: "warning",
    NotificationKind.MODEL_QUALITY_DEGRADED: "critical",
    NotificationKind.SLO_BUDGET_SPENT: "critical",
    NotificationKind.MODEL_DRIFT_RECOVERED: "resolved",
    NotificationKind.SLO_RECOVERED: "resolved",
}
# Slack attachment colours: green, red, amber.
_COLOURS = {
    NotificationKind.PROMOTED: "good",
    NotificationKind.ROLLED_BACK: "danger",
    NotificationKind.ANALYSIS_FAILED: "warning",
    NotificationKind.MODEL_DRIFT: "warning",
    NotificationKind.MODEL_QUALITY_DEGRADED: "danger",
    NotificationKind.MODEL_DRIFT_RECOVERED: "good",
    NotificationKind.SLO_BUDGET_SPENT: "danger",
    NotificationKind.SLO_RECOVERED: "good",
}


def payload(event: Notification) -> dict[str, Any]:
    """The JSON body: `text` for every Slack-compatible receiver, a coloured attachment."""
    headline = _HEADLINES[event.kind].format(version=event.version, revision=event.revision)
    text = f"{event.namespace}/{event.name}: {headline}"
    if event.message:
        text = f"{text}: {event.message}"
    return {
        "text": text,
        "attachments": [
            {
                "color": _COLOURS[event.kind],
                "fallback": text,
                "fields": [
                    {"title": "ModelDeployment", "value": f"{event.namespace}/{event.name}"},
                    {"title": "Outcome", "value": str(event.kind)},
                    {"title": "Version", "value": event.version, "short": True},
                    {"title": "Revision", "value": event.revision, "short": True},
                    *(
                        [{"title": "Severity", "value": _SEVERITY[event.kind], "short": True}]
                        if event.kind in _SEVERITY
                        else []
                    ),
                ],
            }
        ],
    }


def _where(url: str) -> str:
    """Scheme, host and port only: incoming-webhook URLs carry their token in the path, and
    a user name or password may sit before the host."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the configured URL"
    return f"{parts.scheme}://{host}{port}" if parts.scheme else "the configured URL"


async def post_notification(url: str, event: Notification, timeout: float = 5.0) -> str | None:
    """Post `event`; None on success, else what went wrong.

    The reply's body is never read, let alone quoted: the URL is a tenant's, and what it
    answers must neither fill the operator's memory nor reach an Event.
    """
    url = url.strip()  # a URL read from a Secret often ends in a newline
    where = _where(url)
    redact = Redactor([url])
    try:
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(timeout=timeout) as client,
            client.stream("POST", url, json=payload(event)) as response,
        ):
            status = response.status_code
    except (TimeoutError, httpx.TimeoutException):
        return f"webhook at {where} did not answer within {timeout:g}s"
    except Exception as exc:  # whatever happens, the rollout goes on
        reason = redact(str(exc) or type(exc).__name__)
        return f"webhook at {where} unreachable: {reason}"
    if 200 <= status < 300:
        return None
    return f"webhook at {where} answered HTTP {status}"
