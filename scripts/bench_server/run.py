"""Benchmark driver behind scripts/bench_server.sh: modelserver vs MLServer, side by side
over REST and over gRPC, what a reference profile and the feedback path cost modelserver, and
how near its REST comes to a constant FastAPI reply.

Every server listens on 127.0.0.1, every load run is bounded by wrk's duration, and
every process started here is stopped here by its process group id.
"""

import argparse
import base64
import functools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import xgboost
from scripts.bench_server import grpc_bench
from scripts.bench_server.mirror_bench import Harness, mirror_section

from modelserver.feedback import ReplayGuard
from modelserver.model import Prediction, Task
from modelserver.prediction_token import TokenContent, TokenSigner
from modelserver.settings import Settings

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONCURRENCIES = (1, 8, 32)
ROW_COUNTS = (1, 100)
MODEL_NAME = "xgb-classifier"
START_TIMEOUT_SECONDS = 120.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
SECTIONS = ("mlserver", "profile", "mirror", "grpc", "ceiling")
PROFILE_POINTS = ((1, 8), (100, 8))
"""(rows, concurrency) at which a server with a profile is compared with one without."""
REPLAY_CAPACITY: int = Settings.model_fields["feedback_replay_capacity"].default
FEEDBACK_CHECKPOINTS = (0.25, 0.5, 1.0, 1.5)
"""Tokens posted, as shares of the replay capacity, after which the memory is read;
beyond 1.0 the oldest are forgotten, so the memory must stay flat."""
FEEDBACK_BATCH = 1000
"""Tokens per feedback request (a list of {token, labels})."""
FEEDBACK_VERSION, FEEDBACK_TRACK = "1", "stable"


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
    grpc_port: int = 0
    """Of the V2 protocol over gRPC; 0: the server serves none."""


Ours = Callable[[str, dict[str, str], list[str]], Server]
"""Makes a modelserver Server: label, extra environment, extra flags."""
MLServer = Callable[[str, dict[str, str], int | None], Server]
"""Makes an MLServer Server: label, extra environment, parallel_workers (None: default)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def process_tree_stats(root: int) -> tuple[float, int]:
    """User + system CPU seconds and resident bytes of a process and all its descendants
    (MLServer forks workers)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    resident: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        resident[int(entry.name)] = int(fields[21]) * PAGE_BYTES
    tree = {root}
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        grew = bool(children)
        tree |= children
    return sum(times.get(pid, 0.0) for pid in tree), sum(resident.get(pid, 0) for pid in tree)


def process_cpu_seconds(pid: int) -> float:
    """Of the process alone (its threads), not of its children; in nanoseconds' steps
    (schedstat), where stat counts clock ticks (10 ms: ~5% of a short run's few seconds)."""
    nanoseconds = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            nanoseconds += int((task / "schedstat").read_text().split()[0])
        except OSError:
            continue  # the thread ended meanwhile
    return nanoseconds / 1e9


def process_tree_cpu_seconds(root: int) -> float:
    return process_tree_stats(root)[0]


def process_tree_rss_bytes(root: int) -> int:
    return process_tree_stats(root)[1]


