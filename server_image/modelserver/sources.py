"""Turn a model URI into a verified local file: paths, file:// and http(s):// downloads."""

import hashlib
import logging
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from modelserver.fatal import StartupError

log = logging.getLogger(__name__)

_CHUNK_BYTES = 1024 * 1024
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as artifact:
        while chunk := artifact.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str | None) -> str:
    """Return the artifact's digest; raise if it differs from the pin."""
    actual = file_sha256(path)
    if expected is not None and actual != expected:
        raise StartupError(f"sha256 mismatch for {path}: expected {expected}, got {actual}")
    return actual


def fetch_model(
    uri: str,
    *,
    cache_dir: Path,
    expected_sha256: str | None,
    timeout_seconds: float,
    max_bytes: int,
    retries: int,
    artifact: str = "model",
) -> Path:
    """Return a local path of the artifact behind `uri`, downloading http(s) to `cache_dir`.

    `artifact` names what is fetched in error messages (a model, a validation dataset).
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path) if parsed.scheme == "file" else uri)
        if not path.is_file():
            raise StartupError(f"{artifact} file not found: {path}")
        return path
    if parsed.scheme not in ("http", "https"):
        raise StartupError(f"unsupported {artifact} URI scheme {parsed.scheme!r} in {uri}")
    # The digest names the cached copy, so a restarted container reuses a verified download.
    name = Path(unquote(parsed.path)).name or artifact
    target = cache_dir / (f"{expected_sha256}-{name}" if expected_sha256 else name)
    if expected_sha256 is not None and target.is_file() and file_sha256(target) == expected_sha256:
        log.info("using cached model %s", target)
        return target
    _download_with_retries(uri, target, timeout_seconds, max_bytes, retries, artifact)
    return target


def _download_with_retries(
    uri: str, target: Path, timeout_seconds: float, max_bytes: int, retries: int, artifact: str
) -> None:
    for attempt in range(retries + 1):
        try:
            _download(uri, target, timeout_seconds, max_bytes, artifact)
            return
        except _RetryableDownloadError as error:
            if attempt == retries:
                raise StartupError(
                    f"download of {uri} failed after {retries + 1} attempts: {error}"
                ) from error
            delay = min(0.5 * 2**attempt, 8.0)
            log.warning("download of %s failed (%s); retrying in %.1fs", uri, error, delay)
            time.sleep(delay)


class _RetryableDownloadError(Exception):
    pass


def _download(
    uri: str, target: Path, timeout_seconds: float, max_bytes: int, artifact: str
) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with (
            httpx.stream("GET", uri, timeout=timeout_seconds, follow_redirects=True) as response,
        ):
            if response.status_code in _RETRYABLE_STATUS:
                raise _RetryableDownloadError(f"HTTP {response.status_code}")
            if response.status_code != 200:
                raise StartupError(f"download of {uri} failed: HTTP {response.status_code}")
            declared = int(response.headers.get("content-length", "0") or 0)
            if declared > max_bytes:
                raise StartupError(_too_large(artifact, uri, max_bytes))
            received = 0
            with partial.open("wb") as output:
                for chunk in response.iter_bytes(_CHUNK_BYTES):
                    received += len(chunk)
                    if received > max_bytes:
                        raise StartupError(_too_large(artifact, uri, max_bytes))
                    output.write(chunk)
        partial.replace(target)
    except httpx.TransportError as error:
        raise _RetryableDownloadError(f"{type(error).__name__}: {error}") from error
    except OSError as error:
        raise StartupError(f"cannot write {partial}: {error}") from error
    finally:
        partial.unlink(missing_ok=True)


def _too_large(artifact: str, uri: str, max_bytes: int) -> str:
    return f"{artifact} at {uri} is larger than MODELSERVER_DOWNLOAD_MAX_BYTES={max_bytes}"
