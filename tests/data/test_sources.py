"""Every data source on small generated inputs, and the split plan."""

import json
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from acgan.data.plan import contiguous_splits, SplitPlan
from acgan.data.prepare import PrepareConfig, load_shard, prepare, shard_info
from acgan.errors import UserError
from acgan.store import LocalStore
from tests.conftest import run_printed


def _cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [int(v) for v in rng.integers(0, 3, n)],
            b"batch_label": b"training batch"}


def _write_cifar(root):
    root.mkdir()
    for i in (1, 2):
        (root / f"data_batch_{i}").write_bytes(pickle.dumps(_cifar_batch(12, i), protocol=2))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane", b"automobile", b"bird"]}))
    return root


def test_digits(tmp_path):
    store = LocalStore(tmp_path)
    plan = prepare(PrepareConfig(dataset="digits", resolution=32, classes_per_split=5), store)
    assert plan.splits == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]] and plan.channels == 1
    assert sum(sum(shard_info(store, s).images.values()) for s in (0, 1)) == 1797
    images, labels = load_shard(store, 1)
    assert images.shape[1:] == (1, 32, 32) and images.dtype.is_floating_point is False
    assert set(labels.tolist()) == {5, 6, 7, 8, 9}
    assert images.max() > 200  # ink is bright: the 0..16 range was scaled to 0..255


@pytest.mark.parametrize("packed", [False, True])
def test_cifar10_directory_and_tarball(tmp_path, packed):
    source = _write_cifar(tmp_path / "cifar-10-batches-py")
    if packed:
        tarball = tmp_path / "cifar-10-python.tar.gz"
        with tarfile.open(tarball, "w:gz") as tar:
            tar.add(source, arcname="cifar-10-batches-py")
        source = tarball
    store = LocalStore(tmp_path / "store")
    plan = prepare(PrepareConfig(dataset="cifar10", source=source, resolution=64, classes_per_split=2), store)
    assert [c.name for c in plan.classes] == ["airplane", "automobile", "bird"]
    assert plan.splits == [[0, 1], [2]]
    expected = {c: sum(b[b"labels"].count(c) for b in (_cifar_batch(12, 1), _cifar_batch(12, 2))) for c in range(3)}
    counts = {**shard_info(store, 0).images, **shard_info(store, 1).images}
    assert {c.id: counts[c.name] for c in plan.classes} == expected
    images, _ = load_shard(store, 0)
    assert images.shape[1:] == (3, 64, 64)


def test_cifar_pickle_with_code_is_refused(tmp_path):
    root = tmp_path / "evil"
    root.mkdir()

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    (root / "data_batch_1").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": [0]}))
    with pytest.raises(UserError, match="refusing to load builtins.print"):
        prepare(PrepareConfig(dataset="cifar10", source=root, classes_per_split=1), LocalStore(tmp_path / "s"))


def _write_folder(root, classes, per_class=3, size=(50, 37)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
            img.save(root / c / f"{i}.{'jpg' if i % 2 == 0 else 'png'}")
    return root


def test_folder_resizes_crops_and_skips_corrupt(tmp_path):
    root = _write_folder(tmp_path / "train", ["n01", "n02", "n03"])
    (root / "n02" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    store = LocalStore(tmp_path / "store")
    plan = prepare(PrepareConfig(dataset="folder", source=root, resolution=32, classes_per_split=2), store)
    assert [c.name for c in plan.classes] == ["n01", "n02", "n03"]
    assert shard_info(store, 0).images == {"n01": 3, "n02": 3}  # the corrupt file was skipped and counted
    assert shard_info(store, 0).skipped == {"n02": 1} and shard_info(store, 1).skipped == {}
    images, _ = load_shard(store, 0)
    assert images.shape == (6, 3, 32, 32)
    with pytest.raises(UserError, match="broken.jpg.*--strict"):
        prepare(PrepareConfig(dataset="folder", source=root, resolution=32, classes_per_split=2, strict=True),
                LocalStore(tmp_path / "strict"))


def test_folder_class_without_images(tmp_path):
    root = _write_folder(tmp_path / "train", ["a", "b"])
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match="class empty of .* has no JPEG/PNG images"):
        prepare(PrepareConfig(dataset="folder", source=root, classes_per_split=3), LocalStore(tmp_path / "s"))
    assert not (tmp_path / "s").exists()


def test_plan_file_by_id_and_name(tmp_path):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"splits": [[9, "0", 3], [1, 2], [4, 5, 6, 7, 8]]}))
    plan = prepare(PrepareConfig(dataset="digits", plan_file=plan_file), LocalStore(tmp_path / "s"))
    assert plan.splits == [[9, 0, 3], [1, 2], [4, 5, 6, 7, 8]]
    assert plan.split_of(3) == (0, 2)


@pytest.mark.parametrize("splits, message", [
    ([[0, 1, 2, 3, 4], [], [5, 6, 7, 8, 9]], "split 1 is empty"),
    ([[0, 1, 2, 3, 4], [4, 5, 6, 7, 8, 9]], "class 4 appears in more than one place"),
    ([[0, 1, 2, 3], [5, 6, 7, 8, 9]], r"classes \[4\] are in no split"),
    ([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]], "outside 0..9"),
    ([["zero"]], "'zero' is not a class"),
])
def test_bad_plan_file_rejected_and_nothing_written(tmp_path, splits, message):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"splits": splits}))
    store = LocalStore(tmp_path / "s")
    with pytest.raises(UserError, match=message):
        prepare(PrepareConfig(dataset="digits", plan_file=plan_file), store)
    assert store.list("") == []


def test_plan_validation():
    assert contiguous_splits(1000, 10)[99] == list(range(990, 1000))
    with pytest.raises(UserError, match="larger than the 10 classes"):
        contiguous_splits(10, 11)
    classes = [{"id": i, "name": str(i), "images": 1} for i in range(3)]
    with pytest.raises(ValueError, match="more than one place"):
        SplitPlan(dataset="x", resolution=32, channels=1, classes=classes, splits=[[0, 1], [1, 2]])


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
