"""Model sources: paths, file:// and http(s) downloads, with the sha256 pin enforced."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from modelserver.fatal import StartupError
from modelserver.loading import load_configured_model
from modelserver.settings import Settings
from modelserver.sources import fetch_model
from tests.server.artifact_server import ArtifactServer
from tests.server.helpers import make_settings

MODEL = "xgb-classifier.ubj"


def digest(models_dir: Path, name: str = MODEL) -> str:
    return (models_dir / f"{name}.sha256").read_text().strip()


def fetch(uri: str, cache_dir: Path, sha256: str | None = None, **limits) -> Path:
    options = {"timeout_seconds": 5.0, "max_bytes": 10**9, "retries": 2} | limits
    return fetch_model(uri, cache_dir=cache_dir, expected_sha256=sha256, **options)


def test_local_path_and_file_uri_are_used_in_place(models_dir: Path, tmp_path: Path):
    path = models_dir / MODEL
    assert fetch(str(path), tmp_path) == path
    assert fetch(path.as_uri(), tmp_path) == path


def test_missing_local_file_is_refused(tmp_path: Path):
    with pytest.raises(StartupError, match=r"model file not found: .*/nothing\.ubj"):
        fetch(str(tmp_path / "nothing.ubj"), tmp_path)


def test_unsupported_scheme_is_refused(tmp_path: Path):
    with pytest.raises(StartupError, match="unsupported model URI scheme 's3'"):
        fetch("s3://bucket/model.ubj", tmp_path)


def test_matching_pin_loads_and_mismatch_is_refused(models_dir: Path):
    good = make_settings(models_dir / MODEL, model_sha256=digest(models_dir).upper())
    assert load_configured_model(good).sha256 == digest(models_dir)
    bad = make_settings(models_dir / MODEL, model_sha256="ab" * 32)
    with pytest.raises(StartupError, match=f"sha256 mismatch .*expected {'ab' * 32}, got"):
        load_configured_model(bad)


def test_malformed_pin_is_a_configuration_error(models_dir: Path):
    with pytest.raises(ValidationError, match="must be 64 hexadecimal characters"):
        make_settings(models_dir / MODEL, model_sha256="1234")


def test_http_model_is_downloaded_verified_and_loaded(models_dir: Path, tmp_path: Path):
    with ArtifactServer(models_dir) as server:
        settings = make_settings(
            models_dir / MODEL,
            model_uri=f"{server.url}/{MODEL}",
            model_sha256=digest(models_dir),
            cache_dir=tmp_path,
        )
        loaded = load_configured_model(settings)
    assert loaded.path.parent == tmp_path
    assert loaded.path.read_bytes() == (models_dir / MODEL).read_bytes()
    assert loaded.model.n_features == 30


def test_http_without_pin_is_refused_unless_allowed(models_dir: Path, tmp_path: Path):
    with pytest.raises(ValidationError, match="needs MODELSERVER_MODEL_SHA256"):
        Settings(model_uri="https://models.example/m.ubj", cache_dir=tmp_path)
    allowed = Settings(model_uri="https://models.example/m.ubj", allow_unpinned=True)
    assert allowed.allow_unpinned


def test_http_download_with_wrong_content_is_refused(models_dir: Path, tmp_path: Path):
    with ArtifactServer(models_dir) as server:
        settings = make_settings(
            models_dir / MODEL,
            model_uri=f"{server.url}/{MODEL}",
            model_sha256=digest(models_dir, "xgb-regressor.ubj"),
            cache_dir=tmp_path,
        )
        with pytest.raises(StartupError, match="sha256 mismatch"):
            load_configured_model(settings)


def test_server_errors_are_retried(models_dir: Path, tmp_path: Path):
    with ArtifactServer(models_dir) as server:
        server.fail_next(503, 502)
        path = fetch(f"{server.url}/{MODEL}", tmp_path, digest(models_dir), retries=2)
    assert path.read_bytes() == (models_dir / MODEL).read_bytes()
    assert len(server.requests) == 3


def test_retries_are_bounded(models_dir: Path, tmp_path: Path):
    with ArtifactServer(models_dir) as server:
        server.fail_next(503, 503, 503)
        with pytest.raises(StartupError, match="failed after 2 attempts: HTTP 503"):
            fetch(f"{server.url}/{MODEL}", tmp_path, retries=1)
    assert len(server.requests) == 2


def test_not_found_is_not_retried(models_dir: Path, tmp_path: Path):
    with ArtifactServer(models_dir) as server, pytest.raises(StartupError, match="HTTP 404"):
        fetch(f"{server.url}/missing.ubj", tmp_path, retries=3)
    assert len(server.requests) == 1


def test_unreachable_server_fails_after_retries(tmp_path: Path):
    with ArtifactServer(tmp_path) as server:
        url = server.url
    with pytest.raises(StartupError, match="failed after 2 attempts: ConnectError"):
        fetch(f"{url}/m.ubj", tmp_path, retries=1)


def test_download_larger_than_the_limit_is_refused(models_dir: Path, tmp_path: Path):
    too_large = "larger than MODELSERVER_DOWNLOAD_MAX_BYTES=1000"
    with ArtifactServer(models_dir) as server, pytest.raises(StartupError, match=too_large):
        fetch(f"{server.url}/{MODEL}", tmp_path, max_bytes=1000)
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_pinned_download_is_reused_from_the_cache(models_dir: Path, tmp_path: Path):
    with ArtifactServer(models_dir) as server:
        first = fetch(f"{server.url}/{MODEL}", tmp_path, digest(models_dir))
        second = fetch(f"{server.url}/{MODEL}", tmp_path, digest(models_dir))
    assert first == second
    assert len(server.requests) == 1


def test_https_is_fetched_with_tls_verification(tmp_path: Path):
    # A plain-HTTP server behind an https:// URI fails the TLS handshake: no silent downgrade.
    with ArtifactServer(tmp_path) as server:
        https_url = server.url.replace("http://", "https://") + "/m.ubj"
        with pytest.raises(StartupError, match="failed after 1 attempts"):
            fetch(https_url, tmp_path, retries=0)
