"""Hostile backends and tenants' URLs: bounded answers, no Secret in any message, SSRF."""

import asyncio
import json

import pytest

from modeldeploy.analysis import PrometheusClient, QueryFailed, Value
from modeldeploy.outbound import (
    BadUrl,
    Origin,
    Redactor,
    check_allowed,
    parse_allow_list,
)
from tests.support import LocalServer, Reply
from tests.support.hostile import EndlessServer
from tests.support.scripted_prometheus import ScriptedPrometheus

MIB = 1024 * 1024

# A private key, as found under `tls.key` in a kubernetes.io/tls Secret.
PEM_KEY = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgVcB/UNPxalR9zDYA\n"
    "jBkvbZQ6rW4ZXXQ3zM5Wd7mD5XmhRANCAAT7uZfzSUKZVg4iGTWf1yFgmq8Z2HYm\n"
    "-----END PRIVATE KEY-----\n"
)
NON_ASCII_TOKEN = "jeton-secret-éàü-42"
DER_BYTES = bytes.fromhex("3082014a30820112a003020102021420b1f09a6c7d") + b"\x00\xff\x10secret-der"


def query(url, promql_text="up", **client_options):
    async def run():
        async with PrometheusClient(url, **client_options) as client:
            return await client.query(promql_text)

    return asyncio.run(run())


@pytest.fixture
def prom():
    with ScriptedPrometheus() as server:
        yield server


# --- answers are read up to a bound ----------------------------------------------------------


def test_an_endless_answer_is_cut_off_at_4_mib_with_an_error_saying_so():
    with EndlessServer(cap=256 * MIB) as server:
        outcome = query(server.url)
        assert server.hung_up.wait(10), "the client kept reading"
    assert isinstance(outcome, QueryFailed)
    assert "answered with more than 4 MiB, and reading stopped there" in outcome.message
    # What went out is the 4 MiB read plus what the kernel's socket buffers hold.
    assert server.sent < 32 * MIB


def test_an_answer_declaring_more_than_the_bound_is_not_read_at_all():
    with EndlessServer(content_length=512 * MIB, cap=256 * MIB) as server:
        outcome = query(server.url)
        assert server.hung_up.wait(10)
    assert isinstance(outcome, QueryFailed)
    assert "more than 4 MiB" in outcome.message
    assert server.sent < 32 * MIB


def test_deeply_nested_json_is_an_error_not_a_crash():
    with LocalServer(lambda _: Reply(200, "[" * 200_000)) as server:
        outcome = query(server.url)
    assert isinstance(outcome, QueryFailed)


def test_an_internal_page_is_never_quoted():
    page = "<html><body>internal admin console: db password hunter2</body></html>"
    with LocalServer(lambda _: Reply(200, page, "text/html")) as server:
        outcome = query(server.url)
    assert isinstance(outcome, QueryFailed)
    assert "hunter2" not in outcome.message
    assert "admin console" not in outcome.message
    assert "answered HTTP 200 OK without the query API's JSON" in outcome.message


def test_only_the_error_fields_of_prometheus_json_are_quoted():
    body = json.dumps(
        {"status": "error", "errorType": "bad_data", "error": "parse error", "data": "hunter2"}
    )
    with LocalServer(lambda _: Reply(400, body)) as server:
        outcome = query(server.url)
    assert outcome == QueryFailed("Prometheus refused the query (HTTP 400, bad_data): parse error")


# --- failures that used to escape the analysis ----------------------------------------------


def test_a_port_out_of_range_is_an_error_not_a_crash():
    outcome = query("http://127.0.0.1:99999/")
    assert isinstance(outcome, QueryFailed)
    assert "not usable" in outcome.message


@pytest.mark.parametrize("url", ["http://prom:9090/path#", "http://prom:9090/x?q=1"])
def test_a_url_with_a_query_or_fragment_is_refused_before_sending(url):
    outcome = query(url)
    assert isinstance(outcome, QueryFailed)
    assert "query string or fragment" in outcome.message


# --- Secret values never reach a message -----------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [PEM_KEY, PEM_KEY.encode(), NON_ASCII_TOKEN.encode(), DER_BYTES],
    ids=["multi-line", "multi-line-bytes", "non-ascii", "binary-der"],
)
def test_an_unusable_token_is_an_error_that_never_quotes_it(prom, token):
    outcome = query(prom.url, bearer_token=token, token_source="Secret prom, key 'tls.key'")
    assert isinstance(outcome, QueryFailed)
    assert outcome.message.startswith("Secret prom, key 'tls.key' cannot be sent as an HTTP header")
    _assert_no_part_of(token, outcome.message)
    assert prom.received == [], "nothing is sent with a token that cannot be sent"