@contextmanager
def started(
    server: Server, log_dir: Path, own_session: bool = True
) -> Iterator[subprocess.Popen[bytes]]:
    """`server`, ready; in a process group of its own (stopped as a whole below), and in a
    session of its own unless `own_session` is False. Linux shares the CPU fairly between
    sessions (autogroups) before it does between processes."""
    log = (log_dir / f"{server.label.replace(' ', '-')}.log").open("wb")
    process = subprocess.Popen(
        server.command,
        env={**os.environ, **server.env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=own_session,
        process_group=None if own_session else 0,
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
    venv: Path, model: Path, port: int, grpc_port: int, workers: int | None, work: Path
) -> list[str]:
    """MLServer reads its settings from files in a folder."""
    folder = work / f"mlserver-{port}"
    (folder / MODEL_NAME).mkdir(parents=True)
    server_settings: dict[str, object] = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": grpc_port,
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


def measure_rounds(
    sides: list[Server], bodies: dict[int, Path], rounds: int, seconds: int, work: Path
) -> list[dict[tuple[int, int], list[Result]]]:
    """PROFILE_POINTS on each side, `rounds` times, all sides up at once.

    The sides take turns at each point, the first of a round going last in the next, so
    that a change of the machine's load or a side's warm-up favours neither.
    """
    results: list[dict[tuple[int, int], list[Result]]] = [{} for _ in sides]
    with ExitStack() as stack:
        processes = [stack.enter_context(started(side, work)) for side in sides]
        for round_number in range(rounds):
            for rows, concurrency in PROFILE_POINTS:
                order = list(zip(sides, processes, results, strict=True))
                if round_number % 2:
                    order.reverse()
                for side, process, series in order:
                    url = f"http://127.0.0.1:{side.port}/v2/models/{MODEL_NAME}/infer"
                    result = run_wrk(url, bodies[rows], concurrency, seconds, process.pid)
                    series.setdefault((concurrency, rows), []).append(result)
                    print(
                        f"  round {round_number + 1}/{rounds} {side.label:<22} c={concurrency:<3}"
                        f" rows={rows:<4} {result.requests_per_second:>9,.0f} req/s"
                        f" p99 {result.p99_ms:7.2f} ms",
                        flush=True,
                    )
    return results


@dataclass(frozen=True)
class MemoryReading:
    tokens_posted: int
    remembered: int
    rss_bytes: int


def signed_tokens(key: bytes, count: int, start: int) -> list[str]:
    """1-row tokens of the sample classifier, signed with the server's own code and key.

    Asking the server for them would take `count` inference requests and measure nothing
    more: the feedback path sees the same bytes."""
    signer = TokenSigner(key, FEEDBACK_VERSION, FEEDBACK_TRACK, Task.BINARY, [0, 1])
    prediction = Prediction(np.asarray([1]), np.asarray([[0.2, 0.8]]))
    now = time.time()
    return [signer.sign(f"bench-{start + i}", prediction, now) for i in range(count)]


def post_feedback(client: httpx.Client, key: bytes, count: int, start: int) -> None:
    tokens = signed_tokens(key, count, start)
    for first in range(0, count, FEEDBACK_BATCH):
        items = [
            {"token": token, "labels": [1]} for token in tokens[first : first + FEEDBACK_BATCH]
        ]
        answer = client.post(f"/v2/models/{MODEL_NAME}/feedback", json=items)
        answer.raise_for_status()
        if answer.json()["replayed"]:
            sys.exit(f"feedback counted as replayed: {answer.text}")


def remembered_tokens(client: httpx.Client) -> int:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("modelserver_feedback_remembered_tokens{"):
            return int(float(line.rsplit(" ", 1)[1]))
    sys.exit("the server exports no modelserver_feedback_remembered_tokens")


def feedback_memory(server: Server, key: bytes, capacity: int, work: Path) -> list[MemoryReading]:
    """The server's resident memory as feedback tokens arrive, up to and past the capacity
    of its replay store. The first reading follows one batch, so that what any first
    request sets up (imports, metric series, the allocator's first arenas) is not taken
    for the store's growth."""
    readings = []
    with (
        started(server, work) as process,
        httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=60) as client,
    ):
        posted = 0
        checkpoints = {FEEDBACK_BATCH, *(int(capacity * share) for share in FEEDBACK_CHECKPOINTS)}
        for target in sorted(checkpoints):
            post_feedback(client, key, target - posted, start=posted)
            posted = target
            rss = process_tree_rss_bytes(process.pid)
            readings.append(MemoryReading(posted, remembered_tokens(client), rss))
    return readings


def replay_store_bytes(capacity: int) -> int:
    """What the replay store holds at capacity, measured in this process with tracemalloc
    (the server's own class, filled with tokens as the server fills it)."""
    guard = ReplayGuard(capacity, max_age_seconds=86400)
    now = time.time()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(capacity):
        token = TokenContent(
            request_id="",
            model_version=FEEDBACK_VERSION,
            track=FEEDBACK_TRACK,
            issued_at=int(now),
            classes=None,
            predicted=np.empty(0),
            scores=None,
            signature=os.urandom(32),
        )
        guard.first_time(token, now)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    if len(guard) != capacity:
        sys.exit(f"the replay store holds {len(guard)} tokens, not {capacity}")
    return held


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


