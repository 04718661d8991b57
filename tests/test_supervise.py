"""A training task's supervision of its trainer (acgan/supervise.py), with real trainer processes killed
and signalled: what is restarted, what is recognised as repeating and left failed, and a stop that saves the step.
The restart of a trainer killed mid-training inside a real pipeline run is tests/faults/test_killed_split.py."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from acgan.checkpoint import complete_steps
from acgan.experiment import prepare_experiment, prepare_split_data
from acgan.settings import RunSettings
from acgan.store import open_store
from acgan.supervise import TrainerFailed, supervise_training
from tests.conftest import trainer_processes

# A training task, as components/train_split.py runs one: the store of its first argument, split 0, 3 restarts.
TRAIN_TASK = ("import sys; from acgan.store import open_store; from acgan.supervise import supervise_training; "
              "from components import run_step; "
              "run_step('train-split', lambda: supervise_training(open_store(sys.argv[1]), 0, 3))")
SETTINGS = dict(dataset="digits", resolution=32, classes_per_split=5, steps=400, batch_size=8, checkpoint_every=2,
                width=0.0625)


@pytest.fixture
def experiment(tmp_path):
    uri = str(tmp_path / "store")
    prepare_experiment(RunSettings(store=uri, **SETTINGS))
    prepare_split_data(open_store(uri), 0)
    return uri


class KillEveryTrainer(threading.Thread):
    """SIGKILLs each trainer of split 0 as soon as it appears (a crash before any step is saved)."""

    def __init__(self, store_uri: str):
        super().__init__(daemon=True)
        self.store_uri, self.killed, self.done = store_uri, set(), threading.Event()

    def run(self):
        while not self.done.is_set():
            for pid in set(trainer_processes(self.store_uri, 0)) - self.killed:
                os.kill(pid, signal.SIGKILL)
                self.killed.add(pid)
            time.sleep(0.01)


def test_a_trainer_crashing_twice_at_the_same_checkpoint_is_not_restarted_again(experiment, caplog):
    killer = KillEveryTrainer(experiment)
    killer.start()
    try:
        with caplog.at_level("WARNING"), pytest.raises(TrainerFailed, match=(
                r"split 0: the trainer failed twice in a row at no checkpoint \(killed by SIGKILL\), saving no step "
                r"in between: not restarted again")):
            supervise_training(open_store(experiment), 0, restarts=5)
    finally:
        killer.done.set()
        killer.join()
    assert len(killer.killed) == 2  # the first crash was restarted once; the second, at the same point, was not
    [restart] = [r.getMessage() for r in caplog.records if "restarting" in r.getMessage()]
    assert restart.startswith("split 0: the trainer failed (killed by SIGKILL) at no checkpoint; restarting it")


def test_bad_input_is_not_restarted(tmp_path, caplog):
    """The trainer's one-line error (exit status 2: here a store with no experiment) would repeat: no restart."""
    with caplog.at_level("WARNING"), pytest.raises(TrainerFailed, match="an error that a restart would repeat"):
        supervise_training(open_store(str(tmp_path / "empty")), 0, restarts=5)
    assert not [r for r in caplog.records if "restarting" in r.getMessage()]


def test_sigterm_to_the_task_saves_the_trainers_step_and_restarts_nothing(experiment):
    """The signal a pod's deletion sends: the task forwards it, the trainer saves the step it reached and stops,
    the task exits non-zero with one line, and the trainer is not started again."""
    task = subprocess.Popen(
        [sys.executable, "-c", TRAIN_TASK,
         experiment], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = open_store(experiment)
    deadline = time.monotonic() + 120
    while not complete_steps(store, 0):
        assert task.poll() is None and time.monotonic() < deadline, "the trainer saved no checkpoint"
        time.sleep(0.05)
    [trainer] = trainer_processes(experiment, 0)
    task.send_signal(signal.SIGTERM)
    output, _ = task.communicate(timeout=120)
    assert task.returncode == 2, output
    steps = complete_steps(store, 0)
    assert steps[-1] < SETTINGS["steps"]
    assert f"split 0: stopped by SIGTERM at step {steps[-1]} of {SETTINGS['steps']}" in output, output  # the trainer
    assert f"split 0: stopped by a signal (exit status 2, at checkpoint {steps[-1]})" in output, output
    assert "restarting" not in output and "Traceback" not in output, output
    assert trainer not in trainer_processes(experiment, 0) and not trainer_processes(experiment, 0)


def task_process(store_uri: str) -> subprocess.Popen:
    """A training task for split 0, as a process of its own (its output captured)."""
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN_TASK,
         store_uri], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def read_until(process: subprocess.Popen, text: str, seconds: float) -> str:
    """The process's output up to the line holding `text` (read aside, so a process that never says it fails the test
    after `seconds`)."""
    lines: list[str] = []

    def read():
        for line in process.stdout:
            lines.append(line)
            if text in line:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(seconds)
    assert lines and text in lines[-1], "".join(lines)
    return "".join(lines)


