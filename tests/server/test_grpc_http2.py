"""The gRPC server's HTTP/2 layer (grpc_connection.py) against real clients and the real
server process: deadlines, cancellation, flow control both ways, many calls on one
connection, compressed requests, refusals of what it does not serve, connections that
break the protocol, and calls cut short when the drain's time runs out."""

import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote_to_bytes

import grpc
import hpack
import numpy as np
import pytest
import xgboost

from modelserver.http2 import (
    DEFAULT_WINDOW,
    MAX_WINDOW,
    ErrorCode,
    Flag,
    FrameType,
    Setting,
    changes_table,
    frame,
    settings_frame,
    window_update,
)
from modelserver.protos import open_inference_pb2 as pb
from tests.server.data import breast_cancer_rows
from tests.server.grpc_client import SERVICE, V2Client, raw_request, status_of, v2_client
from tests.server.http2_peer import (
    goaway_of,
    grpc_message,
    http2_connection,
    parse_frames,
    read_stream,
    read_until_closed,
    request_headers,
)
from tests.server.server_process import ServerProcess, running_server
from tests.server.test_grpc import grpc_requests
from tests.server.test_process import wait_for_inflight

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CLASSIFIER = "xgb-classifier"
SLOW = "xgb-classifier-slow"


def start(models_dir: Path, tmp_path: Path, model: str, *extra: str):
    args = ["--model-uri", str(models_dir / f"{model}.ubj"), "--cache-dir", str(tmp_path)]
    return running_server([*args, *extra], tmp_path)


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start(models_dir, tmp_path_factory.mktemp("http2"), CLASSIFIER) as process:
        yield process


@pytest.fixture(scope="module")
def slow_server(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with start(models_dir, tmp_path_factory.mktemp("http2-slow"), SLOW) as process:
        yield process


def wait_for_count(server: ServerProcess, code: str, count: float) -> None:
    deadline = time.monotonic() + 30
    while grpc_requests(server, code) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"never {count} gRPC requests counted with code {code}")
        time.sleep(0.05)


def many_rows(count: int) -> np.ndarray:
    rows = breast_cancer_rows(569)
    return rows[np.arange(count) % len(rows)].astype(np.float32)


