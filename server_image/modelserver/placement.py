"""Where the model is called: on the event loop while its calls are quick, else on the
predict thread.

Handing a call to the predict thread and its answer back costs the two threads more than
a quick call itself: they pass the GIL back and forth several times a call (each return
from C into the model's Python code waits for the loop to let go of it), ~35 us of CPU
per request at 1 row, c=8, on 2 cores. A model that quick blocks the loop no longer than
a request waits for it anyway, so it is called on the loop. A slow model is called on the
thread, so that the loop keeps reading requests (and answering probes) meanwhile.

Two running averages decide:

- the CPU time of the thread that makes the call, taken on every call, must be under
  QUICK_SECONDS: waiting for the GIL, or for a core of a busy machine, is not the model's
  doing (and on the thread, where a quick model waits for the GIL most, its elapsed time
  would keep it there);
- the elapsed time of the calls made on the loop must stay under LOOP_ELAPSED_SECONDS: a
  model that waits without computing (a sleep, a device, a remote call) blocks the loop
  although its CPU time is small. This average only grows while the model is on the loop,
  so such a model stays on the thread for good. But a call can also take long because the
  machine took the core away (another busy process on it, a stalled virtual machine), and
  a quick model sent to the thread for that would pay the hand-over on every call after
  (on a core shared with another busy process it answered ~20x less). So a call over the
  limit is only a suspicion: the next calls count the thread's voluntary context switches
  (a system call each, so not on every call), and only a call over the limit that waited
  of its own accord counts; a call under the limit ends the suspicion.

Every model starts on the thread (nothing is known of it yet), and a model of several
threads (--predict-threads above 1) stays there: the loop would wait for its other
threads, whose time the calling thread's CPU time does not show.
"""

import math
import resource
import time
from collections.abc import Callable

from modelserver.model import Features, Prediction

QUICK_SECONDS = 0.002
"""The CPU time of a call that is quick enough for the loop (running average)."""
LOOP_ELAPSED_SECONDS = 0.01
"""The most that the calls on the loop may take, elapsed (running average)."""
_LATEST_WEIGHT = 0.25
"""Of the latest call in each running average."""


class Placement:
    def __init__(self, predict: Callable[[Features], Prediction], loop_allowed: bool) -> None:
        self._predict = predict
        self._loop_allowed = loop_allowed
        self._cpu_seconds = math.inf
        """Running average of the calls' CPU time; unknown before the first call."""
        self._loop_seconds = 0.0
        """Running average of the elapsed time of the calls made on the loop."""
        self._suspicious = False
        """A call on the loop took longer than LOOP_ELAPSED_SECONDS: perhaps it waited,
        perhaps the machine took the core away; the next calls tell which."""

    def on_loop(self) -> bool:
        """Whether the next call is to be made on the event loop."""
        return (
            self._loop_allowed
            and self._cpu_seconds < QUICK_SECONDS
            and self._loop_seconds < LOOP_ELAPSED_SECONDS
        )

    def call_on_loop(self, rows: Features) -> Prediction:
        suspicious = self._suspicious
        switches = _voluntary_switches() if suspicious else 0
        started = time.perf_counter()
        try:
            return self.call(rows)
        finally:
            elapsed = time.perf_counter() - started
            waited = _voluntary_switches() > switches if suspicious else None
            self.count_loop_call(elapsed, waited)

    def count_loop_call(self, elapsed: float, waited: bool | None) -> None:
        """Take a call on the loop into account: it took `elapsed` seconds, and it waited
        of its own accord (True), did not (False), or was not watched (None)."""
        if elapsed < LOOP_ELAPSED_SECONDS:
            self._suspicious = False
            self._loop_seconds += _LATEST_WEIGHT * (elapsed - self._loop_seconds)
        elif waited:
            # It blocked the loop that long itself: that it could do on every call.
            self._loop_seconds = max(self._loop_seconds, elapsed)
        else:
            self._suspicious = True  # unwatched, or the core was taken: watch the next

    def call(self, rows: Features) -> Prediction:
        """The model's prediction, its CPU time counted (on whichever thread)."""
        started = time.thread_time()
        try:
            return self._predict(rows)
        finally:
            seconds = time.thread_time() - started
            if math.isinf(self._cpu_seconds):
                self._cpu_seconds = seconds
            else:
                self._cpu_seconds += _LATEST_WEIGHT * (seconds - self._cpu_seconds)


def _voluntary_switches() -> int:
    """How often the calling thread has given up its core so far (to wait for something)."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw
