"""Shared fixtures: the sample models (trained once per session) and in-process servers."""

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.server.helpers import make_settings, serving_app

REPO = Path(__file__).resolve().parents[2]

Serve = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample models, written by the same script as `make models`."""
    output = tmp_path_factory.mktemp("models")
    subprocess.run(
        [sys.executable, str(REPO / "examples" / "train_models.py"), "--output", str(output)],
        check=True,
        timeout=300,
    )
    return output


@pytest.fixture
def serve(models_dir: Path) -> Serve:
    """serve("xgb-classifier.ubj", **settings) -> a context manager giving a TestClient."""

    @contextmanager
    def start(model: str, **overrides: Any) -> Iterator[TestClient]:
        with serving_app(make_settings(models_dir / model, **overrides)) as (client, _):
            yield client

    return start


@pytest.fixture
def classifier(serve: Serve) -> Iterator[TestClient]:
    with serve("xgb-classifier.ubj") as client:
        yield client
