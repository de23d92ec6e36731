"""Request bodies -> rows, and predictions -> response bodies, for V2 infer and V1 predict.

Decoding is split from answering: `decode_v2` and `decode_v1` are plain functions of the
body and a picklable ModelInput, so that large bodies can be decoded in another process
(decoding.py); `respond` runs where the prediction is.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy.typing as npt
import orjson
from pydantic import BaseModel, ValidationError

from modelserver.columns import column_rows
from modelserver.model import Features, Prediction
from modelserver.outputs import BINARY_DATA_SIZE, RequestedOutputs, requested_outputs, v2_outputs
from modelserver.raw_tensors import tensor_from_raw
from modelserver.schemas import (
    MAX_ID_LENGTH,
    BinaryInferenceRequest,
    BinaryRequestInput,
    InferenceRequest,
    V1PredictRequest,
)
from modelserver.tensors import (
    BAD_REQUEST,
    InvalidInput,
    ModelInput,
    array_rows,
    check_request_content_type,
    json_array,
    json_tensor_rows,
    takes_columns,
    v1_rows,
    v2_rows,
)

_Body = TypeVar("_Body", bound=BaseModel)


class Decoded(NamedTuple):
    """A checked request: its rows and what the answer must say besides the predictions."""

    rows: Features
    outputs: RequestedOutputs = RequestedOutputs(())
    """V2: the outputs requested."""
    request_id: str | None = None


class Stamp(NamedTuple):
    """What identifies a response besides its predictions."""

    request_id: str | None
    """The request's id, else one the server made when it has a feedback key."""
    token: str | None
    """The signed prediction token, when the server has a feedback key."""


TOKEN_FIELD = "prediction_token"


class BinaryAnswer(NamedTuple):
    """A response with binary tensor data: the JSON header, then the outputs' bytes."""

    header: dict[str, Any]
    tensors: list[bytes]


DecodeFunction = Callable[[bytes, ModelInput], Decoded]


class BinaryDecodeFunction(Protocol):
    """Decodes a body whose JSON header is its first so many bytes, tensor data after it."""

    def __call__(self, body: bytes, model: ModelInput, header_length: int) -> Decoded: ...


RespondFunction = Callable[[Decoded, Prediction, Stamp], dict[str, Any] | BinaryAnswer]


@dataclass(frozen=True)
class Codec:
    decode: DecodeFunction
    """A module-level function, so that a worker process can run it."""
    respond: RespondFunction
    decode_binary: BinaryDecodeFunction | None = None
    """For the binary tensor data extension, where the protocol has it (module-level too)."""


def parse_body(body: bytes, model: type[_Body]) -> _Body:
    """Validate a JSON body; orjson first, as it is the faster parser."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _validate_json(body, model)
    return _validate_parsed(parsed, model)


def _validate_json(body: bytes, model: type[_Body]) -> _Body:
    """A body that is not strict JSON: maybe the NaN/Infinity that Python clients write,
    which pydantic accepts; otherwise pydantic reports where the JSON is broken."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise describe_validation_error(error) from error


def _validate_parsed(parsed: Any, model: type[_Body]) -> _Body:
    if not isinstance(parsed, dict):
        raise InvalidInput(
            f"invalid request body: must be a JSON object, got {parsed!r:.40}", BAD_REQUEST
        )
    try:
        return model.model_validate(parsed)
    except ValidationError as error:
        raise describe_validation_error(error) from error


def describe_validation_error(error: ValidationError) -> InvalidInput:
    """One readable line for a body that is not JSON or not shaped like the protocol says."""
    problems = error.errors(include_url=False)
    if problems[0]["type"] == "json_invalid":
        reason = str(problems[0]["msg"]).removeprefix("Invalid JSON: ")
        return InvalidInput(f"malformed JSON: {reason}", BAD_REQUEST)
    details = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
        for problem in problems[:3]
    )
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return InvalidInput(f"invalid request body: {details}{more}", BAD_REQUEST)


