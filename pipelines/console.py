"""What `acgan run` shows a person: one progress display for the whole run, each task's log in its own file, and a
closing summary of the evaluation in words and a small table.

kfp.local streams every task's output, and its own executor JSON, into this process's stdout, from one thread per
running task. During a run `TaskLogs` stands in for stdout: it files each thread's lines under the task that thread
announced ("Executing task 'train-split'"), and reads the progress of the run from the same lines. `--verbose`
leaves stdout alone.

Two kinds of line are read. kfp.local's own (`KFP_LOCAL`): it reports a task starting, failing and being retried
only as text through the root logger, task names coloured (kfp/local/task_dispatcher.py,
run_single_task_implementation; orchestrator/task_executor.py; pipeline_orchestrator.py for a failed run), and has
no other interface for them; kfp is pinned to one release (pyproject.toml) and tests/pipelines/test_runs.py reads
these lines from a real kfp.local run. And the project's own lines, which the steps log for their pods too: a
step's end (components/run_step), the plan's fan-out (acgan/experiment.py) and each training tick
(acgan/training/loop.py). Training progress is read from the tick lines, not by polling each split's `stats.jsonl`
in the store: the trainer logs a tick right after writing its stats line, and that line reached this process 15 ms
after the stats line's time at the median, 27 ms at most (docs/experiments.md, "Where `acgan run` reads its
progress"), while a poll would see it up to a poll period later, read the store once per split per poll (a GET each
on S3), and still need these lines to tell a stage's end and which task a thread runs.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

# kfp.local's wording (kfp 2.17.0; see above).
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXECUTING = re.compile(r"Executing task '([^']+)'")
_FAILED = re.compile(r"Task '([^']+)' finished with status FAILURE")
_RETRYING = re.compile(r"Task (\S+) failed \(attempt (\d+)/(\d+)\)\. Retrying")
_RUN_FAILED = re.compile(r"Inner task failed: '([^']+)'")  # the RuntimeError of a failed run
# The project's own lines.
_DONE = re.compile(r"INFO ([a-z-]+): [a-z-]+: done in ")  # a step's own last line (components/run_step)
_TRAINING = re.compile(r"split (\d+) step (\d+)/(\d+)")
_RESUMED = re.compile(r"split (\d+): (?:resuming from|already at) step (\d+)")
_FANOUT = re.compile(r"fanning out over (\d+) of \d+ splits")  # prepare-data's line: the training tasks to come
STAGES = {"prepare-data": "planning the class splits", "prepare-split-data": "preparing each split's data",
          "train-split": "training", "assemble-ensemble": "assembling", "evaluate-ensemble": "evaluating"}
PER_SPLIT = {"prepare-split-data", "train-split"}  # one task per split, inside the fan-out
NAMED, TABLE_ROWS = 10, 20  # the closing summary names and tabulates this many classes at most (ImageNet has 1000)


class TaskLogs:
    """A file-like stdout that writes each task's lines to `folder/NN-task.log` and updates `progress`."""

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
            self.progress.task_started(started[1])
        log = self._files.get(thread, self._run_log)
        log.write(line + "\n")
        log.flush()
        # A task's end is read from its own process's output, which always comes through here; kfp.local's
        # "finished" lines are logged through a root logger that concurrent tasks reconfigure under each other.
        done, failed = _DONE.search(line), _FAILED.search(line)
        if done:
            self.progress.task_finished(done[1], ok=True)
        elif failed and thread in self._files:
            self.failed.append(Path(self._files[thread].name))
            self.progress.task_finished(failed[1], ok=False, log=self.failed[-1])
        elif _RETRYING.search(line):
            self.progress.say("  retrying it (the task's retry policy)")
        else:
            self.progress.read(line)

    def failed_log(self, task: str | None) -> Path | None:
        """The log of the task that failed: the last attempt of `task` seen failing, else one that never finished
        (`task` None: of any task)."""
        of_task = [path for path in self.logs if task and path.name.endswith(f"-{task}.log")]
        failed = [path for path in self.failed if path in of_task] or self.failed
        unfinished = [path for path in of_task if not _DONE.search(path.read_text(errors="replace"))]
        return next(iter(failed[::-1] + unfinished), None)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        for f in [*self._files.values(), self._run_log]:
            f.close()


