"""The v2 tensor codec and request framing, without a server: every datatype through JSON and
binary, checked against tritonclient's own encoder and decoder."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from coldbrew.gateway.oip import tensors
from coldbrew.gateway.oip.model import outputs_from_result, rows_from_inputs
from coldbrew.gateway.oip.protocol import (
    decompress,
    encode_infer_response,
    parse_infer_request,
)
from coldbrew.gateway.oip.tensors import Tensor, TensorError

NUMERIC = [name for name in tensors.DATATYPES if name != "BYTES"]


def arrays(datatype: str) -> st.SearchStrategy[np.ndarray]:
    shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4)
    if datatype == "BYTES":
        return hnp.arrays(np.object_, shapes, elements=st.binary(max_size=12))
    dtype = tensors.DATATYPES[datatype]
    elements = None
    if dtype.kind == "f":
        elements = hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False)
    return hnp.arrays(dtype, shapes, elements=elements)


@pytest.mark.parametrize("datatype", list(tensors.DATATYPES))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_binary_round_trip_matches_tritonclient(datatype: str, data: st.DataObject) -> None:
    array = data.draw(arrays(datatype))
    raw = tensors.to_binary(array)
    if datatype == "BYTES":
        theirs = serialize_byte_tensor(array)  # a 0-d object array holding the bytes
        assert raw == (theirs.item() if theirs.size else b"")
    else:
        assert raw == array.astype(tensors.DATATYPES[datatype]).tobytes()
    back = tensors.from_binary(datatype, list(array.shape), raw)
    assert back.shape == array.shape
    assert tensors.datatype_of(back) == datatype
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("datatype", NUMERIC)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_json_round_trip_flat_and_nested(datatype: str, data: st.DataObject) -> None:
    array = data.draw(arrays(datatype))
    flat = tensors.to_json(array)
    assert flat == array.ravel().tolist()
    for form in (flat, array.tolist()):
        back = tensors.from_json(datatype, list(array.shape), form)
        assert back.dtype == tensors.DATATYPES[datatype]
        np.testing.assert_array_equal(back, array)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(max_size=8), max_size=6))
def test_bytes_json_is_utf8_text(values: list[str]) -> None:
    array = tensors.from_json("BYTES", [len(values)], values)
    assert array.tolist() == [v.encode() for v in values]
    assert tensors.to_json(array) == values
    assert deserialize_bytes_tensor(tensors.to_binary(array)).tolist() == array.tolist()


@pytest.mark.parametrize(
    ("datatype", "data", "problem"),
    [
        ("INT32", [1, 2.5], "int values"),
        ("INT64", [True, 1], "got bool"),
        ("FP32", ["1.5", 2.0], "got str"),
        ("BOOL", [1, 0], "bool values"),
        ("BYTES", [1, 2], "str values"),
        ("UINT8", [300, 1], "does not fit in UINT8"),
        ("INT8", [-129, 1], "does not fit in INT8"),
        ("FP64", [1.0], "needs 2 values"),
        ("FP128", [1.0, 2.0], "unknown datatype"),
    ],
)
def test_bad_json_data_is_a_clear_400(datatype: str, data: list[object], problem: str) -> None:
    with pytest.raises(TensorError, match=problem):
        tensors.from_json(datatype, [2], data)


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "problem"),
    [
        ("FP32", [2], b"\x00" * 7, "needs 8 bytes"),
        ("INT64", [-1], b"", "non-negative"),
        ("BYTES", [1], b"\x05\x00\x00\x00ab", "ends inside an element"),
        ("BYTES", [2], b"\x01\x00\x00\x00a", "needs 2 BYTES elements"),
        ("BYTES", [1], b"\x01\x00", "length prefix"),
    ],
)
def test_bad_binary_data_is_a_clear_400(
    datatype: str, shape: list[int], raw: bytes, problem: str
) -> None:
    with pytest.raises(TensorError, match=problem):
        tensors.from_binary(datatype, shape, raw)


def test_bool_binary_reads_any_nonzero_byte_as_true() -> None:
    assert tensors.from_binary("BOOL", [3], b"\x00\x01\x07").tolist() == [False, True, True]


def test_fp16_is_little_endian_half_precision() -> None:
    raw = tensors.to_binary(np.array([1.0, -2.5], dtype=np.float16))
    assert raw == struct.pack("<ee", 1.0, -2.5)


def test_tritonclient_request_parses() -> None:
    """A request exactly as tritonclient builds it in its default binary mode."""
    features = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    names = np.array([b"a", "\u00e9".encode()], dtype=np.object_)
    first = triton.InferInput("input-0", list(features.shape), "FP32")
    first.set_data_from_numpy(features)  # binary by default
    second = triton.InferInput("tags", [2], "BYTES")
    second.set_data_from_numpy(names, binary_data=False)
    body, json_size = triton.InferenceServerClient.generate_request_body(
        [first, second], request_id="req-7"
    )
    request = parse_infer_request(body, str(json_size))
    assert request.id == "req-7"
    assert request.binary_output_default  # no outputs named: tritonclient wants binary back
    np.testing.assert_array_equal(request.inputs[0].data, features)
    assert request.inputs[1].data.tolist() == names.tolist()


def test_binary_response_decodes_with_tritonclient() -> None:
    request = parse_infer_request(
        json.dumps(
            {
                "inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1.0]}],
                "outputs": [
                    {"name": "labels", "parameters": {"binary_data": True}},
                    {"name": "scores"},
                ],
            }
        ).encode(),
        None,
    )
    labels = np.array([b"setosa", b"virginica"], dtype=np.object_)
    scores = np.array([[0.9, 0.1], [0.2, 0.8]])
    body, header_length = encode_infer_response(
        {"model_name": "m", "model_version": "1", "id": "r"},
        [Tensor("labels", "BYTES", labels), Tensor("scores", "FP64", scores)],
        request,
    )
    assert header_length is not None
    result = triton.InferResult.from_response_body(body, header_length=header_length)
    assert result.as_numpy("labels").tolist() == labels.tolist()
    np.testing.assert_array_equal(result.as_numpy("scores"), scores)
    assert result.get_response()["id"] == "r"
    assert "data" in result.get_output("scores")  # not asked for in binary


_BINARY_HEAD = (
    b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], '
    b'"parameters": {"binary_data_size": 4}}]}'
)


@pytest.mark.parametrize(
    ("body", "header", "problem"),
    [
        (b"[]", None, "JSON object"),
        (b'{"inputs": []}', None, "non-empty list"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}', None, "neither"),
        (b"{}", "99", "not a length"),
        (_BINARY_HEAD + b"\x00\x00\x80?extra", str(len(_BINARY_HEAD)), "binary tensor data"),
        (_BINARY_HEAD + b"\x00\x00", str(len(_BINARY_HEAD)), "body ends before them"),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],'
            b' "outputs": [{"name": "p", "parameters": {"classification": 2}}]}',
            None,
            "classification",
        ),
    ],
)
def test_malformed_requests(body: bytes, header: str | None, problem: str) -> None:
    with pytest.raises(TensorError, match=problem):
        parse_infer_request(body, header)


def test_compressed_requests_are_bounded() -> None:
    raw = b'{"inputs": []}'
    assert decompress(gzip.compress(raw), "gzip", 100) == raw
    assert decompress(zlib.compress(raw), "deflate", 100) == raw
    with pytest.raises(TensorError, match="larger than"):
        decompress(gzip.compress(b"0" * 10_000), "gzip", 100)
    with pytest.raises(TensorError, match="unsupported"):
        decompress(raw, "br", 100)


def test_inputs_become_rows() -> None:
    matrix = Tensor("x", "INT32", np.arange(6, dtype=np.int32).reshape(2, 3))
    assert rows_from_inputs([matrix]).tolist() == [[0, 1, 2], [3, 4, 5]]
    one_row = Tensor("x", "FP32", np.array([1, 2], dtype=np.float32))
    assert rows_from_inputs([one_row]).tolist() == [[1.0, 2.0]]
    columns = [
        Tensor("a", "FP64", np.array([1.0, 2.0])),
        Tensor("b", "BOOL", np.array([[True], [False]])),
    ]
    assert rows_from_inputs(columns).tolist() == [[1.0, 1.0], [2.0, 0.0]]
    with pytest.raises(TensorError, match="same number of rows"):
        rows_from_inputs([columns[0], Tensor("c", "FP64", np.zeros(3))])
    with pytest.raises(TensorError, match="BYTES"):
        rows_from_inputs([Tensor("s", "BYTES", np.array([b"x"], dtype=object))])
    with pytest.raises(TensorError, match="shape"):
        rows_from_inputs([Tensor("c", "FP64", np.zeros((1, 2, 3)))])


@pytest.mark.parametrize(
    ("predictions", "datatype"),
    [([0, 2], "INT64"), ([0.5, 1.0], "FP64"), (["a", "b"], "BYTES"), ([True, False], "BOOL")],
)
def test_prediction_datatypes(predictions: list[object], datatype: str) -> None:
    out = outputs_from_result(
        {"predictions": predictions, "probabilities": [[1, 0], [0, 1]], "classes": ["a", "b"]}
    )
    assert [(t.name, t.datatype, t.shape) for t in out] == [
        ("predictions", datatype, [2]),
        ("probabilities", "FP64", [2, 2]),
        ("classes", "BYTES", [2]),
    ]
