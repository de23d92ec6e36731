"""The inference endpoints, V2 infer and V1 predict, as a plain ASGI app in front of FastAPI.

These two endpoints carry all the load. Answering them here, below FastAPI's routing,
dependency solving and exception middleware, roughly halves the server's cost per
request; every other path (health, metadata, /metrics, docs) goes on to FastAPI.
"""

import functools
import itertools
import logging
import re
import secrets
import time
from typing import Any
from urllib.parse import quote

import orjson
from numpy.typing import NDArray
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelserver.batching import MicroBatcher
from modelserver.codecs import BinaryAnswer, Codec, Decoded, DecodeFunction, Stamp
from modelserver.decoding import BodyDecoder
from modelserver.loading import LoadedModel
from modelserver.metrics import ENDPOINT_V1_PREDICT, ENDPOINT_V2_INFER, ServerMetrics
from modelserver.mirror import Copy, Mirror
from modelserver.model import Prediction
from modelserver.prediction_token import TokenSigner
from modelserver.protocol import body_timed_out, respond_at_once
from modelserver.settings import Settings
from modelserver.shadow_compare import REFERENCE_HEADER, ShadowComparison
from modelserver.tensors import BAD_REQUEST, InvalidInput

log = logging.getLogger(__name__)

V2_INFER_PATH = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")
V1_PREDICT_PATH = re.compile(r"/v1/models/(?P<name>[^/]+):predict")
_BINARY_EXTENSION_HEADER = b"inference-header-content-length"
"""Of the binary tensor data extension: the body's first so many bytes are its JSON."""
_JSON = b"application/json"
_BINARY = b"application/octet-stream"
ID_HEADER = b"inference-id"
VARIANT_HEADER = b"x-model-variant"
"""The experiment arm that answered, so that clients can attribute outcomes to it."""
# Characters of an id that go into its header as they are; others are percent-encoded.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%") + " "
# What proxies log for a client that went away before the answer; it gets no response.
_CLIENT_GONE = 499


class NotFound(Exception):
    pass


class _ClientDisconnected(Exception):
    pass


class RequestIds:
    """Ids for responses to requests that named none: a random prefix per process and a
    counter, unique across pods and cheaper than a UUID per request."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(6)
        self._numbers = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}-{next(self._numbers)}"


def id_header(request_id: str) -> tuple[bytes, bytes]:
    """The id as a header value: itself, or percent-encoded where it is not printable ASCII."""
    if request_id.isascii() and request_id.isprintable() and "%" not in request_id:
        return ID_HEADER, request_id.encode()
    return ID_HEADER, quote(request_id, safe=_HEADER_SAFE).encode()


def variant_headers(variant: str) -> tuple[tuple[bytes, bytes], ...]:
    """x-model-variant when the server serves an experiment arm, else nothing."""
    return ((VARIANT_HEADER, variant.encode()),) if variant else ()


def json_bytes(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def error_response(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code)


def refusal(error: Exception) -> tuple[int, str]:
    """The HTTP status and message of an inference that failed with `error`: the client's
    fault (4xx, the message says what to fix) or the model's (500, logged)."""
    if isinstance(error, NotFound):
        return 404, str(error)
    if isinstance(error, InvalidInput):
        return error.status_code, str(error)
    log.error("inference failed", exc_info=error)
    return 500, f"inference failed: {type(error).__name__}: {error}"


