"""Shared fixtures: a prepared digits store, a tiny training config, and a real S3-protocol server on loopback; a
run's trainers found, and its training task killed once as they start."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch

from acgan.data.prepare import PrepareConfig, prepare
from acgan.layout import checkpoint_prefix
from acgan.store import LocalStore, open_store
from acgan.training.loop import TrainConfig
from tests.s3_test_server import s3_test_server

# Small enough for a CPU test, the real network otherwise (all six D convolutions at a quarter width, all G stages).
TINY = dict(batch_size=16, width=0.0625, d_width=0.25, tick_every=5, checkpoint_every=5, stats_samples_per_class=4,
            stats_pairs=6)


def tiny_config(**overrides) -> TrainConfig:
    return TrainConfig(**{**TINY, "steps": 10, **overrides})


@pytest.fixture(scope="session", autouse=True)
def _threads_per_process():
    """The suite's processes (pytest-xdist's, `--numprocesses` in pyproject.toml) share the machine's cores: torch
    takes its share in each, as do the processes a test starts (kfp.local's tasks, trainers) through
    OMP_NUM_THREADS, where a run sets none of its own. Each taking every core oversubscribes them."""
    processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    threads = str(max(1, len(os.sched_getaffinity(0)) // processes))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", threads))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        yield


@pytest.fixture(scope="session", autouse=True)
def _session_home(tmp_path_factory):
    """A home of the test session's own, for the fixtures shared by several tests: an evaluation keeps its classifier
    under ~/.cache/acgan/classifiers (EvalSettings.classifier_cache), never the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        yield


@pytest.fixture(autouse=True)
def _own_home(tmp_path_factory, monkeypatch):
    """Each test a home of its own: no test reuses a classifier another test trained."""
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))


def stored_file(store, split: int, step: int, name: str) -> str:
    """The key a file of a checkpoint is stored under, `<writer token>-<name>` in its step's prefix
    (acgan/checkpoint.py), found by listing the step: the object a test damages. One writer's, or this fails."""
    [key] = [k for k in store.list(f"{checkpoint_prefix(split, step)}/") if k.endswith(f"-{name}")]
    return key


def trainer_processes(store_uri: str, split: int) -> list[int]:
    """The pids of the live trainer processes of `split` in the store at `store_uri` (the children that training
    tasks start: `python -m acgan.supervise STORE SPLIT`). Only this run's: an `acgan run` beside the tests
    trains its own split 1 in another store."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # ended while we looked
        if args[1:5] == [b"-m", b"acgan.supervise", store_uri.encode(), str(split).encode()]:
            found.append(int(pid))
    return found


class KillTaskOnce(threading.Thread):
    """SIGKILLs the training task of `split` once, as soon as its trainer has started (a pod killed outright): the
    trainer goes with it (acgan/supervise.py), and kfp.local retries the task."""

    def __init__(self, store_uri: str, split: int):
        super().__init__(daemon=True)
        self.store_uri, self.split, self.done, self.killed = store_uri, split, threading.Event(), None

    def run(self):
        while not self.done.is_set() and self.killed is None:
            for trainer in trainer_processes(self.store_uri, self.split):
                task = int(Path(f"/proc/{trainer}/stat").read_text().rpartition(")")[2].split()[1])  # its ppid
                os.kill(task, signal.SIGKILL)
                self.killed = task
            time.sleep(0.02)


@contextlib.contextmanager
def one_thread():
    """For bit-identical comparisons: with several threads, torch's CPU kernels may reduce in another order when
    the machine is loaded (seen here under load: two runs of one seed differ in the last bits). Subprocesses
    inherit OMP_NUM_THREADS."""
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env


@pytest.fixture
def single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def _digits_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits-template")
    prepare(PrepareConfig(dataset="digits", resolution=32, classes_per_split=5), LocalStore(root))
    return root


@pytest.fixture
def digits_store(_digits_template, tmp_path) -> LocalStore:
    """A prepared digits store (32px, 2 splits of 5 classes) of this test's own."""
    root = tmp_path / "store"
    shutil.copytree(_digits_template, root)
    return LocalStore(root)


@contextlib.contextmanager
def json_api(answer):
    """A recorded API server on loopback (what cannot run here: a Kubernetes or KFP API server): `answer(path,
    headers)` -> (HTTP status, JSON body) for each GET. Yields the server's URL."""
    class Recorded(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            code, payload = answer(self.path, self.headers)
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorded)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3 server on 127.0.0.1 with credential checks on, and one IAM user allowed s3:*."""
    with s3_test_server() as server:
        yield server


def store_server_env(monkeypatch, server: dict, retry_seconds: int) -> None:
    """The environment a store on the test S3 server is opened with: its endpoint and credentials, and how long a
    failure is retried as transient."""
    monkeypatch.setenv("ACGAN_S3_ENDPOINT", server["endpoint"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server["secret_key"])
    monkeypatch.setenv("ACGAN_S3_RETRY_SECONDS", str(retry_seconds))


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Environment for an S3 store; returns a fresh s3:// URI (own prefix) in a bucket that exists."""
    store_server_env(monkeypatch, s3_server, retry_seconds=2)
    uri = f"s3://acgan-test/{uuid.uuid4().hex[:8]}"
    open_store(uri).ensure_ready(create=True)
    return uri


def printed_commands(message: str) -> list[list[str]]:
    """The commands a message advises (each in backticks), split as a shell splits them when pasted."""
    import re
    import shlex

    return [shlex.split(text) for text in re.findall(r"`(acgan [^`]+)`", message)]


def run_printed(message: str, index: int = -1) -> int:
    """Run the `index`th command `message` advises, exactly as printed, through the `acgan` command's main (in this
    process); its exit status."""
    from acgan_cli.main import main

    argv = printed_commands(message)[index]
    assert argv[0] == "acgan", argv
    return main(argv[1:])
