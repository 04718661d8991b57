"""Fault 6, a slow store: every request to the S3-protocol server is held for seconds (an overloaded store, a
congested link), so one checkpoint upload outlasts the lease period. A lease renewed only from the training loop
would lapse during the upload and let a second trainer in beside the first. The trainer renews from a background
thread on a schedule a slow write cannot stretch, and again right before the upload (acgan/lease.py), so it
keeps the split throughout and a second trainer started during the upload refuses."""

import os
import subprocess
import sys
import threading
import time

from acgan.checkpoint import latest_checkpoint
from acgan.data.prepare import PrepareConfig, prepare
from acgan.layout import MARKER
from acgan.lease import read_lease
from acgan.store import open_store
from tests.conftest import TINY
from tests.faults.proxy import FlakyProxy

STEPS = EVERY = 5  # one checkpoint, the last step's
# Seconds per request, and the lease period: two and a half requests. Two requests (a renewal's write, then the next
# one's) fit in a period; a wait of a third of it between renewals, then a write, then another write do not.
DELAY, LEASE = 2.0, 5.0

# The second trainer: the real CLI, its imports done before the cue on stdin, so that it asks for the split at the
# moment the test chooses (starting Python and torch takes seconds on a loaded machine).
_CUED_TRAINER = """
import sys
import minio, acgan.training.loop
from acgan_cli.main import main
sys.stdin.readline()
sys.exit(main(sys.argv[1:]))
"""


def _args(uri: str) -> list[str]:
    return ["train-split", "--store", uri, "--split", "0", "--steps", str(STEPS), "--checkpoint-every", str(EVERY),
            "--tick-every", str(EVERY), "--batch-size", str(TINY["batch_size"]), "--width", str(TINY["width"]),
            "--d-width", str(TINY["d_width"]), "--lease-seconds", str(LEASE)]


def test_slow_store_outlasting_a_naive_lease(s3_env, s3_server, fault_report):
    store = open_store(s3_env)  # the test's own view of the store, past the proxy
    prepare(PrepareConfig(dataset="digits", resolution=32, classes_per_split=5), store)
    proxy = FlakyProxy(s3_server["port"])
    watch_second = FlakyProxy(s3_server["port"])  # passes everything at once; tells when it asked for the lease
    retry = {"ACGAN_S3_RETRY_SECONDS": "300"}
    first = subprocess.Popen([sys.executable, "-m", "acgan_cli.main", *_args(s3_env)], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, **retry, "ACGAN_S3_ENDPOINT": proxy.endpoint})
    second = subprocess.Popen([sys.executable, "-c", _CUED_TRAINER, *_args(s3_env)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, **retry, "ACGAN_S3_ENDPOINT": watch_second.endpoint})
    samples: list[tuple[float, float]] = []  # (when, the stored lease's expiry), polled directly

    def watch():
        while first.poll() is None:
            lease = read_lease(store, 0)
            if lease is not None:
                samples.append((time.time(), lease.expires))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        def passed_on(part: str) -> float | None:
            return next((t for t, line in list(proxy.requests) if line.startswith("PUT ") and part in line), None)

        deadline = time.time() + 240
        while passed_on("/config.json") is None:  # set-up done (at full speed, to keep the test short)...
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-2000:]
            time.sleep(0.02)
        proxy.slow_down(DELAY)  # ...from here every request is slow: the stats line, the checkpoint, the release
        slow_from = time.time()
        while (upload := passed_on("/checkpoints/step-")) is None:  # the first file of the checkpoint
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-2000:]
            time.sleep(0.02)
        # A lease not renewed during the upload would keep the expiry it had when the upload started.
        naive_expiry = max(expires for t, expires in samples if t <= upload)
        while time.time() < naive_expiry + 0.2:
            time.sleep(0.02)
        assert passed_on(MARKER) is None  # the upload is still going...
        second.stdin.write("go\n")
        second.stdin.close()
        code2, err2 = second.wait(120), second.stderr.read()
        code1, err1 = first.wait(240), first.stderr.read()
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.kill()
        proxy.down(), watch_second.down()
    watcher.join(5)

    assert code1 == 0, err1[-2000:]
    assert code2 == 2 and "Traceback" not in err2, err2[-2000:]
    (line,) = [ln for ln in err2.splitlines() if "error:" in ln]
    assert "split 0 is being trained by" in line
    marker = passed_on(MARKER)
    assert marker - upload > LEASE  # the upload outlasted a lease period: a naive lease lapsed in it
    asked = next(t for t, line in watch_second.requests if line.startswith("GET ") and "/lease.json" in line)
    assert naive_expiry < asked < marker  # the second trainer read the lease in that gap, and refused
    # Until the checkpoint was committed the stored lease never ran out.
    watched = [(t, expires) for t, expires in samples if slow_from < t < marker]
    lapses = [(t, expires) for t, expires in watched if expires <= t]
    assert not lapses and len(watched) > 100, lapses
    assert latest_checkpoint(store, 0)[0] == STEPS
    assert read_lease(store, 0) is None  # released: the release waited for the renewal in flight
    slow = len([t for t, _ in proxy.requests if t > slow_from])
    fault_report("slow store", f"every S3 request held {DELAY:.0f} s after set-up ({slow} requests); lease "
                 f"{LEASE:.0f} s, a checkpoint upload took {marker - upload:.0f} s; a second trainer started in it", 1, 1,
                 "none: the lease never lapsed, the second trainer refused", "none")
