"""V2 gRPC messages <-> rows and predictions: a ModelInferRequest becomes the same Decoded
that a REST body does, and a prediction a ModelInferResponse.

The checks and their messages are REST's (tensors.py, raw_tensors.py, outputs.py), so a
request is refused alike whichever protocol carries it. `decode_grpc` is a module-level
function of the serialized request, so that a large one can be decoded in another
process (decoding.py), as a large REST body is.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError

from modelserver.codecs import TOKEN_FIELD, Decoded, Stamp
from modelserver.columns import ColumnData, column_rows
from modelserver.model import Prediction
from modelserver.outputs import requested_outputs
from modelserver.protos import open_inference_pb2 as pb
from modelserver.raw_tensors import raw_from_tensor, tensor_from_raw
from modelserver.schemas import ModelMetadata, RequestOutput, TensorMetadata
from modelserver.tensors import (
    BAD_REQUEST,
    CONTENT_TYPE,
    NUMPY_CONTENT,
    OUTPUT_PREDICT,
    STRING_CONTENT,
    InvalidInput,
    ModelInput,
    array_rows,
    check_request_content_type,
    json_tensor_rows,
    takes_columns,
    v2_datatype,
)

# The field of InferTensorContents that holds each datatype's values, and its numpy type.
_CONTENTS: dict[str, tuple[str, type[np.generic]]] = {
    "BOOL": ("bool_contents", np.bool_),
    "INT8": ("int_contents", np.int32),
    "INT16": ("int_contents", np.int32),
    "INT32": ("int_contents", np.int32),
    "INT64": ("int64_contents", np.int64),
    "UINT8": ("uint_contents", np.uint32),
    "UINT16": ("uint_contents", np.uint32),
    "UINT32": ("uint_contents", np.uint32),
    "UINT64": ("uint64_contents", np.uint64),
    "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64),
    "BYTES": ("bytes_contents", np.object_),
}
_RAW_ONLY = ("FP16", "BF16")
"""Datatypes that InferTensorContents has no field for: raw contents only."""


@dataclass(frozen=True)
class _TensorHeader:
    """An input's name, datatype, shape and parameters (tensors.TensorHeader)."""

    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None


def parse_request(body: bytes) -> pb.ModelInferRequest:
    try:
        return pb.ModelInferRequest.FromString(body)
    except DecodeError as error:
        raise InvalidInput(
            f"the request is not a serialized inference.ModelInferRequest: {error}", BAD_REQUEST
        ) from error


def decode_grpc(body: bytes, model: ModelInput) -> Decoded:
    return decode_request(parse_request(body), model)


def decode_request(request: pb.ModelInferRequest, model: ModelInput) -> Decoded:
    """The request's rows and requested outputs; outputs go as raw contents when the inputs
    came so (tritonclient reads only those), as typed contents otherwise."""
    parameters = _parameters(request.parameters)
    if parameters:
        check_request_content_type(parameters)
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs;"
            " send one per input, in the order of the inputs",
            BAD_REQUEST,
        )
    asked = [
        RequestOutput(name=output.name, parameters=_parameters(output.parameters) or None)
        for output in request.outputs
    ]
    outputs = requested_outputs(asked or None, parameters, model.outputs)
    # The protocol has every output raw or none.
    outputs = outputs._replace(binary=frozenset(outputs.names) if raw else frozenset())
    headers = [
        _TensorHeader(
            tensor.name, tensor.datatype, list(tensor.shape), _parameters(tensor.parameters)
        )
        for tensor in request.inputs
    ]
    if takes_columns(headers, parameters):
        columns = [
            (header, _values(tensor, raw[i] if raw else None, header))
            for i, (header, tensor) in enumerate(zip(headers, request.inputs, strict=True))
        ]
        return Decoded(column_rows(columns, model), outputs, request.id or None)
    header = headers[0]
    tensor = request.inputs[0]
    where = f"input {header.name!r}"
    if raw:
        _check_one_source(tensor, where)
        values = tensor_from_raw(raw[0], header.datatype, header.shape, where)
        rows = array_rows(header, values, model)
    else:
        rows = json_tensor_rows(header, _typed_values(tensor.contents, header, where), model)
    return Decoded(rows, outputs, request.id or None)


