"""A test run ended by a signal still tears down what it started (issue 10).

Each test runs a real pytest (with the repository's root conftest) or Python in a
subprocess and signals it the way a CI timeout, a closed terminal or Ctrl-C would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# A session fixture starts a detached process, like a local cluster's (kwokctl detaches
# them, so they do not die with pytest); its teardown takes a moment, as a real one does.
PROBE = """
import os
import sys
import time
from pathlib import Path

import pytest

from tests.support.processes import start_in_group, stop_group

OUT = Path(os.environ["PROBE_DIR"])


@pytest.fixture(scope="session")
def detached():
    child = start_in_group(
        [sys.executable, "-c", "import time; time.sleep(300)", os.environ["PROBE_TOKEN"]]
    )
    yield
    (OUT / "teardown-started").touch()
    time.sleep(1)
    stop_group(child)
    (OUT / "torn-down").touch()


def test_runs_until_signalled(detached):
    (OUT / "running").touch()
    time.sleep(120)
"""


def processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_for_file(path: Path, run: subprocess.Popen[str]) -> None:
    for _ in range(600):
        if path.exists():
            return
        if run.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{path.name} never appeared; output:\n{run.communicate()[0]}")


def test_a_run_ended_by_sigterm_tears_down_its_fixtures_even_when_signalled_again(
    tmp_path: Path,
) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    token = f"probe-{uuid.uuid4().hex}"
    env = {**os.environ, "PROBE_DIR": str(tmp_path), "PROBE_TOKEN": token}
    command = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider"]
    run = subprocess.Popen(
        [*command, "-q", "--rootdir", str(tmp_path), str(probe)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_file(tmp_path / "running", run)
        assert processes_with(token), "the fixture's detached process did not start"
        run.send_signal(signal.SIGTERM)
        wait_for_file(tmp_path / "teardown-started", run)
        run.send_signal(signal.SIGTERM)  # a CI runner's second notice
        output, _ = run.communicate(timeout=60)
    finally:
        run.kill()
        leftovers = processes_with(token)
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)

    assert (tmp_path / "torn-down").exists(), f"the teardown did not finish:\n{output}"
    assert not leftovers, "the fixture's process outlived the run"
    assert "SIGTERM: stopping what was started" in output
    assert run.returncode != 0


@pytest.mark.parametrize(
    "ending", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name
)
def test_each_ending_signal_interrupts_once_and_a_second_one_waits_for_the_teardown(
    ending: signal.Signals,
) -> None:
    script = (
        "import time\n"
        "from tests.support.processes import end_gracefully_on_signals\n"
        "end_gracefully_on_signals()\n"
        "try:\n"
        "    print('running', flush=True)\n"
        "    time.sleep(60)\n"
        "except KeyboardInterrupt as ended:\n"
        "    print(f'ended: {ended}', flush=True)\n"
        "    time.sleep(1)\n"
        "    print('teardown finished', flush=True)\n"
    )
    run = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert run.stdout is not None
        assert run.stdout.readline() == "running\n"
        run.send_signal(ending)
        ended = run.stdout.readline()
        run.send_signal(ending)
        rest, errors = run.communicate(timeout=60)
    finally:
        run.kill()

    assert ended == f"ended: {ending.name}: stopping what was started, then exiting\n"
    assert rest == "teardown finished\n", errors
    assert run.returncode == 0


def test_a_signal_during_a_shielded_teardown_takes_effect_after_it() -> None:
    script = (
        "import os, signal\n"
        "from tests.support.processes import end_gracefully_on_signals, shielded\n"
        "end_gracefully_on_signals()\n"
        "try:\n"
        "    with shielded():\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        print('teardown finished', flush=True)\n"
        "    print('carried on', flush=True)\n"
        "except KeyboardInterrupt as ended:\n"
        "    print(f'then ended: {ended}', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.splitlines() == [
        "teardown finished",
        "then ended: SIGTERM: stopping what was started, then exiting",
    ]
