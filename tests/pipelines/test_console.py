"""`acgan run`'s display, driven by progress events as the tasks write them (acgan/progress.py)."""

import io
import time

from acgan import progress
from acgan.progress import Event
from pipelines.console import RunProgress


def _event(stage: str, kind: str = "progress", **fields) -> Event:
    return Event(stage=stage, kind=kind, time=time.time(), **fields)


def test_a_folder_runs_stages_end_once_every_split_is_done():
    """A folder data set's split count is unknown until the plan is made: the stages inside the fan-out ended each
    time no task of theirs was running (seen: "training: done" 50 times in a 1000-class run)."""
    out = io.StringIO()
    display = RunProgress(None, 2, out)
    display.event(_event(progress.PLAN, "start"))
    display.event(_event(progress.PLAN, part=progress.FAN_OUT, total=3))
    display.event(_event(progress.PLAN, "done"))
    for split in range(3):  # one split after the other, as two at a time or one alone would also finish
        for stage in (progress.SHARDS, progress.TRAIN):
            display.event(_event(stage, "start"))
            if stage == progress.TRAIN:
                display.event(_event(stage, part=progress.STEPS, split=split, step=2, total=2, figures={"loss_d": 1}))
            display.event(_event(stage, "done"))
    printed = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in printed if ": done in" in line] == [
        "planning the class splits", "preparing each split's data", "training"]
    assert printed[-1].startswith("training: done in ")
    assert [line for line in printed if "step" in line] == [f"  split {s}: step 2/2" for s in range(3)]


def test_the_evaluation_shows_its_parts_outside_a_terminal():
    out = io.StringIO()
    display = RunProgress(1, 2, out)
    display.event(_event(progress.EVALUATE, "start"))
    for step in (10, 30):
        display.event(_event(progress.EVALUATE, part=progress.CLASSIFIER, step=step, total=30))
    display.event(_event(progress.EVALUATE, part=progress.SPLITS, step=1, total=1))
    display.event(_event(progress.EVALUATE, "done"))
    assert out.getvalue().splitlines()[:3] == ["evaluating...", "  evaluating, training its classifier: 30/30",
                                               "  evaluating, split by split: 1/1"]
