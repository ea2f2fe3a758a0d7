"""The contract's tensor encoding, shared by clients and server: numpy arrays <-> crossgrad.v1.Tensor.

A tensor travels as its shape, dtype and entries as little-endian row-major bytes (`data`), or as
`values` (numbers, for hand-written JSON). Decoding checks everything a peer can get wrong and says
what, so a bad tensor is a clear error and never a silently reshaped or truncated array.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from crossgrad.v1 import tensor_pb2

# dtype enum -> (numpy dtype name, little-endian wire dtype)
DTYPES: dict[int, tuple[str, str]] = {
    tensor_pb2.DTYPE_FLOAT64: ("float64", "<f8"),
    tensor_pb2.DTYPE_FLOAT32: ("float32", "<f4"),
    tensor_pb2.DTYPE_INT64: ("int64", "<i8"),
    tensor_pb2.DTYPE_BOOL: ("bool", "|b1"),
}
ENUM_OF = {name: enum for enum, (name, _) in DTYPES.items()}
# the dtypes sent as they are (native byte order; big-endian arrays are converted)
_ENUM_OF_DTYPE = {np.dtype(name): enum for enum, (name, _) in DTYPES.items()}
MAX_NDIM = 16
MAX_EMPTY_SPAN = 2**40  # see from_tensor


class TensorError(ValueError):
    """A tensor that cannot be decoded; `too_large` when it is over the element limit."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def tensor_fields(array: npt.ArrayLike) -> dict[str, Any]:
    """An array's Tensor fields (float64, float32, int64 or bool; other numbers become float64),
    for building a message that holds tensors in one constructor call."""
    a = np.asarray(array)
    enum = _ENUM_OF_DTYPE.get(a.dtype)
    if enum is None:
        if a.dtype.kind == "c":
            raise TensorError("complex values cannot be sent: the verifier works on real numbers")
        enum = ENUM_OF["int64" if a.dtype.kind in "iu" else "float64"]
    data = a.astype(DTYPES[enum][1], order="C", copy=False).tobytes()
    return {"shape": a.shape, "dtype": enum, "data": data}


def to_tensor(array: npt.ArrayLike) -> tensor_pb2.Tensor:
    """Encode an array as a Tensor (see tensor_fields)."""
    return tensor_pb2.Tensor(**tensor_fields(array))


def from_tensor(
    t: tensor_pb2.Tensor, default_dtype: str = "float64", max_elements: int | None = None
) -> np.ndarray:
    """Decode a tensor (DTYPE_UNSPECIFIED means default_dtype). The result is a read-only view of
    the message's bytes in native byte order."""
    if t.dtype not in DTYPES and t.dtype != tensor_pb2.DTYPE_UNSPECIFIED:
        raise TensorError(f"unknown dtype {t.dtype}; use DTYPE_FLOAT64, FLOAT32, INT64 or BOOL")
    name = DTYPES[t.dtype][0] if t.dtype in DTYPES else default_dtype
    wire = np.dtype(DTYPES[ENUM_OF[name]][1])
    if t.data and t.values:
        raise TensorError("give the entries as data or as values, not both")
    count = len(t.values) if t.values else len(t.data) // wire.itemsize
    shape = tuple(t.shape) if t.shape else (() if count == 1 else (count,))
    if len(shape) > MAX_NDIM:
        # a limit, as the language's 8 for inputs is (9 dimensions were RESOURCE_EXHAUSTED, 17
        # INVALID_ARGUMENT)
        raise TensorError(
            f"{len(shape)} dimensions; a tensor has at most {MAX_NDIM} dimensions", too_large=True
        )
    if any(d < 0 for d in shape):
        raise TensorError(f"shape {list(shape)} has a negative dimension")
    size = math.prod(shape)
    if max_elements is not None and size > max_elements:
        raise TensorError(f"{size} elements; the limit is {max_elements}", too_large=True)
    # [0, 2**62, 2**62] has no entries, but numpy cannot shape an array whose other dimensions
    # span more than it can address: an empty tensor's dimensions stay within the limit too
    span = math.prod(d for d in shape if d)
    if size == 0 and span > (max_elements or MAX_EMPTY_SPAN):
        raise TensorError(
            f"shape {list(shape)} has no entries, but its other dimensions span {span}; the "
            f"limit is {max_elements or MAX_EMPTY_SPAN}",
            too_large=True,
        )
    if t.values:
        if len(t.values) != size:
            raise TensorError(f"{len(t.values)} values for shape {list(shape)} ({size} entries)")
        values = np.asarray(t.values, dtype=np.float64)
        if name == "bool" and not np.all((values == 0) | (values == 1)):
            raise TensorError("bool values must be 0 or 1")
        if name == "int64":
            if not np.all(values == np.round(values)):
                raise TensorError("int64 values must be whole numbers")
            if not np.all(np.abs(values) <= 2**53):  # beyond, a double is not every integer
                raise TensorError(
                    "int64 values are at most 2**53 in magnitude as values (doubles); send "
                    "larger ones as data"
                )
        with np.errstate(over="ignore"):
            array = values.astype(name).reshape(shape)
        if name == "float32" and not np.all(np.isfinite(array.ravel()) | ~np.isfinite(values)):
            raise TensorError(
                f"values too large for float32 (its largest is {np.finfo(np.float32).max:.4g})"
            )
        return array
    if len(t.data) != size * wire.itemsize:
        raise TensorError(
            f"{len(t.data)} bytes of data for shape {list(shape)} of {name} "
            f"({size} entries of {wire.itemsize} bytes)"
        )
    array = np.frombuffer(t.data, dtype=wire).reshape(shape)
    if name == "bool" and np.any(np.frombuffer(t.data, np.uint8) > 1):
        raise TensorError("bool data must be bytes 0 or 1")
    return array.astype(name, copy=False)
