"""Fault 7, leases across containers and clocks: real trainers on one store, each in a PID namespace of its own (two
containers, or hostNetwork pods, with one hostname and both PID 1: `unshare --pid --fork --mount-proc`), and under
libfaketime with a clock a day ahead (Debian's `faketime`). Policy (acgan/lease.py): a lease names the process
that wrote it (boot, PID namespace, pid, start time), so only a process of the same machine and PID namespace may
call it stale at once when that process is gone; otherwise it expires one period after the store's own clock last
saw it written (a local file's mtime against a file made now beside it; S3's Last-Modified against its Date),
whatever the writer's or the reader's clock says."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from acgan.checkpoint import complete_steps, load_checkpoint
from acgan.data.prepare import PrepareConfig, prepare
from acgan.layout import lease_key
from acgan.lease import live_lease, read_lease
from acgan.store import open_store
from acgan.training.loop import train_split
from tests.conftest import TINY, tiny_config

LEASE = 3.0
DAY = 86_400

# A trainer with its imports done before the cue on stdin, so that it asks for the split when the test chooses
# (starting Python and torch takes seconds on a loaded machine).
_CUED_TRAINER = """
import sys
import acgan.training.loop
from acgan_cli.main import main
sys.stdin.readline()
sys.exit(main(sys.argv[1:]))
"""


def _own_pid_namespace() -> list[str]:
    """A command prefix that runs its process as PID 1 of a new PID namespace, with this machine's hostname."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare is not installed (util-linux)")
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", *user, "--pid", "--fork", "--mount-proc"]


