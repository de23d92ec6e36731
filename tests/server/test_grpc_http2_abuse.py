"""Abuse of the gRPC server's HTTP/2 layer, over plain sockets against the real server
process: floods of frames that do no work, of PINGs, of reset calls (Rapid Reset), of
CONTINUATION frames, and calls beyond the advertised limit. Each ends its own connection
with GOAWAY and the code that says why, after a bounded answer, while a connection that a
gRPC client opened before is still answered."""

import socket
from collections.abc import Iterator
from pathlib import Path

import hpack
import numpy as np
import pytest

from modelserver.grpc_connection import (
    CANCELLED_CALLS_ALLOWED,
    CONTINUATIONS_ALLOWED,
    IDLE_FRAMES_ALLOWED,
    MAX_CONCURRENT_STREAMS,
)
from modelserver.http2 import (
    FRAME_HEADER,
    ErrorCode,
    Flag,
    FrameType,
    frame,
    rst_stream,
    window_update,
)
from modelserver.protos import open_inference_pb2 as pb
from tests.server.data import breast_cancer_rows
from tests.server.grpc_client import raw_request, v2_client
from tests.server.http2_peer import (
    Frame,
    GoAway,
    call_frames,
    goaway_of,
    http2_connection,
    parse_frames,
    read_stream,
    read_streams,
    read_until_closed,
    request_headers,
)
from tests.server.server_process import ServerProcess, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CLASSIFIER = "xgb-classifier"
PING = frame(FrameType.PING, 0, 0, b"abusive!")
SERVER_LIVE = pb.ServerLiveRequest().SerializeToString()


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("http2-abuse")
    args = ["--model-uri", str(models_dir / f"{CLASSIFIER}.ubj"), "--cache-dir", str(tmp_path)]
    with running_server(args, tmp_path) as process:
        yield process


def abuse(server: ServerProcess, frames: bytes) -> tuple[GoAway, list[Frame]]:
    """Send `frames` on a connection of their own and read what the server sends until it
    closes that connection: the GOAWAY and every frame. A gRPC client connected before
    is asked again after, and must be answered."""
    rows = breast_cancer_rows(2).astype(np.float32)
    with v2_client(server.grpc_target) as bystander:
        assert bystander.call("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse).live
        with http2_connection(server.grpc_target) as connection:
            connection.sendall(frames)
            received, rest = parse_frames(read_until_closed(connection))
        answer = bystander.infer(raw_request(CLASSIFIER, rows, "FP32"))
    assert len(answer.raw_output_contents) == 2
    assert not rest, "the server's last frame was cut short"
    goaway = goaway_of(received)
    assert goaway is not None, "the connection closed without GOAWAY"
    return goaway, received


def headers_frame(server: ServerProcess, encoder: hpack.Encoder, stream_id: int) -> bytes:
    """The headers of a ModelInfer call whose message does not follow (yet)."""
    block = encoder.encode(request_headers(server.grpc_target))
    return frame(FrameType.HEADERS, Flag.END_HEADERS, stream_id, block)


def test_a_flood_of_pings_ends_the_connection_with_too_many_pings(server: ServerProcess):
    goaway, received = abuse(server, PING * 50)
    assert goaway.code == ErrorCode.ENHANCE_YOUR_CALM
    assert goaway.debug == b"too_many_pings"  # what gRPC clients read to ping less often
    assert len(received) <= 4  # the server's SETTINGS, its WINDOW_UPDATE, at most 2 ACKs


def test_pings_between_answers_are_answered_however_many(server: ServerProcess):
    """Clients that measure the bandwidth ping as answers arrive: each answer clears the
    count, which would otherwise end the connection at the third PING."""
    encoder = hpack.Encoder()
    with http2_connection(server.grpc_target) as connection:
        for stream_id in range(1, 20, 2):
            call = call_frames(encoder, server.grpc_target, stream_id, "ServerLive", SERVER_LIVE)
            connection.sendall(call + PING + PING)
            answer = read_stream(connection, stream_id)
            trailers = hpack.Decoder().decode(answer[-1].payload, raw=True)
            assert dict(trailers)[b"grpc-status"] == b"0"


def idle_flood(server: ServerProcess, kind: str) -> bytes:
    count = 2 * IDLE_FRAMES_ALLOWED
    if kind == "SETTINGS":
        return frame(FrameType.SETTINGS, 0, 0) * count
    if kind == "WINDOW_UPDATE":
        return window_update(0, 1) * count
    if kind == "empty DATA":  # on a call begun, whose message never comes
        return headers_frame(server, hpack.Encoder(), 1) + frame(FrameType.DATA, 0, 1) * count
    if kind == "PRIORITY":
        return frame(FrameType.PRIORITY, 0, 3, bytes(5)) * count
    if kind == "unknown type":
        # Of a type HTTP/2 does not define (0x42), which a server is to ignore.
        return (FRAME_HEADER.pack(0, 1, 0x42, 0, 0) + b"?") * count
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["SETTINGS", "WINDOW_UPDATE", "empty DATA", "PRIORITY", "unknown type"]
)
def test_a_flood_of_frames_that_do_no_work_ends_the_connection(server: ServerProcess, kind: str):
    goaway, received = abuse(server, idle_flood(server, kind))
    assert goaway.code == ErrorCode.ENHANCE_YOUR_CALM
    assert b"frames in a row that did no work" in goaway.debug
    assert len(received) <= IDLE_FRAMES_ALLOWED + 3  # at most an answer to each


