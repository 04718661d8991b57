"""What the evaluation loads: the default classifier trained one split at a time and from disk as in memory, reused
across stores of the same data; a user's classifier file refused with one line."""

import pytest
import torch

from acgan.errors import UserError
from acgan.evaluation.analyses import evaluate
from acgan.metrics import classifier
from acgan.metrics.classifier import Classifier
from acgan.settings import EvalSettings
from tests.evaluation.stores import STREAM_SETTINGS, count_resident, load_real, prepared, synthetic_ensemble


def test_training_the_default_classifier_holds_one_split_of_real_images_at_a_time(tmp_path, monkeypatch):
    from acgan.evaluation.inputs import get_classifier

    settings = STREAM_SETTINGS.model_copy(update={"classifier_steps": 2})
    peaks = {}
    for num_classes in (2, 8):
        store, plan = prepared(tmp_path / f"{num_classes}-classes", num_classes)
        with monkeypatch.context() as patch:
            real = count_resident(patch, "real_of_split")
            _, info = get_classifier(store, plan, settings, torch.device("cpu"))
        assert real["calls"] == num_classes // 2  # every split loaded once
        assert info.train_images + info.heldout_images == 6 * num_classes  # trained on every class's chosen images
        peaks[num_classes] = real["peak"]
    assert peaks[2] == peaks[8] == 12  # one split (2 classes of 6) in memory at a time, whatever the classes


def test_classifier_trained_from_disk_equals_the_one_trained_in_memory(tmp_path, monkeypatch):
    from acgan.evaluation.inputs import real_on_disk
    from acgan.metrics.classifier import train_classifier

    store, plan = prepared(tmp_path / "store", 8)
    real, labels = load_real(store, plan, 10, 0)
    in_memory = train_classifier(real, labels, 8, steps=3)
    # Held-out images in forward passes of 3 (16 held out: six passes, the last short) against one pass in memory.
    monkeypatch.setattr(classifier, "CPU_BATCH_VALUES", 3 * 32 * 32 * 32)
    with real_on_disk(store, plan, 10, 0) as (mapped, mapped_labels):
        assert torch.equal(mapped, real) and torch.equal(mapped_labels, labels)  # the same images in the same order
        from_disk = train_classifier(mapped, mapped_labels, 8, steps=3)
    assert from_disk[1] == in_memory[1]  # held-out accuracy and counts
    weights, reference = from_disk[0].state_dict(), in_memory[0].state_dict()
    assert all(torch.equal(weights[k], reference[k]) for k in reference)


def test_a_store_of_the_same_data_reuses_the_classifier_another_store_trained(tmp_path, monkeypatch):
    """The evaluation's classifier was trained afresh for every store, the longest part of a small run's evaluation:
    it is kept by the real data's checksum and its settings, and another store of the same data reuses it."""
    from acgan import progress
    from acgan.evaluation import inputs

    events = progress.events_file(tmp_path)
    monkeypatch.setenv(progress.ENVIRONMENT, str(events))

    def trained() -> int:  # classifiers trained so far: the evaluation reports each one's last step
        return sum(e.part == progress.CLASSIFIER and e.step == e.total for e in progress.read_events(events))

    first, second = (synthetic_ensemble(tmp_path / name, 4, classifier=False) for name in ("first", "second"))
    settings = STREAM_SETTINGS.model_copy(update={"classifier_steps": 3, "classifier_cache": str(tmp_path / "cache")})
    assert evaluate(first, settings) == evaluate(second, settings)
    assert trained() == 1 and len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    assert second.read_bytes("eval/classifier.safetensors") == first.read_bytes("eval/classifier.safetensors")
    # Other settings, or no cache: trained again.
    for store in (first, second):
        for key in ("eval/classifier.safetensors", "eval/classifier.json"):
            store.delete(key)
    evaluate(first, settings.model_copy(update={"classifier_steps": 4}))
    evaluate(second, settings.model_copy(update={"classifier_cache": ""}))
    assert trained() == 3 and inputs.load_cached_classifier(tmp_path / "none", "x") is None


def test_classifier_file_bad_input(trained_store, tmp_path):
    from safetensors.torch import save as save_st

    store = trained_store
    settings = EvalSettings(samples_per_class=4, pairs=3, classifier_steps=5)
    wrong = tmp_path / "three-classes.safetensors"
    wrong.write_bytes(save_st(Classifier(1, 3).state_dict()))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not safetensors at all")
    other = tmp_path / "other.safetensors"
    other.write_bytes(save_st({"w": torch.zeros(2)}))
    cases = {str(wrong): "has 3 classes, the store 10", str(garbage): "not a readable safetensors file",
             str(other): "neither Inception-v3 weights nor an acgan classifier",
             str(tmp_path / "model.pth"): "we never unpickle", str(tmp_path / "no.safetensors"): "no such file"}
    for source, message in cases.items():
        with pytest.raises(UserError, match=message):
            evaluate(store, settings.model_copy(update={"classifier": source}))
    assert not store.exists("eval/metrics.json")  # nothing written as if complete
    with pytest.raises(UserError, match="--pairs 7 is more than the 6 distinct pairs"):
        evaluate(store, EvalSettings(samples_per_class=4, pairs=7))
