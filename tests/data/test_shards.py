"""Per-split shards: built one split at a time from the plan, checksummed, resumable after a kill."""

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
from tests.conftest import tiny_config


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
