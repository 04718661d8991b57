"""`acgan serve` as a real process on a loopback port, a real HTTP client (httpx) and a real browser (Chromium): the
Open Inference Protocol's endpoints, the same images for the same seed alone or among 32 concurrent clients, every
bad request answered in one line while the server keeps serving, a damaged sub-model failing only its classes, an S3
store (moto) whose ensemble appears while the server runs, credentials in no response and no log line, and the
gallery in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from acgan.checkpoint import load_checkpoint
from acgan.layout import ENSEMBLE_KEY, GENERATOR_FILE, META_FILE
from acgan.sampling import generator_from_files
from acgan.serving.batching import draw
from acgan.store import LocalStore, open_store
from acgan_cli.main import main
from tests.conftest import stored_file
from tests.serving.chromium import chromium
from tests.serving.conftest import STEPS, acgan_serve, copy_store

MODEL = "acgan-ensemble"
MAX_IMAGES = 64


def request(cls, n, seed=None, cls_type=None, **extra) -> dict:
    inputs = [{"name": "class", "shape": [1], "datatype": cls_type or ("BYTES" if isinstance(cls, str) else "INT64"),
               "data": [cls]}, {"name": "n", "shape": [1], "datatype": "INT64", "data": [n]}]
    if seed is not None:
        inputs.append({"name": "seed", "shape": [1], "datatype": "INT64", "data": [seed]})
    return {"inputs": inputs, **extra}


def images_of(answer: httpx.Response) -> np.ndarray:
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["name"] == "images" and output["datatype"] == "UINT8"
    return np.array(output["data"], dtype=np.uint8).reshape(output["shape"])


@pytest.fixture(scope="module")
def local(ensemble_template, tmp_path_factory):
    """The server on a local copy of the ensemble whose split 2 (classes 8 and 9) has a damaged generator."""
    root = tmp_path_factory.mktemp("local")
    store = copy_store(ensemble_template, root / "store")
    damaged = stored_file(store, 2, STEPS, GENERATOR_FILE)
    store.write_bytes(damaged, b"\0" * len(store.read_bytes(damaged)))
    with acgan_serve(str(store.root), root / "serve.log", "--max-images", str(MAX_IMAGES)) as (url, proc):
        with httpx.Client(base_url=url, timeout=120) as client:
            yield {"url": url, "proc": proc, "client": client, "store": store, "log": root / "serve.log"}


def test_the_protocols_endpoints(local):
    client, store = local["client"], local["store"]
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}
    meta = client.get(f"/v2/models/{MODEL}").json()
    assert meta["name"] == MODEL and [i["name"] for i in meta["inputs"]] == ["class", "n", "seed"]
    assert meta["outputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 32, 32, 1]}]
    parameters = meta["parameters"]
    assert parameters["resolution"] == 32 and parameters["max_images"] == MAX_IMAGES and parameters["evaluated"]
    assert parameters["splits"] == [{"split": s, "step": STEPS} for s in range(3)]
    classes = parameters["classes"]
    assert [(c["id"], c["name"], c["split"]) for c in classes] == [(k, str(k), k // 4) for k in range(10)]
    evaluation = {c["id"]: c for c in json.loads(store.read_bytes("eval/metrics.json"))["classes"]}
    for c in classes:  # the evaluation's own figures
        assert c["accuracy"] == evaluation[c["id"]]["accuracy"] and c["ms_ssim"] == evaluation[c["id"]]["ms_ssim"]

    answer = client.post(f"/v2/models/{MODEL}/infer", json=request(6, 5, seed=11, id="my-request"))
    images = images_of(answer)
    body = answer.json()
    assert images.shape == (5, 32, 32, 1) and body["id"] == "my-request" and body["model_name"] == MODEL
    assert body["parameters"] == {"class": 6, "class_name": "6", "split": 1, "step": STEPS, "seed": 11}
    # Exactly what the library draws from that checkpoint for class 6 (split 1's third class) and seed 11.
    G = generator_from_files(load_checkpoint(store, 1, STEPS, [GENERATOR_FILE, META_FILE]))[0]
    assert np.array_equal(images, draw(G, [(2, 5, 11)], 16).transpose(0, 2, 3, 1))
    assert images.std() > 5  # images that differ: the equalities here mean something
    # The class by name; the binary extension; no seed (a random one, reported, that draws the same again).
    assert np.array_equal(images_of(client.post(f"/v2/models/{MODEL}/infer", json=request("6", 5, seed=11))), images)
    binary = client.post(f"/v2/models/{MODEL}/infer", json=request(6, 5, seed=11, outputs=[
        {"name": "images", "parameters": {"binary_data": True}}]))
    length = int(binary.headers["inference-header-content-length"])
    head = json.loads(binary.content[:length])
    assert head["outputs"][0]["parameters"] == {"binary_data_size": images.size}
    assert np.frombuffer(binary.content[length:], np.uint8).reshape(5, 32, 32, 1).tolist() == images.tolist()
    unseeded = client.post(f"/v2/models/{MODEL}/infer", json=request(6, 5))
    seed = unseeded.json()["parameters"]["seed"]
    assert np.array_equal(images_of(client.post(f"/v2/models/{MODEL}/infer", json=request(6, 5, seed=seed))),
                          images_of(unseeded))
    assert not np.array_equal(images_of(client.post(f"/v2/models/{MODEL}/infer", json=request(6, 5, seed=12))), images)


def batch_counts(client) -> tuple[float, float]:
    """(batches drawn, requests in them) so far, from the server's /metrics."""
    text = client.get("/metrics").text
    count = float(re.search(r"^acgan_serve_batch_requests_count (\S+)$", text, re.M).group(1))
    total = float(re.search(r"^acgan_serve_batch_requests_sum (\S+)$", text, re.M).group(1))
    return count, total


