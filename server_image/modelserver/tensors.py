"""Request data -> a checked [rows, features] array, and predictions -> V2 output tensors.

Every rejection names what is wrong (which input, row and column, expected vs got), since
the caller has to fix its request from the message alone.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from modelserver.model import ColumnKind, Features, Model, ModelColumns, model_columns
from modelserver.schemas import InferenceRequest

OUTPUT_PREDICT = "predict"
OUTPUT_PROBABILITIES = "predict_proba"

# The two kinds of bad input, told apart by the metrics (client_error vs rejected):
BAD_REQUEST = 400
"""Not a valid request of the protocol, whatever model is served: broken JSON, a body of
the wrong shape, tensor data that disagree with their own shape or datatype."""
REJECTED = 422
"""A valid request that the served model cannot take: another feature count, a datatype
or value the model does not accept, an output it does not have."""

Rows = npt.NDArray[np.floating]
"""A checked [rows, features] array in the dtype that the model wants."""


@dataclass(frozen=True)
class _Datatype:
    name: str
    kinds: str
    """numpy kinds of the parsed JSON data it accepts: f float, i signed, u unsigned, b bool."""
    low: int | float
    high: int | float
    """The range of values it holds."""


def _integer(name: str, dtype: type[np.integer]) -> _Datatype:
    limits = np.iinfo(dtype)
    return _Datatype(name, "iu", int(limits.min), int(limits.max))


def _floating(name: str, dtype: type[np.floating]) -> _Datatype:
    largest = float(np.finfo(dtype).max)
    return _Datatype(name, "fiu", -largest, largest)


DATATYPES: dict[str, _Datatype] = {
    datatype.name: datatype
    for datatype in (
        _Datatype("BOOL", "b", 0, 1),
        _integer("INT8", np.int8),
        _integer("INT16", np.int16),
        _integer("INT32", np.int32),
        _integer("INT64", np.int64),
        _integer("UINT8", np.uint8),
        _integer("UINT16", np.uint16),
        _integer("UINT32", np.uint32),
        _integer("UINT64", np.uint64),
        _floating("FP16", np.float16),
        _floating("FP32", np.float32),
        _floating("FP64", np.float64),
        # Numbers in JSON, the upper half of a float32 in binary (raw_tensors.py).
        _floating("BF16", np.float32),
    )
}
_UNSUPPORTED_DATATYPES = frozenset({"BYTES"})
"""Datatypes of the protocol that no model of this server takes."""
_V2_DATATYPES = {
    "b1": "BOOL",
    **{f"i{size}": f"INT{size * 8}" for size in (1, 2, 4, 8)},
    **{f"u{size}": f"UINT{size * 8}" for size in (1, 2, 4, 8)},
    **{f"f{size}": f"FP{size * 8}" for size in (2, 4, 8)},
}
CONTENT_TYPE = "content_type"
"""The parameter of MLServer's codecs: how a tensor is meant (np: a numpy array)."""
NUMPY_CONTENT = "np"
STRING_CONTENT = "str"
TABLE_CONTENT = "pd"
"""A request whose inputs are the columns of a table (MLServer's pandas codec)."""


class InvalidInput(Exception):
    """The request cannot be answered as sent; `status_code` says whose fault (see above)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code

    def __reduce__(self) -> tuple[type["InvalidInput"], tuple[str, int]]:
        # Raised in a decoding process too: keep the status code across pickling.
        return InvalidInput, (str(self), self.status_code)


class TensorHeader(Protocol):
    """What a request says of an input tensor besides its data (REST and gRPC alike)."""

    @property
    def name(self) -> str: ...
    @property
    def datatype(self) -> str: ...
    @property
    def shape(self) -> list[int]: ...
    @property
    def parameters(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class ModelInput:
    """What decoding needs to know of the model: small and picklable."""

    n_features: int
    input_dtype: type[np.floating]
    accepts_missing: bool
    outputs: tuple[str, ...]
    columns: ModelColumns | None = None
    """The model's named columns, when it knows them (named-column requests)."""
    frame: bool = False
    """The model predicts a DataFrame of its columns (ModelColumns.frame)."""
    needs_names: bool = False
    """A column holds strings, so one numeric tensor cannot carry the model's input."""

    @classmethod
    def of(cls, model: Model) -> "ModelInput":
        columns = model_columns(model)
        return cls(
            model.n_features,
            model.input_dtype,
            model.accepts_missing,
            tuple(model_outputs(model)),
            columns,
            frame=columns is not None and columns.frame,
            needs_names=columns is not None
            and any(column.kind is ColumnKind.STRING for column in columns.columns),
        )


def takes_columns(
    inputs: Sequence[TensorHeader], request_parameters: dict[str, Any] | None
) -> bool:
    """Whether a request's inputs are the columns of a table, not one tensor of rows:
    several inputs, or content_type pd on the request or its input (decided once per
    request; the one-tensor path stays as it was)."""
    if len(inputs) != 1:
        return True
    if request_parameters and request_parameters.get(CONTENT_TYPE) == TABLE_CONTENT:
        return True
    parameters = inputs[0].parameters
    return parameters is not None and parameters.get(CONTENT_TYPE) == TABLE_CONTENT