class _PlainTensor(NamedTuple):
    """The one input of a plain request (_plain_request), as RequestInput would hold it."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None
    data: list[Any]


_PLAIN_REQUEST_FIELDS = frozenset(("inputs", "id", "parameters"))
_PLAIN_TENSOR_FIELDS = frozenset(_PlainTensor._fields)


def _plain_request(parsed: Any) -> tuple[_PlainTensor, str | None, dict[str, Any] | None] | None:
    """The input, id and parameters of the common request, one input and nothing but those
    fields, checked as InferenceRequest checks them but without building it (a third of
    the cost of decoding a 1-row request); None for any other body, which pydantic
    validates (and explains when it is wrong)."""
    if type(parsed) is not dict or not parsed.keys() <= _PLAIN_REQUEST_FIELDS:
        return None
    inputs = parsed.get("inputs")
    request_id = parsed.get("id")
    parameters = parsed.get("parameters")
    if (
        type(inputs) is not list
        or len(inputs) != 1
        or not (
            request_id is None or (type(request_id) is str and len(request_id) <= MAX_ID_LENGTH)
        )
        or not (parameters is None or type(parameters) is dict)
    ):
        return None
    tensor = inputs[0]
    if type(tensor) is not dict or not tensor.keys() <= _PLAIN_TENSOR_FIELDS:
        return None
    name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
    tensor_parameters, data = tensor.get("parameters"), tensor.get("data")
    if (
        type(name) is not str
        or type(datatype) is not str
        or type(shape) is not list
        or any(type(dimension) is not int for dimension in shape)  # StrictInt: no bool
        or type(data) is not list
        or not (tensor_parameters is None or type(tensor_parameters) is dict)
    ):
        return None
    return _PlainTensor(name, shape, datatype, tensor_parameters, data), request_id, parameters


def decode_v2(body: bytes, model: ModelInput) -> Decoded:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return decode_v2_request(_validate_json(body, InferenceRequest), model)
    plain = _plain_request(parsed)
    if plain is not None:
        return _decode_plain(*plain, model)
    return decode_v2_request(_validate_parsed(parsed, InferenceRequest), model)


def decode_v2_request(request: InferenceRequest, model: ModelInput) -> Decoded:
    """A validated V2 request's rows and what its answer must say."""
    if request.parameters:
        check_request_content_type(request.parameters)
    outputs = requested_outputs(request.outputs, request.parameters, model.outputs)
    if takes_columns(request.inputs, request.parameters):
        rows = column_rows([(tensor, tensor.data) for tensor in request.inputs], model)
        return Decoded(rows, outputs, request.id)
    return Decoded(v2_rows(request, model), outputs, request.id)


def _decode_plain(
    tensor: _PlainTensor,
    request_id: str | None,
    parameters: dict[str, Any] | None,
    model: ModelInput,
) -> Decoded:
    """decode_v2_request of a plain request: the same checks, in the same order."""
    if parameters:
        check_request_content_type(parameters)
    outputs = requested_outputs(None, parameters, model.outputs)
    if takes_columns((tensor,), parameters):
        return Decoded(column_rows([(tensor, tensor.data)], model), outputs, request_id)
    return Decoded(json_tensor_rows(tensor, tensor.data, model), outputs, request_id)


def decode_v2_binary(body: bytes, model: ModelInput, header_length: int) -> Decoded:
    """A V2 request of the binary tensor data extension: a JSON header of `header_length`
    bytes, then the binary data of the inputs that have parameters.binary_data_size, in
    the order of the inputs."""
    if header_length > len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length is {header_length}, but the body has only"
            f" {len(body)} bytes",
            BAD_REQUEST,
        )
    try:
        request = parse_body(body[:header_length], BinaryInferenceRequest)
    except InvalidInput as error:
        raise InvalidInput(
            f"the JSON header (the first {header_length} bytes of the body, as"
            f" Inference-Header-Content-Length says): {error}",
            error.status_code,
        ) from error
    arrays = binary_inputs(request.inputs, memoryview(body)[header_length:])
    if request.parameters:
        check_request_content_type(request.parameters)
    outputs = requested_outputs(request.outputs, request.parameters, model.outputs)
    if takes_columns(request.inputs, request.parameters):
        columns = [
            (tensor, _json_data(tensor) if array is None else array)
            for tensor, array in zip(request.inputs, arrays, strict=True)
        ]
        return Decoded(column_rows(columns, model), outputs, request.id)
    tensor = request.inputs[0]
    array = arrays[0]
    if array is not None:
        rows = array_rows(tensor, array, model)
    else:
        rows = json_tensor_rows(tensor, _json_data(tensor), model)
    return Decoded(rows, outputs, request.id)


