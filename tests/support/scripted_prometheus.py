"""A scripted Prometheus: a real HTTP server whose query answers the test chooses.

It speaks enough of the Prometheus HTTP API for the operator's analysis:
`GET|POST /api/v1/query` (query string or form) and `GET /-/ready` / `/-/healthy`.
It listens on 127.0.0.1 (ephemeral port) in a background thread; use it as a context
manager and it stops by itself on exit.

One line per scenario::

    with ScriptedPrometheus() as prom:             # prom.url -> "http://127.0.0.1:PORT"
        prom.healthy()                             # canary: 100 requests, 0 errors, p99 50ms
        prom.set_track("canary", error_rate=0.05)  # canary errors at 5%
        prom.no_traffic()                          # 0 requests; error rate and p99 are NaN
        prom.set_down()                            # every request answers 503
        prom.set_down(close=True)                  # connections dropped without an answer
        prom.set_down(False)                       # back up

`set_track(track, requests=..., error_rate=..., p99=...)` scripts the three default
queries of one track (`canary` or `stable`); arguments left out keep their answer.

Any other query is scripted by substrings; a rule applies to a query containing all
its fragments and the rule set last wins (setting the same fragments again replaces it)::

    prom.set('histogram_quantile(0.95', value=0.12)           # one series
    prom.set("my_metric", value=[1.0, 2.0])                   # several series
    prom.set("my_metric", value=NO_SERIES)                    # empty vector
    prom.set("my_metric", value=math.nan)                     # NaN (also math.inf)
    prom.set("vector(1)", value=1.0, scalar=True)             # resultType scalar
    prom.set_series("my_bins", series=[({"bin": "0"}, 5.0)])  # labelled series
    prom.set_error("1:5: parse error: unexpected ...")        # every query: 400 bad_data
    prom.set_error("oops", "my_metric", status=500, error_type="internal")
    prom.set_delay(5.0)                                       # answer queries 5s late

A query no rule matches gets an empty vector, as a real Prometheus gives for unknown
series. `prom.queries` lists the PromQL received, in order; `prom.received` every
request (method, path, params, lower-case headers, body), e.g. to check a bearer
token. `prom.reset()` forgets rules, errors, delay and records.
`ScriptedPrometheus(ssl_context=...)` serves https.
"""

from __future__ import annotations

import json
import math
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from modeldeploy import promql
from tests.support import LocalServer, Reply, Request

NO_SERIES: tuple[float, ...] = ()
"""A value meaning: the query returns an empty vector."""

HEALTHY_P99 = 0.05


@dataclass(frozen=True)
class _Answer:
    values: tuple[float, ...] = NO_SERIES
    labels: tuple[dict[str, str], ...] | None = None
    """Each series' labels; None: `{"series": index}`."""
    scalar: bool = False
    error: str | None = None
    status: int = 200
    error_type: str = "bad_data"