def test_a_second_task_for_a_split_waits_for_the_first_and_trains_nothing(tmp_path):
    """Two runs on one store (a double submit, a Clone run while the first runs): the task that finds the split
    held waits for the lease instead of failing, then finds the split complete; both tasks succeed and the split is
    trained by one trainer."""
    uri = str(tmp_path / "store")
    prepare_experiment(RunSettings(store=uri, **{**SETTINGS, "steps": 40}))
    prepare_split_data(open_store(uri), 0)
    first = task_process(uri)
    store = open_store(uri)
    deadline = time.monotonic() + 120
    while not complete_steps(store, 0):  # the first trainer holds the split and has saved a step
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    [trainer] = trainer_processes(uri, 0)
    os.kill(trainer, signal.SIGSTOP)  # paused, its lease held, until the second task waits (under load the first
    try:  # trained all 40 steps while the second started, which then found the split complete at once)
        second = task_process(uri)
        said = read_until(second, "waiting for it to be released or to lapse", 120)
    finally:
        os.kill(trainer, signal.SIGCONT)
    outputs = [first.communicate(timeout=300)[0], said + second.communicate(timeout=300)[0]]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    assert "waiting for it to be released or to lapse" in outputs[1] and "its lease is free" in outputs[1]
    assert "split 0: already at step 40 >= 40, nothing to train" in outputs[1], outputs[1]
    assert "split 0 step" not in outputs[1] and "split 0 step 40/40" in outputs[0]  # one trainer trained


def test_a_trainer_does_not_outlive_its_task(experiment):
    """A task killed outright (SIGKILL: kfp.local's, or a process killed alone) takes its trainer with it: the
    trainer gets SIGTERM, saves its step and releases the split, so nothing trains it unseen."""
    from acgan.lease import live_lease

    task = task_process(experiment)
    store = open_store(experiment)
    deadline = time.monotonic() + 120
    while not complete_steps(store, 0):
        assert task.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    [trainer] = trainer_processes(experiment, 0)
    task.kill()
    task.wait()
    deadline = time.monotonic() + 60
    while trainer in trainer_processes(experiment, 0):
        assert time.monotonic() < deadline, "the trainer outlived its task"
        time.sleep(0.05)
    assert live_lease(store, 0) is None and complete_steps(store, 0)[-1] < SETTINGS["steps"]


def test_a_trainer_killed_at_its_memory_limit_is_reported_as_such(experiment):
    """Issue 36: a trainer the kernel's OOM killer ended was reported as "killed by SIGKILL". The task (here the
    supervisor, in a memory cgroup of its own with a limit its trainer's torch import exceeds) reads the cgroup's
    oom_kill count and says it was the memory limit."""
    import uuid
    from pathlib import Path

    from acgan.supervise import oom_kills

    if oom_kills() is None:
        pytest.skip("no cgroup memory controller to read here (needs cgroup v2 memory.events or v1 memory.oom_control)")
    v1 = Path("/sys/fs/cgroup/memory")
    group = v1 / f"acgan-test-{uuid.uuid4().hex[:8]}" if v1.is_dir() else Path(f"/sys/fs/cgroup/acgan-test-"
                                                                               f"{uuid.uuid4().hex[:8]}")
    try:
        group.mkdir()
    except OSError as e:
        pytest.skip(f"cannot make a memory cgroup here ({e.strerror}): run the tests as root with cgroups writable")
    try:
        limit = 200 * 2**20  # the supervisor fits; the trainer, importing torch, does not
        (group / ("memory.limit_in_bytes" if v1.is_dir() else "memory.max")).write_text(str(limit))
        code = ("import sys; from acgan.store import open_store; from acgan.supervise import supervise_training, "
                "TrainerFailed\ntry:\n    supervise_training(open_store(sys.argv[1]), 0, 3)\n"
                "except TrainerFailed as e:\n    print(e)\n")
        task = subprocess.run(["sh", "-c", f'echo $$ > "{group}/cgroup.procs" && exec "$0" -c "$1" "$2"',
                               sys.executable, code, experiment], capture_output=True, text=True, timeout=300)
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    assert ("the trainer failed twice in a row at no checkpoint (killed by the kernel at the memory limit of its "
            "cgroup (oom_kill))") in task.stdout, (task.stdout[-2000:], task.stderr[-2000:])
    assert "killed by SIGKILL" not in task.stdout + task.stderr


def test_a_compile_failure_is_one_line_naming_the_setting_and_is_not_restarted(tmp_path):
    """A run with compile on, on a machine where Inductor finds no C++ compiler (here CXX names one that does not
    exist, which torch._inductor.config.cpp.cxx reads; an image without g++ fails the same way): torch.compile
    really fails at the first step, the trainer says so in one line naming the setting that avoids it and exits 2,
    and the task does not restart it (a restart would fail the same way) and exits 2 with no traceback."""
    uri = str(tmp_path / "store")
    prepare_experiment(RunSettings(store=uri, compile="on", **SETTINGS))
    prepare_split_data(open_store(uri), 0)
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler" / "g++"),
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor-cache")}  # cold: no kernel compiled earlier is reused
    task = subprocess.run(
        [sys.executable, "-c", TRAIN_TASK,
         uri], capture_output=True, text=True, env=env, timeout=600)
    output = task.stdout + task.stderr
    assert task.returncode == 2, output
    [line] = [line for line in output.splitlines() if "torch.compile failed" in line]
    assert line.endswith(f"split 0: torch.compile failed (InvalidCxxCompiler: No working C++ compiler found in "
                         f"torch._inductor.config.cpp.cxx: (None, '{env['CXX']}')): rerun with --compile off "
                         "(pipeline parameter compile=off), or give the image a C++ compiler and Python's headers"), line
    assert "an error that a restart would repeat" in output and "restarting" not in output, output
    assert "Traceback" not in output and not complete_steps(open_store(uri), 0), output
