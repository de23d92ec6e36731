"""Run the `modelserver` command as a real process on 127.0.0.1 for the end-to-end tests."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

COMMAND = str(Path(sys.executable).parent / "modelserver")
START_TIMEOUT_SECONDS = 90.0


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Distinct free ports: all held at once while picked, so none is picked twice."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    grpc_target: str
    """host:port of its gRPC service."""

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def run_to_exit(args: list[str], tmp_path: Path, timeout: float = 90) -> tuple[int, str]:
    """Run modelserver expecting it to stop by itself; return its exit code and stderr."""
    completed = subprocess.run(
        [COMMAND, *args], capture_output=True, text=True, timeout=timeout, cwd=tmp_path
    )
    return completed.returncode, completed.stderr


@contextmanager
def running_server(
    args: list[str], tmp_path: Path, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Start modelserver, wait until ready, and stop it (SIGTERM, then SIGKILL) at the end.

    `env` is the whole environment of the process (default: this one's). It serves gRPC on
    a free port of its own too.
    """
    port, grpc_port = free_ports(2)
    log = tmp_path / f"modelserver-{port}.log"
    command = [COMMAND, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--grpc-port", str(grpc_port), *args]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=os.environ if env is None else env,
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log, f"127.0.0.1:{grpc_port}")
    try:
        _wait_until_ready(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_until_ready(server: ServerProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"modelserver exited early:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"modelserver not ready in {START_TIMEOUT_SECONDS}s:\n{server.output()}")
