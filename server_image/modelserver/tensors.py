"""Request data -> a checked [rows, features] array, and predictions -> V2 output tensors.

Every rejection names what is wrong (which input, row and column, expected vs got), since
the caller has to fix its request from the message alone.
"""

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from modelserver.model import Model, Prediction
from modelserver.schemas import InferenceRequest

OUTPUT_PREDICT = "predict"
OUTPUT_PROBABILITIES = "predict_proba"

# numpy kinds accepted for each V2 datatype: f float, i signed, u unsigned, b bool.
Rows = npt.NDArray[np.floating]
"""A checked [rows, features] array in the dtype that the model wants."""

_ACCEPTED_KINDS = {"FP32": "fiu", "FP64": "fiu", "INT32": "iu", "INT64": "iu", "BOOL": "b"}
_V2_DATATYPES = {"f4": "FP32", "f8": "FP64", "i4": "INT32", "i8": "INT64", "b1": "BOOL"}


class InvalidInput(Exception):
    """The request cannot be answered as sent; `status_code` is 400 or 422."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


def v2_rows(request: InferenceRequest, model: Model) -> Rows:
    if len(request.inputs) != 1:
        raise InvalidInput(
            f"expected exactly 1 input tensor of shape [rows, {model.n_features}],"
            f" got {len(request.inputs)} inputs"
        )
    tensor = request.inputs[0]
    where = f"input {tensor.name!r}"
    if tensor.datatype not in _ACCEPTED_KINDS:
        raise InvalidInput(
            f"{where}: unsupported datatype {tensor.datatype!r};"
            f" supported: {', '.join(_ACCEPTED_KINDS)}"
        )
    shape = tensor.shape
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 0:
        raise InvalidInput(f"{where}: shape must be [rows, features] with rows >= 1, got {shape}")
    if shape[1] != model.n_features:
        raise InvalidInput(
            f"{where}: the model expects {model.n_features} features per row, got shape {shape}"
        )
    values = _as_array(tensor.data, where)
    if values.ndim == 1:
        if values.size != math.prod(shape):
            raise InvalidInput(
                f"{where}: shape {shape} needs {math.prod(shape)} values, data has {values.size}"
            )
        values = values.reshape(shape)
    elif list(values.shape) != shape:
        raise InvalidInput(
            f"{where}: nested data has shape {list(values.shape)}, declared shape is {shape}"
        )
    _check_kind(values, tensor.datatype, where)
    return _finite_rows(values, model, where)


def v1_rows(instances: list[Any], model: Model) -> Rows:
    where = "instances"
    if not instances:
        raise InvalidInput("instances: at least one row is needed")
    values = _as_array(instances, where)
    if values.ndim != 2:
        raise InvalidInput(
            f"instances: must be a list of rows (lists of {model.n_features} numbers)"
        )
    if values.shape[1] != model.n_features:
        raise InvalidInput(
            f"instances: the model expects {model.n_features} features per row,"
            f" got {values.shape[1]}"
        )
    _check_kind(values, "FP64", where)
    return _finite_rows(values, model, where)


def _as_array(data: list[Any], where: str) -> npt.NDArray[Any]:
    try:
        values = np.asarray(data)
    except (ValueError, TypeError) as error:
        raise InvalidInput(f"{where}: ragged data, rows of different lengths ({error})") from error
    if values.dtype.kind == "O":
        raise InvalidInput(f"{where}: {_describe_odd_value(values)}")
    return values


def _describe_odd_value(values: npt.NDArray[Any]) -> str:
    """Explain why values did not form a numeric array (the rare, slow path)."""
    for position, value in enumerate(values.flat):
        if value is None:
            return f"null at flat position {position}; send NaN for a missing value"
        if isinstance(value, int) and not isinstance(value, bool):
            if not -(2**63) <= value < 2**64:
                return f"integer out of range at flat position {position}"
        elif not isinstance(value, float | bool):
            return f"unexpected {type(value).__name__} at flat position {position}"
    return "values of mixed types"


def _check_kind(values: npt.NDArray[Any], datatype: str, where: str) -> None:
    kind = values.dtype.kind
    if kind in _ACCEPTED_KINDS[datatype]:
        return
    if datatype.startswith("INT") and kind == "f":
        # The JSON parser turns integers beyond 64 bits into floats, so say both.
        raise InvalidInput(f"{where}: datatype {datatype} needs integers within 64 bits")
    found = {
        "U": "strings",
        "S": "strings",
        "b": "booleans",
        "i": "integers",
        "u": "integers",
        "f": "floating-point numbers",
    }.get(kind, f"values of numpy kind {kind!r}")
    raise InvalidInput(f"{where}: datatype {datatype} does not accept {found}")


def _finite_rows(values: npt.NDArray[Any], model: Model, where: str) -> Rows:
    with np.errstate(over="ignore"):  # values too large for the dtype become inf, refused below
        rows = values.astype(model.input_dtype)
    finite = np.isfinite(rows)
    if finite.all():
        return rows
    nan = np.isnan(rows)
    if model.accepts_missing and not (~finite & ~nan).any():
        return rows
    row, column = (int(i) for i in np.argwhere(~finite)[0])
    if nan[row, column]:
        problem = "NaN (missing value), which this model does not accept"
    else:
        problem = f"{values[row, column].item()!r}, out of range for {rows.dtype} or infinite"
    raise InvalidInput(f"{where}: row {row}, column {column} is {problem}")


def model_outputs(model: Model) -> list[str]:
    if model.has_probabilities:
        return [OUTPUT_PREDICT, OUTPUT_PROBABILITIES]
    return [OUTPUT_PREDICT]


def check_requested_outputs(request: InferenceRequest, model_outputs: list[str]) -> list[str]:
    if request.outputs is None:
        return model_outputs
    names = [output.name for output in request.outputs]
    unknown = [name for name in names if name not in model_outputs]
    if unknown:
        raise InvalidInput(
            f"unknown output {unknown[0]!r}; this model has: {', '.join(model_outputs)}", 400
        )
    return names


def v2_outputs(prediction: Prediction, names: list[str]) -> list[dict[str, Any]]:
    outputs = []
    for name in names:
        array = prediction.values if name == OUTPUT_PREDICT else prediction.probabilities
        assert array is not None  # names were checked against the model's outputs
        outputs.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": v2_datatype(array),
                "data": flat_data(array),
            }
        )
    return outputs


def v2_datatype(array: npt.NDArray[Any]) -> str:
    return _V2_DATATYPES.get(f"{array.dtype.kind}{array.dtype.itemsize}", "BYTES")


def flat_data(array: npt.NDArray[Any]) -> npt.NDArray[Any] | list[Any]:
    return json_array(array.ravel())


def json_array(array: npt.NDArray[Any]) -> npt.NDArray[Any] | list[Any]:
    """An array as orjson can write it: every prediction goes through here to a response.

    orjson writes numeric arrays natively but only C-ordered ones (several scikit-learn
    classifiers return Fortran-ordered probabilities); labels that are strings go as lists.
    """
    if array.dtype.kind in "fiub":
        return np.ascontiguousarray(array)
    labels: list[Any] = np.asarray(array, dtype=str).tolist()
    return labels
