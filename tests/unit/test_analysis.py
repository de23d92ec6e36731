import asyncio
import json
import math
import shutil
import ssl
import subprocess
import threading
from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modeldeploy import api, promql
from modeldeploy.analysis import (
    NoData,
    PrometheusClient,
    QueryContext,
    QueryFailed,
    Value,
    analyse,
    failure_summary,
    judge,
    overall_verdict,
    worst,
)
from modeldeploy.promql import TemplateError, render
from tests.support import LocalServer, Reply
from tests.support.processes import free_port
from tests.support.scripted_prometheus import NO_SERIES, ScriptedPrometheus

Verdict = api.Verdict
CANARY = QueryContext(
    namespace="ml",
    name="fraud",
    track="canary",
    interval="60s",
    model="fraud-detector",
    version="2.1.0",
)
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SELECTOR = 'namespace="ml", modeldeployment="fraud", track="canary"'


@pytest.fixture
def prom():
    with ScriptedPrometheus() as server:
        yield server


def query(url, promql_text="up", **client_options):
    async def run():
        async with PrometheusClient(url, **client_options) as client:
            return await client.query(promql_text)

    return asyncio.run(run())


def run_analysis(url, spec=None, context=CANARY, **client_options):
    async def run():
        async with PrometheusClient(url, **client_options) as client:
            return await analyse(client, spec or api.AnalysisSpec(), context, NOW)

    return asyncio.run(run())


def verdicts(status):
    return {check.name: check.verdict for check in status.checks}


# --- one query: every answer of Prometheus mapped -------------------------------------------


def test_one_finite_value_is_the_value(prom):
    prom.set("up", value=0.25)
    assert query(prom.url) == Value(0.25)


def test_a_scalar_result_is_a_value(prom):
    prom.set("up", value=3.0, scalar=True)
    assert query(prom.url) == Value(3.0)


def test_no_series_is_no_data_with_a_hint(prom):
    prom.set("up", value=NO_SERIES)
    assert query(prom.url) == NoData(
        "query returned no series: is the canary receiving traffic / are the metric labels right?"
    )


def test_nan_is_no_data_explained_as_no_requests(prom):
    prom.set("up", value=math.nan)
    assert query(prom.url) == NoData(
        "query returned NaN, usually 0/0 because there were no requests"
    )


@pytest.mark.parametrize("infinity", [math.inf, -math.inf])
def test_infinity_is_no_data(prom, infinity):
    prom.set("up", value=infinity)
    outcome = query(prom.url)
    assert isinstance(outcome, NoData)
    assert "inf" in outcome.message


def test_several_series_is_an_error_asking_for_aggregation(prom):
    prom.set("up", value=[1.0, 2.0, 3.0])
    assert query(prom.url) == QueryFailed(
        "query returned 3 series; aggregate it to one with sum() or avg()"
    )


def test_a_promql_error_carries_prometheus_own_words(prom):
    prom.set_error('1:9: parse error: unexpected "}" in label matching')
    outcome = query(prom.url, "sum(up{)")
    assert isinstance(outcome, QueryFailed)
    assert outcome.message == (
        'Prometheus refused the query (HTTP 400, bad_data): 1:9: parse error: unexpected "}" '
        "in label matching"
    )


def test_an_internal_error_500_carries_its_text(prom):
    prom.set_error(
        "query processing would load too many samples", status=500, error_type="internal"
    )
    outcome = query(prom.url)
    assert isinstance(outcome, QueryFailed)
    assert "HTTP 500" in outcome.message
    assert "too many samples" in outcome.message


def test_a_503_without_json_says_so(prom):
    prom.set_down()
    outcome = query(prom.url)
    assert outcome == QueryFailed(
        f"Prometheus at {prom.url} answered HTTP 503 Service Unavailable without the query "
        "API's JSON"
    )


def test_a_wrong_path_prefix_is_an_error_not_a_crash(prom):
    outcome = query(f"{prom.url}/prometheus")
    assert outcome == QueryFailed(
        f"Prometheus at {prom.url}/prometheus answered HTTP 404 Not Found without the query "
        "API's JSON: is the URL the base URL of a Prometheus HTTP API? (the operator appends "
        "/api/v1/query)"
    )


def test_a_trailing_slash_in_the_url_is_fine(prom):
    prom.set("up", value=1.0)
    assert query(f"{prom.url}/") == Value(1.0)