def test_a_prometheus_echoing_the_token_back_has_it_blanked_out():
    def echo(request):
        seen = request.headers.get("authorization", "")
        return Reply(400, json.dumps({"status": "error", "error": f"bad header {seen}"}))

    with LocalServer(echo) as server:
        outcome = query(server.url, bearer_token=b"s3cr3t-token-value\n")
    assert isinstance(outcome, QueryFailed)
    assert "s3cr3t-token-value" not in outcome.message
    assert "[redacted]" in outcome.message


def test_a_binary_ca_that_is_not_a_certificate_is_an_error_that_never_quotes_it(prom):
    outcome = query(prom.url, ca=DER_BYTES, ca_source="Secret prom-ca, key 'ca.crt'")
    assert isinstance(outcome, QueryFailed)
    assert outcome.message.startswith(
        "Secret prom-ca, key 'ca.crt' is neither PEM nor DER certificates"
    )
    _assert_no_part_of(DER_BYTES, outcome.message)
    assert prom.received == []


def _assert_no_part_of(secret, message):
    text = secret.decode(errors="replace") if isinstance(secret, bytes) else secret
    for line in text.splitlines():
        if len(line) >= 8:
            assert line not in message
    assert repr(secret)[2:-1][:16] not in message


def test_the_redactor_blanks_a_value_its_lines_and_its_quoted_forms():
    redact = Redactor([PEM_KEY.encode(), None, "ab"])
    line = PEM_KEY.splitlines()[1]
    assert redact(f"header {PEM_KEY!r} is illegal") == "header '[redacted]' is illegal"
    assert redact(f"bad line: {line}") == "bad line: [redacted]"
    assert redact(f"bytes {PEM_KEY.encode()!r}") == "bytes b'[redacted]'"
    assert redact("ab stays: too short to blank out") == "ab stays: too short to blank out"


# --- where analyses may go -------------------------------------------------------------------

ALLOWED = parse_allow_list(["http://prom:9090/", "https://gw.example/prom/"])


@pytest.mark.parametrize(
    "url",
    [
        "http://prom:9090",
        "http://prom:9090/",
        "http://PROM:9090/",
        "http://prom.:9090/",
        "https://gw.example/prom",
        "https://gw.example:443/prom/tenant-a",
    ],
)
def test_urls_within_an_allowed_prefix_pass(url):
    assert check_allowed(url, ALLOWED) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://prom:9090.evil.example/",
        "http://prom:9090@evil.example/",
        "http://user:pw@prom:9090/",
        "https://prom:9090/",
        "http://prom/",
        "http://prom:9091/",
        "https://gw.example/prometheus",
        "https://gw.example/",
        "https://gw.example/prom/../admin",
        "https://gw.example/prom/%2e%2e/admin",
        "https://gw.example/prom%2F..%2Fadmin",
        "http://prom:9090/#",
        "http://evil.example/",
    ],
)
def test_urls_outside_every_allowed_prefix_or_unsafe_are_refused(url):
    assert check_allowed(url, ALLOWED) is not None


def test_an_empty_allow_list_allows_any_url():
    assert check_allowed("http://anything:1234/x", ()) is None


@pytest.mark.parametrize(
    "entry", ["http://u:p@prom:9090/", "ftp://prom/", "http://prom:9090/?x", "http://:80/"]
)
def test_a_bad_allow_list_entry_is_refused_naming_it(entry):
    with pytest.raises(BadUrl, match=r"http|ftp"):
        Origin.parse(entry)


def test_a_client_for_a_url_outside_the_allow_list_sends_nothing(prom):
    outcome = query(prom.url, allowed=parse_allow_list(["http://prometheus.monitoring:9090/"]))
    assert isinstance(outcome, QueryFailed)
    assert "is not in the operator's --allowed-prometheus-urls" in outcome.message
    assert prom.received == []


def test_a_client_for_an_allowed_url_queries(prom):
    prom.set("up", value=1.0)
    assert query(prom.url, allowed=parse_allow_list([prom.url])) == Value(1.0)
