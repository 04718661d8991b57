"""`acgan serve` as clients nobody here wrote use it: NVIDIA's tritonclient (HTTP, sync and asyncio, JSON and
binary tensors) and KServe's own `InferenceRESTClient`, then raw bytes for what no client sends on purpose: every
malformed request of issue 37 a 4xx {"error": ...} with no traceback, clients that hang up, slow and idle
connections. The protocol: kserve/kserve docs/predict-api/v2/required_api.md."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import socket
import struct
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

from acgan.checkpoint import load_checkpoint
from acgan.layout import GENERATOR_FILE, META_FILE
from acgan.sampling import generator_from_files
from acgan.serving.batching import draw
from acgan.serving.protocol import MESSAGE_CHARS
from acgan.store import LocalStore
from tests.serving.conftest import STEPS, acgan_serve

MODEL = "acgan-ensemble"
INFER = f"/v2/models/{MODEL}/infer"
TIMEOUT_S = 2  # the server's --request-timeout-s here
IDLE_S = 3  # and its --idle-timeout-s


@pytest.fixture(scope="module")
def served(ensemble_template, tmp_path_factory):
    log = tmp_path_factory.mktemp("clients") / "serve.log"
    with acgan_serve(str(ensemble_template), log, "--max-images", "64", "--request-timeout-s", str(TIMEOUT_S),
                     "--idle-timeout-s", str(IDLE_S)) as (url, proc):
        with httpx.Client(base_url=url, timeout=120) as client:
            yield {"url": url, "port": int(url.rsplit(":", 1)[1]), "client": client, "log": log,
                   "store": LocalStore(ensemble_template)}


def expected(store: LocalStore, cls: int, n: int, seed: int) -> np.ndarray:
    """What the library draws for class `cls` (4 classes a split), as the protocol's (n, H, W, C)."""
    G = generator_from_files(load_checkpoint(store, cls // 4, STEPS, [GENERATOR_FILE, META_FILE]))[0]
    return draw(G, [(cls % 4, n, seed)], 16).transpose(0, 2, 3, 1)


def triton_inputs(cls, n: int, seed: int, binary: bool) -> list:
    by_name = isinstance(cls, str)
    values = [("class", "BYTES" if by_name else "INT64", np.array([cls], dtype=object if by_name else np.int64)),
              ("n", "INT64", np.array([n], dtype=np.int64)), ("seed", "INT64", np.array([seed], dtype=np.int64))]
    inputs = []
    for name, datatype, value in values:
        inputs.append(triton.InferInput(name, [1], datatype))
        inputs[-1].set_data_from_numpy(value, binary_data=binary)
    return inputs


@pytest.mark.parametrize("binary", [False, True], ids=["JSON", "binary"])
def test_tritonclient_sync_and_asyncio(served, binary):
    """tritonclient.http sends its JSON with no Content-Type, its asyncio client with application/octet-stream,
    and neither an Inference-Header-Content-Length: by the protocol that body is JSON (it was a 400)."""
    want = expected(served["store"], 6, 5, 11)
    assert want.std() > 5  # images that differ: the equalities below mean something
    outputs = [triton.InferRequestedOutput("images", binary_data=binary)]
    client = triton.InferenceServerClient(f"127.0.0.1:{served['port']}")
    try:
        for cls in (6, "6"):
            answer = client.infer(MODEL, triton_inputs(cls, 5, 11, binary), outputs=outputs, request_id="r1")
            assert np.array_equal(answer.as_numpy("images"), want), cls
            result = answer.get_response()
            assert result["id"] == "r1" and "model_version" not in result  # optional, and this model has none
            assert result["parameters"] == {"class": 6, "class_name": "6", "split": 1, "step": STEPS, "seed": 11}
        meta = client.get_model_metadata(MODEL)
        assert "versions" not in meta and meta["parameters"]["input_datatypes"]["class"] == ["INT64", "BYTES"]
        assert client.is_model_ready(MODEL) and client.is_server_ready()
    finally:
        client.close()

    async def asyncio_client():
        async with triton_aio.InferenceServerClient(f"127.0.0.1:{served['port']}") as aio:
            return [(await aio.infer(MODEL, triton_inputs(c, 5, 11, binary), outputs=outputs)).as_numpy("images")
                    for c in (6, "6")]

    for images in asyncio.run(asyncio_client()):
        assert np.array_equal(images, want)


@pytest.mark.parametrize("binary", [False, True], ids=["JSON", "binary"])
def test_kserve_inference_rest_client(served, binary):
    want = expected(served["store"], 2, 3, 7)

    async def ask():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=120))
        try:
            inputs = [InferInput(name, [1], "INT64") for name in ("class", "n", "seed")]
            for given, value in zip(inputs, (2, 3, 7)):
                given.set_data_from_numpy(np.array([value], dtype=np.int64), binary_data=binary)
            request = InferRequest(MODEL, inputs, request_outputs=[RequestedOutput("images", {"binary_data": binary})])
            headers: dict = {}
            answer = await client.infer(served["url"], request, model_name=MODEL, response_headers=headers)
            return answer, headers
        finally:
            await client.close()

    answer, headers = asyncio.run(ask())
    assert np.array_equal(answer.outputs[0].as_numpy().reshape(want.shape), want)
    assert headers["content-type"] == ("application/octet-stream" if binary else "application/json")


