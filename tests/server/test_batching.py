"""Micro-batching: concurrent requests share predict calls and still get their own answers."""

import asyncio
import threading

import numpy as np
import pytest

from modelserver.batching import MicroBatcher
from modelserver.model import Prediction
from tests.server.helpers import FailingModel


class GatedModel(FailingModel):
    """Holds its first predict call until released, so that requests pile up meanwhile."""

    def __init__(self, fail_on: float = -1.0) -> None:
        super().__init__(fail_on)
        self.release = threading.Event()

    def predict(self, rows):
        self.release.wait(timeout=10)
        return super().predict(rows)


async def predict_all(batcher: MicroBatcher, requests: list[np.ndarray], model: GatedModel):
    batcher.start()
    try:
        tasks = [asyncio.create_task(batcher.predict(requests[0]))]
        await asyncio.sleep(0.05)  # the first request is now in the model
        tasks += [asyncio.create_task(batcher.predict(rows)) for rows in requests[1:]]
        await asyncio.sleep(0.05)  # the others wait for it
        model.release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await batcher.stop()


def requests_of(sizes: list[int]) -> list[np.ndarray]:
    start = 0.0
    requests = []
    for size in sizes:
        requests.append(np.column_stack((np.arange(start, start + size), np.ones(size))))
        start += size
    return requests


def test_requests_waiting_for_the_model_are_merged_into_one_call():
    model = GatedModel()
    requests = requests_of([1, 3, 2, 5])
    batcher = MicroBatcher(model.predict, max_batch_rows=1024, on_batch=lambda rows: None)
    results = asyncio.run(predict_all(batcher, requests, model))
    assert model.batch_sizes == [1, 10]
    for rows, result in zip(requests, results, strict=True):
        assert isinstance(result, Prediction)
        np.testing.assert_array_equal(result.values, rows.sum(axis=1))


def test_batches_stay_within_the_row_limit():
    model = GatedModel()
    batcher = MicroBatcher(model.predict, max_batch_rows=4, on_batch=lambda rows: None)
    asyncio.run(predict_all(batcher, requests_of([1, 2, 2, 3, 1, 9]), model))
    assert model.batch_sizes == [1, 4, 4, 9]


def test_a_request_that_breaks_the_model_does_not_fail_its_batch_neighbours():
    model = GatedModel(fail_on=4.0)  # the request holding row 4.0 makes predict raise
    requests = requests_of([1, 3, 2, 5])
    batcher = MicroBatcher(model.predict, max_batch_rows=1024, on_batch=lambda rows: None)
    results = asyncio.run(predict_all(batcher, requests, model))
    assert isinstance(results[2], RuntimeError)
    for index in (0, 1, 3):
        result = results[index]
        assert isinstance(result, Prediction)
        np.testing.assert_array_equal(result.values, requests[index].sum(axis=1))


def test_each_batch_is_reported_with_its_row_count():
    model = GatedModel()
    reported: list[int] = []
    batcher = MicroBatcher(model.predict, max_batch_rows=1024, on_batch=reported.append)
    asyncio.run(predict_all(batcher, requests_of([2, 3, 4]), model))
    assert reported == [2, 7]


@pytest.mark.parametrize("size", [1, 100])
def test_a_lone_request_is_answered_without_waiting_for_company(size: int):
    model = FailingModel()
    batcher = MicroBatcher(model.predict, max_batch_rows=1024, on_batch=lambda rows: None)

    async def one() -> Prediction:
        batcher.start()
        try:
            return await asyncio.wait_for(batcher.predict(requests_of([size])[0]), 5)
        finally:
            await batcher.stop()

    assert len(asyncio.run(one()).values) == size
    assert model.batch_sizes == [size]
