"""Fault 2, store outage: the S3-protocol server goes away (a proxy in front of the loopback moto server closes every
connection and refuses new ones) mid-training and mid-upload. Training retries with bounded backoff and carries on;
past the bound it stops with one clear message, and the half-uploaded checkpoint never counts as complete."""

import threading
import time

import pytest
import torch
from safetensors.torch import load as load_safetensors

from components.checkpoint import checkpoint_steps, complete_steps, latest_checkpoint
from components.data.prepare import PrepareConfig, prepare
from components.errors import UserError
from components.store import LocalStore, open_store
from components.training.loop import train_split
from tests.conftest import tiny_config
from tests.faults.proxy import FlakyProxy

STEPS, EVERY = 30, 5


@pytest.fixture
def flaky_store(s3_env, s3_server, monkeypatch):
    """An S3 store reached through a proxy that the test can take down; the same store reached directly."""
    proxy = FlakyProxy(s3_server["port"])
    monkeypatch.setenv("ACGAN_S3_ENDPOINT", proxy.endpoint)
    store = open_store(s3_env)
    prepare(PrepareConfig(dataset="digits", resolution=32, classes_per_split=5), store)
    yield proxy, store
    proxy.down()


@pytest.fixture(scope="module")
def reference_weights(tmp_path_factory):
    store = LocalStore(tmp_path_factory.mktemp("reference"))
    prepare(PrepareConfig(dataset="digits", resolution=32, classes_per_split=5), store)
    train_split(store, tiny_config(steps=STEPS, checkpoint_every=EVERY))
    return _weights(store)


def _weights(store) -> dict:
    step, files = latest_checkpoint(store, 0, ["train_state.safetensors"])
    assert step == STEPS
    state = load_safetensors(files["train_state.safetensors"])
    return {k: v for k, v in state.items() if k.startswith(("G.", "D."))}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_outage_mid_training_is_ridden_out(flaky_store, reference_weights, monkeypatch, caplog, fault_report):
    proxy, store = flaky_store
    monkeypatch.setenv("ACGAN_S3_RETRY_SECONDS", "60")
    store = open_store(store.uri)
    proxy.cut_uploads_after(100_000, then_down=True)  # the server goes away in the first checkpoint's upload...

    def back_up_after_3s():
        while not proxy.cuts:
            time.sleep(0.01)
        time.sleep(3.0)
        proxy.up()  # ...and comes back 3 s later

    threading.Thread(target=back_up_after_3s, daemon=True).start()
    train_split(store, tiny_config(steps=STEPS, checkpoint_every=EVERY))
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert proxy.cuts == 1 and retries
    assert _equal(_weights(store), reference_weights)
    fault_report("store outage mid-training", "S3 server down for 3 s from the middle of a checkpoint upload", 1, 1,
                 f"none ({len(retries)} retried calls)", "none; final weights bit-identical")


def test_upload_cut_half_way_is_retried(flaky_store, reference_weights, monkeypatch, fault_report):
    proxy, store = flaky_store
    monkeypatch.setenv("ACGAN_S3_RETRY_SECONDS", "30")
    store = open_store(store.uri)
    proxy.cut_uploads_after(200_000)  # in the middle of the first checkpoint's upload
    train_split(store, tiny_config(steps=STEPS, checkpoint_every=EVERY))
    assert proxy.cuts == 1
    assert _equal(_weights(store), reference_weights)
    fault_report("upload cut half-way", "connection reset after 200 kB of a checkpoint upload", 1, 1, "none",
                 "none; the upload was retried")


def test_outage_past_the_bound_stops_cleanly_and_resumes(flaky_store, reference_weights, monkeypatch,
                                                         fault_report):
    proxy, store = flaky_store
    monkeypatch.setenv("ACGAN_S3_RETRY_SECONDS", "2")
    store = open_store(store.uri)
    train_split(store, tiny_config(steps=EVERY * 2, checkpoint_every=EVERY))  # two complete checkpoints
    # 3 MB on: past the next checkpoint's generator (1.4 MB) into its training state, the server going down with it.
    proxy.cut_uploads_after(3_000_000, then_down=True)
    started = time.time()
    with pytest.raises(UserError, match=r"unreachable at .*failed for 2s \(\d+ attempt\(s\)") as e:
        train_split(store, tiny_config(steps=STEPS, checkpoint_every=EVERY))
    assert time.time() - started < 60 and "\n" not in str(e.value)
    proxy.up()
    steps = checkpoint_steps(store, 0)
    half_written = [s for s, done in steps.items() if not done]
    assert half_written == [EVERY * 3], steps  # the cut checkpoint has its first files but no marker
    assert any(key.endswith("-generator.safetensors")
               for key in store.list(f"splits/split-00000/checkpoints/step-{EVERY * 3:08d}/"))
    assert complete_steps(store, 0)[-1] == EVERY * 2 and latest_checkpoint(store, 0)[0] == EVERY * 2
    train_split(store, tiny_config(steps=STEPS, checkpoint_every=EVERY))
    assert _equal(_weights(store), reference_weights)
    fault_report("store outage past the retry bound", "upload cut, then S3 server down until training gave up", 1,
                 1, f"{EVERY} steps (the checkpoint being written)", "none; half-written checkpoint never complete")
