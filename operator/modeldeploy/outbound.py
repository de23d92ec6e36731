"""Requests to URLs that tenants name: which URLs are allowed, how much of an answer is
read, and keeping Secret values out of every message.

A ModelDeployment names its Prometheus and its webhook, and Secrets that go with them,
so whoever can create one can point the operator anywhere it can reach. The operator
therefore reads only a bounded amount of any answer, never echoes an answer's body,
never lets a Secret's value reach a message, and lets a platform team pin where
analyses may go (`--allowed-prometheus-urls`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

import httpx

PROMETHEUS_ANSWER_LIMIT = 4 * 1024 * 1024
REDACTED = "[redacted]"
# Secret lines shorter than this are too common as substrings ("ok", "true") to blank out.
_MIN_REDACTED_LENGTH = 4
_DEFAULT_PORTS = {"http": 80, "https": 443}


class AnswerTooLarge(Exception):
    """An answer was longer than the caller's bound; reading stopped there."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {_size(limit)}")
        self.limit = limit


async def read_bounded(response: httpx.Response, limit: int) -> bytes:
    """The (decoded) body of a streamed response, or AnswerTooLarge past `limit` bytes.

    Decoded size is what counts, so a small compressed answer cannot inflate past it.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise AnswerTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise AnswerTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _size(limit: int) -> str:
    if limit % (1024 * 1024) == 0:
        return f"{limit // (1024 * 1024)} MiB"
    return f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes"


class Redactor:
    """Blanks out Secret values in text, however an error message may have quoted them.

    Besides the value itself, each of its lines is blanked (a multi-line key quoted in
    part) and its escaped forms (a library quoting it with repr() or as bytes).
    """

    def __init__(self, secrets: Iterable[str | bytes | None] = ()) -> None:
        needles: set[str] = set()
        for secret in secrets:
            if secret is None:
                continue
            text = secret.decode(errors="replace") if isinstance(secret, bytes) else secret
            raw = secret if isinstance(secret, bytes) else secret.encode(errors="replace")
            forms = {
                text,
                text.strip(),
                text.encode("unicode_escape").decode("ascii"),
                repr(raw)[2:-1],
                *text.splitlines(),
            }
            needles |= {form for form in forms if len(form.strip()) >= _MIN_REDACTED_LENGTH}
        # Longest first, so a whole value is blanked before any of its lines.
        self._needles = sorted(needles, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for needle in self._needles:
            text = text.replace(needle, REDACTED)
        return text


_HEADER_VALUE = re.compile(r"[\x21-\x7e]+")


def header_safe(token: str) -> bool:
    """Whether `token` can be sent in an HTTP header as is: visible ASCII, one line."""
    return _HEADER_VALUE.fullmatch(token) is not None


# --- where requests may go --------------------------------------------------------------


class BadUrl(ValueError):
    """A URL that cannot be matched safely (userinfo, bad port, dot segments, ...)."""


@dataclass(frozen=True)
class Origin:
    """A URL reduced to what an allow-list compares: scheme, host, port, path segments."""

    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, url: str) -> Origin:
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as error:
            raise BadUrl(f"{url!r} is not a usable URL: {error}") from error
        if parts.scheme not in _DEFAULT_PORTS:
            raise BadUrl(f"{url!r} must start with http:// or https://")
        if "@" in parts.netloc:
            raise BadUrl(f"{url!r} has a user name or password before the host; none is allowed")
        if not parts.hostname:
            raise BadUrl(f"{url!r} names no host")
        if "?" in url or "#" in url:
            raise BadUrl(f"{url!r} has a query string or fragment; give a base URL")
        return cls(
            scheme=parts.scheme,
            host=parts.hostname.rstrip("."),
            port=port if port is not None else _DEFAULT_PORTS[parts.scheme],
            segments=_segments(parts),
        )

    def within(self, prefix: Origin) -> bool:
        return (self.scheme, self.host, self.port) == (
            prefix.scheme,
            prefix.host,
            prefix.port,
        ) and self.segments[: len(prefix.segments)] == prefix.segments


def _segments(parts: SplitResult) -> tuple[str, ...]:
    segments = tuple(unquote(s) for s in parts.path.split("/") if s)
    if any(s in (".", "..") or "/" in s for s in segments):
        raise BadUrl(f"the path {parts.path!r} has '.', '..' or an encoded '/' segment")
    return segments


def parse_allow_list(urls: Sequence[str]) -> tuple[Origin, ...]:
    """The operator's --allowed-prometheus-urls; raises BadUrl naming a bad entry."""
    return tuple(Origin.parse(url) for url in urls)


def check_allowed(url: str, allowed: Sequence[Origin]) -> str | None:
    """None when `url` may be queried, else why not. An empty allow-list allows all."""
    if not allowed:
        return None
    try:
        origin = Origin.parse(url)
    except BadUrl as error:
        return str(error)
    if any(origin.within(prefix) for prefix in allowed):
        return None
    return (
        f"Prometheus URL {url} is not in the operator's --allowed-prometheus-urls; "
        "use one of the URLs your platform team allows, or ask them to add it"
    )
