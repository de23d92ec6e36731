"""The grpc section of the server benchmark (issue 17): ours over gRPC against MLServer
over gRPC, with default settings and tuned alike, and ours over gRPC against ours over
REST, at 1 and 100 rows, c=8 and c=32.

The gRPC load comes from ghz (built from its Go module by scripts/ghz.sh): the same
serialized ModelInferRequest, its rows as raw_input_contents as tritonclient sends them,
to both servers, over GHZ_CONNECTIONS connections. The REST load is run.py's wrk with its
JSON bodies, on the port of the same server that takes the gRPC load. At each point the
sides take turns, the first of a round going last in the next; the report gives medians
over the rounds and the median of each round's ratio, whose runs were back to back.

On a machine of few cores the load generator takes CPU from the server it drives, and ghz
takes more of it than wrk: besides requests per second, each side's server CPU time per
request says what a request costs the server, whatever drives it.

Everything of run.py it needs is handed in (Harness), so that it imports nothing of it.
"""

import json
import statistics
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from scripts.bench_server.harness_types import ResultLike, ServerLike

from modelserver.protos import open_inference_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
PROTO = REPO / "server_image" / "modelserver" / "protos" / "open_inference.proto"
MODEL_NAME = "xgb-classifier"
POINTS = ((1, 8), (100, 8), (1, 32), (100, 32))
"""(rows, concurrency) of each comparison."""
GHZ_CONNECTIONS = 4
"""Connections ghz spreads its workers over: several, so that a server with several
worker processes gets work on each of them (a connection stays with one)."""
WARM_UP_SECONDS = 1


class GrpcServerLike(ServerLike, Protocol):
    @property
    def grpc_port(self) -> int: ...


S = TypeVar("S", bound=GrpcServerLike)
R = TypeVar("R", bound=ResultLike)


@dataclass(frozen=True)
class Harness(Generic[S, R]):
    """run.py's ways of making, starting and loading servers."""

    ours: Callable[[str, dict[str, str], list[str]], S]
    mlserver: Callable[[str, dict[str, str], int | None], S]
    """label, environment, parallel_workers (None: MLServer's default)."""
    started: Callable[[S, Path], AbstractContextManager[Popen[bytes]]]
    run_wrk: Callable[[str, Path, int, int, int], R]
    cpu_seconds: Callable[[int], float]
    """CPU seconds of a process and its descendants so far."""


@dataclass(frozen=True)
class Run:
    requests_per_second: float
    p99_ms: float
    cpu_us_per_request: float
    """The server's CPU time (all its processes and threads) per answered request."""
    errors: int


Series = dict[tuple[int, int], list[Run]]
"""(rows, concurrency) -> one run per round."""


def write_messages(sample_request: Path, directory: Path) -> dict[int, Path]:
    """A serialized ModelInferRequest per row count, of the sample request's rows."""
    sample = np.asarray(json.loads(sample_request.read_text())["inputs"][0]["data"])
    messages = {}
    for count in sorted({rows for rows, _ in POINTS}):
        rows = sample[np.arange(count) % len(sample)].astype("<f4")
        request = pb.ModelInferRequest(model_name=MODEL_NAME)
        request.inputs.add(name="input-0", datatype="FP32", shape=rows.shape)
        request.raw_input_contents.append(rows.tobytes())
        path = directory / f"rows-{count}.pb"
        path.write_bytes(request.SerializeToString())
        messages[count] = path
    return messages


def ghz(binary: Path, port: int, message: Path, concurrency: int, seconds: int) -> Any:
    """ghz's JSON report of `seconds` of load."""
    command = [str(binary), "--insecure", "--format", "json", "--timeout", "10s"]
    command += ["--proto", str(PROTO), "--import-paths", str(PROTO.parent)]
    command += ["--call", "inference.GRPCInferenceService.ModelInfer"]
    command += ["--binary-file", str(message), "--duration", f"{seconds}s"]
    command += ["--concurrency", str(concurrency)]
    command += ["--connections", str(min(GHZ_CONNECTIONS, concurrency))]
    command.append(f"127.0.0.1:{port}")
    completed = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 60
    )
    return json.loads(completed.stdout)