def test_same_seed_same_images_for_32_concurrent_clients(local):
    """32 clients at once, over both working splits, with repeated and different seeds and sizes: each answer is
    the one the same request got alone, and the server did batch them."""
    client = local["client"]
    asked = [(k % 8, 1 + k % 7, 100 + k % 12) for k in range(32)]
    alone = {a: images_of(client.post(f"/v2/models/{MODEL}/infer", json=request(*a))) for a in set(asked)}
    before = batch_counts(client)
    start = threading.Barrier(len(asked))

    def one_client(a):
        with httpx.Client(base_url=local["url"], timeout=120) as own:
            start.wait()
            return images_of(own.post(f"/v2/models/{MODEL}/infer", json=request(*a)))

    with ThreadPoolExecutor(len(asked)) as pool:
        answers = list(pool.map(one_client, asked))
    for a, images in zip(asked, answers):
        assert np.array_equal(images, alone[a]), a
    batches, requests = (after - b for after, b in zip(batch_counts(client), before))
    assert requests == len(asked) and batches < len(asked)  # some requests shared a batch


BAD = [  # (body, headers, status, what the one line says)
    (request(10, 1), None, 400, "class 10 is out of range: the ensemble has classes 0..9"),
    (request(-1, 1), None, 400, "class -1 is out of range"),
    (request("seven", 1), None, 400, "no class named 'seven'"),
    (request(0, 0), None, 400, f"n 0: ask for 1 to {MAX_IMAGES} images"),
    (request(0, -3), None, 400, "n -3: ask for 1"),
    (request(0, MAX_IMAGES + 1), None, 400, f"n {MAX_IMAGES + 1}: ask for 1 to {MAX_IMAGES} images"),
    (request(0, 1, seed=-1), None, 400, "seed -1: give a seed from 0 to 2**63-1"),
    (request(1.0, 1, cls_type="FP32"), None, 400, "input 'class' has datatype FP32: use INT64 or BYTES"),
    ({"inputs": [{"name": "class", "shape": [1], "datatype": "INT64", "data": [0]},
                 {"name": "n", "shape": [1], "datatype": "BYTES", "data": ["3"]}]}, None, 400,
     "input 'n' has datatype BYTES: use INT64"),
    (request(0, 2.5), None, 400, "input 'n': 2.5 is not an integer"),
    ({"inputs": [{"name": "class", "shape": [1], "datatype": "INT64", "data": [0]},
                 {"name": "n", "shape": [2], "datatype": "INT64", "data": [1, 2]}]}, None, 400,
     "input 'n' has shape [2] and 2 value(s): give one value, shape [1]"),
    ({"inputs": [{"name": "n", "shape": [1], "datatype": "INT64", "data": [1]}]}, None, 400, "missing input 'class'"),
    ({"inputs": request(0, 1)["inputs"] * 2}, None, 400, "input 'class' is given 2 times"),
    ({"inputs": request(0, 1)["inputs"] + [{"name": "temperature", "shape": [1], "datatype": "FP32", "data": [1]}]},
     None, 400, "unknown input 'temperature'"),
    (request(0, 1, outputs=[{"name": "logits"}]), None, 400, "unknown output 'logits'"),
    (b'{"inputs": [', {"content-type": "application/json"}, 400, "the body is not valid JSON"),
    ({"instances": [[0]]}, None, 400, "the body is not an inference request: inputs: Field required"),
    (b"class=0&n=1", {"content-type": "application/x-www-form-urlencoded"}, 400,
     "not JSON: send the inference request with Content-Type: application/json"),
]


