"""Where to mirror and how much: the JSON file the operator mounts from a ConfigMap.

`{"url": "http://NAME-canary.NAMESPACE.svc:80", "percent": 25, "model": "fraud"}`;
`model`, optional, is the name the shadow serves its model under, when a new revision
renamed it (copies then go to that name's path). A missing file, `{}`, a null url or a
percent of 0 mean no mirroring. The kubelet replaces a mounted
ConfigMap's file by swapping a symlink, so the file is read again every few seconds
rather than watched.
"""

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit

import orjson

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
_FORMAT_HINT = 'expected {"url": "http://HOST:PORT", "percent": 0 to 100}'


class InvalidMirrorConfig(Exception):
    pass


@dataclass(frozen=True)
class MirrorTarget:
    """A shadow to send copies of `share` of the requests to."""

    host: str
    port: int
    share: Fraction
    """Of the requests answered 200, the share to copy: 0 < share <= 1, exact."""
    model: str | None = None
    """The shadow's model name, when copies must go to another name's path."""

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def describe(self) -> str:
        percent = self.share * 100
        shown = f"{percent.numerator}" if percent.denominator == 1 else f"{float(percent):g}"
        return f"{shown}% of requests to http://{self.host}:{self.port}"


def parse_mirror_config(content: bytes) -> MirrorTarget | None:
    """The target that `content` names, None for no mirroring; InvalidMirrorConfig saying
    what is wrong otherwise."""
    try:
        config = orjson.loads(content)
    except orjson.JSONDecodeError as error:
        raise InvalidMirrorConfig(f"not JSON ({error}); {_FORMAT_HINT}") from error
    if not isinstance(config, dict):
        raise InvalidMirrorConfig(f"not a JSON object; {_FORMAT_HINT}")
    url = config.get("url")
    percent = config.get("percent")
    if url is None:
        return None
    if percent is None:
        raise InvalidMirrorConfig(f"percent is missing; {_FORMAT_HINT}")
    if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 <= percent <= 100:
        raise InvalidMirrorConfig(f"percent must be a number from 0 to 100, got {percent!r:.40}")
    if percent == 0:
        return None
    if not isinstance(url, str):
        raise InvalidMirrorConfig(f"url must be a string or null, got {url!r:.60}")
    host, port = _address(url)
    model = config.get("model")
    if model is not None and (not isinstance(model, str) or not model or "/" in model):
        raise InvalidMirrorConfig(f"model must be a model name, got {model!r:.60}")
    # The number as written (25, 12.5, 33.3), exactly: the sampling adds it up without drift.
    share = Fraction(str(percent)) / 100
    return MirrorTarget(host, port, share, model)


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise InvalidMirrorConfig(
            f"url {url!r:.100} must start with http:// (copies go to the shadow's Service"
            " in the cluster, without TLS)"
        )
    try:
        port = parts.port or 80
    except ValueError as error:
        raise InvalidMirrorConfig(f"url {url!r:.100}: {error}") from error
    if not parts.hostname or not parts.hostname.isascii():
        raise InvalidMirrorConfig(f"url {url!r:.100} needs a host name in ASCII")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise InvalidMirrorConfig(
            f"url {url!r:.100} must be only http://HOST:PORT: copies keep the request's path"
        )
    return parts.hostname, port


class MirrorConfigFile:
    """Reads the file again on each `poll` and says when what it means has changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._state: bytes | str | None = None
        self._polled = False

    def poll(self) -> tuple[bool, MirrorTarget | None]:
        """(changed, target): whether the file changed since the last poll, and the target
        it names now (None when off, missing or invalid; invalid logs one warning)."""
        state = self._read()
        if self._polled and state == self._state:
            return False, None
        self._polled, self._state = True, state
        if state is None:
            log.info("mirroring off: %s does not exist", self.path)
            return True, None
        if isinstance(state, str):
            log.warning("mirroring off: cannot read %s: %s", self.path, state)
            return True, None
        try:
            target = parse_mirror_config(state)
        except InvalidMirrorConfig as error:
            log.warning("mirroring off: %s is invalid: %s", self.path, error)
            return True, None
        if target is None:
            log.info("mirroring off, as %s says", self.path)
        else:
            log.info("mirroring %s, as %s says", target.describe(), self.path)
        return True, target

    def _read(self) -> bytes | str | None:
        """The file's content, None when it does not exist, or why it cannot be read."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            return str(error)
