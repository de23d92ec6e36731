"""Benchmark driver behind scripts/bench_server.sh: modelserver vs MLServer, side by side.

Every server listens on 127.0.0.1, every load run is bounded by wrk's duration, and
every process started here is stopped here by its process group id.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import xgboost

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONCURRENCIES = (1, 8, 32)
ROW_COUNTS = (1, 100)
MODEL_NAME = "xgb-classifier"
START_TIMEOUT_SECONDS = 120.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Result:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_percent: float
    errors: int


@dataclass(frozen=True)
class Server:
    label: str
    command: list[str]
    env: dict[str, str]
    port: int


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def process_tree_cpu_seconds(root: int) -> float:
    """User + system CPU of a process and all its descendants (MLServer forks workers)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    tree = {root}
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        grew = bool(children)
        tree |= children
    return sum(times.get(pid, 0.0) for pid in tree)


@contextmanager
def started(server: Server, log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (log_dir / f"{server.label.replace(' ', '-')}.log").open("wb")
    process = subprocess.Popen(
        server.command,
        env={**os.environ, **server.env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, stopped as a whole below
        cwd=log_dir,
    )
    try:
        ready_url = f"http://127.0.0.1:{server.port}/v2/models/{MODEL_NAME}/ready"
        wait_ready(ready_url, process, log.name)
        yield process
    finally:
        stop_group(process)
        log.close()


def stop_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def wait_ready(url: str, process: subprocess.Popen[bytes], log_name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"server exited early; see {log_name}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    sys.exit(f"server not ready after {START_TIMEOUT_SECONDS}s; see {log_name}")


def run_wrk(url: str, body_file: Path, concurrency: int, seconds: int, pid: int) -> Result:
    # A short warm-up so that lazy initialisation is not measured.
    wrk(url, body_file, concurrency, 1)
    cpu_before = process_tree_cpu_seconds(pid)
    started_at = time.monotonic()
    output = wrk(url, body_file, concurrency, seconds)
    elapsed = time.monotonic() - started_at
    cpu = process_tree_cpu_seconds(pid) - cpu_before
    fields = dict(
        item.split("=")
        for line in output.splitlines()
        if line.startswith("RESULT ")
        for item in line.split()[1:]
    )
    return Result(
        requests_per_second=int(fields["requests"]) / (int(fields["duration_us"]) / 1e6),
        p50_ms=int(fields["p50_us"]) / 1000,
        p99_ms=int(fields["p99_us"]) / 1000,
        cpu_percent=100 * cpu / elapsed,
        errors=int(fields["errors"]),
    )


def wrk(url: str, body_file: Path, concurrency: int, seconds: int) -> str:
    completed = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(HERE / "post.lua"),
            url,
        ],
        env={**os.environ, "BODY_FILE": str(body_file)},
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    return completed.stdout


def write_bodies(sample_request: Path, directory: Path) -> dict[int, Path]:
    sample_rows = json.loads(sample_request.read_text())["inputs"][0]["data"]
    bodies = {}
    for count in ROW_COUNTS:
        rows = [sample_rows[i % len(sample_rows)] for i in range(count)]
        tensor = {"name": "input-0", "shape": [count, len(rows[0])], "datatype": "FP32"}
        path = directory / f"rows-{count}.json"
        path.write_text(json.dumps({"inputs": [{**tensor, "data": rows}]}))
        bodies[count] = path
    return bodies


def in_process_predict_ms(model: Path, sample_request: Path) -> dict[int, float]:
    """The floor: the model's own predict for the same rows, one thread, in process."""
    booster = xgboost.Booster(model_file=model)
    booster.set_param({"nthread": 1})
    sample = np.asarray(json.loads(sample_request.read_text())["inputs"][0]["data"], np.float32)
    floors = {}
    for count in ROW_COUNTS:
        rows = np.resize(sample, (count, sample.shape[1]))
        timings = []
        for _ in range(2000):
            started_at = time.perf_counter()
            booster.inplace_predict(rows)
            timings.append(time.perf_counter() - started_at)
        floors[count] = statistics.median(timings) * 1000
    return floors


def mlserver_command(
    venv: Path, model: Path, port: int, workers: int | None, work: Path
) -> list[str]:
    """MLServer reads its settings from files in a folder."""
    folder = work / f"mlserver-{port}"
    (folder / MODEL_NAME).mkdir(parents=True)
    server_settings: dict[str, object] = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
    }
    if workers is not None:
        server_settings["parallel_workers"] = workers
    (folder / "settings.json").write_text(json.dumps(server_settings))
    model_settings = {
        "name": MODEL_NAME,
        "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": str(model), "version": "1"},
    }
    (folder / MODEL_NAME / "model-settings.json").write_text(json.dumps(model_settings))
    return [str(venv / "bin" / "mlserver"), "start", str(folder)]


def measure(
    servers: list[Server], bodies: dict[int, Path], seconds: int, work: Path
) -> list[dict[tuple[int, int], Result]]:
    """Run every load point on each server in turn, all servers up at once.

    Taking the servers of a comparison one after the other at each point, rather than one
    whole series after the other, spreads changes of the machine's load over both.
    """
    results: list[dict[tuple[int, int], Result]] = [{} for _ in servers]
    with ExitStack() as stack:
        processes = [stack.enter_context(started(server, work)) for server in servers]
        for rows, body in bodies.items():
            for concurrency in CONCURRENCIES:
                for server, process, series in zip(servers, processes, results, strict=True):
                    url = f"http://127.0.0.1:{server.port}/v2/models/{MODEL_NAME}/infer"
                    result = run_wrk(url, body, concurrency, seconds, process.pid)
                    series[(concurrency, rows)] = result
                    print(
                        f"  {server.label:<28} c={concurrency:<3} rows={rows:<4}"
                        f" {result.requests_per_second:>9,.0f} req/s p99 {result.p99_ms:7.2f} ms",
                        flush=True,
                    )
    return results


