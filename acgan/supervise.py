"""A training task keeps its trainer running: the trainer is a child process, restarted from the split's newest
complete checkpoint when it crashes (a segfault, a CUDA error, a store outage longer than its retries, a kill of the
process alone), a bounded number of times, each restart logged.

Why inside the task and not by the cluster: on a stock Kubeflow Pipelines 2.17 install Argo retries a pod only when
it errors (retryPolicy OnError: a deleted pod), not when its container fails, and a policy that retries failures
(Always) applies to every template, KFP's nested DAGs included, so one failing pod would be retried at every level
(docs/operators.md, section 5). Here the restart costs seconds, not a new pod, a GPU node and an image pull.

A failure that repeats is not retried forever: bad input or an unusable environment (the trainer's one-line error,
exit status 2) is never restarted, and a trainer that fails twice in a row at the same checkpoint (no step saved in
between) is not restarted again. SIGTERM or SIGINT to the task reaches the trainer, which saves the step it reached;
no restart follows, and a trainer never outlives its task (it gets SIGTERM when the task dies).

A split that another trainer holds (its lease is live: a second run on the same store, a task the cluster started
twice) is waited for, not failed: the task starts its trainer again once the lease is released or has lapsed, and
that trainer returns at once if the split is complete. So two runs on one store both finish and assemble, and each
split is trained by one trainer.

    python -m acgan.supervise STORE SPLIT      (the child: train SPLIT of STORE with its recorded settings)
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from acgan.checkpoint import complete_steps
from acgan.errors import UserError
from acgan.lease import SplitBusy, live_lease
from acgan.store import Store, open_store

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
USER_ERROR_STATUS = 2  # components.run_step and the `acgan` command: one line for bad input, exit status 2
BUSY_STATUS = 3  # the trainer found its split held by another trainer's live lease
FIRST_BACKOFF_SECONDS = 5.0  # doubled for each next restart, at most a minute
BUSY_POLL_SECONDS = 10.0  # how often a waiting task reads the lease of the trainer it waits for


class TrainerFailed(UserError):
    """The trainer failed in a way that restarting it would not change, or it used up its restarts."""


def _newest_step(store: Store, split: int) -> int | None:
    try:
        steps = complete_steps(store, split)
    except Exception as e:  # noqa: BLE001 - the store may be what failed: count it as no progress
        log.warning("split %d: could not list its checkpoints (%s)", split, str(e)[:200])
        return None
    return steps[-1] if steps else None


def _die_with_parent(parent: int) -> None:
    """In the trainer, before it starts: SIGTERM when the task's process ends (Linux's PR_SET_PDEATHSIG), so that a
    task killed outright (kfp.local, a process killed alone) leaves no trainer holding its split."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the task ended before the line above
            os.kill(os.getpid(), signal.SIGTERM)


def _wait_for_lease(store: Store, split: int, stop: threading.Event) -> bool:
    """Wait until the split's lease is released or lapsed; False when a signal stopped the wait."""
    log.warning("split %d: another trainer holds its lease; waiting for it to be released or to lapse (read every "
                "%.0f s)", split, BUSY_POLL_SECONDS)
    while live_lease(store, split) is not None:
        if stop.wait(BUSY_POLL_SECONDS):
            return False
    log.info("split %d: its lease is free; starting its trainer", split)
    return True


def oom_kills() -> int | None:
    """How many processes the kernel has killed at this process's cgroup memory limit: `oom_kill` in cgroup v2's
    memory.events or v1's memory.oom_control; None where neither can be read (no cgroup, another system)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            events = Path("/sys/fs/cgroup", path.lstrip("/"), "memory.events")
        elif "memory" in controllers.split(","):
            events = Path("/sys/fs/cgroup/memory", path.lstrip("/"), "memory.oom_control")
        else:
            continue
        try:
            counts = dict(line.split() for line in events.read_text().splitlines())
        except (OSError, ValueError):
            continue
        if counts.get("oom_kill", "").isdigit():
            return int(counts["oom_kill"])
    return None


def _describe(status: int, oom_before: int | None = None) -> str:
    """How the trainer ended; a SIGKILL counted by the cgroup's OOM killer since `oom_before` is the memory limit."""
    if status == -signal.SIGKILL and oom_before is not None and (oom_kills() or 0) > oom_before:
        return "killed by the kernel at the memory limit of its cgroup (oom_kill)"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


