"""Tensors as raw bytes <-> numpy arrays, in the layout of the Open Inference Protocol.

The layout is the one of the REST binary tensor data extension and of gRPC's
`raw_input_contents` / `raw_output_contents` alike: little-endian, row-major, no padding;
BOOL one byte (0 or 1) per element; BYTES each element as a 4-byte little-endian length
followed by that many bytes. So one decoder serves both protocols.
"""

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from modelserver.tensors import BAD_REQUEST, InvalidInput

BYTES = "BYTES"
BF16 = "BF16"
_FIXED_SIZE: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in (
        ("BOOL", "u1"),  # checked to be 0 or 1, then viewed as bool
        ("INT8", "<i1"),
        ("INT16", "<i2"),
        ("INT32", "<i4"),
        ("INT64", "<i8"),
        ("UINT8", "<u1"),
        ("UINT16", "<u2"),
        ("UINT32", "<u4"),
        ("UINT64", "<u8"),
        ("FP16", "<f2"),
        ("FP32", "<f4"),
        ("FP64", "<f8"),
        (BF16, "<u2"),  # the upper half of a float32; numpy has no bfloat16
    )
}
RAW_DATATYPES = (*_FIXED_SIZE, BYTES)
"""Every datatype of the protocol, all of which have a raw form."""
_LENGTH = struct.Struct("<I")


def tensor_from_raw(
    raw: bytes | memoryview, datatype: str, shape: Sequence[int], where: str
) -> npt.NDArray[Any]:
    """The tensor that `raw` holds, in `shape`; 400 when the bytes do not fit the two.

    Numeric tensors come back in their datatype (BF16 as float32), BOOL as bool, BYTES as
    an object array of bytes. `where` names the tensor in messages ("input 'x'").
    """
    if any(dimension < 0 for dimension in shape):
        raise InvalidInput(f"{where}: shape {list(shape)} has a negative dimension", BAD_REQUEST)
    count = math.prod(shape)
    if datatype == BYTES:
        return _bytes_elements(raw, count, where).reshape(shape)
    dtype = _FIXED_SIZE.get(datatype)
    if dtype is None:
        raise InvalidInput(
            f"{where}: unknown datatype {datatype!r}; supported: {', '.join(RAW_DATATYPES)}",
            BAD_REQUEST,
        )
    needed = count * dtype.itemsize
    if len(raw) != needed:
        raise InvalidInput(
            f"{where}: binary data of {len(raw)} bytes does not fit shape {list(shape)}"
            f" of {datatype}, which takes {needed} bytes ({count} x {dtype.itemsize})",
            BAD_REQUEST,
        )
    values: npt.NDArray[Any] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if datatype == "BOOL":
        if count and values.max() > 1:
            position = int(np.argmax(values.ravel() > 1))
            raise InvalidInput(
                f"{where}: a BOOL element is one byte, 0 or 1; byte {position} is"
                f" {int(values.flat[position])}",
                BAD_REQUEST,
            )
        return values.view(np.bool_)
    if datatype == BF16:
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values


def _bytes_elements(raw: bytes | memoryview, count: int, where: str) -> npt.NDArray[np.object_]:
    view = memoryview(raw)
    elements: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + _LENGTH.size > len(view):
            raise InvalidInput(
                f"{where}: BYTES element {len(elements)} is cut off: its 4-byte length"
                f" starts at byte {offset} of {len(view)}",
                BAD_REQUEST,
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if offset + length > len(view):
            raise InvalidInput(
                f"{where}: BYTES element {len(elements)} says {length} bytes, but only"
                f" {len(view) - offset} remain of the tensor's binary data",
                BAD_REQUEST,
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
        if len(elements) > count:
            break
    if len(elements) != count:
        got = f"more than {count}" if len(elements) > count else str(len(elements))
        raise InvalidInput(
            f"{where}: its shape needs {count} BYTES elements, the binary data holds {got}",
            BAD_REQUEST,
        )
    array = np.empty(count, dtype=object)
    array[:] = elements
    return array


def raw_from_tensor(array: npt.NDArray[Any]) -> bytes:
    """The raw bytes of an array (the datatype is v2_datatype's): strings and other
    non-numeric values go as BYTES elements of their UTF-8 text."""
    if array.dtype.kind in "biuf":
        little_endian = array.dtype.newbyteorder("<")
        return np.ascontiguousarray(array, dtype=little_endian).tobytes()
    parts = []
    for value in array.ravel().tolist():
        encoded = value if isinstance(value, bytes) else str(value).encode()
        parts.append(_LENGTH.pack(len(encoded)))
        parts.append(encoded)
    return b"".join(parts)
