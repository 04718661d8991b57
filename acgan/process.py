"""What every process a pipeline task starts does first: glibc's malloc tuned for tensor work (acgan/allocator.py)
and log lines of one format on stderr, the store client's own below warnings; and how a child server is stopped."""

from __future__ import annotations

import logging
import subprocess

from acgan import allocator


def start_task_process() -> None:
    allocator.tune()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("urllib3", "minio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def stop_process(proc: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM, then SIGKILL if `proc` has not exited within `grace_seconds`; returns once it has exited."""
    proc.terminate()
    try:
        proc.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
