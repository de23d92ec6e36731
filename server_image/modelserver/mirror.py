"""Shadow traffic, the stable's side: copies of answered requests go to a shadow server.

The mirror config file (mirror_config.py) names the shadow and the share of requests to
copy. Of the V2 infer and V1 predict requests answered 200, that share is selected
exactly (an accumulator: 25% is every 4th request), and each selected request is copied
after its response went out: the same body bytes, content type and binary-data header,
to the same path (without /versions/V: the shadow serves another version), with the
stable's prediction in a header so that the shadow can compare (shadow_compare.py).

The serving loop only writes each copy into a bounded ring in shared memory
(mirror_ring.py); a process of its own (mirror_worker.py, started with the first target)
sends them, so that the copies' HTTP costs another core, not the live requests' one. A
full ring drops copies; the mirror process counts what was sent, failed or dropped, and
this side adds it to the server's metrics. What is queued at shutdown is dropped.
"""

import asyncio
import logging
import time
from typing import Any, NamedTuple

import numpy.typing as npt
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.types import Scope

from modelserver.metrics import (
    BASE_LABELS,
    MIRROR_DROPPED,
    MIRROR_FAILED,
    MIRROR_QUEUE_DEPTH,
    MIRROR_REQUESTS_TOTAL,
    MIRROR_SENT,
)
from modelserver.mirror_config import POLL_SECONDS, MirrorConfigFile, MirrorTarget
from modelserver.mirror_process import MirrorProcess
from modelserver.mirror_ring import GENERATION, POSITIONS, READ, TARGET, WRITTEN, RingWriter
from modelserver.settings import Settings
from modelserver.shadow_compare import MIRROR_HEADER, REFERENCE_MAX_BYTES
from modelserver.tensors import json_array

log = logging.getLogger(__name__)

GATHER_SECONDS = 0.02
"""Copies are written into the ring together: by the first request answered this long
after the first of them was kept, or once GATHER_MOST wait. One after the other, the code
that writes them stays in the core's caches, and the mirror process is woken once for all
of them (a system call, and on a VM an interrupt to the other core). Gathered for 2 ms
(so at a few hundred requests a second each copy went alone) a copy cost the serving
process ~55 us of CPU at 400 req/s, gathered for 20 ms ~21 us. The shadow gets its copies
that much later, which changes nothing it measures."""
GATHER_MOST = 32
"""Waiting copies that are written at once: so that writing them never holds the loop long
(~2-3 us each)."""
LATEST_SECONDS = 0.2
"""When no request follows, the copies are written this long after the first of them. A
timer of its own would wake the serving process for nothing but the copies: at 100 req/s
that cost ~3% more CPU per request (measured, one server, mirroring on and off in turns)."""
HOUSEKEEPING_SECONDS = 0.5
"""How often the mirror process's counts reach the metrics, and its health is checked."""
RESTART_SECONDS = 5.0
"""A mirror process that died is started again, but not sooner than this after the last
start (a process that cannot run must not be started in a hot loop)."""


class Copy(NamedTuple):
    """A request to send to the shadow, as the stable received it."""

    path: bytes
    content_type: bytes | None
    header_length: bytes | None
    """Inference-Header-Content-Length (binary tensor data), as received."""
    body: bytes
    predicted: npt.NDArray[Any]
    """The stable's predicted values, one per row."""


