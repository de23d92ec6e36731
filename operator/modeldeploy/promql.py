"""PromQL templates: the server's metric names, the default checks, `{{ placeholder }}`s.

Pure functions only; nothing here talks to Prometheus.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

from modeldeploy import api

# The inference server's metrics (the server/operator contract). Prometheus adds
# `namespace` and `pod` at scrape time.
REQUESTS_TOTAL = "modelserver_requests_total"
"""Counter; labels model, model_version, track, modeldeployment, endpoint, protocol (rest,
grpc), code, outcome. Queries sum over endpoint and protocol: a gRPC answer's code is the
HTTP status it stands for, so both protocols count alike."""
OUTCOME_LABEL = "outcome"
SERVER_ERROR = "server_error"
CLIENT_ERROR = "client_error"
REJECTED = "rejected"
REQUEST_DURATION = "modelserver_request_duration_seconds"
"""Histogram; labels model, model_version, track, modeldeployment, endpoint, protocol."""

SELECTOR = 'namespace="{{ namespace }}", modeldeployment="{{ name }}", track="{{ track }}"'

ERROR_RATE_CHECK = "error-rate"
LATENCY_P99_CHECK = "latency-p99"
VOLUME_CHECK = "request-volume"


def _window(metric: str, extra_matchers: str = "") -> str:
    """The track's series of `metric` over one interval, as a range selector."""
    return metric + "{" + SELECTOR + extra_matchers + "}[{{ interval }}]"


LATENCY_P99 = (
    f"histogram_quantile(0.99, sum by (le) (rate({_window(REQUEST_DURATION + '_bucket')})))"
)
# Requests that reached the model: what a client gets wrong (client_error) neither
# counts toward the volume gate nor dilutes the error rate.
_HANDLED = f', {OUTCOME_LABEL}!="{CLIENT_ERROR}"'
REQUEST_VOLUME = f"sum(increase({_window(REQUESTS_TOTAL, _HANDLED)}))"


def error_rate_query(count_rejected_requests: bool) -> str:
    """Template of the share of the track's requests the model is responsible for failing.

    The server's `outcome` label sorts requests: `server_error` (5xx) and `rejected` (the
    model refused an input the protocol accepts) are the model's doing; `client_error`
    (malformed bodies, unknown paths, 413, clients that went away) never is, so clients
    cannot force a rollback, and it is not in the denominator either, so a flood of
    garbage cannot dilute a bad canary's error rate below its bound.
    """
    outcomes = (
        f'{OUTCOME_LABEL}=~"{SERVER_ERROR}|{REJECTED}"'
        if count_rejected_requests
        else f'{OUTCOME_LABEL}="{SERVER_ERROR}"'
    )
    errors = _window(REQUESTS_TOTAL, f", {outcomes}")
    # sum() of no series is empty, not 0: without `or vector(0)` an error-free canary
    # would have no error rate at all.
    handled = _window(REQUESTS_TOTAL, _HANDLED)
    return f"(sum(rate({errors})) or vector(0)) / sum(rate({handled}))"


def default_checks(slo: api.SLOSpec) -> list[api.MetricCheck]:
    """The built-in checks of an SLO, as templates like the user's own checks."""
    return [
        api.MetricCheck(
            name=ERROR_RATE_CHECK,
            query=error_rate_query(slo.count_rejected_requests),
            max=slo.max_error_rate,
        ),
        api.MetricCheck(
            name=LATENCY_P99_CHECK,
            query=LATENCY_P99,
            max=api.duration_seconds(slo.max_latency_p99),
        ),
    ]


@dataclass(frozen=True)
class QueryContext:
    """The values placeholders stand for, for one track of one ModelDeployment."""

    namespace: str
    name: str
    track: str  # stable, canary, or an experiment variant's v-VARIANT
    interval: str
    model: str
    version: str
    # The experiment arm (control or a variant's name); empty outside experiments.
    variant: str = ""


class TemplateError(ValueError):
    """A query template uses a placeholder that does not exist."""


PLACEHOLDERS = tuple(field.name for field in fields(QueryContext))
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def render(template: str, context: QueryContext) -> str:
    """Fill `{{ placeholder }}`s; raise TemplateError naming any unknown one.

    Values are escaped for double-quoted PromQL strings (a version may hold `"`), and
    the interval is written in a form PromQL accepts (it has no decimal durations).
    """
    unknown = sorted({m for m in _PLACEHOLDER.findall(template) if m not in PLACEHOLDERS})
    if unknown:
        known = ", ".join(f"{{{{ {p} }}}}" for p in PLACEHOLDERS)
        names = ", ".join(f"{{{{ {u} }}}}" for u in unknown)
        raise TemplateError(f"unknown placeholder {names} in query; the known ones are {known}")
    values = {key: _escape(value) for key, value in asdict(context).items()}
    values["interval"] = promql_duration(context.interval)
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def promql_duration(duration: str) -> str:
    """`1.5m` -> `90s`: the API allows decimal durations, PromQL does not."""
    if "." not in duration:
        return duration
    millis = round(api.duration_seconds(duration) * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
