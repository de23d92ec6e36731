"""The mirror process of one serving process (mirror_worker.py): its shared memory, its
socket, and its life.

It is started with the first target, not with the server: most stables never mirror. It
shares an anonymous memory file (the ring and its counters) and one end of a socket pair
(SOCK_SEQPACKET: each message arrives whole) with this process; both are non-blocking
here, so that nothing on the serving loop ever waits for it.
"""

import asyncio
import logging
import mmap
import os
import socket
import subprocess
import sys
import time

from modelserver.mirror_ring import COUNTERS, COUNTERS_SIZE

log = logging.getLogger(__name__)

STOP_SECONDS = 2.0
"""How long a stopping server waits for its mirror process to end before killing it."""


class MirrorProcess:
    """Starts the mirror process, talks to it, and starts another when it dies."""

    def __init__(
        self, buffer_bytes: int, connections: int, timeout_seconds: float, log_level: str
    ) -> None:
        self.memory_bytes = COUNTERS_SIZE + (buffer_bytes // 8) * 8
        self._memory_fd = os.memfd_create("modelserver-mirror")
        os.ftruncate(self._memory_fd, self.memory_bytes)
        self._memory = mmap.mmap(self._memory_fd, self.memory_bytes)
        view = memoryview(self._memory)
        self.ring = view[COUNTERS_SIZE:]
        self._counters = view[:COUNTERS_SIZE]
        self._options = [
            "--connections",
            str(connections),
            "--timeout-seconds",
            str(timeout_seconds),
            "--log-level",
            log_level,
        ]
        self._channel: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self, position: int, records: int) -> None:
        """Start the process, reading the ring from `position` (`records` read before)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "modelserver.mirror_worker",
                    "--channel-fd",
                    str(theirs.fileno()),
                    "--memory-fd",
                    str(self._memory_fd),
                    "--memory-bytes",
                    str(self.memory_bytes),
                    "--position",
                    str(position),
                    "--records",
                    str(records),
                    *self._options,
                ],
                pass_fds=(theirs.fileno(), self._memory_fd),
                stdin=subprocess.DEVNULL,
            )
        ours.setblocking(False)
        if self._channel is not None:
            self._channel.close()
        self._channel = ours
        self.started_at = time.monotonic()
        log.info("mirroring: copies are sent by process %d", self._process.pid)

    def exit_code(self) -> int | None:
        """The process's exit code once it has ended, None while it runs."""
        return None if self._process is None else self._process.poll()

    def counters(self) -> tuple[int, int, int, int, int, int]:
        """Copies taken, sent, failed, dropped; the ring position and records read to."""
        counted: tuple[int, int, int, int, int, int] = COUNTERS.unpack_from(self._counters)
        return counted

    def restart(self) -> int:
        """Start a successor of an ended process where it stopped reading; the copies it
        had taken and not finished count as failed. Returns how many those were."""
        taken, sent, failed, dropped, position, records = self.counters()
        lost = taken - sent - failed - dropped
        COUNTERS.pack_into(
            self._counters, 0, taken, sent, failed + lost, dropped, position, records
        )
        self.start(position, records)
        return lost

    def send(self, message: bytes) -> bool:
        """Send without waiting; False when the process is not reading (the message is
        not sent)."""
        if self._channel is None:
            return False
        try:
            self._channel.send(message)
        except (BlockingIOError, ConnectionError):
            return False
        return True

    def received(self) -> list[bytes]:
        """The messages the process has sent since the last call."""
        messages: list[bytes] = []
        while self._channel is not None:
            try:
                message = self._channel.recv(64)
            except (BlockingIOError, ConnectionError):
                break
            if not message:
                break
            messages.append(message)
        return messages

    async def stop(self) -> None:
        """End the process (it drops what it has), waiting for it a moment at most."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            deadline = time.monotonic() + STOP_SECONDS
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if process.poll() is None:
                log.warning("mirroring: process %d did not end; killing it", process.pid)
                process.kill()
                process.wait()
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        os.close(self._memory_fd)