def _values(
    tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, header: _TensorHeader
) -> ColumnData:
    """An input's values from its raw contents when the request has them, else from its
    typed contents."""
    where = f"input {header.name!r}"
    if raw is None:
        return _typed_values(tensor.contents, header, where)
    _check_one_source(tensor, where)
    return tensor_from_raw(raw, header.datatype, header.shape, where)


def _check_one_source(tensor: pb.ModelInferRequest.InferInputTensor, where: str) -> None:
    if tensor.HasField("contents"):
        raise InvalidInput(
            f"{where} has both contents and raw_input_contents; send one", BAD_REQUEST
        )


def _typed_values(
    contents: pb.InferTensorContents, header: _TensorHeader, where: str
) -> npt.NDArray[Any]:
    """The values of the contents field that the datatype has, flat."""
    field = _CONTENTS.get(header.datatype)
    if field is None:
        if header.datatype in _RAW_ONLY:
            raise InvalidInput(
                f"{where}: datatype {header.datatype} has no field in contents; send its"
                " values in raw_input_contents",
                BAD_REQUEST,
            )
        # An unknown datatype: json_tensor_rows refuses it, naming those it takes.
        return np.empty(0)
    name, dtype = field
    others = [given.name for given, _ in contents.ListFields() if given.name != name]
    if others:
        raise InvalidInput(
            f"{where}: datatype {header.datatype} takes its values in contents.{name},"
            f" got contents.{others[0]}",
            BAD_REQUEST,
        )
    return np.array(getattr(contents, name), dtype=dtype)


def _parameters(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """A parameters map as the plain values that REST's JSON would carry."""
    plain: dict[str, Any] = {}
    for key, value in parameters.items():
        choice = value.WhichOneof("parameter_choice")
        plain[key] = None if choice is None else getattr(value, choice)
    return plain


def grpc_response(
    decoded: Decoded, prediction: Prediction, stamp: Stamp, model_name: str, model_version: str
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=stamp.request_id or ""
    )
    if stamp.token is not None:
        response.parameters[TOKEN_FIELD].string_param = stamp.token
    names, raw, as_strings = decoded.outputs
    for name in names:
        array = prediction.values if name == OUTPUT_PREDICT else prediction.probabilities
        assert array is not None  # names were checked against the model's outputs
        if name in as_strings:
            array = array.astype(str)
        datatype = v2_datatype(array)
        output = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        content_type = STRING_CONTENT if datatype == "BYTES" else NUMPY_CONTENT
        output.parameters[CONTENT_TYPE].string_param = content_type
        if name in raw:
            response.raw_output_contents.append(raw_from_tensor(array))
        else:
            _fill(output.contents, array, datatype)
    return response


def _fill(contents: pb.InferTensorContents, array: npt.NDArray[Any], datatype: str) -> None:
    name, _ = _CONTENTS[datatype]
    values = array.ravel().tolist()
    if datatype == "BYTES":
        values = [value if isinstance(value, bytes) else str(value).encode() for value in values]
    getattr(contents, name).extend(values)


def metadata_response(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    """REST's model metadata as gRPC has it: without `parameters`, which it has no field for."""

    def tensors(described: list[TensorMetadata]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return [
            pb.ModelMetadataResponse.TensorMetadata(
                name=tensor.name, datatype=tensor.datatype, shape=tensor.shape
            )
            for tensor in described
        ]

    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=metadata.versions,
        platform=metadata.platform,
        inputs=tensors(metadata.inputs),
        outputs=tensors(metadata.outputs),
    )
