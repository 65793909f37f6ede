"""Open Inference Protocol v2 tensors: the datatypes, their JSON form and their binary form.

A v2 tensor is ``{"name", "datatype", "shape", "data"}``. ``data`` is a flat or nested JSON
list in row-major order, or, with the binary tensor data extension, raw bytes placed after the
JSON header: fixed-size datatypes as little-endian values, BOOL as one byte each, BYTES as a
4-byte little-endian length before each element (Triton's layout, which tritonclient writes and
reads). Everything here is pure: numpy in, numpy out, ``TensorError`` (a 400) for bad input.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coldbrew import errors

__all__ = [
    "DATATYPES",
    "Tensor",
    "TensorError",
    "datatype_of",
    "decode_bytes_elements",
    "encode_bytes_elements",
    "from_binary",
    "from_json",
    "to_binary",
    "to_json",
]

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}
"""v2 datatype name → the numpy dtype its values travel as (little-endian on the wire)."""

_BY_KIND_SIZE = {(dt.kind, dt.itemsize): name for name, dt in DATATYPES.items() if name != "BYTES"}
# Which Python element types each datatype accepts in JSON. Strict on purpose: numpy would turn
# "1.5" or true into numbers, and a silently coerced tensor is a wrong prediction, not an error.
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "BOOL": (bool,),
    "BYTES": (str,),
    **{name: (int,) for name in DATATYPES if name.startswith(("INT", "UINT"))},
    **{name: (int, float) for name in ("FP16", "FP32", "FP64")},
}
_LENGTH = struct.Struct("<I")


class TensorError(errors.ValidationError):
    """A tensor that cannot be decoded: unknown datatype, bad shape, wrong element count or
    type, truncated binary data. Always the caller's mistake (HTTP 400)."""


@dataclass
class Tensor:
    """One named tensor. ``data`` has the tensor's shape; BYTES tensors hold ``bytes`` objects."""

    name: str
    datatype: str
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> list[int]:
        return [int(d) for d in self.data.shape]


def check_datatype(datatype: Any) -> str:
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise TensorError(f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}")
    return datatype


MAX_DIMS = 32
"""numpy's own limit in 1.x; no model input needs more."""
MAX_ELEMENTS = 2**31 - 1
"""Bound on a tensor's element count, and on every dimension (zero-sized dimensions included:
``[0, 2**63]`` holds nothing, yet no array of that shape can be made)."""


def check_shape(shape: Any) -> tuple[int, ...]:
    """A request shape: a list of non-negative ints (no -1: a request tensor is concrete), whose
    element count fits in memory arithmetic (a 400 here, not an overflow in numpy)."""
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise TensorError(f"shape must be a list of non-negative integers, got {_cut(shape)}")
    if len(shape) > MAX_DIMS:
        raise TensorError(f"shape has {len(shape)} dimensions; at most {MAX_DIMS} are allowed")
    if math.prod(d for d in shape if d) > MAX_ELEMENTS:  # non-zero dims: [0, 2**63] too
        raise TensorError(
            f"shape {_cut(shape)} is too large: at most {MAX_ELEMENTS} elements per tensor"
        )
    return tuple(shape)


def _cut(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:110] + "...]"


def datatype_of(array: np.ndarray) -> str:
    """The v2 datatype of a numpy array (object and string arrays are BYTES)."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    name = _BY_KIND_SIZE.get((array.dtype.kind, array.dtype.itemsize))
    if name is None:
        raise TensorError(f"numpy dtype {array.dtype} has no Open Inference Protocol datatype")
    return name


# --- JSON ---------------------------------------------------------------------------------------
def from_json(datatype: str, shape: Any, data: Any) -> np.ndarray:
    """Decode a JSON ``data`` list (flat or nested, row-major) into an array of ``shape``."""
    check_datatype(datatype)
    dims = check_shape(shape)
    if not isinstance(data, list):
        data = [data]  # a scalar for a one-element tensor, as some clients send
    flat = _flatten(data)
    expected = math.prod(dims)
    if len(flat) != expected:
        raise TensorError(f"shape {list(dims)} needs {expected} values, data has {len(flat)}")
    allowed = _JSON_TYPES[datatype]
    # Exact types, not isinstance: bool is an int subclass, and `true` must never read as 1.
    wrong = [v for v in flat if type(v) not in allowed][:1]
    if wrong:
        raise TensorError(
            f"{datatype} data must hold {' or '.join(t.__name__ for t in allowed)} values, "
            f"got {type(wrong[0]).__name__} {str(wrong[0])[:40]!r}"
        )
    if datatype == "BYTES":
        array = np.empty(len(flat), dtype=np.object_)
        array[:] = [v.encode() for v in flat]
        return array.reshape(dims)
    try:
        with np.errstate(over="ignore"):
            return np.array(flat, dtype=DATATYPES[datatype]).reshape(dims)
    except OverflowError as exc:
        raise TensorError(f"a value does not fit in {datatype}: {exc}") from None


def to_json(array: np.ndarray) -> list[Any]:
    """The flat, row-major JSON ``data`` of an array. BYTES elements must be UTF-8 text here;
    arbitrary bytes need the binary extension."""
    if datatype_of(array) != "BYTES":
        return array.ravel().tolist()  # type: ignore[no-any-return]
    out: list[Any] = []
    for value in array.ravel().tolist():
        if isinstance(value, bytes):
            try:
                value = value.decode()
            except UnicodeDecodeError:
                raise TensorError(
                    "a BYTES element is not UTF-8 text; ask for it with binary_data"
                ) from None
        out.append(value if isinstance(value, str) else str(value))
    return out


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


# --- binary -------------------------------------------------------------------------------------
def from_binary(datatype: str, shape: Any, raw: bytes | memoryview) -> np.ndarray:
    """Decode the binary form of a tensor (little-endian; BYTES length-prefixed)."""
    check_datatype(datatype)
    dims = check_shape(shape)
    count = math.prod(dims)
    if datatype == "BYTES":
        elements = decode_bytes_elements(raw)
        if len(elements) != count:
            raise TensorError(
                f"shape {list(dims)} needs {count} BYTES elements, binary data has {len(elements)}"
            )
        array = np.empty(count, dtype=np.object_)
        array[:] = elements
        return array.reshape(dims)
    dtype = DATATYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise TensorError(
            f"{datatype} tensor of shape {list(dims)} needs {count * dtype.itemsize} bytes, "
            f"got {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=np.uint8 if datatype == "BOOL" else dtype)
    if datatype == "BOOL":
        array = array != 0  # any non-zero byte is true, as in Triton
    # frombuffer shares the request's memory and is read-only; a copy lets handlers mutate it.
    return array.reshape(dims).copy()


def to_binary(array: np.ndarray) -> bytes:
    """The binary form of an array, in its own datatype."""
    datatype = datatype_of(array)
    if datatype == "BYTES":
        return encode_bytes_elements(array.ravel().tolist())
    return np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()


def encode_bytes_elements(values: list[Any]) -> bytes:
    """Triton's BYTES layout: each element as a uint32 length then its bytes."""
    parts: list[bytes] = []
    for value in values:
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts.append(_LENGTH.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def decode_bytes_elements(raw: bytes | memoryview) -> list[bytes]:
    view = memoryview(raw)
    elements: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise TensorError("BYTES binary data ends inside an element's length prefix")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise TensorError("BYTES binary data ends inside an element")
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    return elements
