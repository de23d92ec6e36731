"""The mirror section of the server benchmark: what copying every live request to a shadow
costs the stable (issue 16: p99 within 5%, throughput within 10% at 100%), and what the
stable does with copies it cannot deliver.

Two stables run side by side on one CPU, both with a mirror config file, and they take
turns: in each round one mirrors 100%, the other's file turns mirroring off (one attribute
read per request). Both are driven at the same time, so that whatever this noisy host does
to one it does to the other (one after the other, runs of the same server differ by
15-40%); the turns cancel what differs between the two processes themselves for a whole
run (either of two identical servers came out up to ~15% ahead in earlier runs):

- throughput: wrk saturates both (closed loop, c=8 each); each gets about half the CPU,
  and the ratio of what they answer is the ratio of their costs per request;
- p99: vegeta sends both the same constant rate (open loop: a request slowed by the
  mirror does not hold back the next one), at two rates found at the start, with neither
  stable mirroring, at which their serving processes together keep the first CPU about a
  quarter and about half busy. A share of the saturated throughput is no guide: sent one
  at a time, a small request costs the server several times its CPU at saturation (1 row:
  ~1.5 ms at 250 req/s against ~0.2 ms), so half the saturated rate overloads the CPU,
  where p99 is the queue's and moves with any cost. At those rates the serving processes'
  own CPU per request is reported too: what mirroring costs the live core, with less
  noise than a p99. At saturation a closed loop's p99 moves with its throughput, which is
  measured above.

The mirroring side's file points at three targets in turn (it is re-read while the
server runs):

1. a shadow modelserver: the real thing, which answers every copy with its own model;
2. a sink that answers every copy at once: what sending costs the stable when the
   shadow's work happens elsewhere, as it does on its own nodes;
3. a port that never answers (two rounds): live requests must not notice; copies are
   dropped when the queue is full and fail after the timeout;
4. nothing: neither stable mirrors, the method's own noise (the same rounds, the same
   ratios, between two servers that do the same).

The stables share the first CPU; the shadow (or the sink) and the mirroring stable's
mirror process (which sends the copies, mirror_worker.py) get the last, as a pod's
processes would run on the node's other cores; the load generators run where the
scheduler puts them. All of them run in the benchmark's session: in sessions of their
own, Linux would first share the first CPU between the stables' sessions, and the mirror
process's work on the other CPU would count against its stable's share of the first (as
a pod's cgroup does when its CPU is the limit); here the mirror process has a core of its
own, as a pod with room above its usual use gives it. The stable's CPU per request is
its processes' together (serving and mirror process); the mirror process's part is
reported per copy.

Everything of run.py it needs is handed in, so that this module imports nothing of it.
"""

import asyncio
import functools
import os
import socket
import statistics
import subprocess
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

ROWS = (1, 100)
"""Rows per request at which the stable with mirroring is compared with one without."""
CONCURRENCY = 8
"""Of wrk against each side at saturation."""
NONE, MIRRORING = "without mirroring", "mirroring 100%"
"""The two roles, which the stables take in turns (so that no difference between the two
processes themselves, which persists for a whole run on this host, favours one role)."""
CPU_BUSY_TARGETS = (0.25, 0.5)
"""The constant rates of the p99 runs, as the share of the first CPU that the two stables'
serving processes keep busy together: how much the mirror's extra work lengthens the
waits depends on how busy the CPU is."""
CALIBRATION_SECONDS = 3
"""Of each try while looking for the rate that keeps the CPU so busy."""
CALIBRATION_TRIES = 5
FIRST_RATE = 100.0
"""Requests a second to each stable in the first try."""
RESULTS = ("sent", "dropped", "failed")
MODEL_NAME = "xgb-classifier"


S = TypeVar("S", bound=ServerLike)
T = TypeVar("T")
R = TypeVar("R", bound=ResultLike)