@pytest.mark.parametrize("whole_calls", [False, True], ids=["headers", "whole calls"])
def test_calls_begun_and_reset_at_once_end_the_connection(server: ServerProcess, whole_calls: bool):
    """The Rapid Reset attack (CVE-2023-44487): each call is reset as soon as it is sent,
    so that it never counts among the calls at once, while the server begins its work."""
    encoder = hpack.Encoder()
    rows = breast_cancer_rows(1).astype(np.float32)
    message = raw_request(CLASSIFIER, rows, "FP32").SerializeToString()
    attack = []
    for stream_id in range(1, 4 * CANCELLED_CALLS_ALLOWED, 2):
        if whole_calls:
            call = call_frames(encoder, server.grpc_target, stream_id, "ModelInfer", message)
        else:
            call = headers_frame(server, encoder, stream_id)
        attack += [call, rst_stream(stream_id, ErrorCode.CANCEL)]
    goaway, _ = abuse(server, b"".join(attack))
    assert goaway.code == ErrorCode.ENHANCE_YOUR_CALM
    assert b"reset by the client beyond those answered" in goaway.debug
    # The calls after the one reset too many were not read.
    assert goaway.last_stream_id <= 2 * CANCELLED_CALLS_ALLOWED + 1


def test_a_client_that_resets_as_many_calls_as_are_answered_keeps_its_connection(
    server: ServerProcess,
):
    encoder = hpack.Encoder()
    target = server.grpc_target
    with http2_connection(target) as connection:
        for answered in range(1, 4 * CANCELLED_CALLS_ALLOWED, 4):
            reset = answered + 2
            call = call_frames(encoder, target, answered, "ServerLive", SERVER_LIVE)
            cancelled = headers_frame(server, encoder, reset) + rst_stream(reset, ErrorCode.CANCEL)
            connection.sendall(call + cancelled)
            answer = read_stream(connection, answered)
            assert answer[-1].kind == FrameType.HEADERS  # trailers, not a reset


@pytest.mark.parametrize("abuse_kind", ["empty CONTINUATIONs", "a header list too large"])
def test_header_blocks_beyond_the_limits_end_the_connection(server: ServerProcess, abuse_kind: str):
    block = hpack.Encoder().encode(request_headers(server.grpc_target))
    if abuse_kind == "empty CONTINUATIONs":  # which never end the block
        frames = frame(FrameType.HEADERS, 0, 1, block)
        frames += frame(FrameType.CONTINUATION, 0, 1) * (100 * CONTINUATIONS_ALLOWED)
        expected = b"CONTINUATION frames"
    else:  # 20 kB of metadata: above the 16 KiB that the server's SETTINGS advertise
        block += hpack.Encoder().encode([("x-padding", "x" * 20_000)])
        frames = frame(FrameType.HEADERS, 0, 1, block[:16_384])
        frames += frame(FrameType.CONTINUATION, Flag.END_HEADERS, 1, block[16_384:])
        expected = b"header list larger than"
    goaway, _ = abuse(server, frames)
    assert goaway.code == ErrorCode.ENHANCE_YOUR_CALM
    assert expected in goaway.debug


def settings_read(connection: socket.socket) -> None:
    """Read the server's SETTINGS, and acknowledge them."""
    received = b""
    while True:
        received += connection.recv(65536)
        frames, _ = parse_frames(received)
        if any(each.kind == FrameType.SETTINGS for each in frames):
            connection.sendall(frame(FrameType.SETTINGS, Flag.ACK, 0))
            return


def test_calls_beyond_the_advertised_limit_end_the_connection_once_it_is_known(
    server: ServerProcess,
):
    encoder = hpack.Encoder()
    calls = [headers_frame(server, encoder, 2 * n + 1) for n in range(MAX_CONCURRENT_STREAMS + 1)]
    rows = breast_cancer_rows(2).astype(np.float32)
    with v2_client(server.grpc_target) as bystander:
        bystander.infer(raw_request(CLASSIFIER, rows, "FP32"))
        with http2_connection(server.grpc_target) as connection:
            settings_read(connection)
            connection.sendall(b"".join(calls))
            received, _ = parse_frames(read_until_closed(connection))
        answer = bystander.infer(raw_request(CLASSIFIER, rows, "FP32"))
    assert len(answer.raw_output_contents) == 2
    goaway = goaway_of(received)
    assert goaway is not None
    assert goaway.code == ErrorCode.PROTOCOL_ERROR
    assert b"SETTINGS_MAX_CONCURRENT_STREAMS" in goaway.debug
    assert goaway.last_stream_id == 2 * MAX_CONCURRENT_STREAMS - 1  # the last call taken


def test_calls_beyond_the_limit_before_it_is_known_are_refused_and_may_be_retried(
    server: ServerProcess,
):
    """A client may begin calls before it reads the server's SETTINGS: those beyond the
    limit are refused (REFUSED_STREAM), which clients retry, and the connection serves on."""
    encoder = hpack.Encoder()
    calls = [headers_frame(server, encoder, 2 * n + 1) for n in range(MAX_CONCURRENT_STREAMS + 1)]
    refused = 2 * MAX_CONCURRENT_STREAMS + 1
    retried = refused + 2
    calls.append(rst_stream(1, ErrorCode.CANCEL))  # a call ends, so there is room for one
    calls.append(call_frames(encoder, server.grpc_target, retried, "ServerLive", SERVER_LIVE))
    with http2_connection(server.grpc_target) as connection:
        connection.sendall(b"".join(calls))
        streams = read_streams(connection, refused, retried)
    refusal, answer = streams[refused], streams[retried]
    assert refusal == [
        Frame(FrameType.RST_STREAM, 0, refused, rst_stream(0, ErrorCode.REFUSED_STREAM)[9:])
    ]
    trailers = hpack.Decoder().decode(answer[-1].payload, raw=True)
    assert dict(trailers)[b"grpc-status"] == b"0"
