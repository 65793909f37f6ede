"""Open Inference Protocol v2 inference requests and responses, with the binary tensor data
extension.

A request body is a JSON header, optionally followed by raw tensor bytes; the
``Inference-Header-Content-Length`` header says where the JSON ends. Each input whose
``parameters.binary_data_size`` is set takes that many bytes from the tail, in input order. A
response is built the same way: outputs asked for in binary (``parameters.binary_data`` on the
output, or ``binary_data_output`` on the request as tritonclient sends by default) are appended
after the JSON and described by their own ``binary_data_size``.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from coldbrew.gateway.oip.tensors import (
    Tensor,
    TensorError,
    check_datatype,
    datatype_of,
    from_binary,
    from_json,
    to_binary,
    to_json,
)

HEADER_LENGTH = "inference-header-content-length"


@dataclass
class RequestedOutput:
    name: str
    binary: bool | None
    """None when the output did not say: the request-wide ``binary_data_output`` decides."""


@dataclass
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None
    """None means every output the model has."""
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def binary_output_default(self) -> bool:
        return self.parameters.get("binary_data_output") is True

    def wants_binary(self, name: str) -> bool:
        for output in self.outputs or []:
            if output.name == name and output.binary is not None:
                return output.binary
        return self.binary_output_default


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo tritonclient's optional request compression, refusing bodies that expand past
    ``limit`` (a small gzip bomb must not exhaust memory)."""
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise TensorError(f"unsupported Content-Encoding {encoding!r} (use gzip or deflate)")
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise TensorError(f"cannot decompress the {encoding} body: {exc}") from None
    if len(out) > limit:
        raise TensorError(f"the decompressed body is larger than {limit} bytes")
    return out


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """Split and decode a request body. Raises ``TensorError`` (400) on anything malformed."""
    json_part, binary = _split(body, header_length)
    try:
        doc = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise TensorError(f"the inference request is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise TensorError("the inference request must be a JSON object")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise TensorError("'id' must be a string")
    parameters = _parameters(doc, "the request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise TensorError("'inputs' must be a non-empty list of tensors")
    inputs, used = [], 0
    for index, raw in enumerate(raw_inputs):
        tensor, size = _input(index, raw, binary, used)
        inputs.append(tensor)
        used += size
    if used != len(binary):
        raise TensorError(
            f"the body has {len(binary)} bytes of binary tensor data, the inputs declare {used}"
        )
    return InferRequest(request_id, inputs, _outputs(doc.get("outputs")), parameters)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    digits = header_length.strip()
    # isascii: str.isdigit() is also true of '²', which int() refuses; and int() refuses more
    # than 4,300 digits.
    if not (digits.isascii() and digits.isdigit() and len(digits) < 20) or int(digits) > len(body):
        raise TensorError(
            f"Inference-Header-Content-Length {header_length!r} is not a length within the "
            f"{len(body)}-byte body"
        )
    cut = int(digits)
    return body[:cut], memoryview(body)[cut:]


def _parameters(doc: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise TensorError(f"'parameters' of {where} must be an object")
    return parameters


def _input(index: int, raw: Any, binary: memoryview, offset: int) -> tuple[Tensor, int]:
    if not isinstance(raw, dict):
        raise TensorError(f"input {index} must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise TensorError(f"input {index} needs a 'name'")
    where = f"input '{name}'"
    parameters = _parameters(raw, where)
    try:
        datatype = check_datatype(raw.get("datatype"))
        size = parameters.get("binary_data_size")
        if size is None:
            if "data" not in raw:
                raise TensorError("it has neither 'data' nor parameters.binary_data_size")
            return Tensor(name, datatype, from_json(datatype, raw.get("shape"), raw["data"])), 0
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise TensorError(f"binary_data_size must be a non-negative integer, got {size!r}")
        if offset + size > len(binary):
            raise TensorError(f"it declares {size} binary bytes but the body ends before them")
        chunk = binary[offset : offset + size]
        return Tensor(name, datatype, from_binary(datatype, raw.get("shape"), chunk)), size
    except TensorError as exc:
        raise TensorError(f"{where}: {exc.message}") from None


def _outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise TensorError("'outputs' must be a list")
    outputs = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise TensorError(f"output {index} must be an object with a 'name'")
        parameters = _parameters(item, f"output '{item['name']}'")
        if parameters.get("classification"):
            raise TensorError("the classification extension is not supported")
        binary = parameters.get("binary_data")
        outputs.append(RequestedOutput(item["name"], binary if isinstance(binary, bool) else None))
    return outputs


def encode_infer_response(
    header: dict[str, Any], outputs: list[Tensor], request: InferRequest
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary data follows it."""
    described, chunks = [], []
    for tensor in outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype or datatype_of(tensor.data),
            "shape": tensor.shape,
        }
        parameters = dict(tensor.parameters)
        if request.wants_binary(tensor.name):
            raw = to_binary(tensor.data)
            parameters["binary_data_size"] = len(raw)
            chunks.append(raw)
        else:
            entry["data"] = to_json(tensor.data)
        if parameters:
            entry["parameters"] = parameters
        described.append(entry)
    head = orjson.dumps({**header, "outputs": described})
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)
