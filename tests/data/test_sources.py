"""Every data source on small generated inputs; class-folder sources on a local path and under an S3 prefix (the
S3-protocol test server), with real JPEGs."""

import io
import pickle
import shutil
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from acgan.data.prepare import PrepareConfig, load_shard, plan_data, prepare, prepare_shard, shard_info
from acgan.data.sources import usable_cores
from acgan.errors import UserError
from acgan.store import LocalStore, open_store


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


CLASSES = ["n03", "n01", "n02"]  # created out of order: the class index is the sorted folder name


def _jpeg(rng, mode="RGB", fmt="JPEG", size=(60, 45)) -> bytes:
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(pixels).convert(mode)
    out = io.BytesIO()
    img.save(out, fmt, quality=85)
    return out.getvalue()


def image_tree(classes=CLASSES, per_class: int = 2) -> dict[str, bytes]:
    """Relative path -> bytes of a class-folder tree of real images, with what ImageNet's train set holds besides
    plain RGB JPEGs: a CMYK JPEG, a PNG named .jpg, a greyscale JPEG, and a file no decoder reads."""
    rng = np.random.default_rng(0)
    files = {f"{c}/{c}_{i}.JPEG": _jpeg(rng) for c in classes for i in range(per_class)}
    files["n01/n01_cmyk.JPEG"] = _jpeg(rng, mode="CMYK")
    files["n02/n02_png.JPEG"] = _jpeg(rng, fmt="PNG")
    files["n02/n02_grey.jpg"] = _jpeg(rng, mode="L")
    files["n03/n03_truncated.JPEG"] = _jpeg(rng)[:300]
    files["n03/notes.txt"] = b"not an image"
    return files


def as_archives(files: dict[str, bytes], classes: list[str]) -> dict[str, bytes]:
    """The same tree with `classes` packed as `<class>.tar` (uncompressed, as ImageNet's train set ships each class),
    the other classes left as folders."""
    out = {name: data for name, data in files.items() if name.split("/")[0] not in classes}
    for c in classes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for name, data in sorted(files.items()):
                if name.startswith(f"{c}/"):
                    info = tarfile.TarInfo(name.split("/", 1)[1])
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
        out[f"{c}.tar"] = buffer.getvalue()
    return out


def write_local(root, files):
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@pytest.fixture
def bucket_source(s3_env):
    """The tree uploaded under an S3 prefix; returns its s3:// URI."""
    uri = f"{s3_env}/imagenet/train"
    bucket = open_store(uri)
    for name, data in image_tree().items():
        bucket.write_bytes(name, data)
    return uri


def _check_prepared(store, source):
    plan = prepare(PrepareConfig(dataset="folder", source=source, resolution=32, classes_per_split=2), store)
    assert [c.name for c in plan.classes] == ["n01", "n02", "n03"] and plan.splits == [[0, 1], [2]]
    first, second = shard_info(store, 0), shard_info(store, 1)
    # CMYK, PNG-as-JPEG and greyscale decode to RGB; the truncated file is skipped and counted.
    assert first.images == {"n01": 3, "n02": 4} and first.skipped == {}
    assert second.images == {"n03": 2} and second.skipped == {"n03": 1}
    images, labels = load_shard(store, 0)
    assert images.shape == (7, 3, 32, 32) and labels.tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_local_folder(tmp_path, caplog):
    with caplog.at_level("INFO"):
        _check_prepared(LocalStore(tmp_path / "store"), str(write_local(tmp_path / "train", image_tree())))
    assert "class n03: skipped 1 unreadable file(s)" in caplog.text
    # progress, with images/s
    assert "decoded 7 images, 2 / 2 classes" in caplog.text and "decoded 3 images, 1 / 1 classes" in caplog.text
    assert "skipped 1 unreadable file(s)" in [r for r in caplog.messages if r.startswith("split 1:")][0]


def test_bucket_folder_with_the_stores_endpoint(bucket_source, tmp_path):
    _check_prepared(LocalStore(tmp_path / "store"), bucket_source)


