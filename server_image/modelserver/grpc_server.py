"""The V2 protocol over gRPC: `inference.GRPCInferenceService` on --grpc-port.

It runs in the process, and on the event loop, that serves REST, and answers through the
same InferenceService: one model and micro-batcher, the same limits, refusals, ids and
tokens, and the same metrics with protocol="grpc". A refusal's gRPC status is the one
that stands for its HTTP status (GRPC_STATUS); the metrics' `code` keeps the HTTP status,
so analyses count both protocols alike.

On SIGTERM the gRPC server drains as REST does, at the same moment: it stops taking new
calls (clients are sent GOAWAY and go elsewhere) and those in flight may finish within
--graceful-timeout-seconds.
"""

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import grpc
from google.protobuf.message import Message

from modelserver import __version__
from modelserver.codecs import Decoded
from modelserver.fatal import StartupError
from modelserver.grpc_codec import (
    decode_grpc,
    decode_request,
    grpc_response,
    metadata_response,
    parse_request,
)
from modelserver.inference import InferenceService, NotFound, refusal
from modelserver.metrics import ENDPOINT_V2_INFER, PROTOCOL_GRPC
from modelserver.protos import open_inference_pb2 as pb
from modelserver.routes_v2 import EXTENSIONS, model_metadata
from modelserver.tensors import InvalidInput, ModelInput

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
GRPC_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    500: grpc.StatusCode.INTERNAL,
}
"""The gRPC status of each HTTP status that ModelInfer can answer with."""
CLIENT_GONE = 499
"""Recorded for a call cancelled before its answer (the client went away, its deadline
passed, or the drain's time ran out), as REST records a client that went away."""
_OK = 200
VARIANT_METADATA = "x-model-variant"
"""As REST's header: the experiment arm that answered."""


