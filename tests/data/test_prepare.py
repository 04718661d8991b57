"""Preparing a store: per-split shards built one split at a time from the plan, checksummed, resumable after a
kill; a store holds one plan; a missing or hostile shard is built again as the message says."""

import json
import signal
import subprocess
import sys
import time

import pytest

from acgan.data.prepare import PrepareConfig, load_shard, plan_data, prepare, prepare_shard, shard_info
from acgan.errors import UserError
from acgan.layout import shard_info_key, shard_key
from acgan.store import LocalStore
from acgan.training.loop import train_split
from tests.conftest import run_printed, tiny_config


def test_the_plan_lists_classes_and_each_shard_reads_only_its_split(tmp_path):
    store = LocalStore(tmp_path)
    plan = plan_data(PrepareConfig(dataset="synthetic", num_classes=6, images_per_class=4, classes_per_split=3), store)
    assert plan.splits == [[0, 1, 2], [3, 4, 5]] and store.list("data/") == ["data/prepare.json"]
    info = prepare_shard(store, 1)
    assert info.images == {f"synthetic-{c:04d}": 4 for c in (3, 4, 5)}
    assert not store.exists(shard_key(0))  # split 0 is another task's
    _, labels = load_shard(store, 1)
    assert sorted(set(labels.tolist())) == [3, 4, 5]


def test_a_flipped_byte_is_caught_before_training_and_the_shard_rebuilt(digits_store, capsys):
    path = digits_store.root / shard_key(1)
    intact, untouched = path.read_bytes(), (digits_store.root / shard_key(0)).stat().st_ino
    damaged = bytearray(intact)
    damaged[len(damaged) // 2] ^= 0x01  # one pixel: safetensors itself would load this without complaint
    path.write_bytes(bytes(damaged))
    with pytest.raises(UserError, match=r"split-00001.safetensors does not match its checksum .* \(damaged\)"):
        train_split(digits_store, tiny_config(split=1))
    assert not digits_store.exists("splits/split-00001/config.json")  # nothing was trained on it
    proc = subprocess.run([sys.executable, "-m", "acgan_cli.main", "train-split", "--store", str(digits_store.root),
                           "--split", "1", "--steps", "1"], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "split-00001.safetensors does not match its checksum" in proc.stderr and "Traceback" not in proc.stderr
    prepare(PrepareConfig(dataset="digits", resolution=32, classes_per_split=5), digits_store)
    assert path.read_bytes() == intact  # rebuilt from the source
    assert (digits_store.root / shard_key(0)).stat().st_ino == untouched  # the complete shard was not rewritten


def test_a_half_built_shard_is_rebuilt_and_a_complete_one_is_not(digits_store, caplog):
    # A task killed between writing the shard and its sidecar leaves the shard without a sidecar.
    digits_store.delete(shard_info_key(1))
    with pytest.raises(UserError, match="no complete data for split 1"):
        load_shard(digits_store, 1)
    inode = (digits_store.root / shard_key(0)).stat().st_ino
    with caplog.at_level("INFO"):
        prepare(PrepareConfig(dataset="digits", resolution=32, classes_per_split=5), digits_store)
    assert "split 0: shard data/split-00000.safetensors is complete; not rebuilt" in caplog.text
    assert "split 1: rebuilding data/split-00001.safetensors: it was never finished" in caplog.text
    assert (digits_store.root / shard_key(0)).stat().st_ino == inode
    assert sum(shard_info(digits_store, 1).images.values()) == len(load_shard(digits_store, 1)[1])


def test_a_killed_preparation_resumes_without_rebuilding_complete_shards(tmp_path):
    root = tmp_path / "store"
    args = [sys.executable, "-m", "acgan_cli.main", "prepare", "--store", str(root), "--dataset", "synthetic",
            "--num-classes", "4", "--images-per-class", "800", "--classes-per-split", "1", "--resolution", "64"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = root / shard_info_key(0)
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists()
    store = LocalStore(root)
    done = [s for s in range(4) if store.exists(shard_info_key(s))]
    assert len(done) < 4, "the kill came after the last shard; make the shards bigger"
    inodes = {s: (root / shard_key(s)).stat().st_ino for s in done}
    subprocess.run(args, check=True, capture_output=True)
    assert {s: (root / shard_key(s)).stat().st_ino for s in done} == inodes
    for split in range(4):
        assert len(load_shard(store, split)[1]) == 800


def test_prepare_refuses_a_different_plan_in_the_same_store(tmp_path):
    store = LocalStore(tmp_path)
    prepare(PrepareConfig(dataset="digits", classes_per_split=5), store)
    before = store.read_bytes("plan.json")
    with pytest.raises(UserError, match="already holds a different plan"):
        prepare(PrepareConfig(dataset="digits", classes_per_split=2), store)
    assert store.read_bytes("plan.json") == before
    prepare(PrepareConfig(dataset="digits", classes_per_split=5), store)  # the same plan again: a no-op


def test_prepare_again_restores_a_missing_shard(tmp_path):
    store = LocalStore(tmp_path)
    prepare(PrepareConfig(dataset="digits", classes_per_split=5), store)
    shard = store.read_bytes("data/split-00001.safetensors")
    store.delete("data/split-00001.safetensors")
    with pytest.raises(UserError, match="no data for split 1: run `acgan prepare --store ") as missing:
        load_shard(store, 1)
    assert run_printed(str(missing.value)) == 0  # as printed: the store's recorded settings build it again
    assert store.read_bytes("data/split-00001.safetensors") == shard


def test_a_shard_whose_labels_and_images_differ_in_length_is_one_line(tmp_path):
    """Issue 36: hostile content with a matching checksum (one label fewer than images) was an IndexError traceback
    in the trainer. Shapes are checked when the shard is loaded; the advice, followed as printed, builds it again."""
    import hashlib

    import torch
    from safetensors.torch import load as load_safetensors
    from safetensors.torch import save as save_safetensors

    store = LocalStore(tmp_path / "a store")  # a space in the path: the printed command quotes it
    prepare(PrepareConfig(dataset="digits", classes_per_split=5), store)
    good = store.read_bytes("data/split-00001.safetensors")
    tensors = load_safetensors(good)
    hostile = save_safetensors({"images": tensors["images"], "labels": tensors["labels"][:-1].clone()})
    store.write_bytes("data/split-00001.safetensors", hostile)
    info = json.loads(store.read_bytes("data/split-00001.json"))
    store.write_bytes("data/split-00001.json", json.dumps({**info, "sha256": hashlib.sha256(hostile).hexdigest(),
                                                            "bytes": len(hostile)}).encode())
    with pytest.raises(UserError) as refused:
        load_shard(store, 1)
    line = str(refused.value)
    n = len(tensors["images"])
    assert f"data/split-00001.safetensors: its {n} images have {n - 1} labels of type torch.int64" in line, line
    assert "\n" not in line and f"delete {store.uri}/data/split-00001.json and run `acgan prepare --store '" in line
    store.delete("data/split-00001.json")
    assert run_printed(line) == 0
    assert store.read_bytes("data/split-00001.safetensors") == good and torch.equal(load_shard(store, 1)[1],
                                                                                  tensors["labels"])