def v2_rows(request: InferenceRequest, model: ModelInput) -> Features:
    tensor = request.inputs[0]
    return json_tensor_rows(tensor, tensor.data, model)


def json_tensor_rows(
    tensor: TensorHeader, data: list[Any] | npt.NDArray[Any], model: ModelInput
) -> Features:
    """Rows from a tensor whose data came as values: JSON's, or gRPC's typed contents."""
    where = f"input {tensor.name!r}"
    datatype, shape = _checked_header(tensor, model, where)
    values = as_array(data, where)
    if values.ndim == 1:
        if values.size != math.prod(shape):
            raise InvalidInput(
                f"{where}: shape {shape} needs {math.prod(shape)} values, data has {values.size}",
                BAD_REQUEST,
            )
        values = values.reshape(shape)
    elif list(values.shape) != shape:
        raise InvalidInput(
            f"{where}: nested data has shape {list(values.shape)}, declared shape is {shape}",
            BAD_REQUEST,
        )
    check_kind(values, datatype, where, BAD_REQUEST)
    check_integer_range(values, datatype, where)
    return _model_rows(finite_rows(values, model, where, datatype), model)


def array_rows(tensor: TensorHeader, values: npt.NDArray[Any], model: ModelInput) -> Features:
    """Rows from a tensor whose data came as raw bytes: `values` are of its datatype and in
    its shape already (raw_tensors.tensor_from_raw), so only the model's checks remain."""
    where = f"input {tensor.name!r}"
    datatype, _ = _checked_header(tensor, model, where)
    return _model_rows(finite_rows(values, model, where, datatype), model)


def _model_rows(rows: Rows, model: ModelInput) -> Features:
    """Rows as the model takes them: the array, or for a model fitted on a table of
    numbers that wants one, that table (columns by position)."""
    if not model.frame:
        return rows
    from modelserver.frames import table_of_rows  # pandas: for such models only

    assert model.columns is not None
    return table_of_rows(rows, model.columns)


def _checked_header(
    tensor: TensorHeader, model: ModelInput, where: str
) -> tuple[_Datatype, list[int]]:
    """The tensor's datatype and shape, once they fit the protocol and the model."""
    if tensor.parameters:
        _check_input_content_type(tensor.parameters, where)
    if model.needs_names:
        raise needs_named_columns(model, where)
    datatype = DATATYPES.get(tensor.datatype)
    if datatype is None:
        if tensor.datatype in _UNSUPPORTED_DATATYPES:
            raise InvalidInput(
                f"{where}: datatype {tensor.datatype} is not supported;"
                f" supported: {', '.join(DATATYPES)}",
                REJECTED,
            )
        raise InvalidInput(
            f"{where}: unknown datatype {tensor.datatype!r}; supported: {', '.join(DATATYPES)}",
            BAD_REQUEST,
        )
    shape = tensor.shape
    if any(dimension < 0 for dimension in shape):
        raise InvalidInput(f"{where}: shape {shape} has a negative dimension", BAD_REQUEST)
    if len(shape) != 2 or shape[0] < 1:
        raise InvalidInput(
            f"{where}: shape must be [rows, features] with rows >= 1, got {shape}", REJECTED
        )
    if shape[1] != model.n_features:
        raise InvalidInput(
            f"{where}: the model expects {model.n_features} features per row, got shape {shape}",
            REJECTED,
        )
    return datatype, shape


def _check_input_content_type(parameters: dict[str, Any], where: str) -> None:
    content_type = parameters.get(CONTENT_TYPE)
    if content_type is None or content_type == NUMPY_CONTENT:
        return
    if not isinstance(content_type, str):
        raise InvalidInput(
            f"{where}: parameters.content_type must be a string, got {content_type!r:.40}",
            BAD_REQUEST,
        )
    raise InvalidInput(
        f"{where}: content_type {content_type!r} is not supported: one tensor of rows is"
        f" content_type {NUMPY_CONTENT!r} (or none), a table of one input per column"
        f" {TABLE_CONTENT!r}",
        REJECTED,
    )


def check_request_content_type(parameters: dict[str, Any]) -> None:
    """The request's own content_type (MLServer's codec for the whole request): np, pd or
    none."""
    if parameters.get(CONTENT_TYPE) != TABLE_CONTENT:
        _check_input_content_type(parameters, "request")


def needs_named_columns(model: ModelInput, where: str) -> InvalidInput:
    assert model.columns is not None
    return InvalidInput(
        f"{where}: this model takes named columns, some of them strings, which one tensor"
        f" of numbers cannot carry; send one input per column (content_type"
        f" {TABLE_CONTENT!r}): {', '.join(model.columns.names)}",
        REJECTED,
    )


