"""Shared test helpers: paths of the repository's files, hypothesis settings, and signals
that end a run gracefully."""

from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.processes import end_gracefully_on_signals

REPO_ROOT = Path(__file__).resolve().parent.parent

# Tests assert behaviour, never time: a per-example deadline would fail property tests
# whenever a loaded machine (a cluster starting next to them, say) runs them slowly.
settings.register_profile("modeldeploy", deadline=None)
settings.load_profile("modeldeploy")


def pytest_configure(config: pytest.Config) -> None:
    # A CI timeout's SIGTERM (or a SIGHUP) ends the run as Ctrl-C does, so fixtures still
    # stop what they started: a local cluster's detached processes above all.
    end_gracefully_on_signals()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
