"""Fault 8, stopping a run: a real `acgan run` (kfp.local, a process per task) stopped with one SIGTERM to its own
process (`kill`, `timeout`, a cancelled CI job), and the `acgan rerun --local` its last line names stopped with one
Ctrl-C (SIGINT to the whole process group, as a terminal sends it); a second `acgan run` started on the store while
the first trains. Policy (pipelines/stopping.py): the first signal stops every task's process tree, each trainer saves
the step it reached and releases its lease, no task is started or retried after it, and the run ends with one line
saying how to continue; a second local run on a store stops at once (acgan/lease.py, RunLease)."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from acgan.checkpoint import complete_steps
from acgan.experiment import split_statuses
from acgan.layout import RUN_LEASE_KEY, lease_key
from acgan.store import open_store

SETTINGS = ["--dataset", "digits", "--resolution", "32", "--classes-per-split", "5", "--steps", "5000",
            "--checkpoint-every", "2500", "--batch-size", "8", "--width", "0.0625", "--samples-per-class", "6",
            "--pairs", "10", "--classifier-steps", "30"]


def _start(argv: list[str], out: Path) -> subprocess.Popen:
    """The command, its output to `out`.stdout and `out`.stderr, in a session of its own: its process group is what
    a terminal would send a Ctrl-C to."""
    return subprocess.Popen([sys.executable, "-m", "acgan_cli.main", *argv], stdout=out.with_suffix(".stdout").open("w"),
                            stderr=out.with_suffix(".stderr").open("w"), start_new_session=True)


def _steps_logged(store, split: int) -> int:
    try:
        return max(json.loads(line)["step"] for line in store.read_bytes(f"splits/split-{split:05d}/stats.jsonl")
                   .decode().splitlines())
    except KeyError:
        return 0


def _wait_until_both_train_beyond(store, run: subprocess.Popen, beyond: dict[int, int]) -> None:
    deadline = time.time() + 240
    while any(_steps_logged(store, split) <= at for split, at in beyond.items()):
        assert run.poll() is None, "the run ended first"
        assert time.time() < deadline, "the splits did not start training"
        time.sleep(0.1)


def _processes_of(run: subprocess.Popen, pipeline_root: Path) -> list[str]:
    """Command lines of live processes left of the run: in its session, or naming `pipeline_root` (a task's executor
    input does) wherever they are: a task may start a trainer in a session of its own."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes()
            state, _, _, session = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[:4]
        except OSError:
            continue
        if state != "Z" and (int(session) == run.pid or str(pipeline_root).encode() in args):
            found.append(args.replace(b"\0", b" ").decode(errors="replace")[:200])
    return found


def _stopped_cleanly(run: subprocess.Popen, out: Path, store, pipeline_root: Path, signal_name: str) -> dict:
    """The run ended within a minute with one line naming how to continue, every trainer saved the step it reached
    and released its lease, and nothing was retried or left running; returns each split's saved step."""
    code, err = run.wait(60), out.with_suffix(".stderr").read_text()
    assert code == 128 + signal.Signals[signal_name] and "Traceback" not in err, err[-3000:]
    (line,) = [ln for ln in err.splitlines() if "error:" in ln]
    assert f"stopped by {signal_name}" in line and f"acgan rerun --store {store.uri} --local" in line, line
    assert f"stopping ({signal_name})" in err and "a task failed" not in err  # said at once; the stop is no failure
    # The tasks' output: in log files (`acgan run` and `acgan rerun --local`; with --verbose on stdout).
    tasks = re.sub(r"\x1b\[[0-9;]*m", "", "".join([out.with_suffix(".stdout").read_text()] + [
        p.read_text() for p in sorted(pipeline_root.glob("logs/*/*.log"))]))
    for bad in ("Traceback", "KeyboardInterrupt", "Retrying"):
        assert bad not in tasks, tasks[max(0, tasks.find(bad) - 3000):tasks.find(bad) + 500]
    assert len(re.findall(r"Executing task 'train-split'", tasks)) == 2  # one attempt per split: no retry
    saved = {}
    for split, step in re.findall(rf"split (\d): stopped by {signal_name} at step (\d+) of 5000 with its "
                                  "checkpoint saved", tasks):
        assert complete_steps(store, int(split))[-1] == int(step)  # the step it reached, not the last interval's
        saved[int(split)] = int(step)
    assert sorted(saved) == [0, 1]
    assert not store.exists(lease_key(0)) and not store.exists(lease_key(1)) and not store.exists(RUN_LEASE_KEY)
    assert [s.state for s in split_statuses(store)] == ["incomplete", "incomplete"]  # a rerun may train both
    assert _processes_of(run, pipeline_root) == []  # and a trainer left running would have kept its lease
    return saved


def test_one_signal_stops_the_whole_run_and_rerun_continues(tmp_path, fault_report):
    store = open_store(str(tmp_path / "store"))
    first = _start(["run", "--store", store.uri, "--pipeline-root", str(tmp_path / "first"), *SETTINGS],
                   tmp_path / "first")
    try:
        _wait_until_both_train_beyond(store, first, {0: 0, 1: 0})
        # A second run on the store (a double start) stops at once, before it starts a task.
        second = subprocess.run([sys.executable, "-m", "acgan_cli.main", "run", "--store", store.uri, "--pipeline-root",
                                 str(tmp_path / "second"), *SETTINGS], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-3000:]
        (line,) = [ln for ln in second.stderr.splitlines() if "error:" in ln]
        assert f"store {store.uri} has a local run going" in line
        assert not list((tmp_path / "second").glob("logs/*/*.log"))  # no task started
        first.send_signal(signal.SIGTERM)  # to its own process only
        saved = _stopped_cleanly(first, tmp_path / "first", store, tmp_path / "first", "SIGTERM")
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left of it, tasks included
            os.killpg(first.pid, signal.SIGKILL)

    rerun = _start(["rerun", "--store", store.uri, "--local", "--pipeline-root", str(tmp_path / "rerun")],
                   tmp_path / "rerun")
    try:
        _wait_until_both_train_beyond(store, rerun, saved)
        os.killpg(rerun.pid, signal.SIGINT)  # Ctrl-C in a terminal: every process of the group gets it
        again = _stopped_cleanly(rerun, tmp_path / "rerun", store, tmp_path / "rerun", "SIGINT")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(rerun.pid, signal.SIGKILL)
    logs = "".join(p.read_text() for p in sorted((tmp_path / "rerun").glob("logs/*/*.log")))
    resumed = sorted(map(int, re.findall(r"resuming from step (\d+)", logs)))
    assert resumed == sorted(saved.values()) and all(again[s] > saved[s] for s in saved)
    fault_report("stopping a run", "one SIGTERM to `acgan run`'s own process, then one SIGINT to the process group "
                 "of the `acgan rerun --local` it named; a second `acgan run` on the store meanwhile", 3, 3,
                 "none: each trainer saved the step it reached, and the rerun resumed there", "none; no retry, "
                 "no lease left, the second run stopped before starting a task")