def v1_rows(instances: list[Any], model: ModelInput) -> Features:
    where = "instances"
    if model.needs_names:
        assert model.columns is not None
        raise InvalidInput(
            f"instances: this model takes named columns, some of them strings, which V1 rows"
            f" of numbers cannot carry; send them to V2 infer, one input per column:"
            f" {', '.join(model.columns.names)}",
            REJECTED,
        )
    if not instances:
        raise InvalidInput("instances: at least one row is needed", REJECTED)
    values = as_array(instances, where)
    if values.ndim != 2:
        raise InvalidInput(
            f"instances: must be a list of rows (lists of {model.n_features} numbers)", REJECTED
        )
    if values.shape[1] != model.n_features:
        raise InvalidInput(
            f"instances: the model expects {model.n_features} features per row,"
            f" got {values.shape[1]}",
            REJECTED,
        )
    # V1 declares no datatype: what the model cannot take is its own refusal.
    check_kind(values, DATATYPES["FP64"], where, REJECTED)
    return _model_rows(finite_rows(values, model, where, None), model)


def as_array(data: list[Any] | npt.NDArray[Any], where: str) -> npt.NDArray[Any]:
    try:
        values = np.asarray(data)
    except (ValueError, TypeError) as error:
        raise InvalidInput(
            f"{where}: ragged data, rows of different lengths ({error})", BAD_REQUEST
        ) from error
    if values.dtype.kind == "O":
        raise InvalidInput(f"{where}: {_describe_odd_value(values)}", BAD_REQUEST)
    return values


def _describe_odd_value(values: npt.NDArray[Any]) -> str:
    """Explain why values did not form a numeric array (the rare, slow path)."""
    for position, value in enumerate(values.flat):
        if value is None:
            return f"null at flat position {position}; send NaN for a missing value"
        if isinstance(value, int) and not isinstance(value, bool):
            if not -(2**63) <= value < 2**64:
                return f"integer {value} at flat position {position} does not fit in 64 bits"
        elif not isinstance(value, float | bool):
            return f"unexpected {type(value).__name__} at flat position {position}"
    return "values of mixed types (integers beyond 63 bits with negative ones?)"


def check_kind(values: npt.NDArray[Any], datatype: _Datatype, where: str, status_code: int) -> None:
    kind = values.dtype.kind
    if kind in datatype.kinds:
        return
    if datatype.kinds == "iu" and kind == "f":
        # Also what integers beyond 64 bits become in the JSON parser.
        fractional = ~_is_integral(values)
        got = _first(values, fractional if fractional.any() else np.ones(values.shape, bool))
        raise InvalidInput(
            f"{where}: datatype {datatype.name} needs integers (JSON integers of at most 64 bits),"
            f" got {got}",
            status_code,
        )
    found = {
        "U": "strings",
        "S": "strings",
        "b": "booleans",
        "i": "integers",
        "u": "integers",
        "f": "floating-point numbers",
    }.get(kind, f"values of numpy kind {kind!r}")
    raise InvalidInput(f"{where}: datatype {datatype.name} does not accept {found}", status_code)


def _is_integral(values: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    with np.errstate(invalid="ignore"):
        return np.asarray(np.isfinite(values) & (values == np.round(values)))


def check_integer_range(values: npt.NDArray[Any], datatype: _Datatype, where: str) -> None:
    if datatype.kinds != "iu" or (values.min() >= datatype.low and values.max() <= datatype.high):
        return
    outside = (values < datatype.low) | (values > datatype.high)
    raise InvalidInput(
        f"{where}: datatype {datatype.name} takes integers from {datatype.low} to"
        f" {datatype.high}, got {_first(values, outside)}",
        BAD_REQUEST,
    )


def _first(values: npt.NDArray[Any], where: npt.NDArray[np.bool_]) -> str:
    """The first value of a [rows, features] array where `where` holds, for a message."""
    row, column = (int(i) for i in np.argwhere(where)[0])
    return f"{values[row, column].item()!r} at row {row}, column {column}"


def finite_rows(
    values: npt.NDArray[Any], model: ModelInput, where: str, declared: _Datatype | None
) -> Rows:
    if values.dtype == np.float64 and model.input_dtype is np.float32:
        # The one narrowing cast: values too large for float32 become inf, refused below.
        with np.errstate(over="ignore"):
            rows = values.astype(np.float32)
    else:
        rows = values.astype(model.input_dtype)
    finite = np.isfinite(rows)
    if np.logical_and.reduce(finite, axis=None):  # ndarray.all() adds a Python layer
        return rows
    nan = np.isnan(rows)
    if model.accepts_missing and not (~finite & ~nan).any():
        return rows
    row, column = (int(i) for i in np.argwhere(~finite)[0])
    value = values[row, column].item()
    if nan[row, column]:
        problem = "NaN (missing value), which this model does not accept"
    elif declared is not None and math.isfinite(value) and abs(value) > declared.high:
        raise InvalidInput(
            f"{where}: row {row}, column {column} is {value!r},"
            f" out of range for its datatype {declared.name}",
            BAD_REQUEST,
        )
    else:
        problem = f"{value!r}, out of range for {rows.dtype} or infinite"
    raise InvalidInput(f"{where}: row {row}, column {column} is {problem}", REJECTED)


def model_outputs(model: Model) -> list[str]:
    if model.has_probabilities:
        return [OUTPUT_PREDICT, OUTPUT_PROBABILITIES]
    return [OUTPUT_PREDICT]


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
