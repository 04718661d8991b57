"""The Open Inference Protocol v2's REST bodies, read strictly and written off the event loop.

The rules are kserve/kserve `docs/predict-api/v2/required_api.md` and its binary tensor extension (the extension
as NVIDIA's tritonclient sends it): without an `Inference-Header-Content-Length` header the whole body is the JSON
inference request, whatever its Content-Type (tritonclient.http sends JSON with none, its asyncio client with
`application/octet-stream`); with it, the body is that many bytes of JSON, then each input that has a
`binary_data_size` parameter and no `data`, in order, with nothing left over. kserve 0.21.0's own reader
(`InferRequest.from_bytes`, `DataPlane.decode_inference_request`) raises KeyError, ValueError or struct.error on a
malformed body, which its server answers with a 500 and a traceback; here each is a BadRequest naming the problem.

Answers: `model_version` is left out (the spec marks it optional; this model has no versions); a binary answer is
`application/octet-stream` with the JSON part's length in `Inference-Header-Content-Length`; a JSON answer's numbers
are written in chunks, in a thread, so that health probes are answered while a large answer is encoded.
"""

from __future__ import annotations

import struct

import numpy as np
import orjson
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest, InferResponse
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from pydantic import ValidationError

from acgan.errors import one_line

HEADER_LENGTH = "inference-header-content-length"
QUOTED_CHARS = 60  # user input is quoted in errors and logs up to this many characters
MESSAGE_CHARS = 400  # and no error message, whatever it quotes, is longer than this
JSON_CHUNK = 1 << 16  # numbers encoded at a time: the thread gives up the GIL between chunks
# Bytes per element of the protocol's fixed-size datatypes, and their little-endian numpy types.
NUMPY_TYPES = {"BOOL": "?", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "i1",
               "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}


class BadRequest(InvalidInput):
    """The request is wrong: HTTP 400 with one line naming the problem and the fix."""


def quoted(value) -> str:
    """repr(value) up to QUOTED_CHARS characters, with how long it was when cut."""
    text = repr(value)
    return text if len(text) <= QUOTED_CHARS else f"{text[:QUOTED_CHARS]}... ({len(text):,} characters)"


def bounded(message: str) -> str:
    """One line of at most MESSAGE_CHARS characters."""
    message = one_line(message)
    return message if len(message) <= MESSAGE_CHARS else f"{message[:MESSAGE_CHARS]}..."


def describe_problems(problems: list[dict]) -> str:
    """The first of pydantic's (or FastAPI's) problems with a request body, as one line."""
    first = ([p for p in problems if p.get("type") != "bytes_type"] or problems or [{}])[0]
    if first.get("type") == "json_invalid":
        return f"the body is not valid JSON ({first.get('ctx', {}).get('error', first.get('msg'))})"
    where = ".".join(str(p)[:QUOTED_CHARS] for p in first.get("loc", ()) if p not in ("body", "InferenceRequest"))
    return f"the body is not an inference request: {where or 'the body'}: {first.get('msg', 'invalid')}: send " \
           "{\"inputs\": [...]} as the Open Inference Protocol v2 describes"


def _json_length(header: str, body: bytes) -> int:
    value = header.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise BadRequest(f"Inference-Header-Content-Length {quoted(header)} is not a byte count: give the length "
                         "of the body's JSON part")
    length = int(value)
    if length > len(body):
        raise BadRequest(f"Inference-Header-Content-Length {length} is longer than the body ({len(body)} bytes)")
    return length


def _binary_values(raw: bytes, name: str, datatype) -> list:
    """The elements of one input's binary part."""
    if datatype == "BYTES":  # each element: a 4-byte little-endian length, then that many bytes (UTF-8 here)
        values, at = [], 0
        while at < len(raw):
            if at + 4 > len(raw) or at + 4 + struct.unpack_from("<I", raw, at)[0] > len(raw):
                raise BadRequest(f"input {quoted(name)}: its BYTES data is cut short at byte {at}: each element is "
                                 "a 4-byte little-endian length, then that many bytes")
            size = struct.unpack_from("<I", raw, at)[0]
            try:
                values.append(raw[at + 4:at + 4 + size].decode("utf-8"))
            except UnicodeDecodeError:
                raise BadRequest(f"input {quoted(name)}: element {len(values)} is not UTF-8 text: send the class "
                                 "name as UTF-8") from None
            at += 4 + size
        return values
    if datatype not in NUMPY_TYPES:
        raise BadRequest(f"input {quoted(name)}: datatype {quoted(datatype)} is not one of the protocol's")
    size = np.dtype(NUMPY_TYPES[datatype]).itemsize
    if len(raw) % size:
        raise BadRequest(f"input {quoted(name)}: binary_data_size {len(raw)} is not a multiple of {datatype}'s "
                         f"{size} bytes")
    return np.frombuffer(raw, NUMPY_TYPES[datatype]).tolist()


def parse_request(body: bytes, header_length: str | None, model_name: str) -> InferRequest:
    """The inference request in `body` (JSON, or JSON and binary parts when `header_length` is given)."""
    length = len(body) if header_length is None else _json_length(header_length, body)
    try:
        request = orjson.loads(body[:length])
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"the body is not valid JSON ({e}): send the inference request as JSON (UTF-8)") from None
    binary = []  # (index, size) of the inputs whose data follow the JSON part
    inputs = request.get("inputs") if isinstance(request, dict) else None
    for index, given in enumerate(inputs if isinstance(inputs, list) else []):
        parameters = given.get("parameters") if isinstance(given, dict) else None
        if isinstance(parameters, dict) and "binary_data_size" in parameters and "data" not in given:
            size = parameters["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"input {index}: binary_data_size {quoted(size)} is not a byte count")
            binary.append((index, size))
            given["data"] = []
    try:
        checked = InferenceRequest.model_validate(request)
    except ValidationError as e:
        raise BadRequest(describe_problems(e.errors())) from None
    at = length
    for index, size in binary:
        if at + size > len(body):
            raise BadRequest(f"input {quoted(checked.inputs[index].name)}: binary_data_size {size} runs past the "
                             f"end of the body ({len(body) - at} bytes left)")
        checked.inputs[index].data = _binary_values(body[at:at + size], checked.inputs[index].name,
                                                    checked.inputs[index].datatype)
        at += size
    if at != len(body):
        raise BadRequest(f"the body has {len(body) - at} bytes beyond its JSON part and binary inputs: give each "
                         "binary input's binary_data_size, and Inference-Header-Content-Length the JSON part's")
    return InferRequest.from_inference_request(checked, model_name)


def wants_binary(request: InferRequest) -> bool:
    """Whether the answer's images go in binary: the request's `binary_data_output`, or its output's `binary_data`."""
    for output in request.request_outputs or []:
        if output.binary_data is not None:
            return bool(output.binary_data)
    return bool(request.use_binary_outputs)


def encode_response(response: InferResponse, binary: bool) -> tuple[bytes, dict[str, str]]:
    """The answer's body and headers (a thread's work: at 128 px RGB, 256 images are 12.6 M numbers)."""
    (output,) = response.outputs
    images: np.ndarray = np.ascontiguousarray(output.data)
    out = {"name": output.name, "datatype": output.datatype, "shape": list(images.shape)}
    head = {"id": response.id, "model_name": response.model_name, "outputs": [out],
            "parameters": dict(response.parameters or {})}
    if binary:
        out["parameters"] = {"binary_data_size": images.nbytes}
        text = orjson.dumps(head)
        return text + images.tobytes(), {HEADER_LENGTH: str(len(text)), "content-type": "application/octet-stream"}
    out["data"] = []
    before, after = orjson.dumps(head).split(b'"data":[]', 1)  # user strings are escaped: only the key matches
    flat = images.reshape(-1)
    numbers = b",".join(orjson.dumps(flat[i:i + JSON_CHUNK], option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
                        for i in range(0, flat.size, JSON_CHUNK))
    return b"".join((before, b'"data":[', numbers, b"]", after)), {"content-type": "application/json"}
