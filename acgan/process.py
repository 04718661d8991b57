"""What every process a pipeline task starts does first: glibc's malloc tuned for tensor work (acgan/allocator.py)
and log lines of one format on stderr, the store client's own below warnings; and how a child server is stopped."""

from __future__ import annotations

import logging
import os
import subprocess

from acgan import allocator


def start_task_process() -> None:
    allocator.tune()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("urllib3", "minio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def seconds_since_start() -> float | None:
    """How long this process has run (its start-up: the interpreter, imports, kfp's executor), from Linux's /proc
    (proc(5): /proc/self/stat's starttime, in clock ticks since boot, against /proc/uptime); None elsewhere."""
    try:
        starttime = int(open("/proc/self/stat").read().rpartition(")")[2].split()[19])
        uptime = float(open("/proc/uptime").read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - starttime / os.sysconf("SC_CLK_TCK"))


def stop_process(proc: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM, then SIGKILL if `proc` has not exited within `grace_seconds`; returns once it has exited."""
    proc.terminate()
    try:
        proc.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