def test_dropped_connections_are_unreachable(prom):
    prom.set_down(close=True)
    outcome = query(prom.url)
    assert isinstance(outcome, QueryFailed)
    assert outcome.message.startswith(f"Prometheus at {prom.url} unreachable: ")


def test_nothing_listening_is_unreachable():
    url = f"http://127.0.0.1:{free_port()}"
    outcome = query(url)
    assert isinstance(outcome, QueryFailed)
    assert outcome.message.startswith(f"Prometheus at {url} unreachable: ")


def test_an_unknown_host_is_unreachable():
    outcome = query("http://prometheus.invalid:9090")
    assert isinstance(outcome, QueryFailed)
    assert outcome.message.startswith("Prometheus at http://prometheus.invalid:9090 unreachable: ")


def test_an_answer_slower_than_the_timeout_is_given_up(prom):
    prom.set("up", value=1.0)
    prom.set_delay(30.0)
    outcome = query(prom.url, timeout=0.2)
    assert outcome == QueryFailed(f"Prometheus at {prom.url} unreachable: no answer within 0.2s")


def test_the_query_is_posted_as_a_form(prom):
    query(prom.url, 'sum(up{job="x"})')
    [request] = prom.received
    assert (request.method, request.path) == ("POST", "/api/v1/query")
    assert prom.queries == ['sum(up{job="x"})']


def test_the_bearer_token_is_sent(prom):
    query(prom.url, bearer_token="s3cret")
    assert prom.received[0].headers["authorization"] == "Bearer s3cret"


def test_the_trailing_newline_of_a_token_read_from_a_secret_is_dropped(prom):
    query(prom.url, bearer_token="s3cret\n")
    assert prom.received[0].headers["authorization"] == "Bearer s3cret"


def test_an_unusable_url_is_an_error_not_a_crash():
    outcome = query("http://[::1/")
    assert isinstance(outcome, QueryFailed)
    assert outcome.message.startswith("the Prometheus URL is not usable: 'http://[::1' ")


def test_no_token_no_authorization_header(prom):
    query(prom.url)
    assert "authorization" not in prom.received[0].headers


