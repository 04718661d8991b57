"""What every process a pipeline task starts does first: glibc's malloc tuned for tensor work (acgan/allocator.py)
and log lines of one format on stderr, the store client's own below warnings, and, in a task of a local run, an end
with the run's process however it ends (SIGKILL included); how a task records its one-line reason for failing, so
that the run's last line can name it; and how a child server is stopped.

A local run (`acgan run`) tells its tasks, through their environment (`local_run_environment`), which process they
belong to (`ACGAN_RUN_PROCESS`, its pid and start time), where to record a failure (`ACGAN_TASK_FAILURES`) and a
temporary folder of the run's own (`TMPDIR`: kfp.local writes each task's program under `mktemp -d`), removed when
the run ends."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from acgan import allocator

RUN_PROCESS_ENV = "ACGAN_RUN_PROCESS"
TASK_FAILURES_ENV = "ACGAN_TASK_FAILURES"


def start_task_process() -> None:
    allocator.tune()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("urllib3", "minio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _end_with_the_run()


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def _end_with_the_run() -> None:
    """SIGTERM to this process once the local run it belongs to has ended: a thread waits on a pidfd of the run's
    process. PR_SET_PDEATHSIG cannot do it: kfp.local starts each task under `sh -c`, which outlives the run."""
    pid, _, started = os.environ.get(RUN_PROCESS_ENV, "").partition(":")
    if not pid.isdigit() or not hasattr(os, "pidfd_open"):
        return
    try:
        fd = os.pidfd_open(int(pid))
    except ProcessLookupError:
        fd = None
    if fd is None or _start_time(int(pid)) != started:  # ended already, its pid perhaps reused
        os.kill(os.getpid(), signal.SIGTERM)
        return

    def wait() -> None:
        select.select([fd], [], [])  # readable once the process has ended
        os.kill(os.getpid(), signal.SIGTERM)  # a trainer saves its step; a supervisor passes it on (supervise.py)

    threading.Thread(target=wait, name="end-with-the-run", daemon=True).start()


def record_task_failure(task: str, reason: str) -> None:
    """In a task of a local run: its one-line reason for failing, for the run's last line (`task_failures`)."""
    path = os.environ.get(TASK_FAILURES_ENV)
    if path:
        with contextlib.suppress(OSError), open(path, "a") as f:
            f.write(json.dumps({"task": task, "reason": reason[:2000]}) + "\n")  # one short append: atomic


@contextlib.contextmanager
def local_run_environment() -> Iterator[Path]:
    """The environment of a local run's tasks (the module's docstring), while the block runs; yields the file the
    tasks record their failures in. The run's temporary folder is removed at the end."""
    folder = Path(tempfile.mkdtemp(prefix="acgan-run-"))
    failures = folder / "task-failures.jsonl"
    values = {RUN_PROCESS_ENV: f"{os.getpid()}:{_start_time(os.getpid())}", TASK_FAILURES_ENV: str(failures),
              "TMPDIR": str(folder)}
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield failures
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)


def task_failures(path: Path) -> list[dict]:
    """What `record_task_failure` recorded, first first; a damaged line is skipped."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and isinstance(entry.get("reason"), str):
                found.append(entry)
    return found


def seconds_since_start() -> float | None:
    """How long this process has run (its start-up: the interpreter, imports, kfp's executor), from Linux's /proc
    (proc(5): /proc/self/stat's starttime, in clock ticks since boot, against /proc/uptime); None elsewhere."""
    started = _start_time(os.getpid())
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return None if started is None else max(0.0, uptime - int(started) / os.sysconf("SC_CLK_TCK"))


def stop_process(proc: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM, then SIGKILL if `proc` has not exited within `grace_seconds`; returns once it has exited."""
    proc.terminate()
    try:
        proc.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
