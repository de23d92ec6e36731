"""Where the micro-batcher calls the model: a quick model on the event loop's own thread,
a slow one, one that waits without computing, or one of several threads on the predict
thread; every model's first call on the predict thread."""

import asyncio
import threading
import time

import numpy as np

from modelserver.batching import MicroBatcher
from modelserver.model import Prediction
from modelserver.placement import LOOP_ELAPSED_SECONDS, QUICK_SECONDS
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
    """Its CPU time is small, so it is tried on the loop once; its time there sends it
    back to the thread, where it stays."""
    model = ThreadRecordingModel(idle=6 * LOOP_ELAPSED_SECONDS)

    assert threads_of_calls(model, 5) == ["predict", "loop", "predict", "predict", "predict"]


def test_a_model_of_several_threads_stays_on_the_predict_thread():
    assert threads_of_calls(ThreadRecordingModel(), 4, loop_allowed=False) == ["predict"] * 4