class Mirror:
    """Selects the copies of one server process and hands them to its mirror process."""

    def __init__(
        self, settings: Settings, registry: CollectorRegistry, base: tuple[str, ...]
    ) -> None:
        assert settings.mirror_config_file is not None
        self._config = MirrorConfigFile(settings.mirror_config_file)
        self._settings = settings
        self._process: MirrorProcess | None = None
        self._ring: RingWriter | None = None
        self._target: MirrorTarget | None = None
        self._generation = 0
        """Counts the targets (address and model name): a copy is sent only to its own."""
        self._target_message: bytes | None = None
        """The target, still to be told to the mirror process."""
        self._credit = 0
        """The sampling accumulator, in units of 1 / the share's denominator."""
        self._numerator = self._denominator = 1
        """The target's share as plain integers (a Fraction's are slower to read)."""
        self._told_position = 0
        """How far the mirror process knows the ring is written."""
        self._pending: list[Copy] = []
        """Selected copies waiting to be written into the ring."""
        self._first_pending_at = 0.0
        """When the first of the pending copies was kept (the loop's clock)."""
        self._gathering: asyncio.TimerHandle | None = None
        """Writes the pending copies at the end of LATEST_SECONDS."""
        self._handing_over = False
        """The pending copies are to be written in the loop's next turn."""
        self._gather_most = min(GATHER_MOST, settings.mirror_queue_size)
        """A smaller queue must not fill up while its copies are gathered."""
        self._counted = (0, 0, 0)
        """The mirror process's sent, failed and dropped counts already in the metrics."""
        self._too_large_logged = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        requests = Counter(
            MIRROR_REQUESTS_TOTAL,
            "Copies of live requests for the shadow: sent (the shadow answered), dropped"
            " (queue full, or mirroring turned off or moved) or failed (no answer in time,"
            " or the connection failed).",
            (*BASE_LABELS, "result"),
            registry=registry,
        )
        self._sent = requests.labels(*base, MIRROR_SENT)
        self._dropped = requests.labels(*base, MIRROR_DROPPED)
        self._failed = requests.labels(*base, MIRROR_FAILED)
        self._depth = Gauge(
            MIRROR_QUEUE_DEPTH,
            "Copies waiting to be sent to the shadow (as of the last scrape, or half a second).",
            BASE_LABELS,
            registry=registry,
            multiprocess_mode="livesum",
        ).labels(*base)

    # Life cycle (the app's lifespan)

    def start(self) -> None:
        """Read the config file, and keep reading it; must run on the serving loop."""
        self._loop = asyncio.get_running_loop()
        changed, target = self._config.poll()
        if changed:
            self._apply(target)
        self._tasks = [
            self._loop.create_task(self._watch_config()),
            self._loop.create_task(self._keep_house()),
        ]

    async def stop(self) -> None:
        """End the mirror process: what is queued is dropped, answers are not waited for."""
        self._target = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._process is not None:
            await self._process.stop()

    # The live path: cheap, and never waits

    def select(
        self, scope: Scope, headers: dict[bytes, bytes], body: bytes, predicted: npt.NDArray[Any]
    ) -> Copy | None:
        """A copy of this request answered 200, if it is one to mirror."""
        if self._target is None or MIRROR_HEADER in headers:
            return None  # off, or a copy itself: never mirrored again
        self._credit += self._numerator
        if self._credit < self._denominator:
            return None
        self._credit -= self._denominator
        path: bytes = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            path += b"?" + scope["query_string"]
        return Copy(
            path,
            headers.get(b"content-type"),
            headers.get(b"inference-header-content-length"),
            body,
            predicted,
        )

    def offer(self, copy: Copy) -> None:
        """Queue a copy (call it after the live response went out)."""
        pending = self._pending
        if len(pending) >= self._settings.mirror_queue_size:
            self._dropped.inc()
            return
        pending.append(copy)
        loop = self._loop
        assert loop is not None
        now = loop.time()
        if len(pending) == 1:
            self._first_pending_at = now
            self._gathering = loop.call_later(LATEST_SECONDS, self._hand_over)
        if self._handing_over or (
            len(pending) < self._gather_most and now - self._first_pending_at < GATHER_SECONDS
        ):
            return
        self._handing_over = True
        loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        """Write what is pending into the ring, and tell the mirror process."""
        self._handing_over = False
        if self._gathering is not None:
            self._gathering.cancel()
            self._gathering = None
        pending, self._pending = self._pending, []
        ring = self._ring
        if ring is None or self._target is None:
            self._dropped.inc(len(pending))  # turned off since they were selected
            return
        generation = self._generation
        for copy in pending:
            reference = _reference(copy)
            record = (generation, copy.path, copy.content_type, copy.header_length, reference)
            if not ring.put(*record, copy.body):
                self._read_reports()  # the mirror process may have freed room meanwhile
                if not ring.put(*record, copy.body):
                    self._refused(ring, copy)
        self._tell_written()

    def _refused(self, ring: RingWriter, copy: Copy) -> None:
        self._dropped.inc()
        if ring.never_fits(copy.body) and not self._too_large_logged:
            self._too_large_logged = True
            log.warning(
                "mirroring: a copy of %d bytes does not fit in the mirror buffer (%d bytes)"
                " and is dropped, as are all that large; raise --mirror-buffer-bytes to"
                " mirror them",
                len(copy.body),
                self._settings.mirror_buffer_bytes,
            )

    # Talking to the mirror process

    def _tell_written(self) -> None:
        ring, process = self._ring, self._process
        if ring is None or process is None:
            return
        if ring.position == self._told_position:
            return
        # When it is not reading yet (starting), it is told at the next housekeeping.
        if process.send(WRITTEN + POSITIONS.pack(ring.position, ring.records)):
            self._told_position = ring.position

    def _read_reports(self) -> None:
        """Learn how far the mirror process has read: only when the ring seems full, and
        at housekeeping (each read costs the serving loop system calls)."""
        ring, process = self._ring, self._process
        if ring is None or process is None:
            return
        for message in process.received():
            if message[:1] == READ:
                ring.read_to(*POSITIONS.unpack_from(message, 1))

    def _tell_target(self) -> None:
        """Tell the mirror process the current target, now or at the next housekeeping."""
        self._target_message = TARGET + GENERATION.pack(self._generation) + _described(self._target)
        self._tell_pending_target()

    def _tell_pending_target(self) -> None:
        message = self._target_message
        if message is not None and self._process is not None and self._process.send(message):
            self._target_message = None

    # Housekeeping

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            changed, target = self._config.poll()
            if changed:
                self._apply(target)

    def _apply(self, target: MirrorTarget | None) -> None:
        previous, self._target = self._target, target
        self._credit = 0
        if target is not None:
            self._numerator, self._denominator = target.share.as_integer_ratio()
        if _same_destination(previous, target):
            return  # only the share changed: the queue and the connections stay
        self._hand_over()  # what is pending was selected for the previous target
        self._generation += 1
        if target is not None and self._process is None:
            self._start_process()
        self._tell_target()

    def _start_process(self) -> None:
        settings = self._settings
        process = MirrorProcess(
            settings.mirror_buffer_bytes,
            settings.mirror_connections,
            settings.mirror_timeout_seconds,
            settings.log_level,
        )
        process.start(0, 0)
        self._process = process
        self._ring = RingWriter(process.ring, settings.mirror_queue_size)

    async def _keep_house(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            self._check_process()
            self._tell_pending_target()
            self._tell_written()
            self.count()

    def _check_process(self) -> None:
        process, ring = self._process, self._ring
        if process is None or ring is None:
            return
        code = process.exit_code()
        if code is None or time.monotonic() - process.started_at < RESTART_SECONDS:
            return
        self.count()  # what it counted before it ended
        lost = process.restart()
        log.warning(
            "mirroring: the mirror process ended (exit code %d) with %d copies unanswered,"
            " counted as failed; started another",
            code,
            lost,
        )
        *_, position, records = process.counters()
        ring.read_to(position, records)
        self._told_position = -1  # tell the new one everything
        self._tell_target()

    def count(self) -> None:
        """Bring the mirror process's counts into the metrics."""
        if self._process is None or self._ring is None:
            return
        self._read_reports()
        _, sent, failed, dropped, _, _ = self._process.counters()
        counted_sent, counted_failed, counted_dropped = self._counted
        self._sent.inc(sent - counted_sent)
        self._failed.inc(failed - counted_failed)
        self._dropped.inc(dropped - counted_dropped)
        self._counted = (sent, failed, dropped)
        self._depth.set(self._ring.waiting)


def _same_destination(previous: MirrorTarget | None, target: MirrorTarget | None) -> bool:
    return (
        previous is not None
        and target is not None
        and previous.address == target.address
        and previous.model == target.model
    )


def _described(target: MirrorTarget | None) -> bytes:
    """The target as the mirror process reads it; empty when mirroring is off."""
    if target is None:
        return b""
    return orjson.dumps([target.host, target.port, target.model])


def _reference(copy: Copy) -> bytes:
    """The stable's prediction as JSON for the copy's reference header; empty when too long
    to send (the shadow then cannot compare that request)."""
    try:
        reference = orjson.dumps(copy.predicted, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:  # string labels, or an array orjson does not take as is
        reference = orjson.dumps(json_array(copy.predicted), option=orjson.OPT_SERIALIZE_NUMPY)
    return reference if len(reference) <= REFERENCE_MAX_BYTES else b""
