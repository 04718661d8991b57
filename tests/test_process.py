"""acgan/process.py's stop_process, on real child processes: one that exits on SIGTERM, one that ignores it."""

import signal
import subprocess
import sys
import time

from acgan.process import stop_process


def _child(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", f"import signal, sys, time\n{code}\nprint('up', flush=True)\n"
                                                   "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "up\n"  # its handler is in place before it is stopped
    return proc


def test_a_process_that_exits_on_sigterm_is_stopped_by_it():
    proc = _child("")
    started = time.monotonic()
    stop_process(proc, 30)
    assert proc.returncode == -signal.SIGTERM and time.monotonic() - started < 10


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace():
    proc = _child("signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    started = time.monotonic()
    stop_process(proc, 1)
    assert proc.returncode == -signal.SIGKILL and time.monotonic() - started >= 1
