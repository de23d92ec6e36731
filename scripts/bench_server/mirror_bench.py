"""The mirror section of the server benchmark: what copying every live request to a shadow
costs the stable (issue 16: p99 within 5%, throughput within 10% at 100%), and what the
stable does with copies it cannot deliver.

Two stables run side by side, one mirroring 100%, one without a mirror config; the sides
take turns at each load point over several rounds. The mirroring side's file points at
three targets in turn (it is re-read while the server runs):

1. a shadow modelserver: the real thing, which answers every copy with its own model;
2. a sink that answers every copy at once: what sending costs the stable when the
   shadow's work happens elsewhere, as it does on its own nodes;
3. a port that never answers (one round): live requests must not notice; copies are
   dropped when the queue is full and fail after the timeout.

The machine has few cores: the stables share the first CPU, the shadow (or the sink) gets
the last, wrk runs where the scheduler puts it. With two cores, a busy shadow still takes
memory bandwidth and wrk's room from the stable, which the sink run separates out.

Everything of run.py it needs is handed in, so that this module imports nothing of it.
"""

import asyncio
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Generic, TypeVar

import httptools
import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families
from scripts.bench_server.harness_types import ResultLike, ServerLike

from modelserver.metrics import MIRROR_REQUESTS_TOTAL

POINTS = ((1, 8), (100, 8))
"""(rows, concurrency) at which the stable with mirroring is compared with one without."""
RESULTS = ("sent", "dropped", "failed")
MODEL_NAME = "xgb-classifier"


S = TypeVar("S", bound=ServerLike)
R = TypeVar("R", bound=ResultLike)


@dataclass(frozen=True)
class Harness(Generic[S, R]):
    """run.py's ways of making, starting and loading a server."""

    ours: Callable[[str, dict[str, str], list[str]], S]
    started: Callable[[S, Path], AbstractContextManager[Popen[bytes]]]
    run_wrk: Callable[[str, Path, int, int, int], R]


@dataclass(frozen=True)
class Run(Generic[R]):
    result: R
    copies: dict[str, float]
    """Of the requests of this run, the copies sent, dropped and failed (mirroring side)."""


