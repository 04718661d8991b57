"""Evaluation: metric functions on hand-made inputs, a collapsed generator flagged, bad input."""

import json
import math

import pytest
import torch

from components.ensemble import ENSEMBLE_KEY, assemble_ensemble, load_ensemble
from components.errors import UserError
from components.evaluation import EvalSettings, evaluate, pearson
from components.metrics import compute_accuracy, compute_class_ms_ssim
from components.training.loop import train_split
from tests.conftest import tiny_config


def test_accuracy_by_hand():
    predicted = torch.tensor([0, 0, 1, 1, 2, 0])
    labels = torch.tensor([0, 1, 1, 1, 2, 2])
    overall, per_class = compute_accuracy(predicted, labels, 4)
    assert overall == pytest.approx(4 / 6)
    assert per_class[:3] == pytest.approx([1.0, 2 / 3, 0.5]) and math.isnan(per_class[3])


def test_pearson_by_hand():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert pearson([1, 1, 1], [1, 2, 3]) is None


def test_class_ms_ssim_bad_input():
    images = torch.randint(0, 256, (5, 1, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 0, 0, 1, 2])
    with pytest.raises(UserError, match="class 1 has 1 image"):
        compute_class_ms_ssim(images, labels, [0, 1], pairs=2)
    with pytest.raises(UserError, match="--pairs 4 is more than the 3 distinct pairs"):
        compute_class_ms_ssim(images, labels, [0], pairs=4)


@pytest.fixture
def trained_store(digits_store):
    for split in (0, 1):
        train_split(digits_store, tiny_config(split=split, steps=5))
    assemble_ensemble(digits_store, 5)
    return digits_store


def test_evaluation_flags_a_collapsed_generator(trained_store):
    store = trained_store
    # Collapse split 0: G's output no longer depends on z (all samples of a class identical).
    from components.checkpoint import checkpoint_prefix, load_checkpoint, save_checkpoint
    from safetensors.torch import load as load_st, save as save_st

    files = load_checkpoint(store, 0, 5)
    weights = load_st(files["generator.safetensors"])
    weights["G.fc.weight"][:, :100] = 0  # the noise columns of the first layer
    files["generator.safetensors"] = save_st(weights)
    save_checkpoint(store, 0, 6, files)
    manifest = load_ensemble(store)
    for m in manifest.classes:
        if m.split == 0:
            m.step, m.checkpoint = 6, checkpoint_prefix(0, 6)
    store.write_bytes(ENSEMBLE_KEY, json.dumps(manifest.model_dump()).encode())

    summary = evaluate(store, EvalSettings(samples_per_class=6, pairs=10, classifier_steps=20))
    classes = json.loads(store.read_bytes("eval/metrics.json"))["classes"]
    for c in classes[:5]:
        assert c["ms_ssim"] > 0.99 and c["low_diversity"]
    assert summary["classes_low_diversity"] >= 5
    assert set(summary["accuracy_by_resolution"]) == {"32", "16", "8"}
    assert set(classes[0]["accuracy_by_resolution"]) == {"32", "16", "8"}
    assert 0 <= summary["fraction_more_discriminable_at_full_resolution"] <= 1
    assert 0 <= summary["fraction_below_real_max"] <= 0.5
    assert store.exists("eval/report.html") and store.exists("eval/samples-split-00000.png")


def test_evaluate_needs_an_ensemble(digits_store):
    with pytest.raises(UserError, match="has no ensemble"):
        evaluate(digits_store, EvalSettings())


def test_resolution_study_sizes_and_resizing():
    from components.metrics.discriminability import resize_down_and_up, study_resolutions

    assert study_resolutions(128) == [128, 64, 32, 16, 8]
    assert study_resolutions(32) == [32, 16, 8]
    stripes = torch.zeros(1, 1, 32, 32, dtype=torch.uint8)
    stripes[..., ::2] = 255  # 1-pixel stripes vanish at 16 px and below
    assert torch.equal(resize_down_and_up(stripes, 32), stripes)
    blurred = resize_down_and_up(stripes, 16)
    assert blurred.shape == stripes.shape and blurred.dtype == torch.uint8
    assert (blurred[..., 2:-2].float() - 127.5).abs().max() < 10  # the stripes are gone (edges aside)
    flat = torch.full((1, 3, 32, 32), 77, dtype=torch.uint8)
    assert torch.equal(resize_down_and_up(flat, 8), flat)  # no information lost, none invented
