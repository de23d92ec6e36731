"""Shared test helpers: paths of the repository's files, hypothesis settings, and signals
that end a run gracefully."""

import signal
from collections.abc import Iterator
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


@pytest.fixture(autouse=True)
def _sigpipe_stays_ignored() -> Iterator[None]:
    """Python ignores SIGPIPE, so a peer hanging up is an exception; a test that runs a
    command-line entry point in-process (which may restore the default, as CLI tools do)
    must not leave the whole run to be killed by the next closed socket."""
    yield
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
