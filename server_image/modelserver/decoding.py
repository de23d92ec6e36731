"""Large request bodies are decoded in worker processes, small ones on the event loop.

Decoding (orjson, pydantic, the checks of tensors.py) holds the GIL: a 16 MB body takes
about a second, and a thread would not let the event loop run meanwhile. On the loop,
four such bodies delayed health probes by seconds, enough for Kubernetes to take the
pod out of service and restart it. So bodies above a size are decoded by a small pool
of processes, which send back only the checked rows; below it (nearly every request) a
process round trip would cost more than the decoding itself.
"""

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from modelserver.codecs import Decoded, DecodeFunction
from modelserver.tensors import ModelInput

log = logging.getLogger(__name__)


class DecodingProcessDied(Exception):
    pass


class BodyDecoder:
    def __init__(self, model: ModelInput, large_body_bytes: int, processes: int) -> None:
        self._model = model
        self._large_body_bytes = large_body_bytes
        self._processes = processes
        self._pool: ProcessPoolExecutor | None = None
        """Started with the first large body: most servers never see one."""

    def is_large(self, body: bytes) -> bool:
        return self._processes > 0 and len(body) > self._large_body_bytes

    def decode_here(self, decode: DecodeFunction, body: bytes) -> Decoded:
        return decode(body, self._model)

    async def decode_elsewhere(self, decode: DecodeFunction, body: bytes) -> Decoded:
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            try:
                return await loop.run_in_executor(self._running_pool(), decode, body, self._model)
            except BrokenProcessPool:
                # Killed, most likely out of memory; maybe by this very body, so only once more.
                log.warning("a body-decoding process died; starting new ones (attempt %d)", attempt)
                self.close()
        raise DecodingProcessDied(
            "the process decoding this request body died twice, perhaps out of memory;"
            " send smaller requests"
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _running_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the server has threads (the predict thread, OpenMP's), which
            # a forked child would inherit in whatever state they were.
            self._pool = ProcessPoolExecutor(
                self._processes, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool
