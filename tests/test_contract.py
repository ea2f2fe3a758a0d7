"""The crossgrad.v1 contract: generated code fresh against the .proto files, and the tensor codec."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from crossgrad.v1 import tensor_pb2
from crossgrad.v1.tensors import TensorError, from_tensor, to_tensor

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py")


def test_generated_code_is_fresh(tmp_path):
    """`make proto` regenerates crossgrad.v1; a .proto edited without it fails here."""
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    generate.generate(tmp_path)
    committed_dir = ROOT / "proto" / "crossgrad" / "v1"
    fresh_dir = tmp_path / "crossgrad" / "v1"
    committed = {p.name for pattern in GENERATED for p in committed_dir.glob(pattern)}
    fresh = {p.name for pattern in GENERATED for p in fresh_dir.glob(pattern)}
    assert committed == fresh
    stale = [
        n for n in sorted(fresh) if (fresh_dir / n).read_bytes() != (committed_dir / n).read_bytes()
    ]
    assert not stale, f"stale generated code {stale}: run `make proto`"


@pytest.mark.parametrize(
    "array",
    [
        np.array(2.5),
        np.arange(6.0).reshape(2, 3),
        np.arange(4, dtype=np.float32),
        np.array([3, -1], dtype=np.int64),
        np.array([True, False]),
        np.zeros((0, 3)),
    ],
)
def test_tensors_round_trip_exactly(array):
    t = to_tensor(array)
    back = from_tensor(tensor_pb2.Tensor.FromString(t.SerializeToString()))
    assert back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array)


def test_data_is_little_endian_row_major():
    t = to_tensor(np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert t.data == np.array([1.0, 2.0, 3.0, 4.0], dtype="<f8").tobytes()
    big_endian = np.array([1.0, 2.0], dtype=">f8")
    assert from_tensor(to_tensor(big_endian)).tolist() == [1.0, 2.0]


def test_values_serve_hand_written_json():
    assert from_tensor(tensor_pb2.Tensor(values=[1, 2, 3])).shape == (3,)
    assert from_tensor(tensor_pb2.Tensor(values=[7])).shape == ()
    t = tensor_pb2.Tensor(shape=[2, 2], values=[1, 2, 3, 4], dtype=tensor_pb2.DTYPE_FLOAT32)
    assert from_tensor(t).dtype == np.float32 and from_tensor(t).shape == (2, 2)
    assert from_tensor(tensor_pb2.Tensor(values=[1, 0], dtype=tensor_pb2.DTYPE_INT64)).dtype == np.int64


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (tensor_pb2.Tensor(shape=[3], data=b"\0" * 16), r"16 bytes of data for shape \[3\]"),
        (tensor_pb2.Tensor(shape=[2], values=[1, 2, 3]), r"3 values for shape \[2\]"),
        (tensor_pb2.Tensor(shape=[-1], values=[1]), "negative"),
        (tensor_pb2.Tensor(values=[1], data=b"\0" * 8), "not both"),
        (tensor_pb2.Tensor(values=[1.5], dtype=tensor_pb2.DTYPE_INT64), "whole numbers"),
        (tensor_pb2.Tensor(values=[2], dtype=tensor_pb2.DTYPE_BOOL), "0 or 1"),
        # whole, but past what a double holds exactly: not "must be whole numbers"
        (tensor_pb2.Tensor(values=[1e300], dtype=tensor_pb2.DTYPE_INT64), r"at most 2\*\*53"),
        # finite as sent: not "NaN or infinite values"
        (tensor_pb2.Tensor(values=[1e300], dtype=tensor_pb2.DTYPE_FLOAT32), "too large for float32"),
        (tensor_pb2.Tensor(values=[1], dtype=99), "unknown dtype"),
        (tensor_pb2.Tensor(shape=[1] * 17, values=[1]), "at most 16 dimensions"),
    ],
)
def test_bad_tensors_say_what_is_wrong(tensor, message):
    with pytest.raises(TensorError, match=message):
        from_tensor(tensor)


def test_limits_and_complex_values():
    with pytest.raises(TensorError) as info:
        from_tensor(tensor_pb2.Tensor(shape=[10**12], values=[]), max_elements=100)
    assert info.value.too_large
    with pytest.raises(TensorError) as info:  # a limit too: RESOURCE_EXHAUSTED, as 9 are
        from_tensor(tensor_pb2.Tensor(shape=[1] * 17, values=[1]))
    assert info.value.too_large
    with pytest.raises(TensorError, match="complex"):
        to_tensor(np.array([1 + 2j]))
