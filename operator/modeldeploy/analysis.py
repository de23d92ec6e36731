"""Judging one canary step: Prometheus queries -> check verdicts -> one overall verdict.

Verdict rule (see docs/analysis.md):
1. The request-volume gate comes first. Unless the track served at least
   `minRequests` requests in the interval, the analysis is NoData (or Error when the
   volume query failed); the checks still run and are reported, but cannot fail the step.
2. Otherwise the worst check wins: Fail > Error > NoData > Pass.
3. With `backendErrors: Fail` an overall Error becomes Fail.

Everything but `PrometheusClient` is pure.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import orjson

from modeldeploy import api
from modeldeploy.model_promql import Sample, parse_vector
from modeldeploy.outbound import (
    PROMETHEUS_ANSWER_LIMIT,
    AnswerTooLarge,
    BadUrl,
    Origin,
    Redactor,
    check_allowed,
    header_safe,
    read_bounded,
)
from modeldeploy.promql import (
    REQUEST_VOLUME,
    VOLUME_CHECK,
    QueryContext,
    TemplateError,
    default_checks,
    render,
)

if TYPE_CHECKING:
    from modeldeploy.model_checks import ModelChecks

__all__ = [
    "NoData",
    "PrometheusClient",
    "QueryContext",
    "QueryFailed",
    "QueryOutcome",
    "Value",
    "analyse",
    "check_result",
    "describe",
    "failure_summary",
    "interpret",
    "judge",
    "overall_verdict",
    "volume_result",
    "worst",
]

Verdict = api.Verdict
T = TypeVar("T")


@dataclass(frozen=True)
class Value:
    """The query gave one finite number."""

    value: float


@dataclass(frozen=True)
class NoData:
    """The query worked but gave nothing to judge."""

    message: str


@dataclass(frozen=True)
class QueryFailed:
    """Prometheus could not be asked, or refused the query."""

    message: str


QueryOutcome = Value | NoData | QueryFailed

_NO_SERIES = (
    "query returned no series: is the canary receiving traffic / are the metric labels right?"
)


# --- Prometheus HTTP API ------------------------------------------------------------------


class PrometheusClient:
    """Instant queries against the Prometheus HTTP API; every failure becomes an outcome.

    The URL and the Secrets come from a tenant's spec (see `outbound`): at most
    `answer_limit` bytes of an answer are read, only Prometheus' own error fields are
    quoted, and the token and CA bundle never appear in a message.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        bearer_token: bytes | str | None = None,
        ca: bytes | str | None = None,
        allowed: Sequence[Origin] = (),
        answer_limit: int = PROMETHEUS_ANSWER_LIMIT,
        token_source: str = "the bearer token",
        ca_source: str = "the CA bundle",
    ) -> None:
        self.url = url.strip().rstrip("/")
        self.timeout = timeout
        self._answer_limit = answer_limit
        self._redact = Redactor([bearer_token, ca])
        # A problem with the URL or the Secrets is reported by every query, so it shows
        # up in the status of each analysis.
        self._setup_error = _url_problem(self.url, allowed)
        headers: dict[str, str] = {}
        if bearer_token is not None and self._setup_error is None:
            token, self._setup_error = _usable_token(bearer_token, token_source)
            if token:
                headers["Authorization"] = f"Bearer {token}"
        verify: ssl.SSLContext | bool = True
        if ca is not None and self._setup_error is None:
            try:
                verify = _trusting(ca)
            except Exception as exc:  # whatever the bytes were, the analysis reports it
                reason = self._redact(str(exc) or type(exc).__name__)
                self._setup_error = (
                    f"{ca_source} is neither PEM nor DER certificates ({reason}); "
                    "point caSecretRef at the CA certificate that signed Prometheus' certificate"
                )
        self._http = httpx.AsyncClient(headers=headers, verify=verify, timeout=timeout)

    @classmethod
    def from_spec(
        cls,
        spec: api.PrometheusSpec,
        *,
        bearer_token: bytes | None = None,
        ca: bytes | None = None,
        allowed: Sequence[Origin] = (),
    ) -> PrometheusClient:
        """A client for `spec`; the caller reads the token and CA bundle from their Secrets."""
        token_ref, ca_ref = spec.bearer_token_secret_ref, spec.ca_secret_ref
        return cls(
            spec.url,
            timeout=api.duration_seconds(spec.timeout),
            bearer_token=bearer_token,
            ca=ca,
            allowed=allowed,
            token_source=_secret_source(token_ref, "bearerTokenSecretRef", "the bearer token"),
            ca_source=_secret_source(ca_ref, "caSecretRef", "the CA bundle"),
        )

    async def query(self, promql: str) -> QueryOutcome:
        """Run one instant query for one number. Never raises, whatever Prometheus or the
        network do."""
        return await self._ask(promql, _outcome_of_data)

    async def vector(self, promql: str) -> list[Sample] | QueryFailed:
        """Run one instant query for a vector of labelled samples (an empty vector is no
        series). Never raises."""
        return await self._ask(promql, _samples_of_data)

    async def _ask(
        self, promql: str, parse: Callable[[dict[str, Any]], T | QueryFailed]
    ) -> T | QueryFailed:
        if self._setup_error is not None:
            return QueryFailed(self._setup_error)
        outcome = await self._query(promql, parse)
        if isinstance(outcome, QueryFailed):
            return QueryFailed(self._redact(outcome.message))
        return outcome

    async def _query(
        self, promql: str, parse: Callable[[dict[str, Any]], T | QueryFailed]
    ) -> T | QueryFailed:
        where = self.url
        try:
            # httpx times each phase; the outer bound caps the whole exchange.
            async with (
                asyncio.timeout(self.timeout),
                self._http.stream(
                    "POST", f"{self.url}/api/v1/query", data={"query": promql}
                ) as response,
            ):
                body = await read_bounded(response, self._answer_limit)
                return interpret(response.status_code, body, where, parse)
        except (TimeoutError, httpx.TimeoutException):
            return QueryFailed(
                f"Prometheus at {where} unreachable: no answer within {self.timeout:g}s"
            )
        except AnswerTooLarge as exc:
            return QueryFailed(
                f"Prometheus at {where} answered with {exc}, and reading stopped there; an "
                "instant query for one number needs a few hundred bytes: is the URL the base "
                "URL of a Prometheus HTTP API?"
            )
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            return QueryFailed(f"Prometheus at {where} unreachable: {reason}")
        except Exception as exc:  # a hostile or broken answer must not stop the analysis
            return QueryFailed(
                f"querying Prometheus at {where} failed: {type(exc).__name__}: {exc}"
            )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _url_problem(url: str, allowed: Sequence[Origin]) -> str | None:
    try:
        Origin.parse(url)
    except BadUrl as error:
        return f"the Prometheus URL is not usable: {error}"
    return check_allowed(url, allowed)