@pytest.mark.parametrize("body, headers, status, message", BAD, ids=[m for *_, m in BAD])
def test_a_bad_request_gets_one_line_and_the_server_keeps_serving(local, body, headers, status, message):
    client = local["client"]
    path = f"/v2/models/{MODEL}/infer"
    answer = client.post(path, content=body, headers=headers) if isinstance(body, bytes) else \
        client.post(path, json=body)
    assert answer.status_code == status, answer.text
    (error,) = answer.json().values()
    assert message in error and "\n" not in error and "Traceback" not in error, error
    assert images_of(client.post(path, json=request(0, 1, seed=0))).shape == (1, 32, 32, 1)


def test_an_unknown_model_is_a_404_and_no_traceback_is_logged(local):
    answer = local["client"].post("/v2/models/other/infer", json=request(0, 1))
    assert answer.status_code == 404 and answer.json() == {"error": "Model with name other does not exist."}
    log = local["log"].read_text()
    assert "Traceback" not in log
    assert "WARNING acgan.serving.server: 400 POST /v2/models/acgan-ensemble/infer: class 10 is out of range" in log


def test_a_damaged_sub_model_fails_only_its_classes(local):
    client = local["client"]
    for _ in range(2):  # the second time from the remembered failure
        for cls in (8, "9"):
            answer = client.post(f"/v2/models/{MODEL}/infer", json=request(cls, 2))
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert error.startswith(f"split 2 (classes 8..9) cannot be served: its checkpoint "
                                    f"splits/split-00002/checkpoints/step-{STEPS:08d} does not load (") and \
                "does not match its checksum" in error and f"run `acgan rerun --store {local['store'].root} --local`" in error
    for cls in (0, 7):
        assert images_of(client.post(f"/v2/models/{MODEL}/infer", json=request(cls, 2))).shape == (2, 32, 32, 1)
    assert client.get("/v2/health/ready").status_code == 200  # the server as a whole is still ready


def listening(pid: int) -> list[str]:
    """The local addresses of the process's listening TCP sockets, as /proc prints them."""
    links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    inodes = {link[len("socket:["):-1] for link in links if link.startswith("socket:[")}
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN, and one of this process's sockets
                found.append(fields[1])
    return found


def test_it_listens_only_on_the_address_asked(local):
    """The default --host 127.0.0.1: the process's one listening socket is on the loopback address (kserve alone
    would listen on every interface)."""
    port = int(local["url"].rsplit(":", 1)[1])
    assert listening(local["proc"].pid) == [f"0100007F:{port:04X}"]  # 127.0.0.1 as the kernel prints it


def test_the_gallery_in_chromium(local, tmp_path):
    """A person's path: the page loads showing a few classes' samples (spread over the splits) without a click,
    they search for a class, click it, its samples and figures appear, they ask for new samples; every image
    decodes and no script error or failed load happens (but the damaged split's 503, shown in its place). A planted
    error is caught."""
    with chromium(tmp_path / "profile") as page:
        page.call("Page.navigate", url=f"{local['url']}/")
        assert page.wait_for("document.querySelectorAll('#classes button').length") == 10
        overview = ("(() => { const f = [...document.querySelectorAll('#overview figure')]; return f.length === 6 && "
                    "f.every(x => x.querySelector('.problem') || [...x.querySelectorAll('img')].length === 8 && "
                    "[...x.querySelectorAll('img')].every(i => i.complete && i.naturalWidth === 32)) && "
                    "f.map(x => x.querySelector('figcaption').textContent + (x.querySelector('.problem') ? "
                    "' failed: ' + x.querySelector('.problem').textContent : '')); })()")
        shown = page.wait_for(overview)
        assert shown[:5] == ["0: 0", "1: 1", "3: 3", "5: 5", "6: 6"], shown  # drawn, 8 of each
        assert shown[5].startswith("8: 8 failed: split 2 (classes 8..9) cannot be served"), shown[5]
        page.evaluate("document.getElementById('search').focus()")
        page.call("Input.insertText", text="7")
        assert page.wait_for("(() => { const b = [...document.querySelectorAll('#classes button')]; "
                             "return b.length === 1 && b[0].textContent; })()") == "7  7"
        page.click("#classes button")
        loaded = ("(() => { const i = [...document.querySelectorAll('#grid img')]; return i.length === 16 && "
                  "i.every(x => x.complete && x.naturalWidth === 32 && x.naturalHeight === 32) && "
                  "i.map(x => x.src).join(); })()")
        first = page.wait_for(loaded)
        assert page.evaluate("document.getElementById('title').textContent") == "7: 7"
        figures = page.evaluate("[...document.querySelectorAll('#figures tr')].map(r => r.textContent)")
        assert "split1" in figures and f"checkpoint step{STEPS}" in figures
        assert any(f.startswith("recognised by the classifier") and f.endswith("%") for f in figures)
        assert any(f.startswith("MS-SSIM of samples") for f in figures)
        assert page.evaluate("location.search") == "?class=7"
        assert page.evaluate("document.getElementById('status').textContent") == ""
        assert page.evaluate("document.getElementById('landing').hidden")
        page.click("#again")
        page.wait_for(f"(() => {{ const s = {loaded}; return s && s !== {json.dumps(first)}; }})()")
        assert [e for e in page.errors() if "status of 503" not in e] == []
        page.call("Page.captureScreenshot")  # the page renders
        page.evaluate("setTimeout(() => undefinedFunction(), 0); 0")  # the control: an error is seen
        page.wait_for("new Promise(r => setTimeout(() => r(true), 200))")
        planted = [e for e in page.errors() if "status of 503" not in e]
        assert len(planted) == 1 and "undefinedFunction" in planted[0]