def print_profile_rows(
    rounds: int,
    without: dict[tuple[int, int], list[Result]],
    with_profile: dict[tuple[int, int], list[Result]],
) -> None:
    print(
        f"\n## With a reference profile vs without (median of {rounds} rounds, sides"
        " interleaved; req/s x: with / without)"
    )
    header = (
        f"{'rows':>4} {'c':>3} | {'without req/s':>13} {'p99 ms':>7} |"
        f" {'profile req/s':>13} {'p99 ms':>7} | {'req/s x':>7} {'per round':>13}"
    )
    print(header)
    print("-" * len(header))
    for rows, concurrency in PROFILE_POINTS:
        plain, profiled = without[(concurrency, rows)], with_profile[(concurrency, rows)]
        # Each round's two runs were taken back to back: their ratio cancels most of the
        # machine's drift, the median of the ratios the outliers.
        ratios = [
            mine.requests_per_second / other.requests_per_second
            for mine, other in zip(profiled, plain, strict=True)
        ]
        errors = sum(result.errors for result in (*plain, *profiled))
        print(
            f"{rows:>4} {concurrency:>3} |"
            f" {statistics.median(r.requests_per_second for r in plain):>13,.0f}"
            f" {statistics.median(r.p99_ms for r in plain):>7.2f} |"
            f" {statistics.median(r.requests_per_second for r in profiled):>13,.0f}"
            f" {statistics.median(r.p99_ms for r in profiled):>7.2f} |"
            f" {statistics.median(ratios):>7.3f} {min(ratios):>6.3f}-{max(ratios):.3f}"
            + (f" errors {errors}" if errors else "")
        )


def cpu_us_per_request(result: Result) -> float:
    """The server's CPU time per answered request (its CPU share over the run / req/s)."""
    return result.cpu_percent / 100 / result.requests_per_second * 1e6


def print_ceiling_rows(
    rounds: int,
    ours: dict[tuple[int, int], list[Result]],
    constant: dict[tuple[int, int], list[Result]],
) -> None:
    print(
        f"\n## Ours vs the HTTP ceiling, a constant FastAPI reply (median of {rounds} rounds,"
        " sides interleaved; x: ours / constant)"
    )
    header = (
        f"{'rows':>4} {'c':>3} | {'ours req/s':>10} {'p99 ms':>7} {'CPU us':>6} |"
        f" {'const req/s':>11} {'p99 ms':>7} {'CPU us':>6} | {'req/s x':>7} {'per round':>13}"
        f" {'CPU x':>6}"
    )
    print(header)
    print("-" * len(header))
    for rows, concurrency in PROFILE_POINTS:
        mine, ceiling = ours[(concurrency, rows)], constant[(concurrency, rows)]
        # Each round's two runs were taken back to back: their ratio cancels most of the
        # machine's drift, the median of the ratios the outliers. CPU per request is what
        # a loaded machine changes least.
        ratios = [
            ours_run.requests_per_second / constant_run.requests_per_second
            for ours_run, constant_run in zip(mine, ceiling, strict=True)
        ]
        cpu_ratios = [
            cpu_us_per_request(constant_run) / cpu_us_per_request(ours_run)
            for ours_run, constant_run in zip(mine, ceiling, strict=True)
        ]
        errors = sum(result.errors for result in (*mine, *ceiling))
        print(
            f"{rows:>4} {concurrency:>3} |"
            f" {statistics.median(r.requests_per_second for r in mine):>10,.0f}"
            f" {statistics.median(r.p99_ms for r in mine):>7.2f}"
            f" {statistics.median(cpu_us_per_request(r) for r in mine):>6.0f} |"
            f" {statistics.median(r.requests_per_second for r in ceiling):>11,.0f}"
            f" {statistics.median(r.p99_ms for r in ceiling):>7.2f}"
            f" {statistics.median(cpu_us_per_request(r) for r in ceiling):>6.0f} |"
            f" {statistics.median(ratios):>7.3f} {min(ratios):>6.3f}-{max(ratios):.3f}"
            f" {statistics.median(cpu_ratios):>6.3f}" + (f" errors {errors}" if errors else "")
        )
    print(
        "CPU us: the server's CPU time per request (process tree); CPU x: the constant's"
        " CPU per request / ours, the ratio that a busy machine moves least."
    )


