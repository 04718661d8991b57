"""A real kfp.local run in which one split's trainer process is SIGKILLed mid-training (a segfault, a kill of the
process alone): its training task restarts the trainer from the checkpoint it left, within the same task attempt,
and the run completes and assembles without a person or a retry of the task (acgan/supervise.py)."""

import os
import signal
import threading
import time

from acgan.checkpoint import complete_steps
from acgan.ensemble import load_ensemble
from acgan.experiment import split_statuses
from acgan.settings import RunSettings
from acgan.store import open_store
from pipelines import runs
from pipelines.launch_settings import LocalSettings
from tests.conftest import trainer_processes

# Twelve steps with a checkpoint every two: the trainer is killed at its first checkpoint, long before its end.
SETTINGS = dict(dataset="digits", resolution=32, classes_per_split=5, steps=12, batch_size=8, checkpoint_every=2,
                width=0.0625, samples_per_class=6, pairs=10, classifier_steps=30)
KILLED_SPLIT = 1


class KillOnce(threading.Thread):
    """SIGKILLs the split's trainer once it has a complete checkpoint, once."""

    def __init__(self, store, split: int):
        super().__init__(daemon=True)
        self.store, self.split, self.done = store, split, threading.Event()
        self.killed_at: int | None = None  # the split's newest complete checkpoint when it was killed

    def run(self):
        while not self.done.is_set() and self.killed_at is None:
            pids = trainer_processes(self.store.uri, self.split)
            steps = complete_steps(self.store, self.split) if pids else []
            if steps:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                self.killed_at = max(steps)
            time.sleep(0.02)


def test_a_killed_trainer_is_restarted_by_its_task_and_the_run_completes(tmp_path):
    store = open_store(str(tmp_path / "store"))
    killer = KillOnce(store, KILLED_SPLIT)
    killer.start()
    try:
        result = runs.run_local(RunSettings(store=store.uri, **SETTINGS),
                                    local=LocalSettings(pipeline_root=tmp_path / "kfp-local"), quiet=True)
    finally:
        killer.done.set()
        killer.join()
    assert killer.killed_at is not None and killer.killed_at < SETTINGS["steps"], "not killed mid-training"
    assert [(s.state, s.step) for s in split_statuses(store)] == [("complete", 12), ("complete", 12)]
    (logs,) = (tmp_path / "kfp-local" / "logs").iterdir()
    task_logs = sorted(logs.glob("*train-split*.log"))
    assert len(task_logs) == 2  # one attempt per split: the killed trainer's task was not retried
    lines = [line for p in task_logs for line in p.read_text().splitlines() if f"split {KILLED_SPLIT}: " in line]
    restarted = [line for line in lines if "the trainer failed (killed by SIGKILL)" in line]
    assert len(restarted) == 1 and f"at checkpoint {killer.killed_at}; restarting" in restarted[0], lines
    resumed = [line for line in lines if "resuming from step" in line]
    assert len(resumed) == 1 and int(resumed[0].rsplit(" ", 1)[1]) == killer.killed_at  # not from scratch
    assert result["ensemble"] == f"{store.uri}/ensemble.json"
    assert sorted((m.class_id, m.step) for m in load_ensemble(store).classes) == [(c, 12) for c in range(10)]


def test_rerun_local_honours_trainer_restarts_and_refuses_cluster_only_options(_digits_template, tmp_path, capsys):
    """Issue 36: `acgan rerun --local --trainer-restarts 0` was accepted and ignored (its log said "restart 1 of 3").
    The killed trainer is not restarted now (kfp.local's one retry of the task trains the split), and a cluster-only
    option is refused in one line rather than ignored."""
    import shutil

    from acgan.experiment import prepare_experiment, train_one_split
    from acgan_cli.main import main

    shutil.copytree(_digits_template, tmp_path / "store")
    store = open_store(str(tmp_path / "store"))
    prepare_experiment(RunSettings(store=store.uri, **SETTINGS))
    train_one_split(store, 0)
    code = main(["rerun", "--store", store.uri, "--local", "--image", "registry.example/acgan:1"])
    assert code == 2 and "--image is a cluster setting; with --local it would have no effect" in capsys.readouterr().err
    killer = KillOnce(store, KILLED_SPLIT)
    killer.start()
    try:
        code = main(["rerun", "--store", store.uri, "--local", "--trainer-restarts", "0", "--pipeline-root",
                     str(tmp_path / "kfp"), "--verbose"])  # the tasks' logs here, the supervisor's lines among them
    finally:
        killer.done.set()
        killer.join()
    out, err = capsys.readouterr()
    assert killer.killed_at is not None and code == 0, err[-3000:]
    assert "no restarts left (--trainer-restarts 0)" in out + err and "restart 1 of" not in out + err
    assert [s.state for s in split_statuses(store)] == ["complete", "complete"]