class RunProgress:
    """The run's stages, and one bar over every training step of the run (per split: the step it last reported)."""

    def __init__(self, splits: int | None, steps: int, out: TextIO):
        self.out, self.steps, self.splits = out, steps, splits
        self.tty = out.isatty()
        self.at: dict[int, int] = {}
        self.started: dict[str, float] = {}
        self.running: dict[str, int] = {}
        self.finished: dict[str, int] = {}
        self.bar: tqdm | None = None
        self.stopping = False  # the run was told to stop (pipelines/stopping.py): its tasks end failed, as told

    def say(self, text: str) -> None:
        # Never print(): kfp.local swaps builtins.print for one that writes its indent to sys.stdout, which is
        # TaskLogs, whose lock this thread holds.
        if self.bar is not None:
            self.bar.clear()
        self.out.write(text + "\n")
        self.out.flush()
        if self.bar is not None:
            self.bar.refresh()

    def task_started(self, task: str) -> None:
        if task not in self.started:
            self.started[task] = time.perf_counter()
            self.say(f"{STAGES.get(task, task)}...")
            if task == "train-split" and self.tty and self.splits:
                self.bar = tqdm(total=self.splits * self.steps, desc="training", unit="step", file=self.out,
                                dynamic_ncols=True)
        self.running[task] = self.running.get(task, 0) + 1

    def task_finished(self, task: str, ok: bool, log: Path | None = None) -> None:
        """A stage is done when all its tasks are: one per split inside the fan-out (the plan's split count, known
        before the run or read from the plan task's fan-out line), else one."""
        self.running[task] = self.running.get(task, 1) - 1
        expected = self.splits if task in PER_SPLIT and self.splits else None
        if not ok:  # not a finished task: its retry, or the run's failure, follows
            if not self.stopping:
                self.say(f"{STAGES.get(task, task)}: a task failed; its log: {log}")
            return
        self.finished[task] = self.finished.get(task, 0) + 1
        if self.finished[task] == expected or (expected is None and not self.running[task]):
            if task == "train-split" and self.bar is not None:
                self.bar.close()
                self.bar = None
            seconds = time.perf_counter() - self.started.get(task, time.perf_counter())
            self.say(f"{STAGES.get(task, task)}: done in {_duration(seconds)}")

    def read(self, line: str) -> None:
        fanout = _FANOUT.search(line)
        if fanout:  # a folder's splits are known once the plan is made, and complete splits are not fanned out
            self.splits = int(fanout[1])
        step = _TRAINING.search(line) or _RESUMED.search(line)
        if not step:
            return
        split, at = int(step[1]), int(step[2])
        self.at[split] = at
        if self.bar is not None:
            self.bar.update(sum(self.at.values()) - self.bar.n)
        elif _TRAINING.search(line):
            self.say(f"  split {split}: step {at}/{step[3]}")


@contextlib.contextmanager
def quiet_run(folder: Path, splits: int | None, steps: int, out: TextIO) -> Iterator[TaskLogs]:
    """Inside: task output goes to log files under `folder`, progress to `out`; kfp.local's warnings that our image
    is "non-Python" (it is the image this very environment was built from) and that Kubernetes settings (GPU, CPU
    request, display name) do nothing on one machine are silenced."""
    logs = TaskLogs(folder, RunProgress(splits, steps, out))
    stdout, root = sys.stdout, logging.getLogger()
    handlers = root.handlers[:]
    # kfp.local sets the root logger's handler per task and puts back what it found when the task ends; with tasks
    # running at once, what it finds must be TaskLogs too, or a task's closing lines reach the terminal.
    level, root.level = root.level, logging.INFO
    root.handlers = [logging.StreamHandler(logs)]
    sys.stdout = logs
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
            warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*", category=UserWarning)
            yield logs
    finally:
        sys.stdout, root.handlers, root.level = stdout, handlers, level
        logs.close()
        if logs.progress.bar is not None:
            logs.progress.bar.close()


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
    s, classes = metrics["summary"], metrics["classes"]
    accuracy, diversity = "accuracy" in classes[0], "ms_ssim" in classes[0]  # per class, what was computed
    lines, flagged = [], []
    if "accuracy" in s:
        lines.append(f"{s['accuracy']:.1%} of samples are recognised as their class by a classifier trained on the "
                     f"real images (real images: {s['real_accuracy']:.1%}).")
    if "ms_ssim_mean" in s:
        lines.append(f"Diversity (mean MS-SSIM of same-class pairs, lower is more varied): samples "
                     f"{s['ms_ssim_mean']:.2f}, real images {s['real_ms_ssim_mean']:.2f}; "
                     f"{s['fraction_below_real_max']:.0%} of classes are below the least diverse real class "
                     f"({s['real_ms_ssim_max']:.2f}).")
        low = [c["name"] for c in classes if c["low_diversity"]]
        flagged.append(f"Flagged as collapsing (at or above {s['real_ms_ssim_max']:.2f}): {_some(low, classes)}.")
    if accuracy:
        weak = [c["name"] for c in classes if c["accuracy"] < 0.9]
        flagged.append(f"Recognised under 90%: {_some(weak, classes)}.")
    lines.append(" ".join(flagged))
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


def _some(names: list[str], classes: list[dict]) -> str:
    """Class names for a sentence: all of a few, else how many and the first ones."""
    if not names:
        return "none"
    if len(names) <= NAMED:
        return ", ".join(names)
    return f"{len(names)} of {len(classes)} classes, {', '.join(names[:NAMED])} …"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"