class InferenceService:
    """Answers inference requests: limits, decoding, micro-batched prediction, metrics."""

    def __init__(
        self,
        settings: Settings,
        loaded: LoadedModel,
        metrics: ServerMetrics,
        batcher: MicroBatcher,
        decoder: BodyDecoder,
        signer: TokenSigner | None = None,
        mirror: Mirror | None = None,
        shadow: ShadowComparison | None = None,
    ) -> None:
        self.settings = settings
        self.loaded = loaded
        self.metrics = metrics
        self.batcher = batcher
        self.decoder = decoder
        self._signer = signer
        # Ids are made up only where feedback needs them: each token must be unique.
        self._ids = None if signer is None else RequestIds()
        self._mirror = mirror
        self._shadow = shadow
        self.answer_headers = variant_headers(settings.variant)
        """Headers of every inference answer, encoded once."""
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

    async def predict(self, decoded: Decoded) -> tuple[Prediction, Stamp]:
        """The prediction of a checked request (micro-batched with the others) and what
        identifies its answer; counted in the request and prediction metrics."""
        request_id = self._id(decoded.request_id)
        self.metrics.request_rows.observe(len(decoded.rows))
        prediction = await self.batcher.predict(decoded.rows)
        self.metrics.prediction_value.observe_many(prediction.monitored_values())
        token = (
            None
            if self._signer is None or request_id is None
            else self._signer.sign(request_id, prediction, time.time())
        )
        return prediction, Stamp(request_id, token)

    async def handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        endpoint: str,
        path_match: re.Match[str],
        codec: Codec,
    ) -> None:
        started = time.perf_counter()
        self.metrics.inflight.inc()
        status_code = _CLIENT_GONE  # also when the handler is cancelled
        try:
            answer = await self._answer(scope, receive, path_match, codec)
            status_code, body, request_id, header_length, copy = answer
            headers = list(self.answer_headers)
            if request_id is not None:
                headers.append(id_header(request_id))
            if header_length is None:
                await _send(scope, send, status_code, body, _JSON, *headers)
            else:
                headers.append((_BINARY_EXTENSION_HEADER, str(header_length).encode()))
                await _send(scope, send, status_code, body, _BINARY, *headers)
            if copy is not None:
                assert self._mirror is not None
                self._mirror.offer(copy)  # only now that the response went out
        except _ClientDisconnected:
            status_code = _CLIENT_GONE
        finally:
            self.metrics.inflight.dec()
            self.metrics.record_request(endpoint, status_code, time.perf_counter() - started)

    async def method_not_allowed(self, scope: Scope, send: Send, endpoint: str) -> None:
        body = json_bytes({"error": f"{scope['method']} not allowed; use POST"})
        await _send(scope, send, 405, body, _JSON, (b"allow", b"POST"), *self.answer_headers)
        self.metrics.record_request(endpoint, 405, 0.0)

    async def _answer(
        self, scope: Scope, receive: Receive, path_match: re.Match[str], codec: Codec
    ) -> tuple[int, bytes, str | None, int | None, Copy | None]:
        """The status, body and id of the answer, the length of its JSON header when
        binary tensor data follow it, and the request's copy when it is to be mirrored."""
        request_id: str | None = None
        try:
            self.check_model(path_match["name"], path_match.groupdict().get("version"))
            body, header_length, headers = await self._read_body(scope, receive)
            decode: DecodeFunction = codec.decode
            if header_length is not None:
                decode = _binary_decoder(codec, header_length)
            if self.decoder.is_large(body):
                decoded = await self.decoder.decode_elsewhere(decode, body)
            else:
                decoded = self.decoder.decode_here(decode, body)
            request_id = decoded.request_id  # what a failure of the model answers with
            prediction, stamp = await self.predict(decoded)
            request_id = stamp.request_id
            answer = codec.respond(decoded, prediction, stamp)
            copy = self._mirroring(scope, headers, body, prediction.values)
            if type(answer) is dict:
                return 200, json_bytes(answer), request_id, None, copy
            assert isinstance(answer, BinaryAnswer)
            header = json_bytes(answer.header)
            return 200, b"".join((header, *answer.tensors)), request_id, len(header), copy
        except _ClientDisconnected:
            raise
        except Exception as error:
            status_code, message = refusal(error)
            return status_code, json_bytes({"error": message}), self._id(request_id), None, None

    def _mirroring(
        self, scope: Scope, headers: dict[bytes, bytes], body: bytes, predicted: NDArray[Any]
    ) -> Copy | None:
        """Shadow traffic: as a shadow, compare with the stable's prediction when the
        request carries it; as the stable, the copy to send when this request is one to
        mirror (sent once its response went out)."""
        reference = headers.get(REFERENCE_HEADER)
        if reference is not None and self._shadow is not None:
            self._shadow.compare(reference, predicted)
        if self._mirror is None:
            return None
        return self._mirror.select(scope, headers, body, predicted)

    def _id(self, given: str | None) -> str | None:
        """The request's id, else a new one where the server makes them."""
        if given is not None or self._ids is None:
            return given
        return self._ids.new()

    async def _read_body(
        self, scope: Scope, receive: Receive
    ) -> tuple[bytes, int | None, dict[bytes, bytes]]:
        """The body, its JSON header's length when binary tensor data follow it, and the
        request's headers."""
        headers = dict(scope["headers"])
        header_length = None
        declared_header = headers.get(_BINARY_EXTENSION_HEADER)
        if declared_header is not None:
            header_length = _header_length(declared_header)
        encoding = headers.get(b"content-encoding")
        if encoding is not None and encoding != b"identity":
            raise InvalidInput(_encoded(encoding), 415)
        limit = self.settings.max_body_bytes
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            raise InvalidInput(_too_large(int(declared), limit), 413)
        chunks = []
        received = 0
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientDisconnected
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                raise InvalidInput(_too_large(received, limit), 413)
            chunks.append(chunk)
            if not message.get("more_body", False):
                seconds = body_timed_out(scope)
                if seconds is not None:
                    raise InvalidInput(
                        f"request body not received within {seconds:g} s of its headers", 408
                    )
                return b"".join(chunks), header_length, headers


