import asyncio

import pytest

from modeldeploy.notify import Notification, NotificationKind, payload, post_notification
from tests.support import RecordingWebhook
from tests.support.hostile import EndlessServer
from tests.support.processes import free_port

ROLLED_BACK = Notification(
    kind=NotificationKind.ROLLED_BACK,
    namespace="ml",
    name="fraud",
    version="2.1.0",
    revision="a81f",
    message="error-rate 0.034 > max 0.01",
)


def _post(url, event=ROLLED_BACK, timeout=5.0):
    return asyncio.run(post_notification(url, event, timeout=timeout))


def test_a_posted_notification_names_the_deployment_version_revision_and_reason():
    with RecordingWebhook() as hook:
        assert _post(hook.url) is None
    [body] = hook.received
    assert body["text"] == (
        "ml/fraud: rolled back model version 2.1.0 (revision a81f): error-rate 0.034 > max 0.01"
    )


@pytest.mark.parametrize(
    ("kind", "words", "colour"),
    [
        (NotificationKind.PROMOTED, "promoted model version 2.1.0", "good"),
        (NotificationKind.ROLLED_BACK, "rolled back model version 2.1.0", "danger"),
        (NotificationKind.ANALYSIS_FAILED, "analysis failed for model version 2.1.0", "warning"),
    ],
)
def test_each_outcome_reads_differently_and_has_its_colour(kind, words, colour):
    event = Notification(kind=kind, namespace="ml", name="fraud", version="2.1.0", revision="a81f")
    body = payload(event)
    assert body["text"] == f"ml/fraud: {words} (revision a81f)"
    assert body["attachments"][0]["color"] == colour


def test_a_webhook_answering_500_gives_a_message_not_an_exception():
    with RecordingWebhook() as hook:
        hook.respond(500, body="no_service")
        error = _post(hook.url)
    assert error == f"webhook at {hook.url.split('/services')[0]} answered HTTP 500"
    assert "no_service" not in error, "a reply's body never reaches an Event"


def test_an_unreachable_webhook_gives_a_message_not_an_exception():
    error = _post(f"http://127.0.0.1:{free_port()}/services/T000/B000/secret-token")
    assert error is not None
    assert "unreachable" in error
    assert "secret-token" not in error, "the webhook URL's path is its secret"


def test_a_webhook_slower_than_the_timeout_is_given_up():
    with RecordingWebhook() as hook:
        hook.respond(delay=30.0)
        error = _post(hook.url, timeout=0.2)
    assert error == f"webhook at {hook.url.rsplit('/services', 1)[0]} did not answer within 0.2s"


def test_a_url_read_from_a_secret_with_a_trailing_newline_works():
    with RecordingWebhook() as hook:
        assert _post(f"{hook.url}\n") is None
    assert len(hook.received) == 1


def test_a_malformed_url_gives_a_message_not_an_exception():
    assert "unreachable" in (_post("not a url") or "")


def test_an_endless_reply_is_not_read():
    with EndlessServer(cap=256 * 1024 * 1024) as server:
        assert _post(f"{server.url}/services/T/B/secret") is None
        assert server.hung_up.wait(10)
    assert server.sent < 32 * 1024 * 1024


def test_a_user_name_and_password_in_the_url_are_never_quoted():
    url = f"http://bot:pa55word@127.0.0.1:{free_port()}/services/T000/B000/secret-token"
    error = _post(url)
    assert error is not None
    assert "pa55word" not in error
    assert "bot" not in error
    assert "secret-token" not in error
