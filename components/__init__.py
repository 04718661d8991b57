"""The pipeline's KFP components, one per file. Each only adapts its parameters and calls the library (`acgan`),
inside `run_step`, which gives bad input one clear log line and exit status 2 instead of a traceback.
Components never install packages at run time: the image carries the project (`install_kfp_package=False`)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def run_step(name: str, fn: Callable[[], T]) -> T:
    from acgan import progress
    from acgan.errors import explain
    from acgan.process import record_task_failure, seconds_since_start, start_task_process

    start_task_process()
    progress.emit(name, "start", seconds=seconds_since_start())  # the task's start-up so far
    start = time.perf_counter()
    try:
        result = fn()
        seconds = time.perf_counter() - start
        progress.emit(name, "done", seconds=seconds)
        logging.getLogger(name).info("%s: done in %.1f s", name, seconds)
        return result
    except Exception as e:
        message = explain(e)
        if message is None:
            raise
        logging.getLogger(name).error("%s: %s", name, message)
        record_task_failure(name, message)
        sys.exit(2)
    except KeyboardInterrupt:  # a Ctrl-C reaches every process of the terminal's group: the run stops with it
        logging.getLogger(name).error("%s: interrupted (SIGINT)", name)
        sys.exit(130)
