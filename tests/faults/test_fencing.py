"""Fault 5, a paused writer: trainer A is frozen (SIGSTOP: a node under memory pressure, a long GC, a frozen VM) inside
its checkpoint write, after its lease check; its lease expires; trainer B takes the split and completes the same
step; A is continued. The committed checkpoint must stay byte-identical (acgan/checkpoint.py: writer-owned
file names and a conditional create of the marker; acgan/lease.py: conditional renewals)."""

import os
import signal
import subprocess
import sys
import time

from acgan.checkpoint import latest_checkpoint
from acgan.data.prepare import PrepareConfig, prepare
from acgan.layout import checkpoint_prefix
from acgan.lease import live_lease
from acgan.store import open_store
from acgan.training.loop import train_split
from tests.conftest import TINY, tiny_config

STEPS, EVERY, LEASE = 10, 5, 2.0

# Trainer A: the real CLI, which freezes itself (a real SIGSTOP) at its first write into the prefix of step STEPS.
_PAUSED_TRAINER = """
import os, runpy, signal, sys
from acgan import store
stop_at = sys.argv.pop(1)
for cls in (store.LocalStore, store.S3Store):
    def write_bytes(self, key, data, _write=cls.write_bytes):
        if stop_at in key and not os.environ.get("PAUSED"):
            os.environ["PAUSED"] = "1"
            os.kill(os.getpid(), signal.SIGSTOP)
        return _write(self, key, data)
    cls.write_bytes = write_bytes
runpy.run_module("acgan_cli.main", run_name="__main__")
"""

# The same, frozen inside LocalStore.write_bytes: its temporary file written, not yet renamed into place.
_PAUSED_BEFORE_RENAME = """
import os, runpy, signal, sys
from acgan import store
stop_at = sys.argv.pop(1)
def _temporary(self, path, data, _write=store.LocalStore._temporary):
    tmp = _write(self, path, data)
    if stop_at in path.as_posix() and not os.environ.get("PAUSED"):
        os.environ["PAUSED"] = "1"
        os.kill(os.getpid(), signal.SIGSTOP)
    return tmp
store.LocalStore._temporary = _temporary
runpy.run_module("acgan_cli.main", run_name="__main__")
"""


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def _snapshot(store) -> dict[str, bytes]:
    prefix = checkpoint_prefix(0, STEPS)
    return {key: store.read_bytes(key) for key in store.list(f"{prefix}/")}


def _temporaries(store) -> list:
    root = getattr(store, "root", None)
    return list((root / "splits").rglob(".*.tmp-*")) if root is not None else []


def _paused_writer_cannot_replace(store, uri: str, script: str = _PAUSED_TRAINER) -> str:
    args = [sys.executable, "-c", script, f"{checkpoint_prefix(0, STEPS)}/", "train-split", "--store", uri,
            "--split", "0", "--steps", str(STEPS), "--checkpoint-every", str(EVERY), "--tick-every", str(EVERY),
            "--batch-size", str(TINY["batch_size"]), "--width", str(TINY["width"]), "--d-width", str(TINY["d_width"]),
            "--lease-seconds", str(LEASE)]
    a = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not _stopped(a.pid):
            assert a.poll() is None and time.time() < deadline, a.communicate()[1][-2000:]
            time.sleep(0.05)
        held = _temporaries(store)  # A's unfinished write, if it was frozen inside one
        while live_lease(store, 0) is not None or any(p.stat().st_mtime > time.time() - LEASE for p in held):
            time.sleep(0.1)  # A's lease runs out (by the store's clock) while it is frozen, its write grows stale
        train_split(store, tiny_config(steps=STEPS, checkpoint_every=EVERY, lease_seconds=LEASE))  # trainer B
        committed = _snapshot(store)
        assert latest_checkpoint(store, 0)[0] == STEPS
        assert not any(p.exists() for p in held)  # B removed the unfinished write of A, an earlier trainer
    finally:
        os.kill(a.pid, signal.SIGCONT)
    code, err = a.wait(120), a.communicate()[1]
    assert _snapshot(store) == committed  # byte-identical, and none of A's files left beside it
    assert latest_checkpoint(store, 0)[0] == STEPS
    assert code == 2 and "Traceback" not in err, err[-2000:]
    (line,) = [ln for ln in err.splitlines() if "error:" in ln]
    return line


def test_paused_writer_cannot_replace_a_committed_checkpoint_locally(digits_store, fault_report):
    line = _paused_writer_cannot_replace(digits_store, str(digits_store.root))
    assert "split 0" in line
    fault_report("paused writer (local store)", "SIGSTOP inside a checkpoint write until its lease expired, another "
                 "trainer completed that step, SIGCONT", 1, 1, "none", "none; the committed checkpoint byte-identical")


def test_paused_writer_cannot_replace_a_committed_checkpoint_on_s3(s3_env, fault_report):
    store = open_store(s3_env)
    prepare(PrepareConfig(dataset="digits", resolution=32, classes_per_split=5), store)
    line = _paused_writer_cannot_replace(store, s3_env)
    assert "split 0" in line
    fault_report("paused writer (S3)", "SIGSTOP inside a checkpoint write until its lease expired, another trainer "
                 "completed that step, SIGCONT", 1, 1, "none", "none; the committed checkpoint byte-identical")


def test_paused_writer_whose_unfinished_write_was_removed_stops_in_one_line(digits_store, fault_report):
    """A frozen between writing its temporary file and renaming it into place; B, taking the split, removes that
    temporary as an earlier trainer's unfinished write. A, continued, says its split was taken over."""
    line = _paused_writer_cannot_replace(digits_store, str(digits_store.root), _PAUSED_BEFORE_RENAME)
    assert "split 0 was taken over" in line
    fault_report("paused writer, its temporary removed", "SIGSTOP between a checkpoint file's temporary and its "
                 "rename, until another trainer took the split (removing that temporary) and completed the step; "
                 "SIGCONT", 1, 1, "none", "none; the committed checkpoint byte-identical, one line, no traceback")
