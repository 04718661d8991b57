"""Fault 2, store outage: the S3-protocol server goes away (a proxy in front of the loopback moto server closes every
connection and refuses new ones) mid-training and mid-upload. Training retries with bounded backoff and carries on;
past the bound it stops with one clear message, and the half-uploaded checkpoint never counts as complete."""

import subprocess
import sys
import threading
import time

import pytest
import torch
from safetensors.torch import load as load_safetensors

from acgan.checkpoint import checkpoint_steps, complete_steps, latest_checkpoint
from acgan.data.prepare import PrepareConfig, prepare
from acgan.errors import UserError
from acgan.layout import MARKER
from acgan.store import LocalStore, PreconditionFailed, open_store
from acgan.training.loop import train_split
from tests.conftest import stored_file, tiny_config
from tests.faults.proxy import FlakyProxy

STEPS, EVERY = 30, 5
OUTAGE = 60.0  # seconds: a store pod rescheduled


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
    """The store is away for 60 s from the middle of a checkpoint upload (a store pod rescheduled), under the
    default retry budget a user's run has: the upload waits it out, training finishes as if nothing happened, and
    the outage is two log lines (its start and its end), not one per attempt."""
    proxy, store = flaky_store
    monkeypatch.delenv("ACGAN_S3_RETRY_SECONDS", raising=False)
    store = open_store(store.uri)
    assert store.retry_seconds > OUTAGE + 60, store.retry_seconds  # the default outlasts the outage
    proxy.cut_uploads_after(100_000, then_down=True)  # the server goes away in the first checkpoint's upload...
    cut_during = []

    def back_up_after_outage():
        while not proxy.cuts:
            time.sleep(0.01)
        cut_during.append(proxy.requests[-1][1])  # one call at a time: the cut request is the last passed on
        time.sleep(OUTAGE)
        proxy.up()  # ...and comes back a minute later

    watcher = threading.Thread(target=back_up_after_outage, daemon=True)
    watcher.start()
    train_split(store, tiny_config(steps=STEPS, checkpoint_every=EVERY))
    watcher.join(5)
    assert proxy.cuts == 1 and cut_during, cut_during
    assert cut_during[0].startswith("PUT ") and "/checkpoints/step-" in cut_during[0], cut_during
    assert "COMPLETE" not in cut_during[0], cut_during  # one of the checkpoint's files, not its marker
    messages = [r.getMessage() for r in caplog.records if r.name == "acgan.store.s3"]
    started = [m for m in messages if "retrying for up to" in m]
    ended = [m for m in messages if "succeeded after" in m]
    assert len(started) == len(ended) >= 1 and len(messages) == 2 * len(started), messages  # per call: start, end
    waited = max(float(m.split("succeeded after ")[1].split("s ")[0]) for m in ended)
    attempts = max(int(m.split(" attempts;")[0].rsplit("(", 1)[1]) for m in ended)
    assert waited >= OUTAGE and attempts >= 5, messages  # it was retried all along, logged at its ends only
    # Each checkpoint's upload and its marker start right after a renewal of the lease, so with a full period left
    # (300 s by default: the stalled upload did not outlast it).
    puts = [line.split()[1] for _, line in proxy.requests if line.startswith("PUT ")]
    steps = sorted({int(p.split("/checkpoints/step-")[1][:8]) for p in puts if "/checkpoints/step-" in p})
    assert steps == list(range(EVERY, STEPS + 1, EVERY)), steps
    for step in steps:
        files = [i for i, p in enumerate(puts) if f"/step-{step:08d}/" in p]
        first, marker = files[0], next(i for i in files if puts[i].endswith(f"/{MARKER}"))
        assert puts[first - 1].endswith("/lease.json") and puts[marker - 1].endswith("/lease.json"), puts[first - 2:]
    assert _equal(_weights(store), reference_weights)
    fault_report("store outage mid-training", f"S3 server down for {OUTAGE:.0f} s from the middle of a checkpoint "
                 f"upload, default retry budget ({store.retry_seconds:.0f} s)", 1, 1,
                 f"none (upload waited {waited:.0f} s; {attempts} attempts, 2 log lines)",
                 "none; final weights bit-identical")


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
    # Past the next checkpoint's generator, half-way into its training state, the server going down with it.
    sizes = {name: len(store.read_bytes(stored_file(store, 0, EVERY * 2, name)))
             for name in ("generator.safetensors", "train_state.safetensors")}
    proxy.cut_uploads_after(sizes["generator.safetensors"] + sizes["train_state.safetensors"] // 2, then_down=True)
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


def _s3_error(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
            "<Resource>/</Resource><RequestId>0</RequestId></Error>").encode()


def test_http_error_bursts_are_ridden_out(flaky_store, reference_weights, s3_server, monkeypatch, caplog,
                                          fault_report):
    """A load balancer answers 502 for 2 s (minio raises InvalidResponseError: not S3's XML), later the store
    answers 503 SlowDown for 1 s: every call retries through it, each outage logged once when it starts and once
    when it ends, and training ends with the uninterrupted run's weights."""
    proxy, store = flaky_store
    monkeypatch.setenv("ACGAN_S3_RETRY_SECONDS", "60")
    store = open_store(store.uri)
    monkeypatch.setenv("ACGAN_S3_ENDPOINT", s3_server["endpoint"])
    direct = open_store(store.uri)  # the test watches the store past the proxy

    def bursts():
        for step, status, reason, body, seconds in ((EVERY, 502, "Bad Gateway", b"<html>502</html>", 2.0),
                                                    (EVERY * 3, 503, "Slow Down",
                                                     _s3_error("SlowDown", "Please reduce your request rate."), 1.0)):
            while step not in complete_steps(direct, 0):
                time.sleep(0.05)
            proxy.answer_with(status, reason, seconds, body, "application/xml" if status == 503 else "text/html")

    watcher = threading.Thread(target=bursts, daemon=True)
    watcher.start()
    train_split(store, tiny_config(steps=STEPS, checkpoint_every=EVERY))
    watcher.join(5)
    assert not watcher.is_alive() and proxy.answered >= 2
    messages = [r.getMessage() for r in caplog.records if r.name == "acgan.store.s3"]
    started = [m for m in messages if "retrying for up to" in m]
    ended = [m for m in messages if "attempts; last failure" in m]
    assert any("HTTP 502" in m for m in ended) and any("SlowDown" in m for m in ended), messages
    attempts = [int(m.split(" attempts;")[0].rsplit("(", 1)[1]) for m in ended]
    assert len(started) == len(ended) and max(attempts) >= 3, messages  # two lines per outage, not one per attempt
    assert _equal(_weights(store), reference_weights)
    fault_report("HTTP error bursts", "a proxy answers 502 (not S3 XML) for 2 s, later 503 SlowDown for 1 s", 2, 2,
                 "none", "none; final weights bit-identical")


def test_an_outage_that_ends_in_no_such_object_ends_its_outage_line(flaky_store, caplog):
    """A read met by a 503 burst whose retry is answered "no such object" (training's pruning reads ensemble.json,
    which a store being trained has not got yet): the outage it started is closed by a second line, like any other,
    and the read says the object is missing."""
    proxy, store = flaky_store
    proxy.answer_with(503, "Slow Down", 1.0, _s3_error("SlowDown", "Please reduce your request rate."),
                      "application/xml")
    with pytest.raises(KeyError):
        store.read_bytes("ensemble.json")
    messages = [r.getMessage() for r in caplog.records if r.name == "acgan.store.s3"]
    assert [m for m in messages if "retrying for up to" in m] and [
        m for m in messages if "read ensemble.json answered: no such object after" in m and "SlowDown" in m], messages


def test_a_conditional_write_whose_answer_was_lost_ends_its_outage_line(flaky_store, caplog, fault_report):
    """The create lands, its answer is lost (a reset), the retry meets its own object (412): the write counts as
    done, and the outage it started is closed by a second line, like any other (the race the 502 burst above can
    hit when it falls between a marker's landing and its answer)."""
    proxy, store = flaky_store
    proxy.lose_answers(1)
    with caplog.at_level("WARNING", logger="acgan.store.s3"):
        tag = store.write_if("fenced/marker.json", b"mine", None)
    assert store.read_tagged("fenced/marker.json") == (b"mine", tag)
    messages = [r.getMessage() for r in caplog.records if r.name == "acgan.store.s3"]
    assert [m for m in messages if "retrying for up to" in m] and len(messages) == 2, messages
    assert "precondition failed after" in messages[1] and "2 attempts" in messages[1], messages
    with pytest.raises(PreconditionFailed):  # and another writer's create still loses
        store.write_if("fenced/marker.json", b"theirs", None)
    fault_report("answer lost after a conditional create", "the proxy resets the connection after the store took "
                 "the PUT", 1, 1, "none", "none; the write counted once, the outage logged as two lines")


@pytest.mark.parametrize("fault", ["gateway 403", "AccessDenied", "NoSuchBucket"])
def test_permanent_errors_fail_at_once_with_one_line(flaky_store, monkeypatch, fault, fault_report):
    proxy, store = flaky_store
    monkeypatch.setenv("ACGAN_S3_RETRY_SECONDS", "120")
    uri = store.uri
    if fault == "gateway 403":
        proxy.answer_with(403, "Forbidden", 600, b"<html>403 Forbidden</html>")
    elif fault == "AccessDenied":
        proxy.answer_with(403, "Forbidden", 600, _s3_error("AccessDenied", "Access Denied"), "application/xml")
    else:
        uri = "s3://acgan-no-such-bucket/x"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "acgan_cli.main", "train-split", "--store", uri, "--split", "0",
                           "--steps", "5", "--batch-size", "16", "--width", "0.0625"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    expected = {"gateway 403": "HTTP 403", "AccessDenied": "(AccessDenied)", "NoSuchBucket": "does not exist"}
    assert expected[fault] in line
    assert time.monotonic() - started < 60  # not retried for the 120 s budget
    fault_report(f"permanent store error ({fault})", "every request refused", 1, 1, "none: fails at once, one line",
                 "none")