def test_class_archives_in_a_local_folder_and_in_a_bucket(tmp_path, s3_env, monkeypatch):
    """Classes as `<class>.tar` beside class folders: the same images, skips and plan; in a bucket an archive is one
    request for its class where a folder is one per image."""
    from acgan.store import S3Store

    files = as_archives(image_tree(), ["n02", "n03"])
    _check_prepared(LocalStore(tmp_path / "local-store"), str(write_local(tmp_path / "train", files)))
    bucket = open_store(f"{s3_env}/imagenet/train")
    for name, data in files.items():
        bucket.write_bytes(name, data)
    reads = []
    real_read = S3Store.read_bytes
    monkeypatch.setattr(S3Store, "read_bytes", lambda self, key: reads.append(key) or real_read(self, key))
    _check_prepared(LocalStore(tmp_path / "bucket-store"), f"{s3_env}/imagenet/train")
    images = [key for key in reads if key.startswith(("n01", "n02", "n03"))]
    assert sorted(images) == ["n01/n01_0.JPEG", "n01/n01_1.JPEG", "n01/n01_cmyk.JPEG", "n02.tar", "n03.tar"]


def test_a_class_both_folder_and_archive_is_refused(tmp_path):
    files = {**image_tree(), **{k: v for k, v in as_archives(image_tree(), ["n02"]).items() if k == "n02.tar"}}
    with pytest.raises(UserError, match=r"class n02 is both a folder and an archive in .*train \(n02/ and n02.tar\)"):
        plan_data(PrepareConfig(dataset="folder", source=str(write_local(tmp_path / "train", files))),
                  LocalStore(tmp_path / "store"))


