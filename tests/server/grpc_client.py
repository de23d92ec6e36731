"""A plain grpcio client of the V2 gRPC service, speaking the server's own messages."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import numpy.typing as npt

from modelserver.protos import open_inference_pb2 as pb

SERVICE = "/inference.GRPCInferenceService/"


class V2Client:
    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel

    def call(self, method: str, request: Any, response_type: Any, timeout: float = 30) -> Any:
        rpc = self.channel.unary_unary(
            SERVICE + method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return rpc(request, timeout=timeout)

    def infer(self, request: pb.ModelInferRequest, timeout: float = 30) -> pb.ModelInferResponse:
        return self.call("ModelInfer", request, pb.ModelInferResponse, timeout)

    def infer_bytes(self, body: bytes, timeout: float = 30) -> pb.ModelInferResponse:
        """ModelInfer with a message as given, which need not parse."""
        rpc: grpc.UnaryUnaryMultiCallable[bytes, pb.ModelInferResponse] = self.channel.unary_unary(
            SERVICE + "ModelInfer", response_deserializer=pb.ModelInferResponse.FromString
        )
        return rpc(body, timeout=timeout)

    def infer_future(self, request: pb.ModelInferRequest, timeout: float = 60) -> Any:
        rpc = self.channel.unary_unary(
            SERVICE + "ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        return rpc.future(request, timeout=timeout)


@contextmanager
def v2_client(target: str) -> Iterator[V2Client]:
    with grpc.insecure_channel(target) as channel:
        yield V2Client(channel)


def raw_request(
    model: str, values: npt.NDArray[Any], datatype: str, **fields: Any
) -> pb.ModelInferRequest:
    """A request with one input, its values as raw contents (as tritonclient sends them)."""
    request = pb.ModelInferRequest(model_name=model, **fields)
    request.inputs.add(name="input-0", datatype=datatype, shape=values.shape)
    request.raw_input_contents.append(values.astype(values.dtype.newbyteorder("<")).tobytes())
    return request


def typed_request(
    model: str, values: npt.NDArray[Any], datatype: str, field: str, **fields: Any
) -> pb.ModelInferRequest:
    """A request with one input, its values in the typed contents `field`."""
    request = pb.ModelInferRequest(model_name=model, **fields)
    tensor = request.inputs.add(name="input-0", datatype=datatype, shape=values.shape)
    getattr(tensor.contents, field).extend(values.ravel().tolist())
    return request


def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    """The status and message of a call that failed (grpc.RpcError)."""
    with_status: grpc.Call = call
    return with_status.code(), with_status.details() or ""
