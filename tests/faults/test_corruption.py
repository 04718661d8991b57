"""Fault 3, corruption: flip bytes in, truncate or delete one object of the newest checkpoint. The checksums in its
marker catch it; it is skipped with a warning naming the object and the previous checkpoint is used; a resumed run
moves it to quarantine and retrains its steps to the same weights; the ensemble refuses to point at it."""

import itertools
import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load as load_safetensors

from acgan.checkpoint import latest_checkpoint
from acgan.ensemble import assemble_ensemble, sample
from acgan.errors import UserError
from acgan.experiment import split_statuses
from acgan.store import LocalStore
from acgan.training.loop import train_split
from tests.conftest import stored_file, tiny_config

FILES = ("generator.safetensors", "meta.json", "train_state.safetensors")
DAMAGES = ("flip", "truncate", "delete")


def damage(store, key: str, how: str) -> None:
    data = store.read_bytes(key)
    if how == "flip":
        i = len(data) // 2
        store.write_bytes(key, data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    elif how == "truncate":
        store.write_bytes(key, data[: len(data) // 3])
    else:
        store.delete(key)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, _digits_template):
    """Split 0 trained to step 10 (checkpoints 5 and 10), and its final weights."""
    root = tmp_path_factory.mktemp("trained") / "store"
    shutil.copytree(_digits_template, root)
    store = LocalStore(root)
    train_split(store, tiny_config(steps=10, checkpoint_every=5))
    return root, _weights(store)


def _weights(store) -> dict:
    state = load_safetensors(latest_checkpoint(store, 0, ["train_state.safetensors"])[1]["train_state.safetensors"])
    return {k: v for k, v in state.items() if k.startswith(("G.", "D."))}


def test_every_damage_to_every_file_is_caught(trained, tmp_path, caplog, fault_report):
    root, final = trained
    trials = 0
    for how, name in itertools.product(DAMAGES, FILES):
        store = LocalStore(tmp_path / f"{how}-{name}")
        shutil.copytree(root, store.root)
        key = stored_file(store, 0, 10, name)  # the object the marker lists, under its writer's token
        damage(store, key, how)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert latest_checkpoint(store, 0)[0] == 5
        assert any(key in r.getMessage() for r in caplog.records), (how, name)
        with pytest.raises(UserError) as refused:  # split 1 is untrained: assembly always fails here
            assemble_ensemble(store, 10)
        # The assembly verifies every file, as the plan and a resumed trainer do (issue 36): one rerun retrains
        # whatever it refuses.
        assert f"split 0: {key}" in str(refused.value), (how, name, str(refused.value))
        assert split_statuses(store, verify=True)[0].state == "incomplete"  # a rerun trains it again
        result = train_split(store, tiny_config(steps=10, checkpoint_every=5))
        assert result["resumed_from"] == 5
        assert latest_checkpoint(store, 0)[0] == 10
        weights = _weights(store)
        assert weights.keys() == final.keys(), (how, name)
        assert all(torch.equal(weights[k], final[k]) for k in final), (how, name)
        quarantined = store.list("splits/split-00000/quarantine/")
        assert quarantined and all(k.rsplit("/", 1)[-1].endswith((*FILES, "COMPLETE.json")) for k in quarantined)
        trials += 1
    fault_report("corrupt checkpoint object", "bytes flipped, truncated or deleted in each file of the newest "
                 "checkpoint", trials, trials, "5 steps (one interval), retrained to identical weights",
                 "none; the damaged copy is kept in quarantine/")


def test_ensemble_refuses_a_checkpoint_that_does_not_verify(digits_store, tmp_path, fault_report):
    for split in (0, 1):
        train_split(digits_store, tiny_config(split=split, steps=5))
    assemble_ensemble(digits_store, 5)
    sample(digits_store, "7", 4, 0, tmp_path / "ok.png", "cpu")
    damage(digits_store, stored_file(digits_store, 1, 5, "generator.safetensors"), "flip")
    with pytest.raises(UserError, match="class 7 does not verify"):
        sample(digits_store, "7", 4, 0, tmp_path / "bad.png", "cpu")
    assert not (tmp_path / "bad.png").exists()
    with pytest.raises(UserError, match=r"1 of 2 splits are not ready \(split 1: .*generator.safetensors"):
        assemble_ensemble(digits_store, 5)
    fault_report("corrupt checkpoint behind the ensemble", "a byte flipped in a member's generator after assembly",
                 1, 1, "none", "none; sampling and re-assembly refuse it")


@pytest.mark.parametrize("how", ["flip", "garbage line", "not UTF-8"])
def test_damaged_stats_file_never_blocks_a_resume(trained, tmp_path, caplog, how, fault_report):
    root, final = trained
    store = LocalStore(tmp_path / "store")
    shutil.copytree(root, store.root)
    key = "splits/split-00000/stats.jsonl"
    lines = store.read_bytes(key).splitlines(keepends=True)
    if how == "flip":
        lines[0] = lines[0][:1] + bytes([lines[0][1] ^ 0x40]) + lines[0][2:]  # '"step"' -> 'bstep"'
    elif how == "garbage line":
        lines.insert(1, b"\x00{{{\n")
    else:
        lines[0] = lines[0].replace(b"step", b"st\xffp")
    store.write_bytes(key, b"".join(lines))
    with caplog.at_level(logging.WARNING):
        result = train_split(store, tiny_config(steps=15, checkpoint_every=5))
    assert result["resumed_from"] == 10 and result["step"] == 15
    assert "stats.jsonl: dropped" in caplog.text or how == "not UTF-8"
    steps = [json.loads(line)["step"] for line in store.read_bytes(key).splitlines()]
    assert steps[-1] == 15 and steps == sorted(steps)
    fault_report(f"damaged stats.jsonl ({how})", "a byte flipped / a garbage line / invalid UTF-8", 1, 1, "none",
                 "the damaged line only; training resumed")
