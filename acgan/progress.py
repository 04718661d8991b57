"""A run's progress as events: the stages and tasks write them, `acgan run`'s display (pipelines/console.py), the
benchmark's breakdown and the tests read them. This module owns the schema, its writer and its reader; log lines are
for people, and no module parses them.

Where they go: one JSON line per event, appended to the file named by the environment variable `ACGAN_PROGRESS`.
`acgan run` and `acgan rerun --local` set it to `progress.jsonl` beside the run's task logs before kfp.local starts
its tasks, which are subprocesses of that process and inherit it. A cluster's pods never have it: there `emit` does
nothing, and a pod's log lines are its progress. Each event is one write of one line to a file opened for appending
(O_APPEND: the kernel puts each write at the end, so the lines of tasks running at once never interleave), read as it
grows; the reader keeps a trailing part line for the next read and skips a line it cannot decode.

What an event says:
  stage   the task that wrote it: one of STAGES (a KFP component's name)
  kind    "start" and "done" (written by the component's wrapper, components/run_step: "start" with the seconds
          the task's process took to start, "done" with the seconds of work inside the task), or "progress": `step` of `total` of `part` (training: a split's steps; the plan: the
          splits the run fans out over; the evaluation: the classifier's training steps, then the splits)
  figures what the display shows beside the bar (a training tick's losses and MS-SSIM)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

ENVIRONMENT = "ACGAN_PROGRESS"  # the events file of a local run; unset on a cluster
PLAN, SHARDS, TRAIN, ASSEMBLE, EVALUATE = ("prepare-data", "prepare-split-data", "train-split", "assemble-ensemble",
                                          "evaluate-ensemble")
STAGES = (PLAN, SHARDS, TRAIN, ASSEMBLE, EVALUATE)  # in the order a run reaches them
# The parts a "progress" event counts.
STEPS, FAN_OUT, CLASSIFIER, SPLITS = "steps", "fan-out", "classifier", "splits"
EVERY_SECONDS = 0.5  # a loop reports its progress at most this often (`Throttle`): often enough for a live bar


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    kind: Literal["start", "progress", "done"]
    time: float
    part: str | None = None
    split: int | None = None
    step: int | None = None
    total: int | None = None
    seconds: float | None = None
    figures: dict[str, float] = {}


def emit(stage: str, kind: Literal["start", "progress", "done"], **fields) -> None:
    """Append one event to the run's events file; nothing where no file is named (a cluster's pod, `acgan evaluate`
    alone)."""
    path = os.environ.get(ENVIRONMENT)
    if not path:
        return
    line = Event(stage=stage, kind=kind, time=time.time(), **fields).model_dump_json(exclude_defaults=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Throttle:
    """`due()` at most once every EVERY_SECONDS: a loop of thousands of short steps reports a few times a second."""

    def __init__(self):
        self.seconds, self.last = EVERY_SECONDS, time.perf_counter()

    def due(self) -> bool:
        now = time.perf_counter()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


class EventReader:
    """The events appended to `path` since the last `read()`, in the order they were written."""

    def __init__(self, path: Path):
        self.path, self.offset, self.damaged = path, 0, 0

    def read(self) -> list[Event]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        complete = data[:data.rfind(b"\n") + 1]  # a line being written is read once it ends
        self.offset += len(complete)
        events = []
        for line in complete.splitlines():
            try:
                events.append(Event.model_validate_json(line))
            except ValidationError:
                self.damaged += 1
        return events


def read_events(path: Path) -> list[Event]:
    """Every event of a finished run."""
    return EventReader(path).read()


def events_file(folder: Path) -> Path:
    return folder / "progress.jsonl"
