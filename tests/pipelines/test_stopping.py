"""`StopOnSignal` with real processes: the first SIGTERM to this process reaches every process below a kfp.local task
(here a task that supervises a trainer it started in a session of its own) and no other child; a second kills what
is left; while stopping, kfp.local's lines that start or retry a task raise. The whole run: tests/faults/
test_stopping.py."""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.stopping import StopOnSignal, TaskRefused, task_processes

# A task as kfp.local starts one (`--executor_input` among its arguments) that supervises a trainer: it starts the
# trainer in a session of its own, and on SIGTERM waits for it and exits without starting it again. The trainer
# records the signal it got; with "stubborn" it ignores SIGTERM.
_TASK = """
import signal, subprocess, sys, time
trainer = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]], start_new_session=True)
signal.signal(signal.SIGTERM, lambda *_: None)  # told to stop: the trainer was told too; wait for it
while trainer.poll() is None:
    time.sleep(0.05)
sys.exit(trainer.returncode)
"""
_TRAINER = """
import pathlib, signal, sys, time
out, mode = pathlib.Path(sys.argv[1]), sys.argv[2]
signal.signal(signal.SIGTERM, (lambda *_: out.write_text("SIGTERM")) if mode == "stubborn" else
              (lambda *_: (out.write_text("SIGTERM"), sys.exit(2))))
out.with_suffix(".ready").write_text("")
while True:
    time.sleep(0.05)
"""


def _task(tmp_path: Path, name: str, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _TASK, _TRAINER, str(tmp_path / name), mode,
                             "--executor_input", "{}"])
    deadline = time.time() + 30
    while not (tmp_path / name).with_suffix(".ready").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    return proc


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_the_first_signal_reaches_every_process_below_a_task_and_a_second_kills_them(tmp_path):
    other = subprocess.Popen(["sleep", "60"])  # a child of this process that is no task (a test's S3 server)
    polite, stubborn = _task(tmp_path, "polite", "polite"), _task(tmp_path, "stubborn", "stubborn")
    below = set(task_processes())
    assert {polite.pid, stubborn.pid} <= below and other.pid not in below and len(below) == 4  # and the trainers
    before = signal.getsignal(signal.SIGTERM)
    try:
        with StopOnSignal("STORE") as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the handler runs in this (the main) thread
            assert stop.signum == signal.SIGTERM and stop.name_of_signal == "SIGTERM"
            assert polite.wait(30) == 2  # the supervisor waited for its trainer, which exited on the signal
            assert (tmp_path / "polite").read_text() == "SIGTERM" == (tmp_path / "stubborn").read_text()
            assert stubborn.poll() is None and _alive(other.pid)
            for message in ("Executing task \x1b[96m'train-split'\x1b[0m",
                            "Task train-split failed (attempt 1/2). Retrying in 0.0s..."):
                record = logging.LogRecord("root", logging.INFO, __file__, 0, message, None, None)
                with pytest.raises(TaskRefused, match=r"not started: the run is stopping \(SIGTERM\)"):
                    stop.filter(record)
            assert stop.filter(logging.LogRecord("root", logging.INFO, __file__, 0, "Task x finished", None, None))
            os.kill(os.getpid(), signal.SIGTERM)  # a second signal: what is left is killed
            time.sleep(0.5)
            assert stubborn.wait(30) == -signal.SIGKILL and stop.killed
        assert signal.getsignal(signal.SIGTERM) is before  # put back
        assert "lost its steps since its last checkpoint" in str(stop.outcome())
        assert stop.outcome().exit_status == 128 + signal.SIGTERM
        assert _alive(other.pid)
    finally:
        for proc in (other, polite, stubborn):
            proc.kill()
        for pid in task_processes():
            os.kill(pid, signal.SIGKILL)


def test_the_last_line_says_which_leases_are_left(digits_store):
    """Issue 36: a Ctrl-C during a restart's back-off (its trainer had crashed, leaving its lease) ended with "each
    split being trained ... released its lease". The line reads the store's leases now."""
    from tests.acgan_cli.commands.test_unlock import _lease_of_a_process_that_ended

    stop = StopOnSignal(digits_store.uri)
    stop.signum = signal.SIGINT
    assert str(stop.outcome()).startswith("stopped by SIGINT: each split being trained saved the step it reached "
                                          "and released its lease; continue with `acgan rerun --store ")
    _lease_of_a_process_that_ended(digits_store.uri, 1)
    assert ("released its lease, but split(s) 1 still have one, their trainers ended without releasing it (the next "
            "run takes it over at once); continue with") in str(stop.outcome())