def _header_length(value: bytes) -> int:
    if not value.isdigit():
        raise InvalidInput(
            f"Inference-Header-Content-Length must be the JSON header's length in bytes,"
            f" got {value.decode(errors='replace')!r:.40}",
            BAD_REQUEST,
        )
    return int(value)


def _binary_decoder(codec: Codec, header_length: int) -> DecodeFunction:
    if codec.decode_binary is None:
        raise InvalidInput(
            "Inference-Header-Content-Length: the binary tensor data extension is part of"
            " the V2 protocol only; send V1 instances as JSON",
            BAD_REQUEST,
        )
    # A partial of a module-level function, so that a decoding process can run it too.
    return functools.partial(codec.decode_binary, header_length=header_length)


def _encoded(encoding: bytes) -> str:
    return (
        f"Content-Encoding {encoding.decode(errors='replace')!r:.40} is not supported;"
        " send the body uncompressed"
    )


def _too_large(size: int, limit: int) -> str:
    return f"request body of {size} bytes is larger than the limit of {limit} bytes"


async def _send(
    scope: Scope,
    send: Send,
    status_code: int,
    body: bytes,
    content_type: bytes,
    *extra: tuple[bytes, bytes],
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    if respond_at_once(scope, status_code, headers, body):
        return
    await send({"type": "http.response.start", "status": status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class InferenceEndpoints:
    """ASGI app: POST to an inference path is answered here, anything else goes to `app`."""

    def __init__(self, app: ASGIApp, service: InferenceService, v2: Codec, v1: Codec) -> None:
        self.app = app
        self._routes = (
            (V2_INFER_PATH, ENDPOINT_V2_INFER, v2),
            (V1_PREDICT_PATH, ENDPOINT_V1_PREDICT, v1),
        )
        self._service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for pattern, endpoint, codec in self._routes:
                path_match = pattern.fullmatch(scope["path"])
                if path_match is None:
                    continue
                if scope["method"] != "POST":
                    await self._service.method_not_allowed(scope, send, endpoint)
                    return
                await self._service.handle(scope, receive, send, endpoint, path_match, codec)
                return
        await self.app(scope, receive, send)