@dataclass(frozen=True)
class Harness(Generic[S, R]):
    """run.py's ways of making, starting and loading a server."""

    ours: Callable[[str, dict[str, str], list[str]], S]
    started: Callable[[S, Path], AbstractContextManager[Popen[bytes]]]
    run_wrk: Callable[[str, Path, int, int, int], R]
    cpu_seconds: Callable[[int], float]
    """The CPU time a process (and its children, of which the mirror process has none) has
    used so far."""
    own_cpu_seconds: Callable[[int], float]
    """The CPU time of the process alone: a stable's serving process, not its mirror
    process."""


@dataclass(frozen=True)
class Latency:
    """What vegeta measured at a constant rate, and what it cost the serving process."""

    rate: float
    p99_ms: float
    success: float
    """The share of requests answered 200."""
    requests: int
    cpu_seconds: float
    """Of the stable's serving process (not its mirror process) meanwhile."""

    @property
    def cpu_us(self) -> float:
        """The serving process's CPU time per request, in microseconds."""
        return self.cpu_seconds / max(self.requests, 1) * 1e6


@dataclass(frozen=True)
class Round(Generic[R]):
    """One round at one load point: both stables saturated at once, then both sent the
    same constant rate at once."""

    saturated: dict[str, R]
    """By side."""
    fixed_rate: dict[float, dict[str, Latency]]
    """By CPU share (CPU_BUSY_AT_FIXED_RATES), then by side."""
    copies: dict[str, float]
    """Of the requests of this round, the copies sent, dropped and failed (mirroring side)."""
    mirror_process_cpu_seconds: float
    """What the mirroring side's mirror process used in this round (0: none mirrors)."""