def run_ghz(
    binary: Path,
    port: int,
    message: Path,
    concurrency: int,
    seconds: int,
    pid: int,
    cpu_seconds: Callable[[int], float],
) -> Run:
    # A short warm-up so that lazy initialisation is not measured, as run.py does for wrk.
    ghz(binary, port, message, concurrency, WARM_UP_SECONDS)
    cpu_before = cpu_seconds(pid)
    report = ghz(binary, port, message, concurrency, seconds)
    cpu = cpu_seconds(pid) - cpu_before
    latencies = {
        int(point["percentage"]): int(point["latency"]) / 1e6  # ns -> ms
        for point in report.get("latencyDistribution") or []
    }
    statuses = report.get("statusCodeDistribution") or {}
    answered = int(statuses.get("OK", 0))
    # When its time is up ghz closes its connections under the calls in flight, at most one
    # per worker, and counts them as failed: those are not the server's errors.
    failed = int(report["count"]) - answered
    return Run(
        requests_per_second=float(report["rps"]),
        p99_ms=latencies.get(99, float("nan")),
        cpu_us_per_request=1e6 * cpu / max(answered, 1),
        errors=max(failed - concurrency, 0),
    )


def _from_wrk(result: ResultLike) -> Run:
    cpu_seconds_per_second = result.cpu_percent / 100
    return Run(
        requests_per_second=result.requests_per_second,
        p99_ms=result.p99_ms,
        cpu_us_per_request=1e6 * cpu_seconds_per_second / max(result.requests_per_second, 1),
        errors=result.errors,
    )


def grpc_section(
    harness: Harness[S, R],
    ghz_binary: Path,
    rounds: int,
    seconds: int,
    tuned_workers: int,
    sample_request: Path,
    bodies: dict[int, Path],
    work: Path,
) -> Callable[[], None]:
    """Both comparisons, defaults then tuned alike; returns the report."""
    messages = write_messages(sample_request, work)
    one_thread = {"OMP_NUM_THREADS": "1"}
    tuned_flags = ["--workers", str(tuned_workers), "--predict-threads", "1"]
    settings = {
        "default settings": (
            harness.ours("modelserver defaults", {}, []),
            harness.mlserver("MLServer defaults", {}, None),
        ),
        f"tuned alike: {tuned_workers} worker(s), OMP_NUM_THREADS=1": (
            harness.ours("modelserver tuned", one_thread, tuned_flags),
            harness.mlserver("MLServer tuned", one_thread, tuned_workers),
        ),
    }
    measured = {}
    for title, (ours, mlserver) in settings.items():
        print(f"# gRPC, {title}, {rounds} round(s)", flush=True)
        measured[title] = _measure(
            harness, ghz_binary, ours, mlserver, messages, bodies, rounds, seconds, work
        )

    def report() -> None:
        for title, (ours_grpc, mlserver_grpc, ours_rest) in measured.items():
            _print_rows(title, rounds, ours_grpc, mlserver_grpc, ours_rest)

    return report