class GrpcServer:
    def __init__(self, service: InferenceService) -> None:
        self._service = service
        self._model_input = ModelInput.of(service.loaded.model)
        self._metadata = metadata_response(model_metadata(service))
        variant = service.settings.variant
        self._answer_metadata = ((VARIANT_METADATA, variant),) if variant else ()
        """Initial metadata of every ModelInfer answer: the experiment arm, if any."""
        self._server: grpc.aio.Server | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._restore_signals: Callable[[], None] | None = None

    async def start(self) -> None:
        """Listen on --grpc-port; from now on SIGTERM and SIGINT begin the drain."""
        settings = self._service.settings
        self._server = grpc.aio.server(
            options=[
                # A message above the limit but within twice it is read, refused with
                # RESOURCE_EXHAUSTED and counted as a 413 here; the gRPC library refuses
                # larger ones itself, before they reach the handler.
                ("grpc.max_receive_message_length", 2 * settings.max_body_bytes),
                # Workers share the port; a lone server must not share it by mistake.
                ("grpc.so_reuseport", int(settings.workers > 1)),
            ]
        )
        self._server.add_generic_rpc_handlers((self._handlers(),))
        listening = address(settings.host, settings.grpc_port)
        self._server.add_insecure_port(listening)
        await self._server.start()
        log.info("serving the V2 protocol over gRPC on %s", listening)
        self._restore_signals = _on_termination(self.begin_drain)

    def begin_drain(self) -> None:
        if self._stopped is None and self._server is not None:
            grace = self._service.settings.graceful_timeout_seconds
            self._stopped = asyncio.ensure_future(self._server.stop(grace))

    async def stop(self) -> None:
        """Drain (if SIGTERM has not begun it) and wait until the last call has ended."""
        self.begin_drain()
        if self._stopped is not None:
            await self._stopped
        if self._restore_signals is not None:
            self._restore_signals()

    def _handlers(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ServerLive": _unary(self._server_live, pb.ServerLiveRequest),
                "ServerReady": _unary(self._server_ready, pb.ServerReadyRequest),
                "ModelReady": _unary(self._model_ready, pb.ModelReadyRequest),
                "ServerMetadata": _unary(self._server_metadata, pb.ServerMetadataRequest),
                "ModelMetadata": _unary(self._model_metadata, pb.ModelMetadataRequest),
                # Bytes in and out: the handler checks the size before parsing.
                "ModelInfer": grpc.unary_unary_rpc_method_handler(self._model_infer),
            },
        )

    async def _server_live(
        self, _: pb.ServerLiveRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def _server_ready(
        self, _: pb.ServerReadyRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._service.ready)

    async def _model_ready(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ModelReadyResponse:
        await self._check_model(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=self._service.ready)

    async def _server_metadata(
        self, _: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="modelserver", version=__version__, extensions=EXTENSIONS
        )

    async def _model_metadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ModelMetadataResponse:
        await self._check_model(request.name, request.version, context)
        return self._metadata

    async def _check_model(
        self, name: str, version: str, context: grpc.aio.ServicerContext[object, object]
    ) -> None:
        try:
            self._service.check_model(name, version or None)
        except NotFound as error:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(error))

    async def _model_infer(
        self, body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        metrics = self._service.metrics
        started = time.perf_counter()
        metrics.inflight.inc()
        status_code = CLIENT_GONE  # also when the call is cancelled
        try:
            status_code, answer, message = await self._answer(body)
        finally:
            metrics.inflight.dec()
            seconds = time.perf_counter() - started
            metrics.record_request(ENDPOINT_V2_INFER, status_code, seconds, PROTOCOL_GRPC)
        if self._answer_metadata:
            await context.send_initial_metadata(self._answer_metadata)
        if status_code != _OK:
            await context.abort(GRPC_STATUS[status_code], message)
        return answer

    async def _answer(self, body: bytes) -> tuple[int, bytes, str]:
        """The HTTP status of the answer, the serialized response, and a refusal's message."""
        service = self._service
        settings = service.settings
        try:
            if len(body) > settings.max_body_bytes:
                raise InvalidInput(
                    f"request message of {len(body)} bytes is larger than the limit of"
                    f" {settings.max_body_bytes} bytes",
                    413,
                )
            request = parse_request(body)
            service.check_model(request.model_name, request.model_version or None)
            decoded: Decoded
            if service.decoder.is_large(body):
                decoded = await service.decoder.decode_elsewhere(decode_grpc, body)
            else:
                decoded = decode_request(request, self._model_input)
            prediction, stamp = await service.predict(decoded)
            response = grpc_response(
                decoded, prediction, stamp, settings.model_name, settings.model_version
            )
            return _OK, response.SerializeToString(), ""
        except Exception as error:
            status_code, message = refusal(error)
            return status_code, b"", message


def _unary(
    behaviour: Callable[..., Any], request: type[Message]
) -> "grpc.RpcMethodHandler[Any, Any]":
    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=request.FromString,
        response_serializer=_serialize,
    )


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_port_free(host: str, port: int) -> None:
    """Refuse to start, saying how to fix it, when another process listens on the gRPC
    port (checked before the model loads, so it fails fast)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        # As the gRPC library does: a port left in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise StartupError(
                f"cannot listen for gRPC on {address(host, port)}: {error.strerror};"
                " set MODELSERVER_GRPC_PORT to a free port, or to 0 to serve no gRPC"
            ) from error


def _on_termination(begin_drain: Callable[[], None]) -> Callable[[], None]:
    """Begin the gRPC drain on SIGTERM and SIGINT, then run the handler that was there
    (uvicorn's, which begins REST's drain), so that both drains start together. Returns
    what puts the handlers that were there back."""
    loop = asyncio.get_running_loop()
    previous_handlers = {
        signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    for signum, previous in previous_handlers.items():

        def handler(number: int, frame: FrameType | None, previous: object = previous) -> None:
            loop.call_soon_threadsafe(begin_drain)
            if callable(previous):
                previous(number, frame)

        signal.signal(signum, handler)

    def restore() -> None:
        for signum, previous in previous_handlers.items():
            if previous is not None:  # None: not set from Python, so not ours to set
                signal.signal(signum, previous)

    return restore