def test_an_s3_store_served_once_its_ensemble_appears_and_no_credential_leaks(ensemble_template, s3_server,
                                                                            tmp_path):
    env = {**os.environ, "ACGAN_S3_ENDPOINT": s3_server["endpoint"],
           "AWS_ACCESS_KEY_ID": s3_server["access_key"], "AWS_SECRET_ACCESS_KEY": s3_server["secret_key"],
           "ACGAN_S3_RETRY_SECONDS": "2"}
    uri = f"s3://acgan-test/served-{tmp_path.name[-20:].lower().replace('_', '-')}"
    source = LocalStore(ensemble_template)
    with pytest.MonkeyPatch.context() as patch:
        for name in ("ACGAN_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            patch.setenv(name, env[name])
        store = open_store(uri)
        store.ensure_ready(create=True)
        for key in source.list(""):
            if key != ENSEMBLE_KEY:
                store.write_bytes(key, source.read_bytes(key))
        seen = []
        with acgan_serve(uri, tmp_path / "serve.log", env=env) as (url, _), \
                httpx.Client(base_url=url, timeout=120) as c:
            for answer in (c.get("/v2/health/ready"), c.get(f"/v2/models/{MODEL}"), c.get(f"/v2/models/{MODEL}/ready"),
                           c.post(f"/v2/models/{MODEL}/infer", json=request(0, 1)), c.get("/")):
                assert answer.status_code == 503, answer.text
                assert f"store {uri} has no ensemble (ensemble.json) yet" in answer.text, answer.text
                seen.append(answer)
            store.write_bytes(ENSEMBLE_KEY, source.read_bytes(ENSEMBLE_KEY))  # the pipeline's assembly step
            for _ in range(100):
                seen.append(c.get("/v2/health/ready"))
                if seen[-1].status_code == 200:
                    break
                time.sleep(0.2)
            assert seen[-1].json() == {"ready": True}
            answer = c.post(f"/v2/models/{MODEL}/infer", json=request(5, 3, seed=4))
            assert np.array_equal(images_of(answer), images_of(c.post(f"/v2/models/{MODEL}/infer",
                                                                      json=request(5, 3, seed=4))))
            seen += [answer, c.post(f"/v2/models/{MODEL}/infer", json=request(11, 1)), c.get("/"),
                     c.get(f"/v2/models/{MODEL}"), c.get("/metrics")]
    log = (tmp_path / "serve.log").read_text()
    assert f"serving {uri} (no ensemble yet)" in log and "serving 10 classes" in log
    for secret in (s3_server["access_key"], s3_server["secret_key"]):
        assert secret not in log
        for answer in seen:
            assert secret not in answer.text and secret not in str(answer.headers)


def test_bad_serve_options_are_one_line(capsys, tmp_path, ensemble_template):
    import torch

    cases = [(["--store", str(tmp_path / "none")], "does not exist: check --store"),
             (["--store", str(ensemble_template), "--model-name", "Acgan_Ensemble"], "--model-name: String should"),
             (["--store", str(ensemble_template), "--port", "70000"], "--port: Input should be less than")]
    if not torch.cuda.is_available():
        cases.append((["--store", str(ensemble_template), "--device", "cuda"], "--device cuda: no CUDA GPU"))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        cases.append((["--store", str(ensemble_template), "--port", str(taken.getsockname()[1])],
                      "cannot listen there (Address already in use)"))
        for argv, message in cases:
            code = main(["serve", *argv])
            err = capsys.readouterr().err
            lines = [line for line in err.splitlines() if "error:" in line]
            assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err, (argv, err)