def test_a_call_past_its_deadline_ends_deadline_exceeded_and_counts_as_client_gone(
    slow_server: ServerProcess,
):
    before = grpc_requests(slow_server, "499")
    with v2_client(slow_server.grpc_target) as client, pytest.raises(grpc.RpcError) as late:
        client.infer(raw_request(SLOW, many_rows(1000), "FP32"), timeout=0.05)
    assert status_of(late.value)[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for_count(slow_server, "499", before + 1)


def test_a_call_the_client_cancels_counts_as_client_gone_and_the_server_serves_on(
    slow_server: ServerProcess,
):
    before = grpc_requests(slow_server, "499")
    with v2_client(slow_server.grpc_target) as client:
        call = client.infer_future(raw_request(SLOW, many_rows(1000), "FP32"))
        wait_for_inflight(slow_server, 1)
        assert call.cancel()
        wait_for_count(slow_server, "499", before + 1)
        after = client.infer(raw_request(SLOW, many_rows(2), "FP32"))
    assert len(after.raw_output_contents) == 2


def test_a_request_and_an_answer_beyond_the_flow_control_windows_arrive_whole(
    server: ServerProcess, models_dir: Path
):
    """1.2 MB of rows (above the server's 1 MiB window of a call) and an answer of 160 kB
    (above the client's 64 kB window, which it is told not to grow)."""
    rows = many_rows(10_000)
    options = [("grpc.http2.bdp_probe", 0), ("grpc.max_receive_message_length", 1 << 24)]
    with grpc.insecure_channel(server.grpc_target, options=options) as channel:
        answer = V2Client(channel).infer(raw_request(CLASSIFIER, rows, "FP32"))
    probabilities = np.frombuffer(answer.raw_output_contents[1], "<f4").reshape(-1, 2)
    booster = xgboost.Booster(model_file=models_dir / f"{CLASSIFIER}.ubj")
    np.testing.assert_allclose(probabilities[:, 1], booster.inplace_predict(rows), rtol=1e-6)


def test_more_calls_at_once_than_a_connection_takes_are_all_answered(server: ServerProcess):
    """The server takes 256 calls at once on a connection; the client queues the rest."""
    with v2_client(server.grpc_target) as client:
        calls = [
            client.infer_future(raw_request(CLASSIFIER, many_rows(1), "FP32")) for _ in range(400)
        ]
        answers = [call.result() for call in calls]
    assert all(len(answer.raw_output_contents) == 2 for answer in answers)


def test_an_unknown_method_is_unimplemented_and_names_the_service(server: ServerProcess):
    with grpc.insecure_channel(server.grpc_target) as channel:
        stream_infer = channel.unary_unary(
            SERVICE + "ModelStreamInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            stream_infer(pb.ModelInferRequest(model_name=CLASSIFIER), timeout=10)
    status, message = status_of(refused.value)
    assert status == grpc.StatusCode.UNIMPLEMENTED
    assert "ModelStreamInfer" in message
    assert "inference.GRPCInferenceService" in message


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
def test_a_compressed_request_is_answered_as_the_same_request_uncompressed(
    server: ServerProcess, compression: grpc.Compression
):
    request = raw_request(CLASSIFIER, many_rows(100), "FP32")
    with v2_client(server.grpc_target) as client:
        plain = client.infer(request)
        infer = client.channel.unary_unary(
            SERVICE + "ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        compressed = infer(request, timeout=10, compression=compression)
    assert compressed.raw_output_contents == plain.raw_output_contents


def test_a_message_split_over_many_data_frames_is_read_whole(server: ServerProcess):
    """As a client may send it: the 5-byte prefix in pieces, then the rest in small frames."""
    message = raw_request(CLASSIFIER, many_rows(3), "FP32").SerializeToString()
    body = grpc_message(message)
    headers = request_headers(server.grpc_target)
    pieces = [body[:2], body[2:4], *(body[start : start + 7] for start in range(4, len(body), 7))]
    requests = [frame(FrameType.HEADERS, Flag.END_HEADERS, 1, hpack.Encoder().encode(headers))]
    requests += [frame(FrameType.DATA, 0, 1, piece) for piece in pieces[:-1]]
    requests.append(frame(FrameType.DATA, Flag.END_STREAM, 1, pieces[-1]))
    with http2_connection(server.grpc_target) as connection:
        connection.sendall(b"".join(requests))
        frames = read_stream(connection, 1)
    decoder = hpack.Decoder()
    blocks = [
        dict(decoder.decode(each.payload, raw=True))
        for each in frames
        if each.kind == FrameType.HEADERS
    ]
    answer = b"".join(each.payload for each in frames if each.kind == FrameType.DATA)
    response = pb.ModelInferResponse.FromString(answer[5:])
    assert blocks[0][b":status"] == b"200"
    assert blocks[-1][b"grpc-status"] == b"0"
    assert response.outputs[1].shape == [3, 2]


def test_a_message_compressed_in_a_way_not_read_is_refused_saying_how_to_send_it(
    server: ServerProcess,
):
    message = raw_request(CLASSIFIER, many_rows(1), "FP32").SerializeToString()
    headers = [*request_headers(server.grpc_target), ("grpc-encoding", "snappy")]
    call = frame(FrameType.HEADERS, Flag.END_HEADERS, 1, hpack.Encoder().encode(headers))
    body = struct.pack(">?L", True, len(message)) + message  # said to be compressed
    call += frame(FrameType.DATA, Flag.END_STREAM, 1, body)
    with http2_connection(server.grpc_target) as connection:
        connection.sendall(call)
        frames = read_stream(connection, 1)
    # The stream's frames may include a WINDOW_UPDATE for the request's bytes; the answer
    # is one header block, trailers only.
    (trailers,) = [
        hpack.Decoder().decode(each.payload, raw=True)
        for each in frames
        if each.kind == FrameType.HEADERS
    ]
    status = dict(trailers)
    assert status[b"grpc-status"] == b"12"  # UNIMPLEMENTED
    assert b"snappy" in status[b"grpc-message"]
    assert b"send it uncompressed, or compressed with gzip or deflate" in unquote_to_bytes(
        status[b"grpc-message"]
    )


def test_connections_that_break_the_protocol_are_closed_and_others_are_served(
    server: ServerProcess,
):
    host, port = server.grpc_target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as http1:
        http1.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        read_until_closed(http1)  # no HTTP/1.1 answer: the connection just closes
    with http2_connection(server.grpc_target) as broken:
        broken.sendall(frame(FrameType.DATA, 0, 0, b"x"))
        closing = read_until_closed(broken)
    with v2_client(server.grpc_target) as client:
        answer = client.infer(raw_request(CLASSIFIER, many_rows(2), "FP32"))
    goaway = goaway_of(parse_frames(closing)[0])
    assert goaway is not None
    assert goaway.code == ErrorCode.PROTOCOL_ERROR
    assert len(answer.raw_output_contents) == 2


def test_a_settings_frame_that_takes_a_calls_window_beyond_the_maximum_ends_the_connection(
    server: ServerProcess,
):
    """RFC 9113 6.9.2: the change of SETTINGS_INITIAL_WINDOW_SIZE applies to the windows
    of the calls open, and one above 2^31-1 is a FLOW_CONTROL_ERROR."""
    headers = hpack.Encoder().encode(request_headers(server.grpc_target))
    frames = frame(FrameType.HEADERS, Flag.END_HEADERS, 1, headers)  # a call left open
    frames += window_update(1, MAX_WINDOW - DEFAULT_WINDOW)  # its window at the maximum
    frames += settings_frame({Setting.INITIAL_WINDOW_SIZE: DEFAULT_WINDOW + 1})
    with http2_connection(server.grpc_target) as connection:
        connection.sendall(frames)
        goaway = goaway_of(parse_frames(read_until_closed(connection))[0])
    assert goaway is not None
    assert goaway.code == ErrorCode.FLOW_CONTROL_ERROR


def test_calls_still_running_when_the_drain_time_runs_out_are_cancelled(
    models_dir: Path, tmp_path: Path
):
    """Each call takes about a second of the model's time, one after the other, and the
    drain gives them one second: the first may finish, the last cannot."""
    extra = ["--graceful-timeout-seconds", "1", "--max-batch-rows", "5000"]
    with start(models_dir, tmp_path, SLOW, *extra) as server:
        with v2_client(server.grpc_target) as client:
            calls = [
                client.infer_future(raw_request(SLOW, many_rows(5000), "FP32"), timeout=120)
                for _ in range(4)
            ]
            wait_for_inflight(server, 4)
            server.process.send_signal(signal.SIGTERM)
            outcomes = []
            for call in calls:
                try:
                    call.result()
                    outcomes.append(grpc.StatusCode.OK)
                except grpc.RpcError as error:
                    outcomes.append(status_of(error)[0])
        exit_code = server.process.wait(timeout=60)
    assert exit_code == 0
    assert outcomes[-1] == grpc.StatusCode.CANCELLED
    assert set(outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.CANCELLED}


def test_header_blocks_that_change_the_decoders_table_are_told_apart():
    """The server keeps blocks decoded only while they cannot mean something else."""
    encoder = hpack.Encoder()
    headers = [(":method", "POST"), (":path", "/inference.GRPCInferenceService/ModelInfer")]
    headers.append(("user-agent", "grpc-python/1.85 " + "x" * 200))  # a multi-byte length
    first = encoder.encode(headers)  # literals added to the table
    again = encoder.encode(headers)  # the same, by their index in the table
    unindexed = encoder.encode([hpack.NeverIndexedHeaderTuple("grpc-timeout", "99m")])
    encoder.header_table_size = 256
    resized = encoder.encode(headers)
    assert changes_table(first)
    assert not changes_table(again)
    assert not changes_table(unindexed)
    assert changes_table(resized)
