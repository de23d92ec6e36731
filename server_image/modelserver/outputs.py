"""The outputs a V2 request asks for, and predictions as V2 output tensors (JSON or binary)."""

import functools
from typing import Any, NamedTuple

from modelserver.model import Prediction
from modelserver.raw_tensors import raw_from_tensor
from modelserver.schemas import RequestOutput
from modelserver.tensors import (
    BAD_REQUEST,
    CONTENT_TYPE,
    NUMPY_CONTENT,
    OUTPUT_PREDICT,
    REJECTED,
    STRING_CONTENT,
    InvalidInput,
    flat_data,
    v2_datatype,
)

BINARY_DATA = "binary_data"
"""Of a requested output: true to have it as binary data (binary tensor data extension)."""
BINARY_DATA_OUTPUT = "binary_data_output"
"""Of the request: the default of binary_data for every output."""
BINARY_DATA_SIZE = "binary_data_size"
"""Of an input or output tensor: its binary data's size in bytes, after the JSON header."""
_CLASSIFICATION = "classification"
_NONE: frozenset[str] = frozenset()
# Shared by every JSON output (never changed): one dict less per output on the hot path.
_NUMPY_PARAMETERS = {CONTENT_TYPE: NUMPY_CONTENT}
_STRING_PARAMETERS = {CONTENT_TYPE: STRING_CONTENT}


class RequestedOutputs(NamedTuple):
    names: tuple[str, ...]
    binary: frozenset[str] = _NONE
    """Those to send as binary data."""
    as_strings: frozenset[str] = _NONE
    """Those whose values are to be sent as strings (content_type str)."""


def requested_outputs(
    outputs: list[RequestOutput] | None,
    request_parameters: dict[str, Any] | None,
    model_outputs: tuple[str, ...],
) -> RequestedOutputs:
    """The outputs to answer with, checked against the model's (default: all of them)."""
    binary_default = False
    if request_parameters:
        binary_default = _flag(request_parameters, BINARY_DATA_OUTPUT, "request", False)
    if outputs is None:
        return _all_outputs(model_outputs, binary_default)
    names = tuple(output.name for output in outputs)
    unknown = [name for name in names if name not in model_outputs]
    if unknown:
        raise InvalidInput(
            f"unknown output {unknown[0]!r}; this model has: {', '.join(model_outputs)}",
            REJECTED,
        )
    binary, as_strings = set(), set()
    for output in outputs:
        parameters = output.parameters or {}
        where = f"output {output.name!r}"
        if _flag(parameters, BINARY_DATA, where, binary_default):
            binary.add(output.name)
        if _is_string_content(parameters, where):
            as_strings.add(output.name)
        if _CLASSIFICATION in parameters:
            raise InvalidInput(
                f"{where}: the classification extension (parameters.classification) is not"
                " supported; ask for predict and predict_proba",
                BAD_REQUEST,
            )
    return RequestedOutputs(names, frozenset(binary), frozenset(as_strings))


@functools.cache
def _all_outputs(model_outputs: tuple[str, ...], binary: bool) -> RequestedOutputs:
    # Cached: most requests ask for every output, and each would build the same tuple.
    return RequestedOutputs(model_outputs, frozenset(model_outputs) if binary else _NONE)


def _flag(parameters: dict[str, Any], name: str, where: str, default: bool) -> bool:
    value = parameters.get(name, default)
    if not isinstance(value, bool):
        raise InvalidInput(
            f"{where}: parameters.{name} must be true or false, got {value!r:.40}", BAD_REQUEST
        )
    return value


def _is_string_content(parameters: dict[str, Any], where: str) -> bool:
    content_type = parameters.get(CONTENT_TYPE)
    if content_type is None or content_type == NUMPY_CONTENT:
        return False
    if content_type == STRING_CONTENT:
        return True
    raise InvalidInput(
        f"{where}: content_type {content_type!r:.40} is not supported for outputs;"
        f" use {NUMPY_CONTENT!r} (values as computed) or {STRING_CONTENT!r} (as strings)",
        REJECTED,
    )


def v2_outputs(
    prediction: Prediction, requested: RequestedOutputs
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The output tensors, and the binary data of those sent as binary, in their order."""
    outputs = []
    buffers = []
    names, binary, as_strings = requested
    for name in names:
        array = prediction.values if name == OUTPUT_PREDICT else prediction.probabilities
        assert array is not None  # names were checked against the model's outputs
        if as_strings and name in as_strings:
            array = array.astype(str)
        datatype = v2_datatype(array)
        parameters = _STRING_PARAMETERS if datatype == "BYTES" else _NUMPY_PARAMETERS
        shape = list(array.shape)
        if binary and name in binary:
            raw = raw_from_tensor(array)
            buffers.append(raw)
            sized = {**parameters, BINARY_DATA_SIZE: len(raw)}
            outputs.append(
                {"name": name, "shape": shape, "datatype": datatype, "parameters": sized}
            )
        else:
            outputs.append(
                {
                    "name": name,
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": parameters,
                    "data": flat_data(array),
                }
            )
    return outputs, buffers