def test_a_corrupt_class_archive_is_one_line_naming_it(tmp_path):
    """Not a tar at all: found with the listing, before the plan is written. Cut after its first image: found by
    its split's data task, the other splits unharmed."""
    source = write_local(tmp_path / "train", {**image_tree(), "n04.tar": b"not a tar" * 100})
    store = LocalStore(tmp_path / "store")
    with pytest.raises(UserError, match=r"class archive .*train/n04.tar is not a readable tar .*: replace it"):
        plan_data(PrepareConfig(dataset="folder", source=str(source), classes_per_split=3), store)
    assert not store.root.exists()
    rng = np.random.default_rng(0)
    whole = _tar({"a.JPEG": _jpeg(rng), "b.JPEG": _jpeg(rng)})
    second = tarfile.open(fileobj=io.BytesIO(whole)).getmember("b.JPEG")
    (source / "n04.tar").write_bytes(whole[:second.offset_data + second.size // 2])
    plan_data(PrepareConfig(dataset="folder", source=str(source), classes_per_split=3), store)
    prepare_shard(store, 0)
    with pytest.raises(UserError, match=r"class archive .*train/n04.tar is not a readable tar .*: replace it"):
        prepare_shard(store, 1)
    assert shard_info(store, 0).images == {"n01": 3, "n02": 4, "n03": 2}


def test_bucket_folder_on_its_own_endpoint_and_keys(bucket_source, s3_server, tmp_path, monkeypatch):
    # The store's keys are not the source's: the source reads with its own.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "store-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "store-secret")
    monkeypatch.setenv("ACGAN_SOURCE_S3_ENDPOINT", s3_server["endpoint"])
    monkeypatch.setenv("ACGAN_SOURCE_AWS_ACCESS_KEY_ID", s3_server["access_key"])
    monkeypatch.setenv("ACGAN_SOURCE_AWS_SECRET_ACCESS_KEY", s3_server["secret_key"])
    _check_prepared(LocalStore(tmp_path / "store"), bucket_source)
    monkeypatch.setenv("ACGAN_SOURCE_AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(UserError, match="rejected the credentials"):
        plan_data(PrepareConfig(dataset="folder", source=bucket_source), LocalStore(tmp_path / "other"))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_class_list_takes_a_subset_in_its_order(where, tmp_path, request):
    if where == "s3":
        source = request.getfixturevalue("bucket_source")
        open_store(source.rsplit("/", 1)[0]).write_bytes("classes.txt", b"n03\n\nn01\n")
        class_list = f"{source.rsplit('/', 1)[0]}/classes.txt"
    else:
        source = str(write_local(tmp_path / "train", image_tree()))
        class_list = str(tmp_path / "classes.txt")
        (tmp_path / "classes.txt").write_text("n03\n\nn01\n")
    store = LocalStore(tmp_path / "store")
    plan = plan_data(PrepareConfig(dataset="folder", source=source, class_list=class_list, classes_per_split=1), store)
    assert [c.name for c in plan.classes] == ["n03", "n01"]
    prepare_shard(store, 1)
    assert shard_info(store, 1).images == {"n01": 3}


def test_class_list_errors_name_the_line(tmp_path):
    source = str(write_local(tmp_path / "train", image_tree()))
    (tmp_path / "classes.txt").write_text("n01\nn09\n")
    with pytest.raises(UserError, match=r"classes.txt, line 2: 'n09' is not a class \(folder or .tar\) of"):
        plan_data(PrepareConfig(dataset="folder", source=source, class_list=str(tmp_path / "classes.txt")),
                  LocalStore(tmp_path / "s"))
    with pytest.raises(UserError, match="class list .*missing.txt does not exist"):
        plan_data(PrepareConfig(dataset="folder", source=source, class_list=str(tmp_path / "missing.txt")),
                  LocalStore(tmp_path / "s"))


def test_a_class_with_no_readable_image_fails_naming_it(tmp_path):
    files = image_tree()
    files.update({"n04/a.JPEG": b"\xff\xd8 broken", "n04/b.JPEG": b""})
    source = str(write_local(tmp_path / "train", files))
    store = LocalStore(tmp_path / "store")
    plan_data(PrepareConfig(dataset="folder", source=source, classes_per_split=3), store)
    with pytest.raises(UserError, match=r"class n04 of .*train has no readable JPEG/PNG images"):
        prepare_shard(store, 1)


def test_usable_cores_follow_the_cgroup_quota(tmp_path):
    cpu_max, affinity = tmp_path / "cpu.max", len(__import__("os").sched_getaffinity(0))
    cpu_max.write_text("150000 100000\n")  # a pod limited to 1.5 CPUs
    assert usable_cores(cpu_max) == min(2, affinity)
    cpu_max.write_text("max 100000\n")  # no limit: the cores the process may run on
    assert usable_cores(cpu_max) == affinity
    assert usable_cores(tmp_path / "absent") == affinity


ORDINARY_NAMES = {"golden retriever/IMG 0001.jpg", "golden retriever/ö (2)+x.JPEG", "cat/IMG 0001.jpg",
                  "cat/猫 #1 [a]&b=c.png", "cat/100%.jpg"}


def test_bucket_source_takes_ordinary_object_names_as_a_folder_does(s3_env, tmp_path):
    """Spaces, unicode, parentheses, '+', '%': a bucket prepares what the same tree in a folder prepares."""
    rng = np.random.default_rng(0)
    files = {name: _jpeg(rng, fmt="PNG" if name.endswith(".png") else "JPEG") for name in sorted(ORDINARY_NAMES)}
    files["class list (v2).txt"] = "golden retriever\ncat\n".encode()
    bucket = open_store(f"{s3_env}/src")
    for name, data in files.items():
        bucket.client.put_object(bucket.bucket, f"{bucket.prefix}/{name}", io.BytesIO(data), len(data))
    local = write_local(tmp_path / "train", files)
    plans, shards = [], []
    for source, class_list in [(str(local), str(local / "class list (v2).txt")),
                               (f"{s3_env}/src", f"{s3_env}/src/class list (v2).txt")]:
        store = LocalStore(tmp_path / f"store-{len(plans)}")
        plans.append(prepare(PrepareConfig(dataset="folder", source=source, class_list=class_list, resolution=32,
                                           classes_per_split=2), store))
        shards.append(load_shard(store, 0))
    assert [c.name for c in plans[1].classes] == ["golden retriever", "cat"] and plans[0] == plans[1]
    assert shard_info(LocalStore(tmp_path / "store-1"), 0).images == {"golden retriever": 2, "cat": 3}
    assert all(torch.equal(a, b) for a, b in zip(*shards))


@pytest.mark.parametrize("key", ["cat/../up.jpg", "cat/./here.jpg", "cat//twice.jpg"])
def test_bucket_source_keys_with_dot_or_empty_parts_stay_refused(s3_env, s3_server, tmp_path, key):
    import boto3  # the minio client refuses to write such names; another S3 client writes them

    bucket = open_store(f"{s3_env}/src")
    s3 = boto3.client("s3", endpoint_url=s3_server["endpoint"], region_name="us-east-1",
                      aws_access_key_id=s3_server["access_key"], aws_secret_access_key=s3_server["secret_key"])
    for name in ("cat/IMG 0001.jpg", key):
        s3.put_object(Bucket=bucket.bucket, Key=f"{bucket.prefix}/{name}", Body=b"x")
    assert f"{bucket.prefix}/{key}" in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket.bucket)["Contents"]]
    store = LocalStore(tmp_path / "store")
    plan_data(PrepareConfig(dataset="folder", source=f"{s3_env}/src", classes_per_split=1), store)
    with pytest.raises(UserError, match=r"invalid source key 'cat/.*': .* could name"):
        prepare_shard(store, 0)


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize("empty", [{"n04/notes.txt": b"no images"}, {"n04.tar": _tar({"notes.txt": b"no images"})},
                                   {"n04.tar": b""}], ids=["folder", "archive", "zero-byte-archive"])
def test_a_class_without_images_is_found_before_anything_is_written(where, empty, tmp_path, request):
    """Found after the plan was written, the advice (remove the class) led to "already holds a different plan"."""
    files = {**image_tree(), **empty}
    if where == "s3":
        source = f"{request.getfixturevalue('s3_env')}/train"
        bucket = open_store(source)
        for name, data in files.items():
            bucket.client.put_object(bucket.bucket, f"{bucket.prefix}/{name}", io.BytesIO(data), len(data))
    else:
        source = str(write_local(tmp_path / "train", files))
    store = LocalStore(tmp_path / "store")
    refused = r"class n04 of .*train has no (readable )?JPEG/PNG|archive .*train/n04.tar is not a readable"
    with pytest.raises(UserError, match=refused):
        prepare(PrepareConfig(dataset="folder", source=source, classes_per_split=2), store)
    assert not store.root.exists()
    if where == "local":  # the advice: remove the class's folder or archive
        shutil.rmtree(tmp_path / "train" / "n04", ignore_errors=True)
        (tmp_path / "train" / "n04.tar").unlink(missing_ok=True)
    else:
        for name in empty:
            bucket.delete(name)
    plan = prepare(PrepareConfig(dataset="folder", source=source, classes_per_split=2), store)
    assert [c.name for c in plan.classes] == ["n01", "n02", "n03"]


def test_decoding_reads_the_centre_square_as_resize_then_crop_did():
    """The pixels of resizing the short side to R and cropping the centre, without the full resize: the same
    filter at the same places, to a rounding (at most one level in 255)."""
    from acgan.data.sources import _decode

    rng = np.random.default_rng(0)
    for (width, height), resolution in [((w, h), r) for w, h in [(60, 45), (45, 60), (640, 480), (20, 400),
                                                                   (17, 23), (33, 32), (31, 100)]
                                        for r in (32, 64)]:
        img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        png = io.BytesIO()
        img.save(png, "PNG")
        scale = resolution / min(width, height)
        full = img.resize((max(resolution, round(width * scale)), max(resolution, round(height * scale))),
                          Image.Resampling.BILINEAR, reducing_gap=None)
        left, top = (full.width - resolution) // 2, (full.height - resolution) // 2
        expected = np.asarray(full.crop((left, top, left + resolution, top + resolution))).transpose(2, 0, 1)
        decoded = _decode((png.getvalue(), resolution)).astype(int)
        assert np.abs(decoded - expected).max() <= 1, (width, height, resolution)
    wide = Image.new("RGB", (32 * 20, 32))  # as long as allowed
    png = io.BytesIO()
    wide.save(png, "PNG")
    assert _decode((png.getvalue(), 32)).shape == (3, 32, 32)