def _secret_source(ref: api.SecretKeyRef | None, field: str, default: str) -> str:
    return default if ref is None else f"Secret {ref.name}, key {ref.key!r} ({field})"


def _usable_token(raw: bytes | str, source: str) -> tuple[str | None, str | None]:
    """(token, None), or (None, why it cannot be sent) without quoting it."""
    try:
        # Secrets written with `echo` or from files often end in a newline.
        token = (raw.decode("utf-8") if isinstance(raw, bytes) else raw).strip()
    except UnicodeDecodeError:
        token = None
    if token == "":
        return None, None
    if token is None or not header_safe(token):
        return None, (
            f"{source} cannot be sent as an HTTP header: it is binary, spans several lines "
            "or has characters outside visible ASCII. Is the key right (a token, not a "
            "certificate or private key)?"
        )
    return token, None


def _trusting(ca: bytes | str) -> ssl.SSLContext:
    """A context trusting `ca`: PEM text (one or more certificates) or one DER certificate."""
    data = ca.encode() if isinstance(ca, str) else ca
    if b"-----BEGIN" in data:
        return ssl.create_default_context(cadata=data.decode("ascii"))
    return ssl.create_default_context(cadata=data)


_ERROR_FIELD_LIMIT = 300


def _phrase(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return ""


def _error_field(answer: dict[str, Any], key: str, default: str) -> str:
    """One of Prometheus' own error fields, as a short single line."""
    value = answer.get(key)
    if not isinstance(value, str) or not value.strip():
        return default
    text = " ".join(value.split())
    return text if len(text) <= _ERROR_FIELD_LIMIT else text[:_ERROR_FIELD_LIMIT] + "..."


def interpret(
    status_code: int,
    body: bytes | str,
    url: str,
    parse: Callable[[dict[str, Any]], T | QueryFailed],
) -> T | QueryFailed:
    """Map one answer of `/api/v1/query` to what `parse` makes of its data, or to why it
    failed. Bodies are never quoted: only the error fields of Prometheus' own JSON are."""
    hint = " (is the bearer token right?)" if status_code in (401, 403) else ""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        advice = ""
        if status_code < 500 and not hint:
            advice = (
                ": is the URL the base URL of a Prometheus HTTP API? "
                "(the operator appends /api/v1/query)"
            )
        return QueryFailed(
            f"Prometheus at {url} answered HTTP {status_code} {_phrase(status_code)} "
            f"without the query API's JSON{hint}{advice}"
        )
    if answer.get("status") != "success":
        kind = _error_field(answer, "errorType", "error")
        reason = _error_field(answer, "error", "no error message")
        return QueryFailed(
            f"Prometheus refused the query (HTTP {status_code}, {kind}){hint}: {reason}"
        )
    try:
        return parse(answer["data"])
    except (KeyError, IndexError, TypeError, ValueError):
        return QueryFailed(f"Prometheus at {url} gave an answer of unknown shape")


def _outcome_of_data(data: dict[str, Any]) -> QueryOutcome:
    kind = data["resultType"]
    result = data["result"]
    if kind == "scalar":
        return _outcome_of_sample(result[1])
    if kind != "vector":
        return QueryFailed(f"query returned a {kind}; write an instant query returning one number")
    if not result:
        return NoData(_NO_SERIES)
    if len(result) > 1:
        return QueryFailed(
            f"query returned {len(result)} series; aggregate it to one with sum() or avg()"
        )
    return _outcome_of_sample(result[0]["value"][1])


def _samples_of_data(data: dict[str, Any]) -> list[Sample] | QueryFailed:
    if data["resultType"] != "vector":
        return QueryFailed(f"query returned a {data['resultType']}, not a vector")
    return parse_vector(data["result"])


def _outcome_of_sample(sample: str) -> QueryOutcome:
    value = float(sample)
    if math.isnan(value):
        return NoData("query returned NaN, usually 0/0 because there were no requests")
    if math.isinf(value):
        return NoData(
            f"query returned {value:+}, usually a division by zero because there were no requests"
        )
    return Value(value)


# --- verdicts -------------------------------------------------------------------------------


def judge(value: float, min: float | None, max: float | None) -> Verdict:
    """Pass when `value` lies within the bounds that are set."""
    if (min is not None and value < min) or (max is not None and value > max):
        return Verdict.FAIL
    return Verdict.PASS


def describe(value: float, min: float | None, max: float | None) -> str:
    """`0.034 > max 0.01`: the value against the bound it broke, or the bounds it kept."""
    if min is not None and value < min:
        return f"{_num(value)} < min {_num(min)}"
    if max is not None and value > max:
        return f"{_num(value)} > max {_num(max)}"
    kept = [f">= min {_num(min)}"] if min is not None else []
    kept += [f"<= max {_num(max)}"] if max is not None else []
    return " ".join([_num(value), " and ".join(kept)]).strip()


_SEVERITY = {Verdict.PASS: 0, Verdict.NO_DATA: 1, Verdict.ERROR: 2, Verdict.FAIL: 3}


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """Fail > Error > NoData > Pass; Pass when there is nothing to judge."""
    return max(verdicts, key=_SEVERITY.__getitem__, default=Verdict.PASS)


def overall_verdict(
    volume: Verdict, checks: Iterable[Verdict], backend_errors: api.BackendErrorPolicy
) -> Verdict:
    """The analysis' verdict from the volume gate's and the checks' verdicts."""
    verdict = worst(checks) if volume == Verdict.PASS else volume
    if verdict == Verdict.ERROR and backend_errors == api.BackendErrorPolicy.FAIL:
        return Verdict.FAIL
    return verdict


def check_result(check: api.MetricCheck, query: str, outcome: QueryOutcome) -> api.CheckResult:
    """One check's result from its query's outcome."""
    match outcome:
        case Value(value):
            verdict = judge(value, check.min, check.max)
            message = describe(value, check.min, check.max)
            return _result(check.name, query, verdict, message, check.min, check.max, value)
        case NoData(message):
            return _result(check.name, query, Verdict.NO_DATA, message, check.min, check.max)
        case QueryFailed(message):
            return _result(check.name, query, Verdict.ERROR, message, check.min, check.max)


def volume_result(
    query: str, outcome: QueryOutcome, min_requests: int, interval: str
) -> api.CheckResult:
    """The request-volume gate: too few requests is NoData, never Fail."""
    match outcome:
        case Value(value) if value >= min_requests:
            message = f"{value:.0f} requests in the last {interval}, minRequests {min_requests}"
            return _result(VOLUME_CHECK, query, Verdict.PASS, message, min_requests, None, value)
        case Value(value):
            message = (
                f"only {value:.0f} requests in the last {interval}, fewer than minRequests "
                f"{min_requests}: too little traffic to judge"
            )
            return _result(VOLUME_CHECK, query, Verdict.NO_DATA, message, min_requests, None, value)
        case NoData(message) if min_requests == 0:
            message = f"{message} (minRequests is 0)"
            return _result(VOLUME_CHECK, query, Verdict.PASS, message, min_requests, None)
        case NoData(message):
            message = f"no requests counted, minRequests {min_requests}: {message}"
            return _result(VOLUME_CHECK, query, Verdict.NO_DATA, message, min_requests, None)
        case QueryFailed(message):
            return _result(VOLUME_CHECK, query, Verdict.ERROR, message, min_requests, None)


def _result(
    name: str,
    query: str,
    verdict: Verdict,
    message: str,
    min: float | None,
    max: float | None,
    value: float | None = None,
) -> api.CheckResult:
    return api.CheckResult(
        name=name, query=query, value=value, min=min, max=max, verdict=verdict, message=message
    )


def failure_summary(status: api.AnalysisStatus) -> str:
    """One line naming the checks behind the verdict, for Events and notifications.

    Like `error-rate 0.034 > max 0.01; latency-p99 0.41 > max 0.25`.
    """
    if status.verdict == Verdict.PASS:
        return "every check passed"
    culprits = [c for c in status.checks if c.name == VOLUME_CHECK and c.verdict != Verdict.PASS]
    if not culprits:
        # backendErrors: Fail turns Error into Fail, so Error checks may explain a Fail.
        verdicts = {c.verdict for c in status.checks}
        wanted = status.verdict if status.verdict in verdicts else Verdict.ERROR
        culprits = [c for c in status.checks if c.verdict == wanted]
    return "; ".join(_culprit(c) for c in culprits)


def _culprit(check: api.CheckResult) -> str:
    """A failed check by its value against the bound, plus what its message adds (the
    drift checks name the output, bin or features behind the value)."""
    if check.verdict != Verdict.FAIL or check.value is None:
        return f"{check.name}: {check.message}"
    against = describe(check.value, check.min, check.max)
    if check.message and against not in check.message:
        return f"{check.name} {against}: {check.message}"
    if check.message and check.message != against:
        return f"{check.name} {check.message}"
    return f"{check.name} {against}"


def _num(value: float) -> str:
    return f"{value:.4g}"


# --- one analysis ---------------------------------------------------------------------------


async def analyse(
    client: PrometheusClient,
    spec: api.AnalysisSpec,
    context: QueryContext,
    now: datetime,
    model: Awaitable[ModelChecks] | None = None,
) -> api.AnalysisStatus:
    """Run the volume query and every check concurrently and judge the step; `model` adds
    the model-aware checks (drift, quality) asked for at the same time.

    The caller sets `revision` and `step` of the result.
    """
    volume_query = render(REQUEST_VOLUME, context)
    all_checks = [*default_checks(spec.slo), *spec.metrics]
    volume, checks, model_results = await asyncio.gather(
        client.query(volume_query),
        asyncio.gather(*(_run_check(client, check, context) for check in all_checks)),
        model if model is not None else _no_model_checks(),
    )
    checks = [*checks, *(model_results.checks if model_results else ())]
    gate = volume_result(volume_query, volume, spec.min_requests, context.interval)
    verdict = overall_verdict(gate.verdict, [c.verdict for c in checks], spec.backend_errors)
    awaiting = model_results.awaiting_feedback if model_results else frozenset()
    return api.AnalysisStatus(
        at=now,
        verdict=verdict,
        requests=gate.value,
        checks=[gate, *checks],
        awaiting_feedback=waiting_only_for_feedback(verdict, gate, checks, awaiting),
    )


async def _no_model_checks() -> None:
    return None


def waiting_only_for_feedback(
    verdict: Verdict,
    gate: api.CheckResult,
    checks: Sequence[api.CheckResult],
    awaiting: frozenset[str],
) -> bool:
    """True when the analysis is NoData only because quality labels have not arrived yet:
    the traffic was enough and every other check passed."""
    if verdict != Verdict.NO_DATA or gate.verdict != Verdict.PASS or not awaiting:
        return False
    return all(c.verdict == Verdict.PASS or c.name in awaiting for c in checks)


async def _run_check(
    client: PrometheusClient, check: api.MetricCheck, context: QueryContext
) -> api.CheckResult:
    try:
        query = render(check.query, context)
    except TemplateError as exc:
        return check_result(check, check.query, QueryFailed(str(exc)))
    return check_result(check, query, await client.query(query))
