"""A real kfp.local run in which one split's training process is SIGKILLed mid-training (a pod deleted without a
grace period): the task's retry inside the `class-splits` loop resumes from the checkpoint it left, and the run
completes and assembles without a person. On a cluster the same retry needs Argo's retry policy to cover a deleted
pod (manifests/kfp, docs/operators.md section 5)."""

import json
import os
import signal
import threading
import time
from pathlib import Path

from acgan.checkpoint import complete_steps
from acgan.ensemble import load_ensemble
from acgan.experiment import split_statuses
from acgan.settings import RunSettings
from acgan.store import open_store
from pipelines import runs

# Twelve steps with a checkpoint every two: the trainer is killed at its first checkpoint, long before its end.
SETTINGS = dict(dataset="digits", resolution=32, classes_per_split=5, steps=12, batch_size=8, checkpoint_every=2,
                width=0.0625, samples_per_class=6, pairs=10, classifier_steps=30)
KILLED_SPLIT = 1


def training_processes(split: int, pipeline_root: Path) -> list[int]:
    """The pids of the live Python processes training `split` in the run under `pipeline_root` (kfp.local runs a task
    as `sh -c` and the Python below it, both with the executor input; the trainer is the Python one). Only this run's:
    another run on the machine (an `acgan run` beside the tests) trains its own split 1."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            comm = Path(f"/proc/{pid}/comm").read_text()
        except OSError:
            continue  # ended while we looked
        if not comm.startswith("python") or b"--executor_input" not in args or b"train_split" not in args:
            continue
        executor_input = json.loads(args[args.index(b"--executor_input") + 1])
        outputs = executor_input["outputs"]["artifacts"]["metrics"]["artifacts"]
        if (executor_input["inputs"]["parameterValues"].get("split") == split
                and Path(outputs[0]["uri"]).is_relative_to(pipeline_root)):
            found.append(int(pid))
    return found


class KillOnce(threading.Thread):
    """SIGKILLs the split's trainer once it has a complete checkpoint, once."""

    def __init__(self, store, split: int, pipeline_root: Path):
        super().__init__(daemon=True)
        self.store, self.split, self.root, self.done = store, split, pipeline_root, threading.Event()
        self.killed_at: int | None = None  # the split's newest complete checkpoint when it was killed

    def run(self):
        while not self.done.is_set() and self.killed_at is None:
            pids = training_processes(self.split, self.root)
            steps = complete_steps(self.store, self.split) if pids else []
            if steps:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                self.killed_at = max(steps)
            time.sleep(0.02)


def test_a_killed_trainer_is_retried_and_the_run_completes(tmp_path):
    store = open_store(str(tmp_path / "store"))
    killer = KillOnce(store, KILLED_SPLIT, tmp_path / "kfp-local")
    killer.start()
    try:
        result = runs.run_local(RunSettings(store=store.uri, **SETTINGS), tmp_path / "kfp-local", quiet=True)
    finally:
        killer.done.set()
        killer.join()
    assert killer.killed_at is not None and killer.killed_at < SETTINGS["steps"], "not killed mid-training"
    assert [(s.state, s.step) for s in split_statuses(store)] == [("complete", 12), ("complete", 12)]
    (logs,) = (tmp_path / "kfp-local" / "logs").iterdir()
    resumed = [line for p in logs.glob("*train-split*.log") for line in p.read_text().splitlines()
               if f"split {KILLED_SPLIT}: " in line and "resuming from step" in line]
    assert len(resumed) == 1 and int(resumed[0].rsplit(" ", 1)[1]) == killer.killed_at  # not from scratch
    assert result["ensemble"] == f"{store.uri}/ensemble.json"
    assert sorted((m.class_id, m.step) for m in load_ensemble(store).classes) == [(c, 12) for c in range(10)]
