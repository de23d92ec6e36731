"""The request path shared by V2 infer and V1 predict: limits, decoding, batching, metrics."""

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from modelserver.batching import MicroBatcher
from modelserver.loading import LoadedModel
from modelserver.metrics import ServerMetrics
from modelserver.model import Prediction
from modelserver.settings import Settings
from modelserver.tensors import InvalidInput

log = logging.getLogger(__name__)

# Decodes a body into rows and a function that turns their prediction into the response body.
Decoder = Callable[[bytes], tuple[npt.NDArray[np.floating], Callable[[Prediction], Any]]]

_BINARY_EXTENSION_HEADER = "inference-header-content-length"


class NotFound(Exception):
    pass


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code)


class InferenceService:
    def __init__(
        self,
        settings: Settings,
        loaded: LoadedModel,
        metrics: ServerMetrics,
        batcher: MicroBatcher,
    ) -> None:
        self.settings = settings
        self.loaded = loaded
        self.metrics = metrics
        self.batcher = batcher
        self.ready = False
        """True from the start of serving until shutdown begins."""

    def check_model(self, name: str, version: str | None) -> None:
        served = self.settings.model_name
        if name != served:
            raise NotFound(f"model {name!r} not found; this server serves {served!r}")
        if version is not None and version != self.settings.model_version:
            raise NotFound(
                f"model {name!r} has no version {version!r};"
                f" served version: {self.settings.model_version!r}"
            )

    async def handle(
        self,
        request: Request,
        endpoint: str,
        name: str,
        version: str | None,
        decode: Decoder,
    ) -> Response:
        started = time.perf_counter()
        self.metrics.inflight.inc()
        # A client that disconnects cancels the handler; 499 is what proxies log for that.
        status_code = 499
        try:
            response = await self._answer(request, name, version, decode)
            status_code = response.status_code
            return response
        finally:
            self.metrics.inflight.dec()
            self.metrics.record_request(endpoint, status_code, time.perf_counter() - started)

    async def _answer(
        self, request: Request, name: str, version: str | None, decode: Decoder
    ) -> Response:
        try:
            self.check_model(name, version)
            body = await self._read_body(request)
            rows, respond = decode(body)
            self.metrics.request_rows.observe(len(rows))
            prediction = await self.batcher.predict(rows)
            self.metrics.prediction_value.observe_many(prediction.monitored_values())
            return JSONResponse(respond(prediction))
        except NotFound as error:
            return error_response(404, str(error))
        except InvalidInput as error:
            return error_response(error.status_code, str(error))
        except Exception as error:
            log.exception("inference failed")
            return error_response(500, f"inference failed: {type(error).__name__}: {error}")

    async def _read_body(self, request: Request) -> bytes:
        if _BINARY_EXTENSION_HEADER in request.headers:
            raise InvalidInput(
                "the binary tensor data extension is not supported; send the tensor data as"
                " JSON (binary_data=False)",
                400,
            )
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise InvalidInput(_too_large(int(declared), limit), 413)
        chunks = []
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise InvalidInput(_too_large(received, limit), 413)
            chunks.append(chunk)
        return b"".join(chunks)


def _too_large(size: int, limit: int) -> str:
    return f"request body of {size} bytes is larger than the limit of {limit} bytes"


def describe_validation_error(error: ValidationError) -> InvalidInput:
    """One readable line for a body that is not JSON or not shaped like the protocol says."""
    problems = error.errors(include_url=False)
    if problems[0]["type"] == "json_invalid":
        reason = str(problems[0]["msg"]).removeprefix("Invalid JSON: ")
        return InvalidInput(f"malformed JSON: {reason}", 400)
    details = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
        for problem in problems[:3]
    )
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return InvalidInput(f"invalid request body: {details}{more}", 400)