def _measure(
    harness: Harness[S, R],
    ghz_binary: Path,
    ours: S,
    mlserver: S,
    messages: dict[int, Path],
    bodies: dict[int, Path],
    rounds: int,
    seconds: int,
    work: Path,
) -> tuple[Series, Series, Series]:
    """Ours over gRPC, MLServer over gRPC and ours over REST at every point, in turns."""
    ours_grpc: Series = {}
    mlserver_grpc: Series = {}
    ours_rest: Series = {}
    with ExitStack() as stack:
        ours_process = stack.enter_context(harness.started(ours, work))
        mlserver_process = stack.enter_context(harness.started(mlserver, work))

        def grpc_side(server: S, process: Popen[bytes]) -> Callable[[int, int], Run]:
            def run(rows: int, concurrency: int) -> Run:
                return run_ghz(
                    ghz_binary,
                    server.grpc_port,
                    messages[rows],
                    concurrency,
                    seconds,
                    process.pid,
                    harness.cpu_seconds,
                )

            return run

        def rest_side(rows: int, concurrency: int) -> Run:
            url = f"http://127.0.0.1:{ours.port}/v2/models/{MODEL_NAME}/infer"
            return _from_wrk(
                harness.run_wrk(url, bodies[rows], concurrency, seconds, ours_process.pid)
            )

        sides: list[tuple[str, Callable[[int, int], Run], Series]] = [
            (f"{ours.label} gRPC", grpc_side(ours, ours_process), ours_grpc),
            (f"{mlserver.label} gRPC", grpc_side(mlserver, mlserver_process), mlserver_grpc),
            (f"{ours.label} REST", rest_side, ours_rest),
        ]
        for round_number in range(rounds):
            for rows, concurrency in POINTS:
                order = sides if round_number % 2 == 0 else sides[::-1]
                for label, run, series in order:
                    result = run(rows, concurrency)
                    series.setdefault((rows, concurrency), []).append(result)
                    print(
                        f"  round {round_number + 1}/{rounds} {label:<28} c={concurrency:<3}"
                        f" rows={rows:<4} {result.requests_per_second:>9,.0f} req/s"
                        f" p99 {result.p99_ms:7.2f} ms {result.cpu_us_per_request:6.0f} us CPU/req"
                        + (f" errors {result.errors}" if result.errors else ""),
                        flush=True,
                    )
    return ours_grpc, mlserver_grpc, ours_rest


def _print_rows(
    title: str, rounds: int, ours_grpc: Series, mlserver_grpc: Series, ours_rest: Series
) -> None:
    print(
        f"\n## gRPC, {title} (median of {rounds} round(s), sides interleaved; x: median of"
        " the rounds' ratios; us: the server's CPU time per request)"
    )
    header = (
        f"{'rows':>4} {'c':>3} | {'ours gRPC req/s':>15} {'p99 ms':>7} {'us':>5} |"
        f" {'MLServer gRPC req/s':>19} {'p99 ms':>7} {'us':>5} |"
        f" {'ours REST req/s':>15} {'p99 ms':>7} {'us':>5} |"
        f" {'vs MLServer x':>13} {'p99 x':>6} | {'vs REST x':>9} {'us x':>5}"
    )
    print(header)
    print("-" * len(header))
    for point in POINTS:
        rows, concurrency = point
        mine, theirs, rest = ours_grpc[point], mlserver_grpc[point], ours_rest[point]
        errors = sum(run.errors for run in (*mine, *theirs, *rest))
        print(
            f"{rows:>4} {concurrency:>3} |"
            f" {_median(mine, _rate):>15,.0f} {_median(mine, _p99):>7.2f}"
            f" {_median(mine, _cpu):>5.0f} |"
            f" {_median(theirs, _rate):>19,.0f} {_median(theirs, _p99):>7.2f}"
            f" {_median(theirs, _cpu):>5.0f} |"
            f" {_median(rest, _rate):>15,.0f} {_median(rest, _p99):>7.2f}"
            f" {_median(rest, _cpu):>5.0f} |"
            f" {_ratio(mine, theirs, _rate):>13.2f} {_ratio(mine, theirs, _p99):>6.2f} |"
            f" {_ratio(mine, rest, _rate):>9.2f} {_ratio(mine, rest, _cpu):>5.2f}"
            + (f" errors {errors}" if errors else "")
        )


def _rate(run: Run) -> float:
    return run.requests_per_second


def _p99(run: Run) -> float:
    return run.p99_ms


def _cpu(run: Run) -> float:
    return run.cpu_us_per_request


def _median(runs: list[Run], measure: Callable[[Run], float]) -> float:
    return statistics.median(measure(run) for run in runs)


def _ratio(top: list[Run], bottom: list[Run], measure: Callable[[Run], float]) -> float:
    """The median of the rounds' ratios: each round's two runs were back to back."""
    return statistics.median(measure(a) / measure(b) for a, b in zip(top, bottom, strict=True))
