"""What `acgan run` and `acgan rerun --local` show a person: one progress display for the whole run, each task's
log in its own file, and a closing summary of the evaluation in words and a small table.

Progress comes from the run's events (acgan/progress.py): every task appends them to `progress.jsonl` beside the task
logs, and `EventFeed` reads them as they come, a few times a second, moving the display's bars and their clocks. In a
terminal each stage has a bar with its ETA: planning and assembling (one task each), each split's data (splits),
training (every split's steps), the evaluation by its parts (the classifier's steps, then the splits); elsewhere (a
file, a pipe) a line per stage and per training tick.

kfp.local streams every task's output, and its own executor JSON, into this process's stdout, from one thread per
running task. During a run `TaskLogs` stands in for stdout: it files each thread's lines under the task that thread
announced ("Executing task 'train-split'"). kfp.local reports a task starting, failing and being retried only as
text through the root logger, task names coloured (kfp/local/task_dispatcher.py, run_single_task_implementation;
orchestrator/task_executor.py; pipeline_orchestrator.py for a failed run), and has no other interface for them; kfp
is pinned to one release (pyproject.toml) and tests/pipelines/test_runs.py reads these lines from a real kfp.local
run. Those lines are the only ones read here; the project's own log lines are for people. `--verbose` leaves stdout
alone (the events are written all the same).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from acgan import progress
from acgan.evaluation.report import plain_summary
from acgan.progress import Event, EventReader

# kfp.local's wording (kfp 2.17.0; see above).
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXECUTING = re.compile(r"Executing task '([^']+)'")
_FAILED = re.compile(r"Task '([^']+)' finished with status FAILURE")
_RETRYING = re.compile(r"Task (\S+) failed \(attempt (\d+)/(\d+)\)\. Retrying")
_RUN_FAILED = re.compile(r"Inner task failed: '([^']+)'")  # the RuntimeError of a failed run
STAGES = {progress.PLAN: "planning the class splits", progress.SHARDS: "preparing each split's data",
          progress.TRAIN: "training", progress.ASSEMBLE: "assembling", progress.EVALUATE: "evaluating"}
PER_SPLIT = {progress.SHARDS, progress.TRAIN}  # one task per split, inside the fan-out
PARTS = {progress.CLASSIFIER: "training its classifier", progress.SPLITS: "split by split"}  # the evaluation's
NAMED, TABLE_ROWS = 10, 20  # the closing summary names and tabulates this many classes at most (ImageNet has 1000)
POLL_SECONDS = 0.1  # how often the display reads new events and redraws its clocks


class TaskLogs:
    """A file-like stdout that writes each task's lines to `folder/NN-task.log`, and tells `progress` of a task that
    kfp.local saw fail or retries."""

    def __init__(self, folder: Path, progress: "RunProgress"):
        self.folder, self.progress = folder, progress
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._files: dict[int, TextIO] = {}  # thread -> the log of the task it runs
        self._pending: dict[int, str] = {}
        self.logs: list[Path] = []
        self.failed: list[Path] = []
        self._run_log = open(self.folder / "run.log", "a")

    def write(self, text: str) -> int:
        thread = threading.get_ident()
        with self._lock:
            lines = (self._pending.pop(thread, "") + text).split("\n")
            self._pending[thread] = lines.pop()
            for line in lines:
                self._line(thread, _ANSI.sub("", line))
        return len(text)

    def _line(self, thread: int, line: str) -> None:
        started = _EXECUTING.search(line)
        if started:
            path = self.folder / f"{len(self.logs) + 1:02d}-{started[1]}.log"
            self.logs.append(path)
            self._files[thread] = open(path, "w")
        log = self._files.get(thread, self._run_log)
        log.write(line + "\n")
        log.flush()
        failed = _FAILED.search(line)
        if failed and thread in self._files:
            self.failed.append(Path(self._files[thread].name))
            self.progress.task_failed(failed[1], self.failed[-1])
        elif _RETRYING.search(line):
            self.progress.say("  retrying it (the task's retry policy)")

    def failed_log(self, task: str | None) -> Path | None:
        """The log of the task that failed: the last attempt of `task` seen failing, else its last attempt's
        (`task` None: the last failed log of any task)."""
        of_task = [path for path in self.logs if task and path.name.endswith(f"-{task}.log")]
        failed = [path for path in self.failed if path in of_task] or self.failed
        return next(iter(failed[::-1] + of_task[::-1]), None)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        for f in [*self._files.values(), self._run_log]:
            f.close()


class _Stage:
    """A stage's tasks (started, running, done), where it is, and its bar in a terminal."""

    def __init__(self, started: float):
        self.started, self.running, self.done = started, 0, 0
        self.at: dict[int | None, int] = {}  # training: per split, the step it last reported
        self.part: str | None = None
        self.bar: tqdm | None = None