def print_comparison(
    title: str, ours: dict[tuple[int, int], Result], theirs: dict[tuple[int, int], Result]
) -> None:
    print(f"\n## {title}")
    header = (
        f"{'rows':>4} {'c':>3} | {'ours req/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'CPU%':>5} |"
        f" {'MLServer req/s':>14} {'p50 ms':>7} {'p99 ms':>7} {'CPU%':>5} |"
        f" {'req/s x':>7} {'p99 x':>6}"
    )
    print(header)
    print("-" * len(header))
    for (concurrency, rows), mine in sorted(ours.items(), key=lambda item: item[0][::-1]):
        other = theirs[(concurrency, rows)]
        errors = "" if mine.errors == other.errors == 0 else f" errors {mine.errors}/{other.errors}"
        print(
            f"{rows:>4} {concurrency:>3} |"
            f" {mine.requests_per_second:>10,.0f} {mine.p50_ms:>7.2f} {mine.p99_ms:>7.2f}"
            f" {mine.cpu_percent:>5.0f} |"
            f" {other.requests_per_second:>14,.0f} {other.p50_ms:>7.2f} {other.p99_ms:>7.2f}"
            f" {other.cpu_percent:>5.0f} |"
            f" {mine.requests_per_second / other.requests_per_second:>7.2f}"
            f" {mine.p99_ms / other.p99_ms:>6.2f}{errors}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "examples/models/xgb-classifier.ubj")
    parser.add_argument("--mlserver-venv", type=Path, required=True)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration of each run")
    parser.add_argument(
        "--mlserver-tuned-workers",
        type=int,
        default=1,
        help="MLServer parallel_workers in the tuned comparison (ours runs as many workers)",
    )
    args = parser.parse_args()
    model: Path = args.model.resolve()
    sample_request = model.parent / "sample-request.json"
    ours_bin = str(Path(sys.executable).parent / "modelserver")
    uvicorn_bin = str(Path(sys.executable).parent / "uvicorn")
    # Defaults mean defaults: no thread variable inherited from the calling shell.
    untuned_env = {name: value for name, value in os.environ.items() if "NUM_THREADS" not in name}
    os.environ.clear()
    os.environ.update(untuned_env)
    tuned_workers = max(args.mlserver_tuned_workers, 1)

    with tempfile.TemporaryDirectory(prefix="bench-server-") as work_name:
        work = Path(work_name)
        bodies = write_bodies(sample_request, work)
        floors = in_process_predict_ms(model, sample_request)

        def ours(label: str, env: dict[str, str], extra: list[str]) -> Server:
            port = free_port()
            command = [ours_bin, "--model-uri", str(model), "--host", "127.0.0.1"]
            command += ["--port", str(port), "--cache-dir", str(work / "cache"), *extra]
            return Server(label, command, env, port)

        def mlserver(label: str, env: dict[str, str], workers: int | None) -> Server:
            port = free_port()
            command = mlserver_command(args.mlserver_venv, model, port, workers, work)
            return Server(label, command, env, port)

        print("# default settings", flush=True)
        ours_default, mlserver_default = measure(
            [ours("modelserver defaults", {}, []), mlserver("MLServer defaults", {}, None)],
            bodies,
            args.seconds,
            work,
        )
        print(f"# tuned alike: {tuned_workers} worker(s), OMP_NUM_THREADS=1", flush=True)
        one_thread = {"OMP_NUM_THREADS": "1"}
        tuned_flags = ["--workers", str(tuned_workers), "--predict-threads", "1"]
        ours_tuned, mlserver_tuned = measure(
            [
                ours("modelserver tuned", one_thread, tuned_flags),
                mlserver("MLServer tuned", one_thread, args.mlserver_tuned_workers),
            ],
            bodies,
            args.seconds,
            work,
        )
        print("# HTTP ceiling: FastAPI + uvicorn returning a constant", flush=True)
        port = free_port()
        constant_command = [uvicorn_bin, "constant_app:app", "--app-dir", str(HERE)]
        constant_command += ["--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop"]
        constant_command += ["--http", "httptools", "--no-access-log"]
        (constant,) = measure(
            [Server("constant FastAPI", constant_command, {}, port)],
            {1: bodies[1]},
            args.seconds,
            work,
        )

    print_comparison("Default vs default (ours / MLServer)", ours_default, mlserver_default)
    print_comparison(
        f"Tuned alike: {tuned_workers} worker(s), OMP_NUM_THREADS=1 (ours / MLServer)",
        ours_tuned,
        mlserver_tuned,
    )
    print("\n## Floors")
    for rows, milliseconds in floors.items():
        print(
            f"in-process Booster.inplace_predict, {rows:>3} row(s), 1 thread:"
            f" {milliseconds * 1000:7.0f} us"
        )
    for (concurrency, _), result in sorted(constant.items()):
        print(
            f"constant FastAPI reply, c={concurrency:<3}: {result.requests_per_second:>9,.0f} req/s"
            f"  p99 {result.p99_ms:.2f} ms  CPU {result.cpu_percent:.0f}%"
        )


if __name__ == "__main__":
    main()
