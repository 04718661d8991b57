"""The ImageNet path at small scale: a class-folder tree under an S3 prefix of the S3-protocol test server, a real
kfp.local run that plans from the listing, prepares each split's shard inside the fan-out and assembles the ensemble."""

from acgan.data.prepare import load_shard, shard_info
from acgan.ensemble import load_ensemble
from acgan.settings import RunSettings
from acgan.store import open_store
from pipelines import runs
from pipelines.launch_settings import LocalSettings
from tests.data.test_folder import image_tree

CLASSES = [f"n{c:02d}" for c in (6, 1, 5, 2, 4, 3)]  # uploaded out of order: the class index is the sorted name


def test_local_run_from_a_bucket_source_prepares_each_split_in_the_fan_out(s3_env, tmp_path):
    source = f"{s3_env}/imagenet/train"
    bucket = open_store(source)
    for name, data in image_tree(CLASSES, per_class=3).items():
        bucket.write_bytes(name, data)
    settings = RunSettings(store=f"{s3_env}/run", dataset="folder", source=source, classes_per_split=3,
                           resolution=32, steps=2, batch_size=8, checkpoint_every=2, width=0.0625, samples_per_class=4,
                           pairs=3, classifier_steps=20)
    runs.run_local(settings, local=LocalSettings(pipeline_root=tmp_path / "kfp-local"))
    store = open_store(settings.store)
    assert [shard_info(store, s).images for s in (0, 1)] == [{"n01": 4, "n02": 5, "n03": 3},
                                                             {"n04": 3, "n05": 3, "n06": 3}]
    assert shard_info(store, 1).skipped == {} and shard_info(store, 0).skipped == {"n03": 1}
    assert sorted(set(load_shard(store, 1)[1].tolist())) == [3, 4, 5]
    manifest = load_ensemble(store)
    assert [(m.class_id, m.split, m.step) for m in manifest.classes] == [(c, c // 3, 2) for c in range(6)]
    assert store.exists("eval/metrics.json")