def copies(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    counts = dict.fromkeys(RESULTS, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == MIRROR_REQUESTS_TOTAL:
                counts[sample.labels["result"]] += sample.value
    return counts


def settled_copies(port: int) -> dict[str, float]:
    """The counts once no copy is on its way any more (the queue has drained)."""
    counts = copies(port)
    while True:
        time.sleep(0.5)
        again = copies(port)
        if again == counts:
            return counts
        counts = again


def write_config(path: Path, url: str, percent: float) -> None:
    # Replaced in one rename, as the kubelet swaps a ConfigMap's file.
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(orjson.dumps({"url": url, "percent": percent}))
    os.replace(temporary, path)


def wait_for_log(log: Path, text: str) -> None:
    deadline = time.monotonic() + 30
    while text not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise SystemExit(f"{log} never said {text!r}")
        time.sleep(0.2)


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of the process onto `cpus` (children started later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


class _SinkConnection(asyncio.Protocol):
    """Answers each request with 200 `{}` as soon as it has arrived whole."""

    _ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._complete = 0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._complete = 0
        self._parser.feed_data(data)
        if self._complete and self._transport is not None:
            self._transport.write(self._ANSWER * self._complete)

    def on_message_complete(self) -> None:
        self._complete += 1


@contextmanager
def answering_sink(cpus: set[int]) -> Iterator[str]:
    """The URL of a sink served by a thread of this process, on `cpus`."""
    started = threading.Event()
    loop = asyncio.new_event_loop()
    ports: list[int] = []

    def serve() -> None:
        os.sched_setaffinity(0, cpus)  # 0: this thread
        server = loop.run_until_complete(loop.create_server(_SinkConnection, "127.0.0.1", 0))
        ports.append(server.sockets[0].getsockname()[1])
        started.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

    thread = threading.Thread(target=serve, name="sink", daemon=True)
    thread.start()
    started.wait()
    try:
        yield f"http://127.0.0.1:{ports[0]}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


@contextmanager
def silent_port() -> Iterator[str]:
    """A port that takes connections (the kernel's backlog does) and never answers."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(64)
        yield f"http://127.0.0.1:{listening.getsockname()[1]}"


TARGETS = ("a shadow modelserver", "a sink that answers at once", "a silent port")


def mirror_section(
    harness: Harness[S, R], rounds: int, seconds: int, bodies: dict[int, Path], work: Path
) -> Callable[[], None]:
    """Measure; returns the report."""
    config = work / "mirror.json"
    cpus = sorted(os.sched_getaffinity(0))
    stable_cpus, shadow_cpus = {cpus[0]}, {cpus[-1]}
    shadow = harness.ours("shadow", {}, ["--track", "canary"])
    without = harness.ours("without mirroring", {}, [])
    with_mirror = harness.ours("mirroring 100%", {}, ["--mirror-config-file", str(config)])
    log = work / f"{with_mirror.label.replace(' ', '-')}.log"
    sides = (without, with_mirror)
    runs: dict[tuple[str, str, int, int], list[Run[R]]] = {}

    def measure(target: str, side: S, process: Popen[bytes], rows: int, concurrency: int) -> None:
        before = copies(side.port) if side is with_mirror else {}
        url = f"http://127.0.0.1:{side.port}/v2/models/{MODEL_NAME}/infer"
        result = harness.run_wrk(url, bodies[rows], concurrency, seconds, process.pid)
        after = settled_copies(side.port) if side is with_mirror else {}
        delta = {name: after[name] - before[name] for name in before}
        runs.setdefault((target, side.label, rows, concurrency), []).append(Run(result, delta))
        print(
            f"  {side.label:<18} c={concurrency:<3} rows={rows:<4}"
            f" {result.requests_per_second:>9,.0f} req/s p99 {result.p99_ms:7.2f} ms"
            + "".join(f" {name} {count:,.0f}" for name, count in delta.items()),
            flush=True,
        )

    with ExitStack() as stack:
        pin(stack.enter_context(harness.started(shadow, work)).pid, shadow_cpus)
        urls = (
            f"http://127.0.0.1:{shadow.port}",
            stack.enter_context(answering_sink(shadow_cpus)),
            stack.enter_context(silent_port()),
        )
        write_config(config, urls[0], 100)
        processes = {side.label: stack.enter_context(harness.started(side, work)) for side in sides}
        for process in processes.values():
            pin(process.pid, stable_cpus)
        for target, url in zip(TARGETS, urls, strict=True):
            write_config(config, url, 100)
            wait_for_log(log, f"mirroring 100% of requests to {url}")
            target_rounds = 1 if target == TARGETS[-1] else rounds
            print(
                f"# copies to {target}, {target_rounds} round(s); stables on CPU {cpus[0]},"
                f" the target on CPU {cpus[-1]}",
                flush=True,
            )
            for round_number in range(target_rounds):
                for rows, concurrency in POINTS:
                    order = sides if round_number % 2 == 0 else sides[::-1]
                    for side in order:
                        measure(target, side, processes[side.label], rows, concurrency)

    def report() -> None:
        print_mirror(rounds, runs, without.label, with_mirror.label)

    return report


def print_mirror(
    rounds: int, runs: dict[tuple[str, str, int, int], list[Run[R]]], without: str, mirroring: str
) -> None:
    print(
        f"\n## Mirroring 100% vs none (median of {rounds} rounds, 1 for the silent port;"
        " sides interleaved; x: mirroring / none, the median of the rounds' ratios;"
        " CPU: the stable's, per request)"
    )
    header = (
        f"{'rows':>4} {'c':>3} | {'none req/s':>10} {'p99 ms':>7} {'CPU us':>6} |"
        f" {'mirror req/s':>12} {'p99 ms':>7} {'CPU us':>6} | {'req/s x':>7} {'p99 x':>6} |"
        f" {'sent':>7} {'dropped':>7} {'failed':>6}"
    )
    for target in TARGETS:
        print(f"\nCopies to {target}:")
        print(header)
        print("-" * len(header))
        for rows, concurrency in POINTS:
            plain = runs[(target, without, rows, concurrency)]
            mirrored = runs[(target, mirroring, rows, concurrency)]
            throughput = [
                m.result.requests_per_second / p.result.requests_per_second
                for m, p in zip(mirrored, plain, strict=True)
            ]
            p99 = [m.result.p99_ms / p.result.p99_ms for m, p in zip(mirrored, plain, strict=True)]
            errors = sum(run.result.errors for run in (*plain, *mirrored))
            totals = {name: sum(run.copies[name] for run in mirrored) for name in RESULTS}
            print(
                f"{rows:>4} {concurrency:>3} |"
                f" {_median(plain, 'requests_per_second'):>10,.0f}"
                f" {_median(plain, 'p99_ms'):>7.2f} {_cpu_us(plain):>6.0f} |"
                f" {_median(mirrored, 'requests_per_second'):>12,.0f}"
                f" {_median(mirrored, 'p99_ms'):>7.2f} {_cpu_us(mirrored):>6.0f} |"
                f" {statistics.median(throughput):>7.3f} {statistics.median(p99):>6.3f} |"
                f" {totals['sent']:>7,.0f} {totals['dropped']:>7,.0f} {totals['failed']:>6,.0f}"
                + (f" errors {errors}" if errors else "")
            )


def _median(runs: list[Run[R]], field: str) -> float:
    return statistics.median(float(getattr(run.result, field)) for run in runs)


def _cpu_us(runs: list[Run[R]]) -> float:
    """The stable's CPU time per live request, in microseconds (median over the runs)."""
    return statistics.median(
        run.result.cpu_percent / 100 / run.result.requests_per_second * 1e6 for run in runs
    )
