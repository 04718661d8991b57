"""Fault 4, double execution: two trainers for one split at once (KFP may start a second pod after a node loss).
Policy (acgan/lease.py): a lease with an owner and an expiry; one trainer holds it, the other refuses with one
line; a trainer whose lease is taken stops without writing. The checkpoints stay one valid sequence."""

import json
import shutil
import subprocess
import sys
import time

import torch
from safetensors.torch import load as load_safetensors

from acgan.checkpoint import complete_steps, latest_checkpoint, load_checkpoint
from acgan.layout import lease_key
from acgan.lease import Lease
from acgan.store import LocalStore
from acgan.training.loop import train_split
from tests.conftest import TINY, tiny_config

STEPS, EVERY = 30, 5


def _trainer(root, lease_seconds: float = 300) -> subprocess.Popen:
    args = [sys.executable, "-m", "acgan_cli.main", "train-split", "--store", str(root), "--split", "0",
            "--steps", str(STEPS), "--checkpoint-every", str(EVERY), "--tick-every", "1",
            "--batch-size", str(TINY["batch_size"]), "--width", str(TINY["width"]), "--d-width", str(TINY["d_width"]),
            "--lease-seconds", str(lease_seconds)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _weights(store) -> dict:
    state = load_safetensors(latest_checkpoint(store, 0, ["train_state.safetensors"])[1]["train_state.safetensors"])
    return {k: v for k, v in state.items() if k.startswith(("G.", "D."))}


def _one_valid_sequence(store) -> list[int]:
    steps = complete_steps(store, 0)
    for step in steps:
        load_checkpoint(store, 0, step)  # every complete checkpoint verifies: no mix of two writers
    return steps


def test_two_trainers_for_one_split(digits_store, tmp_path, fault_report):
    reference = LocalStore(tmp_path / "reference")
    shutil.copytree(digits_store.root, reference.root)
    train_split(reference, tiny_config(steps=STEPS, checkpoint_every=EVERY))
    final = _weights(reference)

    trials = 0
    for skew in (0.0, 0.4):  # started together, and the second a moment later
        store = LocalStore(tmp_path / f"skew-{skew}")
        shutil.copytree(digits_store.root, store.root)
        first = _trainer(store.root)
        time.sleep(skew)
        second = _trainer(store.root)
        results = [(p.wait(300), p.communicate()[1]) for p in (first, second)]
        codes = sorted(code for code, _ in results)
        assert codes == [0, 2], [err[-1500:] for _, err in results]
        refused = next(err for code, err in results if code == 2)
        (line,) = [ln for ln in refused.splitlines() if "error:" in ln]
        assert "split 0 is being trained by" in line and "Traceback" not in refused
        assert _one_valid_sequence(store)[-1] == STEPS
        weights = _weights(store)
        assert all(torch.equal(weights[k], final[k]) for k in final)
        assert not store.exists(lease_key(0))  # released by the trainer that finished
        trials += 1
    fault_report("double execution", "two trainers of one split started together / 0.4 s apart", trials, trials,
                 "none: the second refuses at once", "none; one valid checkpoint sequence, weights bit-identical")


def test_trainer_that_loses_its_lease_stops_without_writing(digits_store, fault_report):
    proc = _trainer(digits_store.root, lease_seconds=1.5)  # renews every 0.5 s
    deadline = time.time() + 120
    while not complete_steps(digits_store, 0) and time.time() < deadline:
        time.sleep(0.01)
    # Another trainer (say, a second pod after this one's node stopped answering) takes the split over. The running
    # trainer's next renewal is conditional on its own last write (If-Match), so it fails at once; the loop only
    # guards against a renewal that had already landed when this write was read back.
    for _attempt in range(20):
        other = Lease(owner="other-node/1/feedbeef", expires=time.time() + 600, acquired=time.time(), seconds=600)
        digits_store.write_bytes(lease_key(0), other.model_dump_json().encode())
        taken_at = complete_steps(digits_store, 0)[-1]
        time.sleep(1.0)  # two renewal periods
        if json.loads(digits_store.read_bytes(lease_key(0)))["owner"] == other.owner or proc.poll() is not None:
            break
    code, err = proc.wait(120), proc.communicate()[1]
    assert code == 2 and "split 0 was taken over by other-node/1/feedbeef" in err, err[-1500:]
    steps = _one_valid_sequence(digits_store)
    assert steps[-1] < STEPS and steps[-1] <= taken_at + EVERY  # at most the checkpoint already being written
    assert json.loads(digits_store.read_bytes(lease_key(0)))["owner"] == "other-node/1/feedbeef"  # left alone
    fault_report("lease taken over mid-run", "another owner's lease written while a trainer runs", 1, 1,
                 "the stopped trainer's steps since its last checkpoint", "none; it writes nothing more")