class RunProgress:
    """The run's stages, read from its events (acgan/progress.py): a bar with an ETA per stage in a terminal (one
    over every training step of the run), else a line per stage and per training tick."""

    def __init__(self, splits: int | None, steps: int, out: TextIO):
        self.out, self.steps, self.splits = out, steps, splits
        self.tty = out.isatty()
        self.stages: dict[str, _Stage] = {}
        self.stopping = False  # the run was told to stop (pipelines/stopping.py): its tasks end failed, as told
        self._lock = threading.RLock()  # the event feed's thread, kfp.local's threads, a signal handler

    def say(self, text: str) -> None:
        # Never print(): kfp.local swaps builtins.print for one that writes its indent to sys.stdout, which is
        # TaskLogs, whose lock this thread may hold.
        with self._lock:
            bars = self._bars()
            for bar in bars:
                bar.clear()
            self.out.write(text + "\n")
            self.out.flush()
            for bar in bars:
                bar.refresh()

    def _bars(self) -> list[tqdm]:
        return [stage.bar for stage in self.stages.values() if stage.bar is not None]

    def refresh(self) -> None:
        """Redraw the bars: their clocks and ETAs move between events."""
        with self._lock:
            for bar in self._bars():
                bar.refresh()

    def event(self, e: Event) -> None:
        with self._lock:
            if e.kind == "start":
                self._started(e)
            elif e.kind == "done":
                self._finished(e.stage)
            elif e.part == progress.FAN_OUT:  # a folder's splits are known once the plan is made, and complete
                self.splits = e.total         # splits are not fanned out
            elif e.stage in self.stages:
                self._moved(e)

    def _started(self, e: Event) -> None:
        stage = self.stages.get(e.stage)
        if stage is None:
            stage = self.stages[e.stage] = _Stage(time.perf_counter())
            self.say(f"{STAGES.get(e.stage, e.stage)}...")
            if self.tty:
                total, unit = self._size(e.stage)
                stage.bar = tqdm(total=total, desc=STAGES.get(e.stage, e.stage), unit=unit, file=self.out,
                                 dynamic_ncols=True, leave=False)
        stage.running += 1

    def _size(self, name: str) -> tuple[int | None, str]:
        """A stage's bar: every step of the run's training, a split per task inside the fan-out, else one task."""
        if name == progress.TRAIN:
            return (self.splits * self.steps if self.splits else None), "step"
        if name in PER_SPLIT:
            return self.splits, "split"
        return 1, "task"

    def task_failed(self, task: str, log: Path) -> None:
        """Not a finished task: its retry, or the run's failure, follows."""
        with self._lock:
            if task in self.stages:
                self.stages[task].running -= 1
            if not self.stopping:
                self.say(f"{STAGES.get(task, task)}: a task failed; its log: {log}")

    def _finished(self, name: str) -> None:
        """A stage is done when all its tasks are: one per split inside the fan-out (the plan's split count, known
        before the run or read from the plan's fan-out event), else one."""
        stage = self.stages.get(name) or self.stages.setdefault(name, _Stage(time.perf_counter()))
        stage.running, stage.done = stage.running - 1, stage.done + 1
        if stage.bar is not None and name != progress.TRAIN:
            stage.bar.update(1 if name in PER_SPLIT or stage.part is None else 0)
        expected = self.splits if name in PER_SPLIT and self.splits else None
        if stage.done == expected or (expected is None and stage.running <= 0):
            if stage.bar is not None:
                stage.bar.close()
                stage.bar = None
            self.say(f"{STAGES.get(name, name)}: done in {duration(time.perf_counter() - stage.started)}")

    def _moved(self, e: Event) -> None:
        stage = self.stages[e.stage]
        if e.stage == progress.TRAIN:
            stage.at[e.split] = e.step
            if stage.bar is not None:
                if e.figures:
                    stage.bar.set_postfix(_figures(e.figures), refresh=False)
                stage.bar.update(sum(stage.at.values()) - stage.bar.n)
            elif e.figures:
                self.say(f"  split {e.split}: step {e.step}/{e.total}")
            return
        if e.part != stage.part:  # the evaluation's next part: the bar starts again, over the part's units
            stage.part = e.part
            if stage.bar is not None:
                stage.bar.reset(total=e.total)
                stage.bar.unit = "step" if e.part == progress.CLASSIFIER else "split"
                stage.bar.set_description(f"{STAGES.get(e.stage, e.stage)}, {PARTS.get(e.part, e.part)}")
        if stage.bar is not None:
            stage.bar.update(e.step - stage.bar.n)
        elif e.step == e.total:
            self.say(f"  {STAGES.get(e.stage, e.stage)}, {PARTS.get(e.part, e.part)}: {e.step}/{e.total}")

    def close(self) -> None:
        with self._lock:
            for stage in self.stages.values():
                if stage.bar is not None:
                    stage.bar.close()
                    stage.bar = None