def supervise_training(store: Store, split: int, restarts: int) -> int:
    """Train `split` of `store` in a child process, restarting a crashed one at most `restarts` times; returns the
    split id. Raises TrainerFailed when the trainer fails for good, and when a signal stopped it (after it saved its
    step)."""
    stop = threading.Event()
    child: subprocess.Popen | None = None

    def forward(signum, frame):  # the trainer saves the step it reached on SIGTERM; no restart after it
        stop.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    handlers = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)} \
        if threading.current_thread() is threading.main_thread() else {}
    try:
        attempt, before, stalled = 0, _newest_step(store, split), False
        while True:
            attempt += 1
            oom_before = oom_kills()
            child = subprocess.Popen([sys.executable, "-m", "acgan.supervise", store.uri, str(split)],
                                     preexec_fn=functools.partial(_die_with_parent, os.getpid()))
            while True:
                try:
                    status = child.wait()
                    break
                except KeyboardInterrupt:  # only where no handler could be installed
                    forward(signal.SIGINT, None)
            if status == 0:
                return split
            if status == BUSY_STATUS and not stop.is_set():
                if not _wait_for_lease(store, split, stop):
                    raise TrainerFailed(f"split {split}: stopped by a signal while waiting for another trainer")
                attempt -= 1  # not a failure of this task's trainer
                continue
            after, how = _newest_step(store, split), _describe(status, oom_before)
            reached = "no checkpoint" if after is None else f"checkpoint {after}"
            if stop.is_set():
                raise TrainerFailed(f"split {split}: stopped by a signal ({how}, at {reached}); "
                                    "its task or a rerun resumes from there")
            if status == USER_ERROR_STATUS:
                raise TrainerFailed(f"split {split}: the trainer stopped on an error that a restart would repeat "
                                    "(its line is above); not restarted")
            if after == before and stalled:
                raise TrainerFailed(f"split {split}: the trainer failed twice in a row at {reached} "
                                    f"({how}), saving no step in between: not restarted again; "
                                    "its log is above")
            if attempt > restarts:
                raise TrainerFailed(f"split {split}: the trainer failed {attempt} times (last: {how}, "
                                    f"at {reached}); no restarts left (--trainer-restarts {restarts})")
            stalled = after == before
            wait = min(60.0, FIRST_BACKOFF_SECONDS * 2 ** (attempt - 1))
            log.warning("split %d: the trainer failed (%s) at %s; restarting it from there in %.0f s (restart %d "
                        "of %d)", split, how, reached, wait, attempt, restarts)
            before = after
            if stop.wait(wait):
                raise TrainerFailed(f"split {split}: stopped by a signal before its trainer restarted, at {reached}")
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)


def main(argv: list[str]) -> int:
    """The trainer: one split with the experiment's recorded settings; bad input is one line and exit status 2."""
    from acgan.errors import explain
    from acgan.experiment import train_one_split
    from acgan.process import record_task_failure, start_task_process

    start_task_process()
    split = int(argv[1])
    try:
        train_one_split(open_store(argv[0]), split)
    except SplitBusy as e:
        log.warning("split %d: %s", split, explain(e))
        return BUSY_STATUS
    except Exception as e:
        message = explain(e)
        if message is None:
            raise
        log.error("split %d: %s", split, message)
        record_task_failure("train-split", f"split {split}: {message}")
        return USER_ERROR_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
