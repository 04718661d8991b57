"""Every data source on small generated inputs."""

import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from acgan.data.prepare import PrepareConfig, load_shard, prepare, shard_info
from acgan.errors import UserError
from acgan.store import LocalStore


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