def _day_ahead() -> dict:
    """The environment that runs a process under libfaketime with its clock a day ahead."""
    faketime = shutil.which("faketime")
    if faketime is None:
        pytest.fail("faketime is not installed: the README's test command installs it (Debian's `faketime`)")
    library = next(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"), None)
    if library is None:
        pytest.fail("libfaketime.so.1 not found under /usr/lib/*/faketime/")
    return {"LD_PRELOAD": str(library), "FAKETIME": "+1d"}


def _args(uri: str, steps: int, every: int) -> list[str]:
    return ["train-split", "--store", uri, "--split", "0", "--steps", str(steps), "--checkpoint-every", str(every),
            "--tick-every", str(every), "--batch-size", str(TINY["batch_size"]), "--width", str(TINY["width"]),
            "--d-width", str(TINY["d_width"]), "--lease-seconds", str(LEASE)]


def _start(argv: list[str], env: dict | None = None, cued: bool = False) -> subprocess.Popen:
    python = [sys.executable, "-c", _CUED_TRAINER] if cued else [sys.executable, "-m", "acgan_cli.main"]
    return subprocess.Popen([*_own_pid_namespace(), *python, *argv], env={**os.environ, **(env or {})}, text=True,
                            stdin=subprocess.PIPE if cued else None, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _wait_for(condition, proc: subprocess.Popen, what: str, seconds: float = 180):
    deadline = time.time() + seconds
    while not (value := condition()):
        assert proc.poll() is None, f"{what}: the trainer ended first: {proc.communicate()[1][-2000:]}"
        assert time.time() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.05)
    return value


def _refusal(proc: subprocess.Popen) -> str:
    proc.stdin.write("go\n")
    proc.stdin.close()
    code, err = proc.wait(120), proc.stderr.read()
    assert code == 2 and "Traceback" not in err, err[-2000:]
    (line,) = [ln for ln in err.splitlines() if "error:" in ln]
    return line


def test_trainers_in_other_pid_namespaces_and_clocks_refuse_a_live_lease(digits_store, fault_report):
    """A trains in a PID namespace of its own (PID 1); B1, in another (also PID 1, same hostname), and B2, in another
    with its clock a day ahead, ask for the split while A holds it: both refuse, and A trains to the end."""
    uri, steps = str(digits_store.root), 60
    a = _start(_args(uri, steps, 20))
    b1 = _start(_args(uri, steps, 20), cued=True)
    b2 = _start(_args(uri, steps, 20), env=_day_ahead(), cued=True)
    try:
        held = _wait_for(lambda: read_lease(digits_store, 0), a, "A takes the split")
        assert held.owner.split("/")[1] == "1"  # PID 1 in its own namespace, as B1 and B2 are in theirs
        same_pid_line, clock_ahead_line = _refusal(b1), _refusal(b2)
        code, err = a.wait(180), a.communicate()[1]
    finally:
        for p in (a, b1, b2):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert code == 0, err[-2000:]  # A was never taken over
    assert f"split 0 is being trained by {held.owner}" in same_pid_line
    assert f"split 0 is being trained by {held.owner}" in clock_ahead_line
    assert complete_steps(digits_store, 0)[-1] == steps
    for step in complete_steps(digits_store, 0):
        load_checkpoint(digits_store, 0, step)  # one writer's sequence, every checkpoint intact
    assert not digits_store.exists(lease_key(0))
    fault_report("same hostname, own PID namespace", "two more trainers in PID namespaces of their own (all PID 1, "
                 "one hostname), one of them with its clock a day ahead, started while the first held the split",
                 2, 2, "none: both refuse at once, the first trains to the end", "none; one writer's checkpoints")


def _a_dead_writers_lease_expires_by_the_stores_clock(store, uri: str) -> tuple[float, float]:
    """A writer a day ahead, in a PID namespace of its own, killed mid-training: its lease, which claims to be good for
    a day, must stop counting one period after its last renewal; B then resumes the split. Returns (the seconds
    the lease stayed live after the kill, how far ahead the writer's own expiry claimed)."""
    a = _start(_args(uri, 400, 5), env=_day_ahead())
    try:
        _wait_for(lambda: complete_steps(store, 0), a, "A writes a checkpoint")
    finally:
        os.killpg(a.pid, signal.SIGKILL)
        a.wait(30)
    killed = time.time()
    claimed = read_lease(store, 0).expires - killed
    assert claimed > DAY - 60  # the writer's clock was a day ahead, and its lease says so
    deadline = killed + LEASE + 10
    while live_lease(store, 0) is not None:
        assert time.time() < deadline, f"a dead writer's lease is still live {time.time() - killed:.0f} s on"
        time.sleep(0.1)
    stale_after = time.time() - killed
    resumed_from = complete_steps(store, 0)[-1]
    result = train_split(store, tiny_config(steps=resumed_from + 5, checkpoint_every=5, lease_seconds=LEASE))
    assert result["resumed_from"] == resumed_from and complete_steps(store, 0)[-1] == resumed_from + 5
    return stale_after, claimed


def test_a_dead_writer_a_day_ahead_blocks_its_split_one_lease_period_locally(digits_store, fault_report):
    stale_after, claimed = _a_dead_writers_lease_expires_by_the_stores_clock(digits_store, str(digits_store.root))
    assert stale_after <= LEASE + 1.5
    fault_report("writer's clock a day ahead (local store)", f"trainer under libfaketime +1 day in its own PID "
                 f"namespace, SIGKILLed; its lease claimed {claimed / 3600:.0f} h", 1, 1,
                 f"none: the split was free {stale_after:.1f} s after the kill (lease {LEASE:.0f} s)", "none")


def test_a_dead_writer_a_day_ahead_blocks_its_split_one_lease_period_on_s3(s3_env, fault_report):
    store = open_store(s3_env)
    prepare(PrepareConfig(dataset="digits", resolution=32, classes_per_split=5), store)
    stale_after, claimed = _a_dead_writers_lease_expires_by_the_stores_clock(store, s3_env)
    assert stale_after <= LEASE + 2.5  # Last-Modified and Date count whole seconds
    fault_report("writer's clock a day ahead (S3)", f"trainer under libfaketime +1 day in its own PID namespace, "
                 f"SIGKILLed; its lease claimed {claimed / 3600:.0f} h", 1, 1,
                 f"none: the split was free {stale_after:.1f} s after the kill (lease {LEASE:.0f} s)", "none")
