"""Helpers for the processes tests and scripts start: free ports, and no orphans.

A killed test run or demo must leave nothing running. Children that die with us are
started with `die_with_parent`; a local cluster (whose processes kwokctl detaches) is only
stopped by a teardown, so `end_gracefully_on_signals` turns SIGTERM (what CI sends at a
timeout), SIGHUP and SIGINT into the KeyboardInterrupt that runs `finally` blocks and
fixture teardowns, and `shielded` keeps a teardown from being cut short by the next one.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

_PR_SET_PDEATHSIG = 1
ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def die_with_parent() -> None:
    """For `preexec_fn`: the child is killed when the process that started it dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class _Ending:
    started: bool = False
    shields: int = 0
    held: str | None = None
    """A signal that arrived inside a shielded block, before any ending had started."""


_ending = _Ending()


def _on_signal(signum: int, _: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if _ending.started or _ending.shields:
        if not _ending.started:
            _ending.held = name
        sys.stderr.write(f"\n{name}: still stopping what was started; this ends by itself\n")
        return
    _ending.started = True
    raise KeyboardInterrupt(f"{name}: stopping what was started, then exiting")


def end_gracefully_on_signals() -> None:
    """SIGTERM, SIGHUP and SIGINT end this program as Ctrl-C does, once; later ones wait.

    A second signal would otherwise interrupt the very teardown the first one started.
    Call from the main thread (Python runs signal handlers there).
    """
    for ending in ENDING_SIGNALS:
        signal.signal(ending, _on_signal)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Run a teardown to its end: a signal that arrives meanwhile takes effect after it."""
    _ending.shields += 1
    try:
        yield
    finally:
        _ending.shields -= 1
    if not _ending.shields and _ending.held and not _ending.started:
        _ending.started = True
        raise KeyboardInterrupt(f"{_ending.held}: stopping what was started, then exiting")


def start_in_group(command: list[str], **popen: Any) -> subprocess.Popen[Any]:
    """A process in a process group of its own, so that `stop_group` reaches its children."""
    return subprocess.Popen(command, start_new_session=True, **popen)


def stop_group(process: subprocess.Popen[Any], grace: float = 30.0) -> None:
    """SIGTERM to the process and everything in its group; SIGKILL to what is left after
    `grace` seconds."""
    group = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        process.poll()  # reap the leader, which would otherwise keep the group alive
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    process.wait()


def run_in_group(command: list[str], **popen: Any) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run` in a process group of its own: interrupted, it stops the whole group
    (the command's children included), not just the command."""
    process = start_in_group(command, **popen)
    try:
        stdout, stderr = process.communicate()
    except BaseException:
        stop_group(process)
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def cluster_processes(cache: Path, cluster_name: str) -> list[int]:
    """PIDs of processes whose command line points into the local cluster's work dir."""
    marker = f"/clusters/{cluster_name}/".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline and str(cache).encode() in cmdline:
            pids.append(int(entry.name))
    return pids
