"""The mirror config file's JSON: what turns mirroring on, off, or is refused, and why."""

from fractions import Fraction

import pytest

from modelserver.mirror_config import InvalidMirrorConfig, MirrorTarget, parse_mirror_config
from modelserver.mirror_worker import shadow_path


@pytest.mark.parametrize(
    ("content", "target"),
    [
        (
            b'{"url": "http://fraud-canary.ml.svc:80", "percent": 100}',
            MirrorTarget("fraud-canary.ml.svc", 80, Fraction(1)),
        ),
        (
            b'{"url": "http://fraud-canary.ml.svc", "percent": 25}',
            MirrorTarget("fraud-canary.ml.svc", 80, Fraction(1, 4)),
        ),
        (
            b'{"url": "http://10.0.0.7:8080/", "percent": 12.5}',
            MirrorTarget("10.0.0.7", 8080, Fraction(1, 8)),
        ),
        # The decimal as written, exactly: 33.3% is 333 of every 1000.
        (b'{"url": "http://s:80", "percent": 33.3}', MirrorTarget("s", 80, Fraction(333, 1000))),
        (
            b'{"url": "http://[::1]:9000", "percent": 1}',
            MirrorTarget("::1", 9000, Fraction(1, 100)),
        ),
    ],
)
def test_a_url_and_a_share_turn_mirroring_on(content: bytes, target: MirrorTarget):
    assert parse_mirror_config(content) == target


@pytest.mark.parametrize(
    "content",
    [
        b"{}",
        b'{"url": null, "percent": 100}',
        b'{"url": "http://s:80", "percent": 0}',
        b'{"url": "http://s:80", "percent": 0.0}',
        b'{"percent": 50}',
    ],
)
def test_no_url_or_a_share_of_zero_is_off(content: bytes):
    assert parse_mirror_config(content) is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"url": "http://s:80"}', "percent is missing"),
        (b'{"url": "http://s:80", "percent": "50"}', "number from 0 to 100"),
        (b'{"url": "http://s:80", "percent": true}', "number from 0 to 100"),
        (b'{"url": "http://s:80", "percent": -1}', "number from 0 to 100"),
        (b'{"url": "http://s:80", "percent": 100.5}', "number from 0 to 100"),
        (b'{"url": 7, "percent": 5}', "url must be a string"),
        (b'{"url": "https://s:443", "percent": 5}', "must start with http://"),
        (b'{"url": "s:80", "percent": 5}', "must start with http://"),
        (b'{"url": "http://:80", "percent": 5}', "needs a host name"),
        (b'{"url": "http://s:99999", "percent": 5}', "out of range"),
        (b'{"url": "http://s:80/v2/models/m", "percent": 5}', "must be only http://HOST:PORT"),
    ],
)
def test_an_invalid_file_says_what_is_wrong(content: bytes, reason: str):
    with pytest.raises(InvalidMirrorConfig, match=reason):
        parse_mirror_config(content)


def test_the_shadows_model_name_comes_with_the_target():
    content = b'{"url": "http://s:80", "percent": 50, "model": "fraud-v2"}'
    assert parse_mirror_config(content) == MirrorTarget("s", 80, Fraction(1, 2), "fraud-v2")


@pytest.mark.parametrize("model", [b'""', b"7", b'"a/b"'])
def test_a_model_that_is_no_name_is_refused(model: bytes):
    content = b'{"url": "http://s:80", "percent": 50, "model": ' + model + b"}"
    with pytest.raises(InvalidMirrorConfig, match="model must be a model name"):
        parse_mirror_config(content)


@pytest.mark.parametrize(
    ("path", "model", "sent_to"),
    [
        (b"/v2/models/fraud/infer", "fraud-v2", b"/v2/models/fraud-v2/infer"),
        (b"/v1/models/fraud:predict", "fraud-v2", b"/v1/models/fraud-v2:predict"),
        (b"/v2/models/fraud/versions/3/infer", None, b"/v2/models/fraud/infer"),
        (
            b"/v2/models/fraud/versions/3/infer?a=/versions/4",
            "f",
            b"/v2/models/f/infer?a=/versions/4",
        ),
        (b"/v2/models/fraud/infer?x=1", None, b"/v2/models/fraud/infer?x=1"),
    ],
)
def test_copies_go_to_the_shadows_unversioned_path_and_model_name(
    path: bytes, model: str | None, sent_to: bytes
):
    assert shadow_path(path, model) == sent_to
