"""Shared test helpers: paths of the repository's files, and hypothesis settings."""

from pathlib import Path

import pytest
from hypothesis import settings

REPO_ROOT = Path(__file__).resolve().parent.parent

# Tests assert behaviour, never time: a per-example deadline would fail property tests
# whenever a loaded machine (a cluster starting next to them, say) runs them slowly.
settings.register_profile("modeldeploy", deadline=None)
settings.load_profile("modeldeploy")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