def print_feedback_memory(capacity: int, store_bytes: int, readings: list[MemoryReading]) -> None:
    print(f"\n## Feedback path memory (replay capacity {capacity:,} tokens of 1 row)")
    print(
        f"replay store at capacity, in process (tracemalloc): {store_bytes / 2**20:.1f} MiB,"
        f" {store_bytes / capacity:.0f} bytes a token"
    )
    header = (
        f"{'tokens posted':>13} | {'remembered':>10} | {'server RSS MiB':>14} | {'growth MiB':>10}"
    )
    print(header)
    print("-" * len(header))
    baseline = readings[0].rss_bytes
    for reading in readings:
        print(
            f"{reading.tokens_posted:>13,} | {reading.remembered:>10,} |"
            f" {reading.rss_bytes / 2**20:>14.1f} | {(reading.rss_bytes - baseline) / 2**20:>10.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "examples/models/xgb-classifier.ubj")
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="mlserver: ours vs MLServer and the floors; profile: ours with a reference"
        " profile vs without, and the feedback path's memory; mirror: ours mirroring every"
        " request to a shadow vs not, and copies dropped under overload; grpc: ours vs"
        " MLServer over gRPC, and ours over gRPC vs over REST; ceiling: ours vs a constant"
        " FastAPI reply, interleaved",
    )
    parser.add_argument(
        "--mlserver-venv", type=Path, help="needed by the mlserver and grpc sections"
    )
    parser.add_argument("--ghz", type=Path, help="the ghz binary; needed by the grpc section")
    parser.add_argument(
        "--vegeta", type=Path, help="the vegeta binary; needed by the mirror section"
    )
    parser.add_argument("--grpc-rounds", type=int, default=3, help="rounds of the grpc section")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration of each run")
    parser.add_argument(
        "--mlserver-tuned-workers",
        type=int,
        default=1,
        help="MLServer parallel_workers in the tuned comparison (ours runs as many workers)",
    )
    parser.add_argument(
        "--profile-rounds", type=int, default=5, help="rounds of the profile comparison"
    )
    parser.add_argument(
        "--mirror-rounds", type=int, default=5, help="rounds of the mirror comparison"
    )
    parser.add_argument(
        "--ceiling-rounds", type=int, default=5, help="rounds of the ceiling comparison"
    )
    args = parser.parse_args()
    if {"mlserver", "grpc"} & set(args.sections) and args.mlserver_venv is None:
        parser.error("the mlserver and grpc sections need --mlserver-venv")
    if "grpc" in args.sections and args.ghz is None:
        parser.error("the grpc section needs --ghz")
    if "mirror" in args.sections and args.vegeta is None:
        parser.error("the mirror section needs --vegeta")
    model: Path = args.model.resolve()
    sample_request = model.parent / "sample-request.json"
    profile = model.with_name(model.stem + ".profile.json")
    ours_bin = str(Path(sys.executable).parent / "modelserver")
    # Defaults mean defaults: no thread variable inherited from the calling shell.
    untuned_env = {name: value for name, value in os.environ.items() if "NUM_THREADS" not in name}
    os.environ.clear()
    os.environ.update(untuned_env)

    with tempfile.TemporaryDirectory(prefix="bench-server-") as work_name:
        work = Path(work_name)
        bodies = write_bodies(sample_request, work)

        def ours(label: str, env: dict[str, str], extra: list[str]) -> Server:
            port, grpc_port = free_port(), free_port()  # gRPC: servers side by side
            command = [ours_bin, "--model-uri", str(model), "--host", "127.0.0.1"]
            command += ["--port", str(port), "--grpc-port", str(grpc_port)]
            command += ["--cache-dir", str(work / "cache"), *extra]
            return Server(label, command, env, port, grpc_port)

        def mlserver(label: str, env: dict[str, str], workers: int | None) -> Server:
            port, grpc_port = free_port(), free_port()
            command = mlserver_command(args.mlserver_venv, model, port, grpc_port, workers, work)
            return Server(label, command, env, port, grpc_port)

        reports: list[Callable[[], None]] = []
        if "mlserver" in args.sections:
            reports.append(
                mlserver_section(args, model, sample_request, bodies, work, ours, mlserver)
            )
        if "profile" in args.sections:
            reports.append(
                profile_section(args.profile_rounds, args.seconds, profile, bodies, work, ours)
            )
        if "mirror" in args.sections:
            harness = Harness(
                ours,
                functools.partial(started, own_session=False),
                run_wrk,
                process_tree_cpu_seconds,
                process_cpu_seconds,
            )
            reports.append(
                mirror_section(harness, args.vegeta, args.mirror_rounds, args.seconds, bodies, work)
            )
        if "ceiling" in args.sections:
            reports.append(ceiling_section(args.ceiling_rounds, args.seconds, bodies, work, ours))
        if "grpc" in args.sections:
            grpc_harness = grpc_bench.Harness(
                ours, mlserver, started, run_wrk, process_tree_cpu_seconds
            )
            tuned_workers = max(args.mlserver_tuned_workers, 1)
            reports.append(
                grpc_bench.grpc_section(
                    grpc_harness,
                    args.ghz,
                    args.grpc_rounds,
                    args.seconds,
                    tuned_workers,
                    sample_request,
                    bodies,
                    work,
                )
            )
    for report in reports:
        report()


