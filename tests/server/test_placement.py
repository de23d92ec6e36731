"""Where the micro-batcher calls the model: a quick model on the event loop's own thread,
a slow one, one that waits without computing, or one of several threads on the predict
thread; every model's first call on the predict thread."""

import asyncio
import threading
import time

import numpy as np

from modelserver.batching import MicroBatcher
from modelserver.model import Prediction
from modelserver.placement import LOOP_ELAPSED_SECONDS, QUICK_SECONDS, Placement
from tests.server.helpers import FailingModel


class ThreadRecordingModel(FailingModel):
    """Records the thread of each call; `busy` and `idle` seconds of computing and of
    sleeping make it slow."""

    def __init__(self, busy: float = 0.0, idle: float = 0.0) -> None:
        super().__init__()
        self.busy, self.idle = busy, idle
        self.threads: list[str] = []

    def predict(self, rows: np.ndarray) -> Prediction:
        self.threads.append(threading.current_thread().name)
        until = time.thread_time() + self.busy
        while time.thread_time() < until:
            pass
        time.sleep(self.idle)
        return super().predict(rows)


def threads_of_calls(
    model: ThreadRecordingModel, calls: int, loop_allowed: bool = True
) -> list[str]:
    async def run() -> str:
        batcher = MicroBatcher(model.predict, 1024, lambda rows: None, loop_allowed)
        batcher.start()
        try:
            for value in range(calls):  # one at a time: one call each
                await batcher.predict(np.asarray([[float(value), 1.0]]))
        finally:
            await batcher.stop()
        return threading.current_thread().name

    loop_thread = asyncio.run(run())
    return ["loop" if name == loop_thread else "predict" for name in model.threads]


def test_a_quick_model_is_called_on_the_event_loop_after_its_first_call():
    assert threads_of_calls(ThreadRecordingModel(), 4) == ["predict", "loop", "loop", "loop"]


def test_a_slow_model_stays_on_the_predict_thread():
    model = ThreadRecordingModel(busy=2 * QUICK_SECONDS)

    assert threads_of_calls(model, 4) == ["predict"] * 4


def test_a_model_that_waits_without_computing_leaves_the_loop_for_good():
    """Its CPU time is small, so it is tried on the loop; its first long call there makes
    it suspect, the second, watched, shows it waits, and it goes back to the thread, where
    it stays."""
    model = ThreadRecordingModel(idle=6 * LOOP_ELAPSED_SECONDS)

    assert threads_of_calls(model, 6) == ["predict", "loop", "loop"] + ["predict"] * 3


def quick_calls(placement: Placement, count: int) -> None:
    for _ in range(count):
        placement.count_loop_call(0.0001, None)


def test_calls_slowed_by_a_busy_or_stalled_machine_keep_a_quick_model_on_the_loop():
    """The core taken away for a while (another busy process, a stalled virtual machine):
    long calls that did not wait of their own accord are not the model's doing."""
    placement = quick_model_on_loop()
    placement.count_loop_call(0.3, None)  # a stall: suspect, not yet counted
    assert placement.on_loop()
    placement.count_loop_call(0.05, False)  # watched: long, but the core was taken
    assert placement.on_loop()
    quick_calls(placement, 3)
    placement.count_loop_call(0.3, None)
    assert placement.on_loop()


def test_a_watched_call_that_waited_long_sends_the_model_to_the_thread():
    placement = quick_model_on_loop()
    placement.count_loop_call(0.05, None)
    placement.count_loop_call(2 * LOOP_ELAPSED_SECONDS, True)
    assert not placement.on_loop()


def test_calls_that_wait_briefly_keep_the_model_on_the_loop():
    placement = quick_model_on_loop()
    for _ in range(20):
        placement.count_loop_call(LOOP_ELAPSED_SECONDS / 2, True)
    assert placement.on_loop()


def quick_model_on_loop() -> Placement:
    placement = Placement(lambda rows: Prediction(np.zeros(len(rows)), None), loop_allowed=True)
    placement.call(np.zeros((1, 2)))
    assert placement.on_loop()
    return placement


def test_a_model_of_several_threads_stays_on_the_predict_thread():
    assert threads_of_calls(ThreadRecordingModel(), 4, loop_allowed=False) == ["predict"] * 4
