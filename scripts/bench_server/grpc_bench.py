"""The grpc section of the server benchmark (issue 17): ours over gRPC against MLServer
over gRPC, with default settings and tuned alike, and ours over gRPC against ours over
REST, at 1 and 100 rows, c=8 and c=32.

Against MLServer the gRPC load comes from ghz (built from its Go module by
`scripts/go-tool.sh ghz`): the same serialized ModelInferRequest, its rows as
raw_input_contents as tritonclient sends them, to both servers, over GHZ_CONNECTIONS
connections. Against our REST, whose load is run.py's wrk with its JSON bodies on the
same server's port, the same message comes from h2load (nghttp2's load generator,
Debian's nghttp2-client): ghz spends ~10x wrk's CPU on a request (~200 us against ~20 us,
measured here), which on a machine of few cores it takes from the server, so ghz against
wrk would compare the load generators; h2load, in C like wrk, costs about what wrk does.
At each point the sides take turns, the first of a round going last in the next; the
report gives medians over the rounds and the median of each round's ratio, whose runs
were back to back.

Besides requests per second, each side's server CPU time per request says what a request
costs the server, whatever drives it.

Everything of run.py it needs is handed in (Harness), so that it imports nothing of it.
"""

import json
import statistics
import struct
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any, Generic, Protocol, TypeVar

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families
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
    """A serialized ModelInferRequest per row count, of the sample request's rows (and
    beside it, with the suffix .grpc, the body of a call that carries it, for h2load)."""
    sample = np.asarray(json.loads(sample_request.read_text())["inputs"][0]["data"])
    messages = {}
    for count in sorted({rows for rows, _ in POINTS}):
        rows = sample[np.arange(count) % len(sample)].astype("<f4")
        request = pb.ModelInferRequest(model_name=MODEL_NAME)
        request.inputs.add(name="input-0", datatype="FP32", shape=rows.shape)
        request.raw_input_contents.append(rows.tobytes())
        path = directory / f"rows-{count}.pb"
        message = request.SerializeToString()
        path.write_bytes(message)
        # A gRPC message on the wire: not compressed, its length, itself.
        path.with_suffix(".grpc").write_bytes(struct.pack(">?L", False, len(message)) + message)
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


def h2load(
    port: int, call_body: Path, concurrency: int, seconds: int, log: Path
) -> tuple[list[int], int]:
    """The latencies (us) of the calls of `seconds` of load that got HTTP status 200, and
    the number of the others. The gRPC status is in trailers, which h2load does not read:
    run_h2load asks the server."""
    connections = min(GHZ_CONNECTIONS, concurrency)  # spread as ghz spreads its workers
    log.unlink(missing_ok=True)
    command = ["h2load", "--threads", "1", "--duration", str(seconds)]
    command += ["--clients", str(connections)]
    command += ["--max-concurrent-streams", str(concurrency // connections)]
    command += ["--data", str(call_body), "--log-file", str(log)]
    command += ["--header", "content-type: application/grpc", "--header", "te: trailers"]
    command.append(f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer")
    subprocess.run(command, capture_output=True, check=True, timeout=seconds + 60)
    # One line per call: start time, HTTP status, microseconds to the answer's end.
    calls = [line.split("\t") for line in log.read_text().splitlines() if line]
    answered = [int(call[2]) for call in calls if call[1] == "200"]
    return answered, len(calls) - len(answered)


def run_h2load(
    port: int,
    metrics_port: int,
    message: Path,
    concurrency: int,
    seconds: int,
    pid: int,
    cpu_seconds: Callable[[int], float],
) -> Run:
    """`seconds` of h2load on our server, whose /metrics on `metrics_port` says how many
    of the calls it answered with OK."""
    call_body = message.with_suffix(".grpc")
    log = message.with_suffix(".h2load.log")
    h2load(port, call_body, concurrency, WARM_UP_SECONDS, log)
    ok_before = _grpc_ok_answers(metrics_port)
    cpu_before = cpu_seconds(pid)
    latencies, failed = h2load(port, call_body, concurrency, seconds, log)
    cpu = cpu_seconds(pid) - cpu_before
    ok = min(len(latencies), int(_grpc_ok_answers(metrics_port) - ok_before))
    latencies.sort()
    return Run(
        requests_per_second=ok / seconds,
        p99_ms=latencies[int(0.99 * (len(latencies) - 1))] / 1000 if latencies else float("nan"),
        cpu_us_per_request=1e6 * cpu / max(ok, 1),
        errors=failed + len(latencies) - ok,
    )


def _grpc_ok_answers(metrics_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelserver_requests_total"
        and sample.labels.get("protocol") == "grpc"
        and sample.labels.get("code") == "200"
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
        for title, series in measured.items():
            _print_rows(title, rounds, series)

    return report


@dataclass(frozen=True)
class Measured:
    ours_ghz: Series
    mlserver_ghz: Series
    ours_h2load: Series
    ours_rest: Series


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
) -> Measured:
    """Ours and MLServer over gRPC driven by ghz, ours over gRPC driven by h2load and ours
    over REST at every point, in turns."""
    measured = Measured({}, {}, {}, {})
    with ExitStack() as stack:
        ours_process = stack.enter_context(harness.started(ours, work))
        mlserver_process = stack.enter_context(harness.started(mlserver, work))

        def ghz_side(server: S, process: Popen[bytes]) -> Callable[[int, int], Run]:
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

        def h2load_side(rows: int, concurrency: int) -> Run:
            return run_h2load(
                ours.grpc_port,
                ours.port,
                messages[rows],
                concurrency,
                seconds,
                ours_process.pid,
                harness.cpu_seconds,
            )

        def rest_side(rows: int, concurrency: int) -> Run:
            url = f"http://127.0.0.1:{ours.port}/v2/models/{MODEL_NAME}/infer"
            return _from_wrk(
                harness.run_wrk(url, bodies[rows], concurrency, seconds, ours_process.pid)
            )

        sides: list[tuple[str, Callable[[int, int], Run], Series]] = [
            (f"{ours.label} gRPC ghz", ghz_side(ours, ours_process), measured.ours_ghz),
            (
                f"{mlserver.label} gRPC ghz",
                ghz_side(mlserver, mlserver_process),
                measured.mlserver_ghz,
            ),
            (f"{ours.label} gRPC h2load", h2load_side, measured.ours_h2load),
            (f"{ours.label} REST wrk", rest_side, measured.ours_rest),
        ]
        for round_number in range(rounds):
            for rows, concurrency in POINTS:
                order = sides if round_number % 2 == 0 else sides[::-1]
                for label, run, series in order:
                    result = run(rows, concurrency)
                    series.setdefault((rows, concurrency), []).append(result)
                    print(
                        f"  round {round_number + 1}/{rounds} {label:<32} c={concurrency:<3}"
                        f" rows={rows:<4} {result.requests_per_second:>9,.0f} req/s"
                        f" p99 {result.p99_ms:7.2f} ms {result.cpu_us_per_request:6.0f} us CPU/req"
                        + (f" errors {result.errors}" if result.errors else ""),
                        flush=True,
                    )
    return measured


def _print_rows(title: str, rounds: int, measured: Measured) -> None:
    print(
        f"\n## gRPC, {title} (median of {rounds} round(s), sides interleaved; x: median of"
        " the rounds' ratios; us: the server's CPU time per request)"
    )
    _print_pair(
        "ours gRPC", "MLServer gRPC", "both driven by ghz", measured.ours_ghz, measured.mlserver_ghz
    )
    _print_pair(
        "ours gRPC",
        "ours REST",
        "gRPC driven by h2load, REST by wrk",
        measured.ours_h2load,
        measured.ours_rest,
    )


def _print_pair(mine_name: str, other_name: str, drivers: str, mine: Series, other: Series) -> None:
    print(f"\n{mine_name} vs {other_name}, {drivers}")
    header = (
        f"{'rows':>4} {'c':>3} | {mine_name + ' req/s':>19} {'p99 ms':>7} {'us':>5} |"
        f" {other_name + ' req/s':>19} {'p99 ms':>7} {'us':>5} |"
        f" {'req/s x':>7} {'p99 x':>6} {'us x':>5}"
    )
    print(header)
    print("-" * len(header))
    for point in POINTS:
        rows, concurrency = point
        ours, theirs = mine[point], other[point]
        errors = sum(run.errors for run in (*ours, *theirs))
        print(
            f"{rows:>4} {concurrency:>3} |"
            f" {_median(ours, _rate):>19,.0f} {_median(ours, _p99):>7.2f}"
            f" {_median(ours, _cpu):>5.0f} |"
            f" {_median(theirs, _rate):>19,.0f} {_median(theirs, _p99):>7.2f}"
            f" {_median(theirs, _cpu):>5.0f} |"
            f" {_ratio(ours, theirs, _rate):>7.2f} {_ratio(ours, theirs, _p99):>6.2f}"
            f" {_ratio(ours, theirs, _cpu):>5.2f}" + (f" errors {errors}" if errors else "")
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
