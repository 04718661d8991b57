"""`acgan run`'s display, driven by progress events as the tasks write them (acgan/progress.py), and what a person sees
in a terminal: `acgan run` in a pseudo-terminal, stopped with Ctrl-C once it trains, then the continue command it
prints, in a pseudo-terminal too. Every stage shows a bar with its progress and ETA (the evaluation by its parts),
kfp.local's own lines and warnings never show, and the continue command ends as `acgan run` ends: the evaluation's
summary (summary_text) and where the task logs are. And the failed task, as kfp.local's error names it."""

import fcntl
import io
import json
import os
import pty
import re
import select
import shlex
import signal
import struct
import sys
import termios
import time
from pathlib import Path

from acgan import progress
from acgan.progress import Event
from acgan.store import open_store
from pipelines.console import RunProgress, duration, summary_text

SETTINGS = ["--dataset", "digits", "--resolution", "32", "--classes-per-split", "5", "--steps", "60",
            "--checkpoint-every", "30", "--batch-size", "8", "--width", "0.0625", "--samples-per-class", "6",
            "--pairs", "10", "--classifier-steps", "30"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


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


def test_a_stage_time_is_said_in_whole_seconds():
    # 299.6 s was shown as "4 min 60 s" (minutes from the unrounded time, seconds rounded apart)
    assert [duration(s) for s in (41.6, 89.4, 89.6, 299.6, 300.4, 3725.2)] == [
        "42 s", "89 s", "1 min 30 s", "5 min 0 s", "5 min 0 s", "62 min 5 s"]


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


class Terminal:
    """A command in a pseudo-terminal of 120 columns, as its controlling terminal: a Ctrl-C typed into it reaches its
    whole foreground process group, as a shell's would."""

    def __init__(self, argv: list[str], cwd: Path):
        pid, self.fd = pty.fork()
        if pid == 0:  # the child: its own session, the terminal's slave as its stdin, stdout and stderr
            os.chdir(cwd)
            os.execv(sys.executable, [sys.executable, "-m", "acgan_cli.main", *argv])
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.pid, self.raw = pid, b""

    def read_until(self, pattern: str, timeout: float) -> re.Match:
        """Read until the output (ANSI codes removed) matches `pattern`."""
        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, self.text)):
            if time.monotonic() > deadline or not self._read(deadline - time.monotonic()):
                raise AssertionError(f"not seen: {pattern!r}; the output so far:\n{self.text[-3000:]}")
        return found

    def _read(self, timeout: float) -> bool:
        """What the command wrote within `timeout`; False once it has ended and closed the terminal."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, min(timeout, 0.5)))
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: no process holds the terminal any more
            return False
        self.raw += chunk
        return bool(chunk)

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def wait(self, timeout: float) -> int:
        """The rest of the output, then the exit status."""
        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()):
            assert time.monotonic() < deadline, f"still running after {timeout} s:\n{self.text[-3000:]}"
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace")).replace("\r\n", "\n")


def bar(description: str) -> str:
    """A tqdm bar of a stage with its count and its ETA: `training:  40%|####  | 240/600 [00:02<00:03, ...]`."""
    return rf"{re.escape(description)}: +\d+%\|[^|\n]*\| *\d+/\d+ \[\d\d:\d\d<(\d\d:\d\d|\?)"


def test_run_and_its_continue_command_show_every_stage_and_end_alike(tmp_path):
    store = tmp_path / "store"
    run = Terminal(["run", "--store", str(store), *SETTINGS], tmp_path)
    for description in ("planning the class splits", "preparing each split's data"):
        assert run.read_until(bar(description), 300), description
    assert run.read_until(r"training: +\d+%\|[^|\n]*\| *[1-9]\d*/120 \[\d\d:\d\d<\d\d:\d\d", 300)  # it moves
    run.type(b"\x03")  # Ctrl-C
    assert run.wait(300) == 128 + signal.SIGINT, run.text[-3000:]
    continued = re.search(r"continue with `([^`]+)`", run.text)
    assert continued, run.text[-2000:]

    rerun = Terminal(shlex.split(continued[1])[1:], tmp_path)
    assert rerun.read_until(r"training: +\d+%\|[^|\n]*\| *\d+/120 \[\d\d:\d\d<\d\d:\d\d", 300)
    for description in ("assembling", "evaluating, training its classifier", "evaluating, split by split"):
        assert rerun.read_until(bar(description), 300), description
    assert rerun.wait(300) == 0, rerun.text[-3000:]
    for output in (run.text, rerun.text):
        for kfp_local in ("Executing task", "executor_input", "no effect in the current local runner",
                          "non-Python base image", "Traceback"):
            assert kfp_local not in output
    metrics = json.loads(open_store(str(store)).read_bytes("eval/metrics.json"))
    uri = open_store(str(store)).uri
    summary = summary_text(metrics, f"{uri}/eval/report.html", f"{uri}/eval/samples-split-*.png",
                           store / "eval" / "report.html")
    assert summary in rerun.text  # what `acgan run` prints at its end (acgan_cli/commands/run.py, local_result)
    assert re.search(r"task logs: +\S+", rerun.text.split(summary)[1])


def test_the_failed_task_is_read_from_kfp_locals_error():
    """kfp.local names a failed task inside the loop with the loop's internal name after it: the task is the first
    name (before, `acgan run` said "task 'train-split' inside 'for-loop-2'")."""
    from pipelines.console import failed_task

    error = RuntimeError("Pipeline \x1b[95m'acgan-ensemble'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m. Inner "
                         "task failed: \x1b[96m'train-split'\x1b[0m inside \x1b[96m'for-loop-2'\x1b[0m.")
    assert failed_task(error) == "train-split"
    assert failed_task(RuntimeError("something else")) is None
