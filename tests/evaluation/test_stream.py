"""The pass over the splits (acgan/evaluation/stream.py): one split's images at a time, the same numbers as every
image at once, a log line per split, every part's images on the evaluation device."""

import json

import pytest
import torch

from acgan.ensemble import load_ensemble
from acgan.evaluation.analyses import evaluate
from acgan.metrics import compute_accuracy, compute_class_ms_ssim
from acgan.metrics.classifier import classify
from tests.evaluation.stores import STREAM_SETTINGS, count_resident, load_real, synthetic_ensemble
from tests.metrics.test_fidelity import frechet_distance


def test_evaluation_streams_split_by_split_and_memory_stays_flat(tmp_path, monkeypatch):
    peaks = {}
    for num_classes in (2, 8):
        store = synthetic_ensemble(tmp_path / f"{num_classes}-classes", num_classes)
        with monkeypatch.context() as patch:
            real = count_resident(patch, "real_of_split")
            samples = count_resident(patch, "split_samples")
            evaluate(store, STREAM_SETTINGS)
        assert real["calls"] == samples["calls"] == num_classes // 2  # every split loaded once
        peaks[num_classes] = real["peak"], samples["peak"]
    # One split's images at a time (2 classes: 12 real images, 8 samples), whatever the number of classes.
    assert peaks[2] == peaks[8] == (12, 8)


def test_streamed_evaluation_equals_the_analyses_on_every_image_at_once(tmp_path):
    from acgan.data.plan import load_plan
    from acgan.evaluation.inputs import split_samples
    from acgan.metrics.classifier import load_classifier

    store = synthetic_ensemble(tmp_path / "store", 8)
    summary = evaluate(store, STREAM_SETTINGS)
    metrics = json.loads(store.read_bytes("eval/metrics.json"))
    assert metrics["computed_on"]["peak_host_memory_bytes"] > 0  # the bench prints it
    assert metrics["computed_on"]["peak_device_memory_bytes"] is None  # on the CPU
    # The same analyses on every real image and every sample at once (the evaluation before streaming).
    plan, manifest, model = load_plan(store), load_ensemble(store), load_classifier(store)[0]
    real, real_labels = load_real(store, plan, 6, 0)
    drawn = [split_samples(store, manifest, members, 4, 0, torch.device("cpu")) for members in plan.splits]
    samples, sample_labels = torch.cat([s for s, _ in drawn]), torch.cat([y for _, y in drawn])
    classes = list(range(8))
    assert [c["ms_ssim"] for c in metrics["classes"]] == compute_class_ms_ssim(samples, sample_labels, classes, 3)[0]
    assert [c["real_ms_ssim"] for c in metrics["classes"]] == compute_class_ms_ssim(real, real_labels, classes, 3)[0]
    full, real_full = classify(model, samples, features=True), classify(model, real, features=True)
    assert summary["accuracy"] == compute_accuracy(full.predicted, sample_labels, 8)[0]
    assert summary["real_accuracy_by_resolution"]["8"] == compute_accuracy(
        classify(model, real, size=8).predicted, real_labels, 8)[0]
    assert summary["fid"] == pytest.approx(frechet_distance(real_full.features, full.features), rel=1e-4)
    assert metrics["computed_on"]["real_images"] == len(real_labels) == 48


def test_an_evaluation_writing_to_a_log_reports_each_split_it_starts(tmp_path, monkeypatch, caplog):
    """In a pod or a kfp.local task there is no terminal for the bar: a 1000-class evaluation printed nothing for
    ten minutes. A line every PROGRESS_SECONDS (here: every split) says how far it is."""
    from acgan.evaluation import stream

    store = synthetic_ensemble(tmp_path / "store", 6)
    monkeypatch.setattr(stream, "PROGRESS_SECONDS", 0.0)
    with caplog.at_level("INFO", logger="acgan.evaluation.stream"):
        evaluate(store, STREAM_SETTINGS)
    lines = [m.split(",")[0] for m in caplog.messages if m.startswith("evaluating split")]
    assert lines == ["evaluating split 1 / 3", "evaluating split 2 / 3", "evaluating split 3 / 3"]


def test_every_analysis_gets_its_images_on_the_evaluation_device(tmp_path, monkeypatch):
    from acgan.data.plan import load_plan
    from acgan.evaluation import inputs, parts, stream

    store = synthetic_ensemble(tmp_path / "store", 4)

    seen: dict[str, set] = {}

    def spy(fn):
        def recording(*args, **kwargs):
            devices = {a.device for a in args if isinstance(a, torch.Tensor)}
            if fn.__name__ == "classify":
                devices.add(next(args[0].parameters()).device)
            seen.setdefault(fn.__name__, set()).update(devices)
            return fn(*args, **kwargs)
        return recording

    for module, name in ((parts, "compute_class_ms_ssim"), (inputs, "nearest_neighbours"), (stream, "classify"),
                         (parts, "classify")):  # where the parts and the stream call them
        monkeypatch.setattr(module, name, spy(getattr(module, name)))
    evaluate(store, STREAM_SETTINGS)
    assert seen == {name: {torch.device("cpu")} for name in ("compute_class_ms_ssim", "nearest_neighbours",
                                                              "classify")}
    # Real images go to the device asked for (meta: a device without data, the one other than the CPU here).
    for images, labels in inputs.real_by_split(store, load_plan(store), 3, 0, torch.device("meta")):
        assert images.device.type == labels.device.type == "meta" and images.shape[0] == 6  # 2 classes of 3