def mlserver_section(
    args: argparse.Namespace,
    model: Path,
    sample_request: Path,
    bodies: dict[int, Path],
    work: Path,
    ours: Ours,
    mlserver: MLServer,
) -> Callable[[], None]:
    """Ours vs MLServer with defaults and tuned alike, and the floors; returns the report."""
    tuned_workers = max(args.mlserver_tuned_workers, 1)
    floors = in_process_predict_ms(model, sample_request)

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
    (constant,) = measure(
        [constant_server()],
        {1: bodies[1]},
        args.seconds,
        work,
    )

    def report() -> None:
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
                f"constant FastAPI reply, c={concurrency:<3}:"
                f" {result.requests_per_second:>9,.0f} req/s"
                f"  p99 {result.p99_ms:.2f} ms  CPU {result.cpu_percent:.0f}%"
            )

    return report


def constant_server() -> Server:
    """FastAPI on uvicorn (uvloop, httptools) answering a constant: the ceiling of a
    FastAPI route on this machine (scripts/bench_server/constant_app.py)."""
    uvicorn_bin = str(Path(sys.executable).parent / "uvicorn")
    port = free_port()
    command = [uvicorn_bin, "constant_app:app", "--app-dir", str(HERE)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop"]
    command += ["--http", "httptools", "--no-access-log"]
    return Server("constant FastAPI", command, {}, port)


def ceiling_section(
    rounds: int, seconds: int, bodies: dict[int, Path], work: Path, ours: Ours
) -> Callable[[], None]:
    """Ours with its defaults vs the constant FastAPI reply, both up at once, the sides
    taking turns at 1 and 100 rows, c=8 (issue 17: ours at least 0.6 of the ceiling at 1
    row); returns the report."""
    print(f"# ours vs the constant FastAPI reply, {rounds} round(s)", flush=True)
    mine, constant = measure_rounds(
        [ours("modelserver defaults", {}, []), constant_server()], bodies, rounds, seconds, work
    )
    return lambda: print_ceiling_rows(rounds, mine, constant)


def profile_section(
    rounds: int, seconds: int, profile: Path, bodies: dict[int, Path], work: Path, ours: Ours
) -> Callable[[], None]:
    """Ours with the model's reference profile vs the same without, then the memory of the
    feedback path (with a profile and a key, as a model-aware deployment runs); returns
    the report."""
    pin = profile.with_name(profile.name + ".sha256").read_text().strip()
    profile_flags = ["--profile-uri", str(profile), "--profile-sha256", pin]
    print(f"# with a reference profile vs without, {rounds} round(s)", flush=True)
    without, with_profile = measure_rounds(
        [ours("without profile", {}, []), ours("with profile", {}, profile_flags)],
        bodies,
        rounds,
        seconds,
        work,
    )
    print(f"# feedback: {REPLAY_CAPACITY * FEEDBACK_CHECKPOINTS[-1]:,.0f} tokens", flush=True)
    # The server signs with the bytes of the setting as given, not base64-decoded.
    key = base64.b64encode(os.urandom(32))
    feedback_env = {"MODELSERVER_FEEDBACK_KEY": key.decode()}
    identity = ["--model-version", FEEDBACK_VERSION, "--track", FEEDBACK_TRACK]
    readings = feedback_memory(
        ours("feedback", feedback_env, [*profile_flags, *identity]),
        key,
        REPLAY_CAPACITY,
        work,
    )
    store_bytes = replay_store_bytes(REPLAY_CAPACITY)

    def report() -> None:
        print_profile_rows(rounds, without, with_profile)
        print_feedback_memory(REPLAY_CAPACITY, store_bytes, readings)

    return report


if __name__ == "__main__":
    main()
