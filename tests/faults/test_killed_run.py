"""Issue 36, on real local runs: `acgan run` killed outright (SIGKILL) ends its tasks and trainers, the next run takes
over its stale run lease and finishes, a run leaves no temporary files of kfp.local's or lock files, and a failing
task's own one-line reason is the run's last line, whose advice works when pasted (a store path with a space)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from acgan.checkpoint import complete_steps
from acgan.ensemble import load_ensemble
from acgan.experiment import prepare_experiment, train_one_split
from acgan.layout import RUN_LEASE_KEY, lease_key
from acgan.settings import RunSettings
from acgan.store import open_store
from acgan_cli.main import main
from tests.conftest import printed_commands, run_printed
from tests.faults.test_stopping import _processes_of, _wait_until_both_train_beyond

TINY = ["--steps", "60", "--batch-size", "16", "--width", "0.0625", "--d-width", "0.25", "--samples-per-class", "8",
        "--pairs", "8", "--classifier-steps", "30", "--checkpoint-every", "10"]


def _litter(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def killed_then_rerun(tmp_path_factory) -> dict:
    """`acgan run` SIGKILLed while both splits train; what was left of it a while later; then the
    `acgan rerun --local` that finishes the store (in a process of its own, with a TMPDIR to look into)."""
    root = tmp_path_factory.mktemp("killed")
    store_path, pipeline_root, tmp = root / "a store", root / "kfp local", root / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    out = root / "run"
    run = subprocess.Popen([sys.executable, "-m", "acgan_cli.main", "run", "--store", str(store_path),
                            "--pipeline-root", str(pipeline_root), *TINY], env=env, start_new_session=True,
                           stdout=out.with_suffix(".stdout").open("w"), stderr=out.with_suffix(".stderr").open("w"))
    store = open_store(str(store_path))
    try:
        _wait_until_both_train_beyond(store, run, {0: 10, 1: 10})
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        deadline, left = time.monotonic() + 90, None
        while (left := _processes_of(run, pipeline_root)) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for pid in _pids_of(run):  # whatever a failure left: never past this test
            os.kill(pid, signal.SIGKILL)
    leases = [key for key in (lease_key(0), lease_key(1), RUN_LEASE_KEY) if store.exists(key)]
    steps = {split: complete_steps(store, split) for split in (0, 1)}
    shutil.rmtree(tmp)  # what the killed run's tasks left there cannot be cleaned: only the rerun's is looked at
    tmp.mkdir()
    rerun = subprocess.run([sys.executable, "-m", "acgan_cli.main", "rerun", "--store", str(store_path), "--local",
                            "--pipeline-root", str(pipeline_root)], env=env, capture_output=True, text=True,
                           timeout=600)
    return {"store": store, "left": left, "leases": leases, "steps": steps, "rerun": rerun, "tmp": _litter(tmp)}


def _pids_of(run: subprocess.Popen) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            session = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[3])
        except OSError:
            continue
        if session == run.pid:
            found.append(int(pid))
    return found


def test_a_killed_run_ends_its_tasks_and_the_next_run_takes_over(killed_then_rerun):
    """SIGKILL of `acgan run` left 6 processes training to the end (reparented to PID 1) and `acgan rerun --local`
    refused while they ran. Its tasks end with it now: each trainer saves the step it reached and releases its lease;
    the stale run lease is taken over by the rerun, which trains the rest and assembles."""
    k = killed_then_rerun
    assert not k["left"], k["left"]
    assert k["leases"] == [RUN_LEASE_KEY]  # the killed run's own, which the rerun takes over; no split's
    assert all(steps and steps[-1] > 10 for steps in k["steps"].values()), k["steps"]  # each saved the step reached
    assert k["rerun"].returncode == 0, k["rerun"].stderr[-3000:]
    store = k["store"]
    assert {m.step for m in load_ensemble(store).classes} == {60}
    assert not store.exists(RUN_LEASE_KEY)


def test_a_run_leaves_no_temporary_or_lock_files(killed_then_rerun):
    """kfp.local wrote each task's program to /tmp/tmp.*/ephemeral_component.py and left it; the local store kept a
    `.NAME.lock` beside every lease. The run's temporary folder is its own now, removed at its end."""
    assert killed_then_rerun["tmp"] == [], killed_then_rerun["tmp"]
    root = Path(killed_then_rerun["store"].root)
    assert [p for p in root.rglob("*.lock")] == []


def test_a_failing_tasks_reason_is_the_runs_last_line_and_its_advice_runs_as_printed(_digits_template, tmp_path,
                                                                                     capsys):
    """A shard whose labels are one fewer than its images (its checksum matching) ended in an IndexError traceback
    and a last line naming no cause. The trainer's one line is the run's last line now, and the commands it gives
    work when pasted, the store's path having a space in it."""
    shutil.copytree(_digits_template, tmp_path / "b store")
    store = open_store(str(tmp_path / "b store"))
    prepare_experiment(RunSettings(store=store.uri, steps=20, batch_size=16, width=0.0625, d_width=0.25,
                                   samples_per_class=8, pairs=8, classifier_steps=30, checkpoint_every=10))
    train_one_split(store, 0)
    tensors = load_safetensors(store.read_bytes("data/split-00001.safetensors"))
    hostile = save_safetensors({"images": tensors["images"], "labels": tensors["labels"][:-1].clone()})
    store.write_bytes("data/split-00001.safetensors", hostile)
    info = json.loads(store.read_bytes("data/split-00001.json"))
    store.write_bytes("data/split-00001.json", json.dumps({**info, "sha256": hashlib.sha256(hostile).hexdigest(),
                                                            "bytes": len(hostile)}).encode())
    code = main(["rerun", "--store", store.uri, "--local", "--pipeline-root", str(tmp_path / "kfp")])
    out, err = capsys.readouterr()
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("acgan rerun: error: the local pipeline run failed (task "), last
    n = len(tensors["images"])
    assert f"): {store.uri}/data/split-00001.safetensors: its {n} images have {n - 1} labels" in last, last
    assert "IndexError" not in out + err and "Traceback" not in out + err
    assert [argv[:2] for argv in printed_commands(last)] == [["acgan", "prepare"], ["acgan", "rerun"]]
    store.delete("data/split-00001.json")  # as the line says, then its two commands as printed
    assert run_printed(last, 0) == 0
    assert run_printed(last, 1) == 0
    assert {m.step for m in load_ensemble(store).classes} == {20}
