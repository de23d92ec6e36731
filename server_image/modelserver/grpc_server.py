"""The V2 protocol over gRPC: `inference.GRPCInferenceService` on --grpc-port.

It runs in the process, and on the event loop, that serves REST (grpc_connection.py
speaks HTTP/2 there), and answers through the same InferenceService: one model and
micro-batcher, the same limits, refusals, ids and tokens, and the same metrics with
protocol="grpc". A refusal's gRPC status is the one that stands for its HTTP status
(GRPC_STATUS); the metrics' `code` keeps the HTTP status, so analyses count both
protocols alike.

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
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from modelserver import __version__
from modelserver.codecs import Decoded
from modelserver.fatal import StartupError
from modelserver.grpc_calls import GrpcError, Method, Service, Status
from modelserver.grpc_codec import (
    decode_grpc,
    decode_request,
    grpc_response,
    metadata_response,
    parse_request,
)
from modelserver.grpc_connection import GrpcConnection
from modelserver.inference import InferenceService, NotFound, refusal
from modelserver.metrics import ENDPOINT_V2_INFER, PROTOCOL_GRPC
from modelserver.protos import open_inference_pb2 as pb
from modelserver.routes_v2 import EXTENSIONS, model_metadata
from modelserver.tensors import InvalidInput, ModelInput

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
GRPC_STATUS = {
    400: Status.INVALID_ARGUMENT,
    404: Status.NOT_FOUND,
    413: Status.RESOURCE_EXHAUSTED,
    422: Status.INVALID_ARGUMENT,
    500: Status.INTERNAL,
}
"""The gRPC status of each HTTP status that ModelInfer can answer with."""
CLIENT_GONE = 499
"""Recorded for a call cancelled before its answer (the client went away, its deadline
passed, or the drain's time ran out), as REST records a client that went away."""
_OK = 200
VARIANT_METADATA = b"x-model-variant"
"""As REST's header: the experiment arm that answered."""
_CLOSE_SECONDS = 5.0
"""After the drain's time ran out: how long cancelled calls get to say so."""


class GrpcServer:
    def __init__(self, service: InferenceService) -> None:
        self._service = service
        self._model_input = ModelInput.of(service.loaded.model)
        self._metadata = metadata_response(model_metadata(service)).SerializeToString()
        self._listener: asyncio.Server | None = None
        self._connections: set[GrpcConnection] = set()
        self._stopped: asyncio.Future[None] | None = None
        self._restore_signals: Callable[[], None] | None = None

    async def start(self) -> None:
        """Listen on --grpc-port; from now on SIGTERM and SIGINT begin the drain."""
        settings = self._service.settings
        served = Service(
            self._methods(),
            # A message above the limit but within twice it is read, refused with
            # RESOURCE_EXHAUSTED and counted as a 413 by ModelInfer; larger ones are
            # refused as soon as their length arrives, before they are read.
            max_message_bytes=2 * settings.max_body_bytes,
        )
        listening = address(settings.host, settings.grpc_port)
        # Workers share the port; a lone server must not share it by mistake.
        sock = _listening_socket(settings.host, settings.grpc_port, settings.workers > 1)
        loop = asyncio.get_running_loop()
        try:
            self._listener = await loop.create_server(
                lambda: GrpcConnection(served, self._connections), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        log.info("serving the V2 protocol over gRPC on %s", listening)
        self._restore_signals = _on_termination(self.begin_drain)

    def begin_drain(self) -> None:
        if self._stopped is None and self._listener is not None:
            grace = self._service.settings.graceful_timeout_seconds
            self._stopped = asyncio.ensure_future(self._drain(self._listener, grace))

    async def stop(self) -> None:
        """Drain (if SIGTERM has not begun it) and wait until the last call has ended."""
        self.begin_drain()
        if self._stopped is not None:
            await self._stopped
        if self._restore_signals is not None:
            self._restore_signals()

    async def _drain(self, listener: asyncio.Server, grace: float) -> None:
        """Stop listening, let the calls in flight finish within `grace` seconds, then
        cancel those still running and close every connection."""
        listener.close()
        await asyncio.sleep(0)  # connections just accepted are made first
        connections = list(self._connections)
        for connection in connections:
            connection.begin_drain()
        closed = [connection.closed for connection in connections]
        if closed:
            _, running = await asyncio.wait(closed, timeout=grace)
            for connection in connections:
                connection.cancel_calls()
            if running:
                await asyncio.wait(running, timeout=_CLOSE_SECONDS)
            for connection in connections:
                connection.abort()

    def _methods(self) -> dict[bytes, Method]:
        variant = self._service.settings.variant
        answer_metadata = ((VARIANT_METADATA, variant.encode()),) if variant else ()
        methods = {
            "ServerLive": Method(self._server_live),
            "ServerReady": Method(self._server_ready),
            "ModelReady": Method(self._model_ready),
            "ServerMetadata": Method(self._server_metadata),
            "ModelMetadata": Method(self._model_metadata),
            # The experiment arm that answered, as the initial metadata of every answer.
            "ModelInfer": Method(self._model_infer, answer_metadata),
        }
        return {f"/{SERVICE}/{name}".encode(): method for name, method in methods.items()}

    async def _server_live(self, body: bytes) -> bytes:
        _parse(pb.ServerLiveRequest, body)
        return pb.ServerLiveResponse(live=True).SerializeToString()

    async def _server_ready(self, body: bytes) -> bytes:
        _parse(pb.ServerReadyRequest, body)
        return pb.ServerReadyResponse(ready=self._service.ready).SerializeToString()

    async def _model_ready(self, body: bytes) -> bytes:
        request = _parse(pb.ModelReadyRequest, body)
        self._check_model(request.name, request.version)
        return pb.ModelReadyResponse(ready=self._service.ready).SerializeToString()

    async def _server_metadata(self, body: bytes) -> bytes:
        _parse(pb.ServerMetadataRequest, body)
        response = pb.ServerMetadataResponse(
            name="modelserver", version=__version__, extensions=EXTENSIONS
        )
        return response.SerializeToString()

    async def _model_metadata(self, body: bytes) -> bytes:
        request = _parse(pb.ModelMetadataRequest, body)
        self._check_model(request.name, request.version)
        return self._metadata

    def _check_model(self, name: str, version: str) -> None:
        try:
            self._service.check_model(name, version or None)
        except NotFound as error:
            raise GrpcError(Status.NOT_FOUND, str(error)) from error

    async def _model_infer(self, body: bytes) -> bytes:
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
        if status_code != _OK:
            raise GrpcError(GRPC_STATUS[status_code], message)
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


M = TypeVar("M", bound=Message)


def _parse(message_type: type[M], body: bytes) -> M:
    try:
        return message_type.FromString(body)
    except DecodeError as error:
        raise GrpcError(
            Status.INVALID_ARGUMENT,
            f"the request is not a serialized inference.{message_type.__name__}: {error}",
        ) from error


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listening_socket(host: str, port: int, shared: bool) -> socket.socket:
    """A socket bound to host:port; on "::" it takes IPv4 too, as a gRPC server's does.
    `shared`: other processes (the workers) listen on the same port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


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