def _json_data(tensor: BinaryRequestInput) -> list[Any]:
    assert tensor.data is not None  # binary_inputs checked that it has data
    return tensor.data


def binary_inputs(
    inputs: list[BinaryRequestInput], payload: memoryview
) -> list[npt.NDArray[Any] | None]:
    """Each input's tensor from the binary data after the header, None for those whose
    data are in the JSON; every byte must belong to an input."""
    arrays: list[npt.NDArray[Any] | None] = []
    offset = 0
    for tensor in inputs:
        where = f"input {tensor.name!r}"
        size = None if tensor.parameters is None else tensor.parameters.get(BINARY_DATA_SIZE)
        if size is None:
            if tensor.data is None:
                raise InvalidInput(
                    f"{where} has no data: give data, or parameters.{BINARY_DATA_SIZE} and"
                    " its bytes after the JSON header",
                    BAD_REQUEST,
                )
            arrays.append(None)
            continue
        if tensor.data is not None:
            raise InvalidInput(
                f"{where} has both data and parameters.{BINARY_DATA_SIZE}; send one",
                BAD_REQUEST,
            )
        if type(size) is not int or size < 0:
            raise InvalidInput(
                f"{where}: parameters.{BINARY_DATA_SIZE} must be a byte count (an integer"
                f" >= 0), got {size!r:.40}",
                BAD_REQUEST,
            )
        if offset + size > len(payload):
            raise InvalidInput(
                f"{where}: binary data cut short: its {size} bytes start at byte {offset} of"
                f" the {len(payload)} bytes after the JSON header",
                BAD_REQUEST,
            )
        raw = payload[offset : offset + size]
        arrays.append(tensor_from_raw(raw, tensor.datatype, tensor.shape, where))
        offset += size
    if offset != len(payload):
        raise InvalidInput(
            f"the body has {len(payload)} bytes after the JSON header, but the inputs'"
            f" {BINARY_DATA_SIZE} add up to {offset}",
            BAD_REQUEST,
        )
    return arrays


def decode_v1(body: bytes, model: ModelInput) -> Decoded:
    request = parse_body(body, V1PredictRequest)
    return Decoded(v1_rows(request.instances, model))


def v2_codec(model_name: str, model_version: str) -> Codec:
    def respond(
        decoded: Decoded, prediction: Prediction, stamp: Stamp
    ) -> dict[str, Any] | BinaryAnswer:
        outputs, tensors = v2_outputs(prediction, decoded.outputs)
        response: dict[str, Any] = {
            "model_name": model_name,
            "model_version": model_version,
            "outputs": outputs,
        }
        if stamp.request_id is not None:
            response["id"] = stamp.request_id
        if stamp.token is not None:
            response["parameters"] = {TOKEN_FIELD: stamp.token}
        return BinaryAnswer(response, tensors) if tensors else response

    return Codec(decode_v2, respond, decode_v2_binary)


def _respond_v1(_: Decoded, prediction: Prediction, stamp: Stamp) -> dict[str, Any]:
    body: dict[str, Any] = {"predictions": json_array(prediction.values)}
    if prediction.probabilities is not None:
        body["probabilities"] = json_array(prediction.probabilities)
    if stamp.request_id is not None:
        body["id"] = stamp.request_id
    if stamp.token is not None:
        body[TOKEN_FIELD] = stamp.token
    return body


V1_CODEC = Codec(decode_v1, _respond_v1)