class ScriptedPrometheus:
    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.queries: list[str] = []
        self.received: list[Request] = []
        self._lock = threading.Lock()
        self._rules: dict[frozenset[str], _Answer] = {}
        self._down = False
        self._close = False
        self._delay = 0.0
        self._server = LocalServer(self._answer, ssl_context=ssl_context)
        self.url = self._server.url

    # --- scripting ------------------------------------------------------------------

    def set(self, *fragments: str, value: float | Sequence[float], scalar: bool = False) -> None:
        """Answer queries containing every fragment with `value` (one series per number)."""
        values = (value,) if isinstance(value, int | float) else tuple(value)
        self._add_rule(fragments, _Answer(values=values, scalar=scalar))

    def set_series(self, *fragments: str, series: Sequence[tuple[dict[str, str], float]]) -> None:
        """Answer queries containing every fragment with labelled series (per-bin counts)."""
        labels = tuple(dict(labelled) for labelled, _ in series)
        self._add_rule(fragments, _Answer(values=tuple(v for _, v in series), labels=labels))

    def set_error(
        self, message: str, *fragments: str, status: int = 400, error_type: str = "bad_data"
    ) -> None:
        """Refuse queries containing every fragment (all queries without fragments)."""
        self._add_rule(fragments, _Answer(error=message, status=status, error_type=error_type))

    def set_track(
        self,
        track: str = "canary",
        *,
        requests: float | Sequence[float] | None = None,
        error_rate: float | Sequence[float] | None = None,
        p99: float | Sequence[float] | None = None,
    ) -> None:
        """Script the default volume, error-rate and p99 queries of one track."""
        selector = f'track="{track}"'
        if requests is not None:
            self.set(selector, f"sum(increase({promql.REQUESTS_TOTAL}{{", value=requests)
        if error_rate is not None:
            self.set(
                selector,
                f"{promql.REQUESTS_TOTAL}{{",
                f"{promql.OUTCOME_LABEL}=~",
                value=error_rate,
            )
        if p99 is not None:
            self.set(selector, "histogram_quantile(0.99,", value=p99)

    def healthy(self, track: str = "canary", requests: float = 100) -> None:
        self.set_track(track, requests=requests, error_rate=0.0, p99=HEALTHY_P99)

    def no_traffic(self, track: str = "canary") -> None:
        """What a real Prometheus says about a track whose series exist but saw no requests."""
        self.set_track(track, requests=0.0, error_rate=math.nan, p99=math.nan)

    def set_down(self, down: bool = True, *, close: bool = False) -> None:
        """Answer 503 to everything, or with `close` drop connections unanswered."""
        with self._lock:
            self._down, self._close = down, close

    def set_delay(self, seconds: float) -> None:
        with self._lock:
            self._delay = seconds

    def reset(self) -> None:
        with self._lock:
            self._rules.clear()
            self._down = self._close = False
            self._delay = 0.0
            self.queries.clear()
            self.received.clear()

    def _add_rule(self, fragments: Sequence[str], answer: _Answer) -> None:
        key = frozenset(fragments)
        with self._lock:
            # Re-inserting moves the rule to the end: the rule set last wins.
            self._rules.pop(key, None)
            self._rules[key] = answer

    # --- serving --------------------------------------------------------------------

    def _answer(self, request: Request) -> Reply:
        with self._lock:
            self.received.append(request)
            if self._down:
                return Reply(503, "Service Unavailable", "text/plain", close=self._close)
            if request.path in ("/-/ready", "/-/healthy"):
                return Reply(200, "Prometheus Server is Ready.\n", "text/plain")
            if request.path != "/api/v1/query":
                return Reply(404, "404 page not found\n", "text/plain")
            query = request.params.get("query", [""])[-1]
            self.queries.append(query)
            answer = self._match(query)
            delay = self._delay
        body: dict[str, object]
        if answer.error is not None:
            body = {"status": "error", "errorType": answer.error_type, "error": answer.error}
        else:
            body = {"status": "success", "data": _data(answer)}
        return Reply(answer.status, json.dumps(body), delay=delay)

    def _match(self, query: str) -> _Answer:
        for fragments, answer in reversed(self._rules.items()):
            if all(fragment in query for fragment in fragments):
                return answer
        return _Answer()

    # --- lifetime -------------------------------------------------------------------

    def __enter__(self) -> ScriptedPrometheus:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop()


def _data(answer: _Answer) -> dict[str, object]:
    now = time.time()
    if answer.scalar:
        return {"resultType": "scalar", "result": [now, _sample(answer.values[0])]}
    series = [
        {
            "metric": answer.labels[i] if answer.labels is not None else {"series": str(i)},
            "value": [now, _sample(value)],
        }
        for i, value in enumerate(answer.values)
    ]
    return {"resultType": "vector", "result": series}


def _sample(value: float) -> str:
    """Prometheus' text form of a sample value."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