def binary_body(inputs: list[tuple[dict, bytes]]) -> tuple[bytes, dict]:
    """The binary extension: the JSON part, then each input's bytes; its length in the header."""
    head = json.dumps({"inputs": [i for i, _ in inputs]}).encode()
    return head + b"".join(raw for _, raw in inputs), {"Inference-Header-Content-Length": str(len(head)),
                                                       "Content-Type": "application/octet-stream"}


def part(name: str, datatype: str, raw: bytes, shape=(1,), size: int | None = None) -> tuple[dict, bytes]:
    return ({"name": name, "shape": list(shape), "datatype": datatype,
             "parameters": {"binary_data_size": len(raw) if size is None else size}}, raw)


def int64(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}q", *values)


def text(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


JSON = {"Content-Type": "application/json"}


def json_body(cls, datatype="BYTES") -> bytes:
    return json.dumps({"inputs": [{"name": "class", "shape": [1], "datatype": datatype, "data": [cls]},
                                  {"name": "n", "shape": [1], "datatype": "INT64", "data": [1]}]}).encode()


N1 = part("n", "INT64", int64(1))
MALFORMED = [  # (id, method, path, body and headers, status, what the error says)
    ("superscript two", "POST", INFER, (json_body("²"), JSON), 400, "no class named '²'"),
    ("arabic-indic three", "POST", INFER, (json_body("٣"), JSON), 400, "no class named '٣'"),
    ("5000 digits", "POST", INFER, (json_body("1" * 5000), JSON), 400,
     "is out of range: the ensemble has classes 0..9"),
    ("a 1 MB class name", "POST", INFER, (json_body("x" * 1_000_000), JSON), 400, "(1,000,002 characters)"),
    ("size not a multiple", "POST", INFER, binary_body([part("class", "INT64", int64(0)[:7]), N1]), 400,
     "binary_data_size 7 is not a multiple of INT64's 8 bytes"),
    ("invalid UTF-8 BYTES", "POST", INFER, binary_body([part("class", "BYTES", text(b"\xff\xfe")), N1]), 400,
     "element 0 is not UTF-8 text"),
    ("header abc", "POST", INFER, (json_body(0, "INT64"), {"Inference-Header-Content-Length": "abc"}), 400,
     "Inference-Header-Content-Length 'abc' is not a byte count"),
    ("two values for shape [1]", "POST", INFER, binary_body([part("class", "INT64", int64(0)),
                                                             part("n", "INT64", int64(1, 2))]), 400,
     "input 'n' has shape [1] and 2 value(s)"),
    ("no inputs", "POST", INFER, (b'{"outputs":[]}' + int64(0), {"Inference-Header-Content-Length": "14"}), 400,
     "inputs: Field required"),
    ("no shape", "POST", INFER, binary_body([({"name": "class", "datatype": "INT64",
                                                "parameters": {"binary_data_size": 8}}, int64(0)), N1]), 400,
     "inputs.0.shape: Field required"),
    ("bad BYTES length", "POST", INFER, binary_body([part("class", "BYTES", struct.pack("<I", 16) + b"ab"), N1]),
     400, "BYTES data is cut short at byte 0"),
    ("size beyond the body", "POST", INFER, binary_body([part("class", "INT64", int64(0)), part("n", "INT64", int64(1),
                                                                                                size=16)]),
     400, "binary_data_size 16 runs past the end of the body (8 bytes left)"),
    ("bytes left over", "POST", INFER, (lambda b, h: (b + b"\0", h))(*binary_body([part("class", "INT64", int64(0)),
                                                                                    N1])),
     400, "the body has 1 bytes beyond its JSON part"),
    ("header beyond the body", "POST", INFER, (b"{}", {"Inference-Header-Content-Length": "99"}), 400,
     "Inference-Header-Content-Length 99 is longer than the body (2 bytes)"),
    ("invalid UTF-8 JSON", "POST", INFER, (json_body("seven").replace(b"seven", b"sev\xffen"), JSON), 400,
     "the body is not valid JSON"),
    ("unknown path", "GET", "/v2/nothing", (b"", {}), 404, "Not Found"),
    ("GET on infer", "GET", INFER, (b"", {}), 405, "Method Not Allowed"),
    ("a version", "POST", f"/v2/models/{MODEL}/versions/1/infer", (json_body(0, "INT64"), JSON), 404,
     f"model 'acgan-ensemble' has no versions to choose from (asked for '1'): use /v2/models/{MODEL}/infer"),
    ("a version's metadata", "GET", f"/v2/models/{MODEL}/versions/1", (b"", {}), 404, "has no versions"),
]


@pytest.mark.parametrize("method, path, sent, status, message", [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_every_malformed_request_is_a_4xx_error_in_one_line(served, method, path, sent, status, message):
    client = served["client"]
    body, headers = sent
    logged = len(served["log"].read_text())
    answer = client.request(method, path, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert list(answer.json()) == ["error"], answer.text  # the protocol's error object
    error = answer.json()["error"]
    assert message in error and "\n" not in error and len(error) <= MESSAGE_CHARS + 3, error
    assert client.post(INFER, content=json_body(3, "INT64"), headers=JSON).status_code == 200  # the next is served
    log = served["log"].read_text()[logged:]  # what this request logged
    assert "Traceback" not in log and max(map(len, log.splitlines())) < 2 * MESSAGE_CHARS, log[-3000:]


def test_json_without_content_type_or_as_octet_stream_is_json(served):
    body = json_body(3, "INT64")
    for headers in ({}, {"Content-Type": "application/octet-stream"}, {"Content-Type": "text/plain"}):
        answer = served["client"].post(INFER, content=body, headers=headers)
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json", answer.text


def images_drawn(client) -> float:
    """The images the server has drawn so far, by its own /metrics."""
    return float(re.search(r"^acgan_serve_batch_images_sum (\S+)$", client.get("/metrics").text, re.M).group(1))


def test_requests_whose_clients_hung_up_are_not_drawn(served):
    """40 clients each ask for 64 images and hang up once the server has read their requests: the server draws few
    of them (one batch may have started), and a request behind them is answered in a fraction of the time all of
    them would take. (A client that closes at once is gone before its body is read, and no server draws that.)"""
    client, n, hung_up = served["client"], 64, 40
    body = json.dumps({"inputs": [{"name": "class", "shape": [1], "datatype": "INT64", "data": [0]},
                                  {"name": "n", "shape": [1], "datatype": "INT64", "data": [n]}]}).encode()
    assert client.post(INFER, content=body, headers=JSON).status_code == 200
    before = images_drawn(client)
    raw = (f"POST {INFER} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    connections = [socket.create_connection(("127.0.0.1", served["port"])) for _ in range(hung_up)]
    for c in connections:
        c.sendall(raw)
    # The event loop answers this after it has read the requests sent before it (each body is read in its
    # request's first step): they are queued, or being drawn, when their clients hang up.
    assert client.get("/v2/health/live", headers={"Connection": "close"}).status_code == 200
    for c in connections:
        c.close()
    started = time.perf_counter()
    assert client.post(INFER, content=json_body(0, "INT64"), headers=JSON).status_code == 200
    behind = time.perf_counter() - started
    drawn = images_drawn(client) - before - 1
    assert drawn <= hung_up * n / 4, drawn
    # What all of them take when their clients wait, measured now: beside the suite's other process, the machine's
    # load changes within seconds (against one request timed before, a load that came between failed it).
    with concurrent.futures.ThreadPoolExecutor(hung_up) as pool:
        started = time.perf_counter()
        answers = list(pool.map(lambda _: client.post(INFER, content=body, headers=JSON), range(hung_up)))
        all_of_them = time.perf_counter() - started
    assert {answer.status_code for answer in answers} == {200}
    assert behind < all_of_them / 4, (behind, all_of_them)


def closed_at(connection: socket.socket) -> tuple[float, bytes]:
    """(time.monotonic() when the server closed the connection, what it sent before)."""
    connection.settimeout(15)
    got = b""
    while chunk := connection.recv(65536):
        got += chunk
    return time.monotonic(), got


def test_slow_and_idle_connections_are_closed(served):
    """A connection that sends nothing, or half its headers, is closed after --request-timeout-s; a half-sent
    body is answered 408; an idle keep-alive connection is closed after --idle-timeout-s (uvicorn's keep-alive)."""
    address = ("127.0.0.1", served["port"])
    silent, half, slow_body, idle = (socket.create_connection(address) for _ in range(4))
    half.sendall(f"POST {INFER} HTTP/1.1\r\nHost: test\r\n".encode())
    slow_body.sendall(f"POST {INFER} HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n{{\"inputs\"".encode())
    idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n")
    began = time.monotonic()
    for c in (silent, half):
        at, got = closed_at(c)
        assert got == b"" and TIMEOUT_S - 0.5 < at - began < TIMEOUT_S + 5, at - began
    at, got = closed_at(slow_body)
    assert got.startswith(b"HTTP/1.1 408") and b'{"error":"the body did not arrive within 2 s' in got, got
    at, got = closed_at(idle)
    assert got.startswith(b"HTTP/1.1 200") and IDLE_S - 0.5 < at - began < IDLE_S + 5, at - began
    assert "Traceback" not in Path(served["log"]).read_text()