def at_once(*calls: Callable[[], T]) -> list[T]:
    """The results of `calls`, each run in a thread of its own, all started together."""
    results: list[T | None] = [None] * len(calls)

    def run(index: int, call: Callable[[], T]) -> None:
        results[index] = call()

    threads = [threading.Thread(target=run, args=pair) for pair in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if any(result is None for result in results):
        raise SystemExit("a load generator failed (see above)")
    return [result for result in results if result is not None]


def run_vegeta(
    vegeta: Path, url: str, body_file: Path, rate: float, seconds: int, cpu: Callable[[], float]
) -> Latency:
    """vegeta sending `rate` requests a second for `seconds`, whatever the answers take;
    `cpu`: the serving process's CPU time so far."""
    cpu_before = cpu()
    target = f"POST {url}\nContent-Type: application/json\n@{body_file}\n"
    attack = subprocess.run(
        [
            str(vegeta),
            "attack",
            f"-rate={rate:.0f}/s",
            f"-duration={seconds}s",
            "-timeout=10s",
            "-max-workers=256",
        ],
        input=target.encode(),
        capture_output=True,
        check=True,
        timeout=seconds + 60,
    )
    cpu_seconds = cpu() - cpu_before
    report = subprocess.run(
        [str(vegeta), "report", "-type=json"],
        input=attack.stdout,
        capture_output=True,
        check=True,
        timeout=60,
    )
    summary = orjson.loads(report.stdout)
    latencies = summary["latencies"]
    return Latency(
        rate, latencies["99th"] / 1e6, summary["success"], summary["requests"], cpu_seconds
    )


def calibrated_rate(busy_at: Callable[[float], float], target: float) -> float:
    """The rate at which `busy_at(rate)`, the CPU's busy share measured at that rate, is
    within a tenth of `target` (or the last try's): each try scales the rate by how far off
    the last was (a request costs less the faster they come, so the steps shrink)."""
    rate = FIRST_RATE
    for _ in range(CALIBRATION_TRIES):
        busy = busy_at(rate)
        if abs(busy - target) <= target / 10:
            break
        rate *= target / max(busy, 0.01)
    return rate


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


def write_config(path: Path, url: str | None, percent: float) -> bool:
    """Mirror `percent` to `url`, or nothing (None); replaced in one rename, as the kubelet
    swaps a ConfigMap's file. False when the file said so already (the server, which logs
    what a changed file says, then logs nothing)."""
    content = orjson.dumps({"url": url, "percent": percent})
    if path.exists() and path.read_bytes() == content:
        return False
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(content)
    os.replace(temporary, path)
    return True


def wait_for_log(log: Path, text: str, offset: int = 0) -> None:
    """Until `log` says `text` past its first `offset` bytes."""
    deadline = time.monotonic() + 30
    while text not in log.read_bytes()[offset:].decode(errors="replace"):
        if time.monotonic() > deadline:
            raise SystemExit(f"{log} never said {text!r}")
        time.sleep(0.2)


def mirror_process(stable: int) -> int:
    """The pid of the stable's mirror process, waiting for it to start."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{stable}/task").iterdir():
            for child in (task / "children").read_text().split():
                command = Path(f"/proc/{child}/cmdline").read_bytes()
                if b"modelserver.mirror_worker" in command:
                    return int(child)
        time.sleep(0.2)
    raise SystemExit(f"stable {stable} started no mirror process")


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


SILENT_PORT = "a silent port"
TARGETS = (
    "a shadow modelserver",
    "a sink that answers at once",
    SILENT_PORT,
    "nothing (neither mirrors)",
)


def mirror_section(
    harness: Harness[S, R],
    vegeta: Path,
    rounds: int,
    seconds: int,
    bodies: dict[int, Path],
    work: Path,
) -> Callable[[], None]:
    """Measure; returns the report."""
    cpus = sorted(os.sched_getaffinity(0))
    stable_cpus, shadow_cpus = {cpus[0]}, {cpus[-1]}
    shadow = harness.ours("shadow", {}, ["--track", "canary"])
    stables = [
        harness.ours(f"stable {name}", {}, ["--mirror-config-file", str(work / f"{name}.json")])
        for name in ("a", "b")
    ]
    runs: dict[tuple[str, int], list[Round[R]]] = {}

    def config(stable: S) -> Path:
        return work / f"{stable.label.removeprefix('stable ')}.json"

    def log(stable: S) -> Path:
        return work / f"{stable.label.replace(' ', '-')}.log"

    def url(side: S) -> str:
        return f"http://127.0.0.1:{side.port}/v2/models/{MODEL_NAME}/infer"

    def assign(
        mirroring: S, other: S, target_url: str | None, processes: dict[str, Popen[bytes]]
    ) -> int | None:
        """`mirroring` copies every request to `target_url` (None: nothing), `other` mirrors
        nothing; returns the pid of `mirroring`'s mirror process, now on the target's CPU."""
        for stable, url_or_none in ((mirroring, target_url), (other, None)):
            size = log(stable).stat().st_size
            if write_config(config(stable), url_or_none, 100):
                said = f"to {url_or_none}, as" if url_or_none else "mirroring off, as"
                wait_for_log(log(stable), said, size)
        if target_url is None:
            return None
        sender = mirror_process(processes[mirroring.label].pid)
        pin(sender, shadow_cpus)
        return sender

    def constant(
        side: S, rate: float, seconds: int, rows: int, processes: dict[str, Popen[bytes]]
    ) -> Callable[[], Latency]:
        pid = processes[side.label].pid
        return lambda: run_vegeta(
            vegeta, url(side), bodies[rows], rate, seconds, lambda: harness.own_cpu_seconds(pid)
        )

    def calibrate(processes: dict[str, Popen[bytes]]) -> dict[tuple[int, float], float]:
        """The constant rates of the p99 runs, by rows and CPU share (neither mirrors yet)."""

        def busy_at(rows: int, rate: float) -> float:
            sides = at_once(
                *(constant(s, rate, CALIBRATION_SECONDS, rows, processes) for s in stables)
            )
            busy = sum(side.cpu_seconds for side in sides) / CALIBRATION_SECONDS
            print(
                f"  calibrating: rows={rows} at {rate:,.0f}/s each: CPU {busy:.0%} busy", flush=True
            )
            return busy

        return {
            (rows, busy): calibrated_rate(functools.partial(busy_at, rows), busy)
            for rows in ROWS
            for busy in CPU_BUSY_TARGETS
        }

    def measure(
        target: str,
        roles: dict[str, S],
        processes: dict[str, Popen[bytes]],
        sender: int | None,
        rows: int,
        rates: dict[tuple[int, float], float],
    ) -> None:
        def saturate(side: S) -> Callable[[], R]:
            pid = processes[side.label].pid
            return lambda: harness.run_wrk(url(side), bodies[rows], CONCURRENCY, seconds, pid)

        def sender_cpu() -> float:
            return 0.0 if sender is None else harness.cpu_seconds(sender)

        before = copies(roles[MIRRORING].port)
        sender_before = sender_cpu()
        saturated = dict(zip(roles, at_once(*map(saturate, roles.values())), strict=True))
        fixed_rate = {}
        for busy in CPU_BUSY_TARGETS:
            rate = rates[(rows, busy)]
            latencies = at_once(
                *(constant(side, rate, seconds, rows, processes) for side in roles.values())
            )
            fixed_rate[busy] = dict(zip(roles, latencies, strict=True))
        after = settled_copies(roles[MIRRORING].port)
        delta = {name: after[name] - before[name] for name in before}
        sender_seconds = sender_cpu() - sender_before
        runs.setdefault((target, rows), []).append(
            Round(saturated, fixed_rate, delta, sender_seconds)
        )
        print(
            f"  rows={rows:<4} {roles[MIRRORING].label} mirrors; saturated c={CONCURRENCY}: "
            + "  ".join(
                f"{role} {result.requests_per_second:,.0f} req/s"
                for role, result in saturated.items()
            )
            + "".join(
                f" | at {sides[NONE].rate:,.0f}/s each: "
                + "  ".join(
                    f"{role} p99 {lat.p99_ms:.2f} ms, {lat.cpu_us:.0f} us"
                    for role, lat in sides.items()
                )
                for sides in fixed_rate.values()
            )
            + " |"
            + "".join(f" {name} {count:,.0f}" for name, count in delta.items())
            + f" | mirror process {sender_seconds:.2f} s CPU",
            flush=True,
        )

    with ExitStack() as stack:
        pin(stack.enter_context(harness.started(shadow, work)).pid, shadow_cpus)
        urls = (
            f"http://127.0.0.1:{shadow.port}",
            stack.enter_context(answering_sink(shadow_cpus)),
            stack.enter_context(silent_port()),
            None,
        )
        for stable in stables:
            write_config(config(stable), None, 100)
        processes = {s.label: stack.enter_context(harness.started(s, work)) for s in stables}
        for process in processes.values():
            pin(process.pid, stable_cpus)
        print(f"# finding the rates that keep CPU {cpus[0]} busy", flush=True)
        rates = calibrate(processes)
        for target, target_url in zip(TARGETS, urls, strict=True):
            target_rounds = 2 if target == SILENT_PORT else rounds
            print(
                f"# copies to {target}, {target_rounds} round(s), the stables taking turns to"
                f" mirror; both on CPU {cpus[0]}, the target and the mirror process on CPU"
                f" {cpus[-1]}",
                flush=True,
            )
            for round_number in range(target_rounds):
                mirroring, other = stables if round_number % 2 == 0 else stables[::-1]
                sender = assign(mirroring, other, target_url, processes)
                for rows in ROWS:
                    roles = {NONE: other, MIRRORING: mirroring}
                    measure(target, roles, processes, sender, rows, rates)

    def report() -> None:
        print_mirror(rounds, runs)

    return report


def print_mirror(rounds: int, runs: dict[tuple[str, int], list[Round[R]]]) -> None:
    print(
        f"\n## Mirroring 100% vs none (both stables on one CPU, driven at once; median of"
        f" {rounds} rounds, 2 for the silent port, the stables taking turns to mirror;"
        " x: mirroring / none, the median of the rounds' ratios. Saturated: req/s, and CPU"
        " per request of the stable's processes, and of it the mirror process's per copy."
        " At constant rates found to keep the CPU"
        f" {' and '.join(f'~{busy:.0%}' for busy in CPU_BUSY_TARGETS)} busy (busy: as"
        " measured in the rounds, both serving processes): p99, and the serving process's"
        " CPU per request)"
    )
    header = (
        f"{'rows':>4} | {'none req/s':>10} {'CPU us':>6} | {'mirror req/s':>12} {'CPU us':>6}"
        f" | {'mirror process us/copy':>22} | {'req/s x':>7} |"
        + "".join(
            f" {'busy':>4} {'rate/s':>6} {'none p99':>8} {'mirror p99':>10} {'p99 x':>6}"
            f" {'CPU us':>6} {'CPU x':>6} |"
            for _ in CPU_BUSY_TARGETS
        )
        + f" {'sent':>7} {'dropped':>7} {'failed':>6}"
    )
    for target in TARGETS:
        print(f"\nCopies to {target}:")
        print(header)
        print("-" * len(header))
        for rows in ROWS:
            rounds_here = runs[(target, rows)]
            plain = [r.saturated[NONE] for r in rounds_here]
            mirrored = [r.saturated[MIRRORING] for r in rounds_here]
            throughput = [
                m.requests_per_second / p.requests_per_second
                for m, p in zip(mirrored, plain, strict=True)
            ]
            errors = sum(result.errors for result in (*plain, *mirrored))
            failed_share = max(
                1 - latency.success
                for r in rounds_here
                for sides in r.fixed_rate.values()
                for latency in sides.values()
            )
            totals = {name: sum(r.copies[name] for r in rounds_here) for name in RESULTS}
            print(
                f"{rows:>4} |"
                f" {_median(plain, 'requests_per_second'):>10,.0f} {_cpu_us(plain):>6.0f} |"
                f" {_median(mirrored, 'requests_per_second'):>12,.0f} {_cpu_us(mirrored):>6.0f} |"
                f" {_sender_us(rounds_here):>22.1f} |"
                f" {statistics.median(throughput):>7.3f} |"
                + "".join(_fixed_rate_cells(rounds_here, busy) for busy in CPU_BUSY_TARGETS)
                + f" {totals['sent']:>7,.0f} {totals['dropped']:>7,.0f} {totals['failed']:>6,.0f}"
                + (f" wrk errors {errors}" if errors else "")
                + (f" not answered 200: {failed_share:.2%}" if failed_share else "")
            )


def _fixed_rate_cells(rounds_here: list[Round[R]], busy: float) -> str:
    """One constant rate: the CPU as busy as measured, the p99s and the serving process's
    CPU per request without mirroring, and the medians of the rounds' ratios."""
    at_rate = [r.fixed_rate[busy] for r in rounds_here]
    measured_busy = [
        sum(side.cpu_seconds for side in sides.values()) / (sides[NONE].requests / sides[NONE].rate)
        for sides in at_rate
    ]
    p99_ratios = [sides[MIRRORING].p99_ms / sides[NONE].p99_ms for sides in at_rate]
    cpu_ratios = [sides[MIRRORING].cpu_us / sides[NONE].cpu_us for sides in at_rate]
    return (
        f" {statistics.median(measured_busy):>4.0%}"
        f" {statistics.median(sides[NONE].rate for sides in at_rate):>6,.0f}"
        f" {statistics.median(sides[NONE].p99_ms for sides in at_rate):>8.2f}"
        f" {statistics.median(sides[MIRRORING].p99_ms for sides in at_rate):>10.2f}"
        f" {statistics.median(p99_ratios):>6.3f}"
        f" {statistics.median(sides[NONE].cpu_us for sides in at_rate):>6.0f}"
        f" {statistics.median(cpu_ratios):>6.3f} |"
    )


def _median(results: list[R], field: str) -> float:
    return statistics.median(float(getattr(result, field)) for result in results)


def _cpu_us(results: list[R]) -> float:
    """The stable's CPU time per live request, in microseconds (median over the runs)."""
    return statistics.median(
        result.cpu_percent / 100 / result.requests_per_second * 1e6 for result in results
    )


def _sender_us(rounds_here: list[Round[R]]) -> float:
    """The mirror process's CPU time per copy sent or failed, in microseconds (median)."""
    return statistics.median(
        r.mirror_process_cpu_seconds / max(r.copies["sent"] + r.copies["failed"], 1) * 1e6
        for r in rounds_here
    )
