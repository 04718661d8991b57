"""Fault 1, kill: SIGKILL a real `acgan train-split` process at random moments and in the middle of checkpoint
writes, over many trials. Every restart resumes from a complete, intact checkpoint, no restart ever sees a corrupt
"latest", work lost per kill stays under one checkpoint interval, and the final weights equal an uninterrupted run's."""

import random
import re
import shutil
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load as load_safetensors

from acgan.checkpoint import checkpoint_steps, complete_steps, latest_checkpoint, load_checkpoint
from acgan.layout import MARKER
from acgan.store import LocalStore
from acgan.training.loop import train_split
from tests.conftest import TINY, tiny_config

STEPS, EVERY = 40, 5
KILLS = 8


def _args(root) -> list[str]:
    return [sys.executable, "-m", "acgan_cli.main", "train-split", "--store", str(root), "--split", "0",
            "--steps", str(STEPS), "--checkpoint-every", str(EVERY), "--tick-every", "1",
            "--batch-size", str(TINY["batch_size"]), "--width", str(TINY["width"]), "--d-width", str(TINY["d_width"])]


def _final_weights(store) -> dict:
    step, files = latest_checkpoint(store, 0, ["train_state.safetensors"])
    assert step == STEPS
    state = load_safetensors(files["train_state.safetensors"])
    return {k: v for k, v in state.items() if k.startswith(("G.", "D."))}


def _partial_checkpoints(root) -> set[str]:
    """Step folders with files but no marker: checkpoints being written (or left half-written by a kill)."""
    base = root / "splits" / "split-00000" / "checkpoints"
    partial = set()
    for d in base.iterdir() if base.is_dir() else []:
        try:
            names = {p.name for p in d.iterdir()}
        except OSError:  # pruned while we looked
            continue
        if names and MARKER not in names:
            partial.add(d.name)
    return partial


def test_sigkill_trials_resume_bit_identical(digits_store, tmp_path, fault_report):
    reference = LocalStore(tmp_path / "reference")
    shutil.copytree(digits_store.root, reference.root)
    train_split(reference, tiny_config(steps=STEPS, checkpoint_every=EVERY, tick_every=1))

    rng = random.Random(7)
    root, log_path = digits_store.root, tmp_path / "train.log"
    kills, mid_write, lost = 0, 0, []
    for trial in range(KILLS + 5):
        with open(log_path, "w") as log:
            proc = subprocess.Popen(_args(root), stdout=subprocess.DEVNULL, stderr=log)
        if trial >= KILLS:  # enough kills: let it finish
            assert proc.wait(300) == 0, log_path.read_text()[-2000:]
            break
        before = _partial_checkpoints(root)
        if trial % 2 == 1:  # wait for a checkpoint write to begin, then kill
            deadline = time.time() + 60
            while proc.poll() is None and not _partial_checkpoints(root) - before and time.time() < deadline:
                time.sleep(0.0005)
        else:
            deadline = time.time() + rng.uniform(2.0, 5.0)
            while proc.poll() is None and time.time() < deadline:
                time.sleep(0.01)
        hit_write = bool(_partial_checkpoints(root) - before)
        if proc.poll() is not None:  # finished before the kill
            assert proc.returncode == 0, log_path.read_text()[-2000:]
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        mid_write += hit_write
        # What the next start sees: the newest marker verifies, and so does every other complete checkpoint.
        complete = complete_steps(digits_store, 0)
        for step in complete:
            load_checkpoint(digits_store, 0, step)  # raises CorruptCheckpoint on any damage
        newest = latest_checkpoint(digits_store, 0, ["meta.json"])
        assert (newest[0] if newest else None) == (complete[-1] if complete else None)
        half_written = [s for s, done in checkpoint_steps(digits_store, 0).items() if not done]
        assert all(s not in complete for s in half_written)
        reached = [int(m) for m in re.findall(r"step (\d+)/", log_path.read_text())]
        if reached:
            lost.append(max(reached) - (complete[-1] if complete else 0))
    assert kills >= KILLS // 2, f"only {kills} kills landed before the run finished"
    assert mid_write >= 1, "no kill landed during a checkpoint write"
    assert max(lost, default=0) < EVERY + 1  # at most one interval (+ the step in flight, not yet logged)
    a, b = _final_weights(reference), _final_weights(digits_store)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fault_report("kill (SIGKILL)", f"random moments and mid-checkpoint-write ({mid_write} of {kills})", kills, kills,
                 f"max {max(lost, default=0)} steps (interval {EVERY})", "none; final weights bit-identical")
