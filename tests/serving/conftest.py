"""A small trained and evaluated ensemble (digits, three splits), and `acgan serve` on it as a real process on a free
loopback port."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from acgan.data.prepare import PrepareConfig, prepare
from acgan.ensemble import assemble_ensemble
from acgan.evaluation.analyses import evaluate
from acgan.process import stop_process
from acgan.settings import EvalSettings
from acgan.store import LocalStore
from acgan.training.loop import train_split
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
STEPS = 5
SERVING = re.compile(r"inference POST http://127\.0\.0\.1:(\d+)/v2/models/")


@pytest.fixture(scope="session")
def ensemble_template(tmp_path_factory) -> Path:
    """Digits at 32 px in three splits (classes 0-3, 4-7, 8-9), each trained a few steps with a learning rate high
    enough for images that differ from seed to seed, assembled and evaluated (figures per class in eval/)."""
    root = tmp_path_factory.mktemp("served") / "store"
    store = LocalStore(root)
    prepare(PrepareConfig(dataset="digits", resolution=32, classes_per_split=4), store)
    for split in range(3):
        train_split(store, tiny_config(split=split, steps=STEPS, lr=0.02))
    assemble_ensemble(store, STEPS)
    evaluate(store, EvalSettings(samples_per_class=4, pairs=3, classifier_steps=5, overfitting_classes=1,
                                 is_splits=2, real_per_class=8, analyses=["discriminability", "diversity"]))
    return root


@contextlib.contextmanager
def acgan_serve(store: str, log: Path, *options: str, env: dict | None = None):
    """`acgan serve --store STORE --port 0 OPTIONS` until the block ends; yields (base URL, the process). Its output
    goes to `log`."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "acgan_cli.main", "serve", "--store", store, "--port", "0", *options],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env or os.environ.copy())
    try:
        deadline, url = time.time() + 120, None
        while url is None:
            assert proc.poll() is None, f"acgan serve exited {proc.returncode}: {log.read_text()[-3000:]}"
            assert time.time() < deadline, f"acgan serve did not start: {log.read_text()[-3000:]}"
            found = SERVING.search(log.read_text())
            url = f"http://127.0.0.1:{found.group(1)}" if found else None
            time.sleep(0.2)
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/v2/health/live", timeout=5).status_code == 200:
                    break
            assert time.time() < deadline, f"acgan serve does not answer: {log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield url, proc
    finally:
        stop_process(proc, 30)


def copy_store(template: Path, to: Path) -> LocalStore:
    shutil.copytree(template, to)
    return LocalStore(to)
