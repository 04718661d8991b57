"""One SIGTERM or one Ctrl-C stops a local run (`acgan run`, `acgan rerun --local`) and every task it started.

kfp.local runs each task as `sh -c` and a Python below it, in this process's process group, from worker threads
that retry a failed task. A Ctrl-C in a terminal reaches every process of the group; `kill`, `timeout` or a cancelled
CI job may reach this process alone; a task may start processes of its own (a supervised trainer), in a group of
their own. So on the first SIGINT or SIGTERM, `StopOnSignal`:
- sends SIGTERM to every process of every task's tree (from /proc: the processes below this one from a task's
  process down, a task's carrying `--executor_input`), so that each trainer saves the step it reached and
  releases its split's lease, whichever signal reached it first (acgan/training/loop.py). A process that supervises
  a trainer must treat either signal as the end: pass it on, wait for the trainer, and not start it again;
- starts no task from then on, a retry included. kfp.local has no hook for that, but it logs a line on the root
  logger right before it starts a task's process, and before it retries a failed task (`_STARTS`); a filter there
  raises `TaskRefused`, which its retry loop does not catch and its fan-out counts as the task failing;
- leaves kfp.local to wait for every task's output to end, as it does for a failed task; then the run ends with one
  line (`RunStopped`).
A second signal sends SIGKILL to what is left of the tasks: their steps since the last checkpoint are lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import threading
from collections import defaultdict
from pathlib import Path

from acgan.errors import UserError, rerun_command
from acgan.lease import leases_left
from acgan.store import open_store


# kfp.local's lines just before it starts a task, and before it starts a failed one again (kfp 2.17.0,
# kfp/local/task_dispatcher.py, run_single_task_implementation; kfp/local/orchestrator/task_executor.py,
# execute_single_task).
_STARTS = re.compile(r"Executing task |Task \S+ failed \(attempt \d+/\d+\)\. Retrying")


class TaskRefused(Exception):
    """A task kfp.local was about to start after the run was told to stop."""


class RunStopped(UserError):
    """The run stopped on a signal; the exit status is the shell's for that signal (128 + its number)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = 128 + signum


class StopOnSignal(logging.Filter):
    """While its `with` block runs: the SIGINT and SIGTERM handler, and the root logger's filter, of one local run
    (in the main thread only, where Python runs signal handlers; elsewhere the block runs as it is). `signum` is
    the first signal, if any."""

    def __init__(self, store: str):
        super().__init__()
        self.store = store  # the run's, for its last line
        self.signum: int | None = None
        self.killed = False  # a second signal came: the tasks were killed
        self.progress = None  # the run's progress display (pipelines/console.py), if it has one, else stderr
        self._previous: dict = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self.handle) for signum in (signal.SIGINT, signal.SIGTERM)}
            logging.getLogger().addFilter(self)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous:
            logging.getLogger().removeFilter(self)
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)

    @property
    def name_of_signal(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None

    def handle(self, signum: int, frame) -> None:
        first = self.signum is None
        self.signum, self.killed = self.signum or signum, not first
        for pid in task_processes():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM if first else signal.SIGKILL)
        if first:
            line = (f"stopping ({self.name_of_signal}): each training task saves the step it reached, then the run "
                    "ends; a second signal kills the tasks")
            if self.progress is not None:
                self.progress.stopping = True
                self.progress.say(line)
            else:
                print(line, file=sys.stderr, flush=True)

    def outcome(self) -> RunStopped:
        """The run's last line, once its tasks have ended: what the store says of the splits' leases, as a trainer
        that had crashed (a task in its restart's back-off) left its own."""
        continue_with = f"continue with {rerun_command(self.store)}"
        left = leases_left(open_store(self.store))
        released = "released its lease" if not left else (
            f"released its lease, but split(s) {', '.join(map(str, left))} still have one, their trainers ended "
            "without releasing it (the next run takes it over at once)")
        done = ("the tasks were killed by a second signal: each split being trained lost its steps since its last "
                "checkpoint" if self.killed else
                f"each split being trained saved the step it reached and {released}")
        return RunStopped(f"stopped by {self.name_of_signal}: {done}; {continue_with}", self.signum)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.signum is not None and _STARTS.match(record.getMessage()):
            raise TaskRefused(f"not started: the run is stopping ({self.name_of_signal})")
        return True


def task_processes() -> list[int]:
    """The processes of this process's kfp.local tasks, and everything below them, found by parent in /proc (none
    where there is no /proc)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else []:
        if entry.name.isdigit():
            try:
                ppid = int(Path(entry.path, "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):  # ended while we looked
                continue
            children[ppid].append(int(entry.name))
    found, todo = [], [(os.getpid(), False)]
    while todo:
        pid, in_task = todo.pop()
        for child in children[pid]:
            below = in_task or _is_task(child)
            if below:
                found.append(child)
            todo.append((child, below))
    return found


def _is_task(pid: int) -> bool:
    try:
        return b"--executor_input" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