class EventFeed(threading.Thread):
    """Reads the run's events file as it grows and hands each event to the display, redrawing its clocks."""

    def __init__(self, path: Path, display: RunProgress):
        super().__init__(daemon=True, name="progress-events")
        self.reader, self.display, self.stop = EventReader(path), display, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(POLL_SECONDS):
            self.drain()
            self.display.refresh()

    def drain(self) -> None:
        for e in self.reader.read():
            self.display.event(e)

    def close(self) -> None:
        self.stop.set()
        self.join()
        self.drain()  # what the last tasks wrote before they ended


@contextlib.contextmanager
def progress_events(folder: Path) -> Iterator[Path]:
    """Inside: this process's tasks append their progress events to `folder/progress.jsonl` (acgan/progress.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = progress.events_file(folder)
    before = os.environ.get(progress.ENVIRONMENT)
    os.environ[progress.ENVIRONMENT] = str(path)
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop(progress.ENVIRONMENT, None)
        else:
            os.environ[progress.ENVIRONMENT] = before


@contextlib.contextmanager
def quiet_run(folder: Path, splits: int | None, steps: int, out: TextIO) -> Iterator[TaskLogs]:
    """Inside: task output goes to log files under `folder`, progress (read from the events file there) to `out`;
    kfp.local's warnings that our image is "non-Python" (it is the image this very environment was built from) and
    that Kubernetes settings (GPU, CPU request, display name) do nothing on one machine are silenced."""
    display = RunProgress(splits, steps, out)
    logs = TaskLogs(folder, display)
    feed = EventFeed(progress.events_file(folder), display)
    stdout, root = sys.stdout, logging.getLogger()
    handlers = root.handlers[:]
    # kfp.local sets the root logger's handler per task and puts back what it found when the task ends; with tasks
    # running at once, what it finds must be TaskLogs too, or a task's closing lines reach the terminal.
    level, root.level = root.level, logging.INFO
    root.handlers = [logging.StreamHandler(logs)]
    sys.stdout = logs
    feed.start()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
            warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*", category=UserWarning)
            yield logs
    finally:
        feed.close()
        sys.stdout, root.handlers, root.level = stdout, handlers, level
        logs.close()
        display.close()


def failed_task(error: Exception) -> str | None:
    """The task a failed kfp.local run names ("... Inner task failed: 'train-split' inside 'for-loop-2'."), or None."""
    found = _RUN_FAILED.search(_ANSI.sub("", str(error)))
    return found[1] if found else None


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def summary_text(metrics: dict, report: str, grids: str, local_report: Path | None) -> str:
    """The evaluation in words and a per-class table, with where to look next: the parts of it that the analyses
    chosen computed (overall accuracy: discriminability; overall MS-SSIM: diversity; per class, the accuracy where
    the classifier ran and the MS-SSIM where MS-SSIM ran)."""
    classes = metrics["classes"]
    accuracy, diversity = "accuracy" in classes[0], "ms_ssim" in classes[0]  # per class, what was computed
    lines = plain_summary(metrics, NAMED)
    # Every analysis reads the classifier or MS-SSIM: the table has one of the two at least.
    head = f"{'class':<12}" + (f" {'recognised':>10}" if accuracy else "") + \
        (f"  {'MS-SSIM samples':>16}  {'MS-SSIM real':>14}  flag" if diversity else "")
    lines += ["", head]
    for c in classes[:TABLE_ROWS]:
        row = f"{c['name'][:12]:<12}" + (f" {c['accuracy']:>10.1%}" if accuracy else "")
        if diversity:
            row += (f"  {c['ms_ssim']:>9.2f} ± {c['ms_ssim_se']:.2f}  {c['real_ms_ssim']:>7.2f} ± "
                    f"{c['real_ms_ssim_se']:.2f}  {'collapsing' if c['low_diversity'] else ''}")
        lines.append(row.rstrip())
    if len(classes) > TABLE_ROWS:
        lines.append(f"… {len(classes) - TABLE_ROWS} more classes: every class is in the report and in metrics.json")
    lines += ["", f"report:       {report}", f"sample grids: {grids}"]
    if local_report is not None:
        lines.append(f"open it with: python -m webbrowser {local_report.as_uri()}")
    return "\n".join(lines)


def _figures(figures: dict[str, float]) -> dict[str, str]:
    """A training tick's figures beside the bar, each under the name training shows it by (acgan/training/loop.py,
    TICK_FIGURES)."""
    return {name: f"{value:.3f}" for name, value in figures.items()}


def duration(seconds: float) -> str:
    """A stage's time as the display says it: '42 s', '4 min 5 s' (whole seconds, so never '4 min 60 s')."""
    whole = round(seconds)
    return f"{whole} s" if whole < 90 else f"{whole // 60} min {whole % 60} s"