def test_a_bad_ca_bundle_is_a_clear_error_and_nothing_is_sent(prom):
    outcome = query(prom.url, ca="-----BEGIN CERTIFICATE-----\nnot base64\n")
    assert isinstance(outcome, QueryFailed)
    assert outcome.message.startswith("the CA bundle is neither PEM nor DER certificates (")
    assert prom.received == []


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    """(cert PEM, server SSL context) of a certificate for 127.0.0.1, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    make_cert = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    subprocess.run(
        [
            *make_cert.split(),
            *("-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return cert.read_text(), context


def test_https_with_the_ca_bundle_works(self_signed):
    ca_pem, server_context = self_signed
    with ScriptedPrometheus(ssl_context=server_context) as prom:
        prom.set("up", value=1.0)
        assert query(prom.url, ca=ca_pem) == Value(1.0)


def test_https_with_a_der_ca_certificate_works(self_signed):
    ca_pem, server_context = self_signed
    with ScriptedPrometheus(ssl_context=server_context) as prom:
        prom.set("up", value=1.0)
        assert query(prom.url, ca=ssl.PEM_cert_to_DER_cert(ca_pem)) == Value(1.0)


def test_https_without_the_ca_bundle_is_an_error_naming_verification(self_signed):
    _, server_context = self_signed
    with ScriptedPrometheus(ssl_context=server_context) as prom:
        outcome = query(prom.url)
    assert isinstance(outcome, QueryFailed)
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.message


def test_from_spec_takes_url_and_timeout(prom):
    prom.set_delay(30.0)
    spec = api.PrometheusSpec(url=prom.url, timeout="1s")

    async def run():
        async with PrometheusClient.from_spec(spec, bearer_token=b"t") as client:
            return await client.query("up")

    assert asyncio.run(run()) == QueryFailed(
        f"Prometheus at {prom.url} unreachable: no answer within 1s"
    )


def test_the_scripted_prometheus_answers_get_and_readiness(prom):
    prom.set("up", value=2.0)
    answer = httpx.get(f"{prom.url}/api/v1/query", params={"query": "up"}).json()
    assert answer["data"]["result"][0]["value"][1] == "2.0"
    assert httpx.get(f"{prom.url}/-/ready").status_code == 200
    prom.set_down()
    assert httpx.get(f"{prom.url}/-/ready").status_code == 503


# --- templating -----------------------------------------------------------------------------


def test_every_placeholder_is_filled():
    template = "{{ namespace }} {{ name }} {{ track }} {{ interval }} {{ model }} {{ version }}"
    assert render(template, CANARY) == "ml fraud canary 60s fraud-detector 2.1.0"


@pytest.mark.parametrize("placeholder", ["{{name}}", "{{ name }}", "{{   name\t}}"])
def test_spaces_inside_braces_are_optional(placeholder):
    assert render(f"x{placeholder}x", CANARY) == "xfraudx"


def test_an_unknown_placeholder_is_named_in_the_error():
    with pytest.raises(TemplateError) as raised:
        render('rate(x{app="{{ target }}"}[{{ interval }}])', CANARY)
    assert "{{ target }}" in str(raised.value)
    assert "{{ namespace }}" in str(raised.value), "the error lists the known placeholders"


def test_a_go_template_style_placeholder_is_unknown_too():
    with pytest.raises(TemplateError, match=r"\{\{ \.Name \}\}"):
        render("{{ .Name }}", CANARY)


def test_a_decimal_interval_is_written_as_promql_accepts():
    assert render("[{{ interval }}]", _context(interval="1.5m")) == "[90s]"
    assert render("[{{ interval }}]", _context(interval="2.5s")) == "[2500ms]"
    assert render("[{{ interval }}]", _context(interval="1m30s")) == "[1m30s]"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")) | st.just("\n")))
def test_a_value_stays_inside_its_double_quoted_string(version):
    rendered = render('"{{ version }}"', _context(version=version))
    # PromQL double-quoted strings escape like JSON's for \\, \" and \n.
    assert json.loads(rendered) == version


def _context(**changes):
    return QueryContext(**{**CANARY.__dict__, **changes})


# --- default queries ------------------------------------------------------------------------


def test_the_default_error_rate_counts_server_errors_and_rejected_inputs_only():
    [error_rate, _] = promql.default_checks(api.SLOSpec())
    errors = f'{SELECTOR}, outcome=~"server_error|rejected"'
    handled = f'{SELECTOR}, outcome!="client_error"'
    assert render(error_rate.query, CANARY) == (
        f"(sum(rate(modelserver_requests_total{{{errors}}}[60s])) or vector(0))"
        f" / sum(rate(modelserver_requests_total{{{handled}}}[60s]))"
    ), "client errors neither count as errors nor dilute the rate"
    assert error_rate.max == 0.01


def test_without_counting_rejected_requests_only_server_errors_count():
    [error_rate, _] = promql.default_checks(api.SLOSpec(count_rejected_requests=False))
    assert f'{SELECTOR}, outcome="server_error"}}' in render(error_rate.query, CANARY)


def test_the_default_p99_query_and_its_bound_in_seconds():
    [_, p99] = promql.default_checks(api.SLOSpec(max_latency_p99="400ms"))
    assert render(p99.query, CANARY) == (
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(modelserver_request_duration_seconds_bucket{{{SELECTOR}}}[60s])))"
    )
    assert p99.max == 0.4


def test_the_request_volume_counts_only_requests_that_reached_the_model():
    assert render(promql.REQUEST_VOLUME, CANARY) == (
        f'sum(increase(modelserver_requests_total{{{SELECTOR}, outcome!="client_error"}}[60s]))'
    )


def test_the_stable_track_is_queried_with_its_own_label(prom):
    prom.healthy("stable")
    status = run_analysis(prom.url, context=_context(track="stable", version="2.0.0"))
    assert status.verdict == Verdict.PASS
    assert all('track="stable"' in q for q in prom.queries)


# --- one analysis ---------------------------------------------------------------------------


def test_a_healthy_canary_passes_with_every_value_shown(prom):
    prom.healthy(requests=120)
    status = run_analysis(prom.url)
    assert status.verdict == Verdict.PASS
    assert status.at == NOW
    assert status.requests == 120
    assert [(c.name, c.value, c.max, c.verdict) for c in status.checks] == [
        ("request-volume", 120, None, Verdict.PASS),
        ("error-rate", 0.0, 0.01, Verdict.PASS),
        ("latency-p99", 0.05, 0.25, Verdict.PASS),
    ]
    assert status.checks[0].min == 20
    assert all(check.query in prom.queries for check in status.checks)
    assert failure_summary(status) == "every check passed"


def test_a_canary_erroring_at_5_percent_fails(prom):
    prom.healthy()
    prom.set_track("canary", error_rate=0.05)
    status = run_analysis(prom.url)
    assert status.verdict == Verdict.FAIL
    assert status.checks[1].message == "0.05 > max 0.01"
    assert failure_summary(status) == "error-rate 0.05 > max 0.01"


def test_every_failed_check_is_in_the_summary(prom):
    prom.healthy()
    prom.set_track("canary", error_rate=0.034, p99=0.41)
    status = run_analysis(prom.url)
    assert failure_summary(status) == "error-rate 0.034 > max 0.01; latency-p99 0.41 > max 0.25"


def test_no_traffic_is_no_data_saying_how_many_requests_were_seen(prom):
    prom.no_traffic()
    status = run_analysis(prom.url)
    assert status.verdict == Verdict.NO_DATA
    assert status.requests == 0
    assert failure_summary(status) == (
        "request-volume: only 0 requests in the last 60s, fewer than minRequests 20: "
        "too little traffic to judge"
    )


def test_too_few_requests_do_not_fail_the_step_but_the_checks_are_still_shown(prom):
    prom.set_track("canary", requests=5, error_rate=0.2, p99=0.05)
    status = run_analysis(prom.url)
    assert status.verdict == Verdict.NO_DATA
    assert verdicts(status)["error-rate"] == Verdict.FAIL
    assert status.checks[1].value == 0.2


def test_a_canary_never_seen_is_no_data(prom):
    status = run_analysis(prom.url)
    assert status.verdict == Verdict.NO_DATA
    assert status.requests is None
    assert status.checks[0].message.startswith("no requests counted, minRequests 20: ")


def test_min_requests_zero_lets_the_checks_decide(prom):
    prom.set_track("canary", error_rate=0.0, p99=0.05)
    status = run_analysis(prom.url, api.AnalysisSpec(min_requests=0))
    assert status.verdict == Verdict.PASS


def test_prometheus_down_holds_by_default(prom):
    prom.set_down()
    status = run_analysis(prom.url)
    assert status.verdict == Verdict.ERROR
    assert set(verdicts(status).values()) == {Verdict.ERROR}
    assert "HTTP 503" in failure_summary(status)


def test_prometheus_down_fails_with_backend_errors_fail(prom):
    prom.set_down()
    status = run_analysis(prom.url, api.AnalysisSpec(backend_errors="Fail"))
    assert status.verdict == Verdict.FAIL
    assert failure_summary(status).startswith(
        f"request-volume: Prometheus at {prom.url} answered HTTP 503"
    )


def test_an_error_on_the_volume_query_alone_is_an_error(prom):
    prom.healthy()
    prom.set_error("too many samples", "increase(", status=422, error_type="execution")
    status = run_analysis(prom.url)
    assert status.verdict == Verdict.ERROR
    assert status.requests is None


def test_a_custom_check_is_rendered_and_judged_with_min(prom):
    prom.healthy()
    prom.set('model_accuracy{namespace="ml", track="canary"}', value=0.85)
    accuracy = api.MetricCheck(
        name="accuracy",
        query='avg(model_accuracy{namespace="{{ namespace }}", track="{{track}}"})',
        min=0.9,
    )
    status = run_analysis(prom.url, api.AnalysisSpec(metrics=[accuracy]))
    assert status.verdict == Verdict.FAIL
    assert status.checks[-1].query == 'avg(model_accuracy{namespace="ml", track="canary"})'
    assert failure_summary(status) == "accuracy 0.85 < min 0.9"


def test_a_custom_check_with_both_bounds_passes_inside_them(prom):
    prom.healthy()
    prom.set("drift", value=0.5)
    drift = api.MetricCheck(name="drift", query="drift", min=0.1, max=0.9)
    status = run_analysis(prom.url, api.AnalysisSpec(metrics=[drift]))
    assert status.verdict == Verdict.PASS
    assert status.checks[-1].message == "0.5 >= min 0.1 and <= max 0.9"


def test_a_custom_check_with_an_unknown_placeholder_is_an_error_and_is_not_sent(prom):
    prom.healthy()
    bad = api.MetricCheck(name="p95", query="x{app='{{ target }}'}", max=1)
    status = run_analysis(prom.url, api.AnalysisSpec(metrics=[bad]))
    assert status.verdict == Verdict.ERROR
    assert "{{ target }}" in status.checks[-1].message
    assert not any("x{app=" in q for q in prom.queries)
    assert verdicts(status)["error-rate"] == Verdict.PASS


def test_a_failing_check_outweighs_an_erroring_one(prom):
    prom.healthy()
    prom.set_track("canary", error_rate=0.5)
    prom.set_error("parse error", "broken")
    broken = api.MetricCheck(name="broken", query="broken(", max=1)
    status = run_analysis(prom.url, api.AnalysisSpec(metrics=[broken]))
    assert status.verdict == Verdict.FAIL
    assert failure_summary(status) == "error-rate 0.5 > max 0.01"


def test_a_nan_check_with_enough_traffic_is_no_data(prom):
    prom.healthy()
    prom.set_track("canary", p99=math.nan)
    status = run_analysis(prom.url)
    assert status.verdict == Verdict.NO_DATA
    assert failure_summary(status).startswith("latency-p99: query returned NaN")


def test_the_checks_are_queried_concurrently():
    # Answers only once all three queries are in flight at the same time.
    everyone_in = threading.Barrier(3, timeout=10)

    def app(request):
        everyone_in.wait()
        value = "100" if "increase(" in request.params["query"][0] else "0"
        result = [{"metric": {}, "value": [0, value]}]
        data = {"resultType": "vector", "result": result}
        return Reply(200, json.dumps({"status": "success", "data": data}))

    with LocalServer(app) as server:
        assert run_analysis(server.url, timeout=20).verdict == Verdict.PASS


# --- the rules as properties ----------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
verdict = st.sampled_from(list(Verdict))
gate_verdict = st.sampled_from([Verdict.PASS, Verdict.NO_DATA, Verdict.ERROR])
policy = st.sampled_from(list(api.BackendErrorPolicy))


@given(finite, st.none() | finite, st.none() | finite)
def test_judge_passes_exactly_within_the_bounds(value, low, high):
    inside = (low is None or value >= low) and (high is None or value <= high)
    assert judge(value, low, high) == (Verdict.PASS if inside else Verdict.FAIL)


@given(gate_verdict, st.lists(verdict), policy)
def test_overall_is_pass_only_when_everything_passed(gate, checks, backend_errors):
    overall = overall_verdict(gate, checks, backend_errors)
    everything_passed = gate == Verdict.PASS and all(v == Verdict.PASS for v in checks)
    assert (overall == Verdict.PASS) == everything_passed


@given(st.lists(verdict), policy)
def test_too_little_traffic_never_fails(checks, backend_errors):
    assert overall_verdict(Verdict.NO_DATA, checks, backend_errors) == Verdict.NO_DATA


@given(gate_verdict, st.lists(verdict), policy)
def test_fail_means_a_failed_check_or_a_backend_error_counted_as_failure(
    gate, checks, backend_errors
):
    overall = overall_verdict(gate, checks, backend_errors)
    failed_check = gate == Verdict.PASS and Verdict.FAIL in checks
    error_as_failure = (
        backend_errors == api.BackendErrorPolicy.FAIL
        and overall_verdict(gate, checks, api.BackendErrorPolicy.HOLD) == Verdict.ERROR
    )
    assert (overall == Verdict.FAIL) == (failed_check or error_as_failure)


@given(gate_verdict, st.lists(verdict), st.randoms())
def test_the_order_of_the_checks_does_not_matter(gate, checks, random):
    shuffled = list(checks)
    random.shuffle(shuffled)
    hold = api.BackendErrorPolicy.HOLD
    assert overall_verdict(gate, checks, hold) == overall_verdict(gate, shuffled, hold)


@given(st.lists(verdict, min_size=1))
def test_worst_is_one_of_the_verdicts_and_no_better_than_any(checks):
    order = [Verdict.PASS, Verdict.NO_DATA, Verdict.ERROR, Verdict.FAIL]
    assert worst(checks) in checks
    assert all(order.index(worst(checks)) >= order.index(v) for v in checks)
