"""Evaluation: metric functions on hand-made inputs, a real evaluation of a tiny trained store, a collapsed generator
flagged, user-supplied classifiers, the class-split comparison, bad input."""

import io
import json
import math

import numpy as np
import pytest
import torch

from acgan.ensemble import assemble_ensemble, load_ensemble
from acgan.errors import UserError
from acgan.evaluation.analyses import evaluate
from acgan.settings import EvalSettings
from acgan.evaluation.comparison import compare
from acgan.layout import ENSEMBLE_KEY
from acgan.metrics import compute_accuracy, compute_class_ms_ssim
from acgan.metrics import classifier
from acgan.metrics.classifier import Classifier, classify
from acgan.metrics.discriminability import resize_down_and_up
from acgan.metrics.fidelity import frechet_accumulator, inception_score
from acgan.metrics.joint import joint_fractions
from acgan.metrics.overfitting import fixed_noise_across_classes, interpolation, nearest_neighbours
from acgan.model import Generator, ModelConfig, to_uint8
from acgan.metrics.joint import pearson
from acgan.training.loop import train_split
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


def test_class_ms_ssim_standard_error_predicts_the_spread_of_estimates():
    from acgan.data.sources import digits_source

    source = digits_source(32)
    ones, threes = (torch.from_numpy(a) for a in source.load_classes([1, 3]))
    images, labels = torch.cat([ones, threes]), torch.tensor([1] * len(ones) + [3] * len(threes))
    estimates = torch.tensor([compute_class_ms_ssim(images, labels, [1, 3], pairs=40, seed=seed)[0]
                              for seed in range(0, 60, 2)])  # (30 draws, 2 classes); seed + c never repeats
    means, errors = compute_class_ms_ssim(images, labels, [1, 3], pairs=40, seed=1000)
    for k in range(2):
        assert 0.5 < estimates[:, k].std().item() / errors[k] < 1.6  # the error is the spread of a 40-pair estimate
    assert abs(means[0] - estimates[:, 0].mean().item()) < 3 * errors[0]
    identical = torch.zeros(4, 1, 32, 32, dtype=torch.uint8) + 128
    same_means, same_errors = compute_class_ms_ssim(identical, torch.zeros(4, dtype=torch.long), [0], pairs=5)
    assert same_means == [pytest.approx(1.0, abs=1e-4)] and same_errors == [pytest.approx(0.0, abs=1e-6)]


def test_joint_fractions_by_hand():
    accuracy = [0.0, 0.005, 0.5, 0.9, 0.0, 0.8]
    ms_ssim = [0.3, 0.4, 0.25, 0.1, 0.1, 0.2]
    out = joint_fractions(accuracy, ms_ssim, ms_ssim_threshold=0.25, accuracy_threshold=0.01)
    assert out["classes_low_diversity"] == 3  # 0.3, 0.4 and 0.25 (at the threshold counts as low)
    assert out["fraction_low_diversity_with_low_accuracy"] == pytest.approx(2 / 3)
    assert out["fraction_high_diversity_with_high_accuracy"] == pytest.approx(2 / 3)
    none_low = joint_fractions([0.5], [0.1], 0.25, 0.01)
    assert none_low["fraction_low_diversity_with_low_accuracy"] is None
    assert none_low["fraction_high_diversity_with_high_accuracy"] == 1.0


def test_one_classifier_pass_gives_every_output_in_cpu_sized_batches(monkeypatch):
    torch.manual_seed(0)
    model = Classifier(1, 10).eval()
    images = torch.randint(0, 256, (50, 1, 32, 32), dtype=torch.uint8)
    monkeypatch.setattr(classifier, "CPU_BATCH_VALUES", 7 * 32 * 32 * 32)  # batches of 7: the last one short
    out = classify(model, images, logits=True, features=True)
    with torch.no_grad():
        x = images.float() / 127.5 - 1
        assert torch.allclose(out.features, model.pooled(x), atol=1e-5)
        assert torch.allclose(out.logits, model(x), atol=1e-5)
        assert torch.equal(out.predicted, model(x).argmax(1))
        small = classify(model, images, size=8, logits=True)
        assert small.features is None and classify(model, images).logits is None  # only what was asked for
        assert torch.allclose(small.logits, model(resize_down_and_up(images, 8).float() / 127.5 - 1), atol=1e-5)
    assert not torch.allclose(small.logits, out.logits, atol=1e-3)  # the resize reached the classifier


IMAGENET_MEAN, IMAGENET_STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def _torchvision_transform_input(x: torch.Tensor) -> torch.Tensor:
    """torchvision's Inception3._transform_input (transform_input=True), channel by channel: ImageNet-normalised
    input back to the [-1, 1] scale of the ported Google weights."""
    return torch.cat([x[:, i:i + 1] * (IMAGENET_STD[i] / 0.5) + (IMAGENET_MEAN[i] - 0.5) / 0.5 for i in range(3)], 1)


def test_inception_input_is_the_scale_its_imagenet_weights_expect():
    from acgan.metrics.classifier_file import inception_input

    grey = torch.tensor([0, 255, 51], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 8, 8)
    x = inception_input(grey)
    assert x.shape == (3, 3, 299, 299)
    for image, value in zip(x, (-1.0, 1.0, 51 / 127.5 - 1)):
        assert torch.allclose(image, torch.full_like(image, value), atol=1e-6)  # every channel, every pixel
    # What torchvision computes with transform_input=True from the usual ImageNet normalisation of the same images.
    colour = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    imagenet = (torch.nn.functional.interpolate(colour.float() / 255, size=(299, 299), mode="bilinear",
                                                align_corners=False) - IMAGENET_MEAN.view(1, 3, 1, 1)) \
        / IMAGENET_STD.view(1, 3, 1, 1)
    assert torch.allclose(inception_input(colour), _torchvision_transform_input(imagenet), atol=1e-5)


def test_inception_network_is_built_without_a_second_input_transform():
    pytest.importorskip("torchvision", reason="torchvision is not installed: the `inception` extra")
    from torchvision.models import inception_v3

    from acgan.metrics.classifier_file import classifier_from_tensors

    weights = inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=10).state_dict()
    net = classifier_from_tensors(weights, "inception.safetensors", 3)
    assert net.file_kind == "inception-v3" and net.inception.transform_input is False  # inception_input gives its scale
    imagenet = torch.randn(1, 3, 8, 8)
    assert torch.allclose(inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=True)
                          ._transform_input(imagenet), _torchvision_transform_input(imagenet))


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID by its definition, in numpy and scipy: |mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))."""
    from scipy import linalg

    a, b = real.double().numpy(), fake.double().numpy()
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_fid_given_part_by_part_is_the_frechet_distance():
    """The evaluation's FID (torchmetrics' running sums, fed a split at a time) against the definition: zero on
    identical sets, growing with the distance."""
    torch.manual_seed(0)
    model = Classifier(1, 10).eval()
    real = torch.randint(0, 256, (200, 1, 32, 32), dtype=torch.uint8)
    features = classify(model, real, features=True).features
    darker = classify(model, (real // 2).to(torch.uint8), features=True).features

    def streamed(a: torch.Tensor, b: torch.Tensor) -> float:
        metric = frechet_accumulator(a.shape[1])
        for part in a.split(64):
            metric.update(part, real=True)
        for part in b.split(50):
            metric.update(part, real=False)
        return float(metric.compute())

    assert streamed(features, features) == pytest.approx(0, abs=1e-6)
    for other in (darker, features[:100]):
        assert streamed(features, other) == pytest.approx(frechet_distance(features, other), rel=1e-4)
    assert streamed(features, darker) > streamed(features, features[:100]) + 1e-3


def test_inception_score_is_one_when_every_image_gets_the_same_prediction():
    model = Classifier(1, 2).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
        model.head.bias.copy_(torch.tensor([3.0, -3.0]))  # zero features: the head's bias decides
    ones = torch.full((20, 1, 32, 32), 255, dtype=torch.uint8)
    mean, _ = inception_score(classify(model, ones, logits=True).logits, splits=2)
    assert mean == pytest.approx(1.0, abs=1e-4)
    spread = torch.tensor([[4.0, -4.0], [-4.0, 4.0]]).repeat(10, 1)  # confident and balanced: IS near its maximum 2
    assert inception_score(spread, splits=1)[0] == pytest.approx(2.0, abs=0.01)


def test_nearest_neighbours_find_the_copied_image():
    torch.manual_seed(0)
    real = torch.randint(0, 256, (30, 1, 32, 32), dtype=torch.uint8)
    copies = real[[7, 21]].clone()
    copies[:, :, :2, :2] = 0  # near-copies, not exact
    for metric in ("l1", "ms_ssim"):
        nearest = nearest_neighbours(copies, real, 3, metric)
        assert nearest.shape == (2, 3) and nearest[:, 0].tolist() == [7, 21]


def test_interpolation_ends_at_its_endpoints_and_fixed_z_spans_the_classes():
    G = Generator(ModelConfig(resolution=32, channels=1, num_classes=3, width=0.0625)).eval()
    z = torch.randn(2, 100)
    path = interpolation(G, 1, z[0], z[1], 5)
    ends = torch.from_numpy(to_uint8(G(z, torch.tensor([1, 1]))))
    assert path.shape == (5, 1, 32, 32) and torch.equal(path[0], ends[0]) and torch.equal(path[-1], ends[1])
    grid = fixed_noise_across_classes(G, z)
    assert grid.shape == (6, 1, 32, 32)
    assert torch.equal(grid[1], torch.from_numpy(to_uint8(G(z[:1], torch.tensor([1]))))[0])


@pytest.fixture
def trained_store(digits_store):
    for split in (0, 1):
        train_split(digits_store, tiny_config(split=split, steps=5))
    assemble_ensemble(digits_store, 5)
    return digits_store


def test_evaluation_flags_a_collapsed_generator(trained_store):
    store = trained_store
    # Collapse split 0: G's output no longer depends on z (all samples of a class identical).
    from safetensors.torch import load as load_st
    from safetensors.torch import save as save_st

    from acgan.checkpoint import load_checkpoint, save_checkpoint
    from acgan.layout import checkpoint_prefix

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
    # The headline is the paper's pair, full resolution against a quarter of it (32 px against 8 here).
    per_class = {size: [c["accuracy_by_resolution"][str(size)] for c in classes] for size in (32, 16, 8)}
    assert summary["fraction_more_discriminable_than_at_quarter_resolution"] == pytest.approx(
        sum(full > low for full, low in zip(per_class[32], per_class[8])) / 10)
    assert set(summary["fraction_more_discriminable_than_at_resolution"]) == {"16", "8"}
    assert 0 <= summary["fraction_below_real_max"] <= 0.5
    assert store.exists("eval/report.html") and store.exists("eval/samples-split-00000.png")


SUMMARY_KEYS = {"accuracy", "real_accuracy", "ms_ssim_mean", "real_ms_ssim_mean", "real_ms_ssim_max",
                "fraction_below_real_max", "accuracy_ms_ssim_correlation",
                "fraction_more_discriminable_than_at_quarter_resolution", "inception_score", "fid",
                "fraction_low_diversity_with_low_accuracy", "fraction_high_diversity_with_high_accuracy"}
FIGURES = ["eval/figures/accuracy-by-resolution.png", "eval/figures/ms-ssim-samples-vs-real.png",
           "eval/figures/accuracy-vs-ms-ssim.png", "eval/figures/ms-ssim-over-training.png",
           "eval/overfitting/nearest-l1.png", "eval/overfitting/nearest-ms-ssim.png",
           "eval/overfitting/interpolation.png", "eval/overfitting/fixed-z-split-00000.png",
           "eval/overfitting/fixed-z-split-00001.png", "eval/samples-split-00000.png", "eval/samples-split-00001.png"]


def test_end_to_end_evaluation_writes_every_analysis(trained_store, tmp_path):
    from PIL import Image

    store = trained_store
    settings = EvalSettings(samples_per_class=6, pairs=10, classifier_steps=30, overfitting_classes=2, is_splits=2)
    summary = evaluate(store, settings)
    metrics = json.loads(store.read_bytes("eval/metrics.json"))
    assert SUMMARY_KEYS <= set(summary) and metrics["summary"] == summary
    assert 1.0 <= summary["inception_score"] <= 10.0 and summary["fid"] >= 0
    assert 0 <= summary["accuracy"] <= 1 and 0 < summary["real_ms_ssim_max"] <= 1
    assert [c["id"] for c in metrics["classes"]] == list(range(10))
    for c in metrics["classes"]:
        assert {"name", "split", "accuracy", "accuracy_by_resolution", "ms_ssim", "real_ms_ssim"} <= set(c)
        assert 0 <= c["ms_ssim_se"] < 0.5 and 0 < c["real_ms_ssim_se"] < 0.5
    on = metrics["computed_on"]
    assert on["checkpoints"] == [[0, 5], [1, 5]] and on["samples_per_class"] == 6 and on["pairs_per_class"] == 10
    assert on["classifier"]["kind"] == "trained" and "trained classifier" in on["fid"]
    for key in FIGURES:
        Image.open(io.BytesIO(store.read_bytes(key))).verify()  # a real PNG
    report = store.read_bytes("eval/report.html").decode()
    assert report.count("data:image/png;base64,") == len(FIGURES)
    # Same seed, same classifier: the same numbers.
    assert evaluate(store, settings) == summary

    # A user-supplied classifier: this store's, as a file; recorded as such.
    path = tmp_path / "classifier.safetensors"
    path.write_bytes(store.read_bytes("eval/classifier.safetensors"))
    again = evaluate(store, settings.model_copy(update={"classifier": str(path)}))
    on = json.loads(store.read_bytes("eval/metrics.json"))["computed_on"]
    assert on["classifier"]["kind"] == "file" and on["classifier"]["source"] == str(path)
    assert again["accuracy"] == summary["accuracy"]  # the same network


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


def test_compare_plots_ms_ssim_against_classes_per_model(trained_store, tmp_path):
    from acgan.data.prepare import PrepareConfig, prepare
    from acgan.store import LocalStore

    one_split = LocalStore(tmp_path / "ten-per-model")
    prepare(PrepareConfig(dataset="digits", resolution=32, classes_per_split=10), one_split)
    train_split(one_split, tiny_config(split=0, steps=5))
    assemble_ensemble(one_split, 5)
    settings = EvalSettings(samples_per_class=4, pairs=3, classifier_steps=5, overfitting_classes=1, is_splits=2)
    with pytest.raises(UserError, match="has no evaluation"):
        compare([trained_store, one_split])
    for store in (trained_store, one_split):
        evaluate(store, settings)
    runs, png = compare([trained_store, one_split])
    assert [r["classes_per_model"] for r in runs] == [5.0, 10.0]
    assert png.startswith(b"\x89PNG")


def test_evaluate_needs_an_ensemble(digits_store):
    with pytest.raises(UserError, match="has no ensemble"):
        evaluate(digits_store, EvalSettings())


def test_headline_compares_full_resolution_with_a_quarter_of_it():
    from acgan.metrics.discriminability import fractions_more_discriminable

    # Four classes at 128 px: against 32 px (the paper's pair) 3 of 4 lose accuracy; against 8 px every one does.
    table = {128: [0.5, 0.4, 0.3, 0.2], 64: [0.5, 0.5, 0.2, 0.1], 32: [0.4, 0.3, 0.2, 0.2], 16: [0.1, 0.1, 0.1, 0.1],
             8: [0.0, 0.0, 0.0, 0.0]}
    fractions = fractions_more_discriminable(table)
    assert fractions == {64: 0.5, 32: 0.75, 16: 1.0, 8: 1.0}
    assert fractions_more_discriminable({32: [0.5, float("nan")], 16: [0.6, 0.1], 8: [0.1, 0.1]}) == {16: 0.0, 8: 0.5}


def test_resolution_study_sizes_and_resizing():
    from acgan.metrics.discriminability import (
        resize_down_and_up,
        study_resolutions,
    )

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


def load_real(store, plan, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every split's real images at once, in RAM (what the evaluation held before it streamed): the reference."""
    from acgan.evaluation.inputs import real_by_split

    images, labels = zip(*real_by_split(store, plan, per_class, seed, torch.device("cpu")))
    return torch.cat(images), torch.cat(labels)


def _synthetic_ensemble(root, num_classes: int, classifier: bool = True):
    """A synthetic 32 px store of `num_classes` classes in splits of 2, each split trained one step and assembled,
    with a store classifier trained beforehand (so an evaluation streams from its start) unless not `classifier`."""
    from acgan.data.prepare import PrepareConfig, prepare
    from acgan.metrics.classifier import save_classifier, train_classifier
    from acgan.store import LocalStore

    store = LocalStore(root)
    plan = prepare(PrepareConfig(dataset="synthetic", num_classes=num_classes, images_per_class=10, resolution=32,
                                 classes_per_split=2), store)
    for split in range(len(plan.splits)):
        train_split(store, tiny_config(split=split, steps=1, checkpoint_every=1, tick_every=1))
    assemble_ensemble(store, 1)
    if not classifier:
        return store
    real, labels = load_real(store, plan, 6, 0)
    model, info = train_classifier(real, labels, num_classes, steps=2)
    save_classifier(store, model, info)
    return store


STREAM_SETTINGS = EvalSettings(samples_per_class=4, pairs=3, real_per_class=6, overfitting_classes=1, is_splits=2,
                               neighbours=2, device="cpu", cas_steps=2)


def _count_resident(monkeypatch, name: str) -> dict[str, int]:
    """Wraps <name> (a loader returning (images, labels)) where the evaluation calls it: counts the images it returned
    that are still alive (freed tensors are finalised at once), and the most alive at one time."""
    import weakref

    from acgan.evaluation import inputs, stream

    evaluation = inputs if name == "real_of_split" else stream  # real_by_split calls it; the stream split_samples

    count = {"now": 0, "peak": 0, "calls": 0}
    loader = getattr(evaluation, name)

    def freed(n):
        count["now"] -= n

    def counted(*args, **kwargs):
        images, labels = loader(*args, **kwargs)
        count["now"] += len(images)
        count["calls"] += 1
        count["peak"] = max(count["peak"], count["now"])
        weakref.finalize(images, freed, len(images))
        return images, labels

    monkeypatch.setattr(evaluation, name, counted)
    return count


def test_evaluation_streams_split_by_split_and_memory_stays_flat(tmp_path, monkeypatch):
    peaks = {}
    for num_classes in (2, 8):
        store = _synthetic_ensemble(tmp_path / f"{num_classes}-classes", num_classes)
        with monkeypatch.context() as patch:
            real = _count_resident(patch, "real_of_split")
            samples = _count_resident(patch, "split_samples")
            evaluate(store, STREAM_SETTINGS)
        assert real["calls"] == samples["calls"] == num_classes // 2  # every split loaded once
        peaks[num_classes] = real["peak"], samples["peak"]
    # One split's images at a time (2 classes: 12 real images, 8 samples), whatever the number of classes.
    assert peaks[2] == peaks[8] == (12, 8)


def test_streamed_evaluation_equals_the_analyses_on_every_image_at_once(tmp_path):
    from acgan.data.plan import load_plan
    from acgan.evaluation.inputs import split_samples
    from acgan.metrics.classifier import load_classifier

    store = _synthetic_ensemble(tmp_path / "store", 8)
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

    store = _synthetic_ensemble(tmp_path / "store", 6)
    monkeypatch.setattr(stream, "PROGRESS_SECONDS", 0.0)
    with caplog.at_level("INFO", logger="acgan.evaluation.stream"):
        evaluate(store, STREAM_SETTINGS)
    lines = [m.split(",")[0] for m in caplog.messages if m.startswith("evaluating split")]
    assert lines == ["evaluating split 1 / 3", "evaluating split 2 / 3", "evaluating split 3 / 3"]


def test_every_analysis_gets_its_images_on_the_evaluation_device(tmp_path, monkeypatch):
    from acgan.evaluation import inputs as evaluation
    from acgan.data.plan import load_plan

    store = _synthetic_ensemble(tmp_path / "store", 4)

    seen: dict[str, set] = {}

    def spy(fn):
        def recording(*args, **kwargs):
            devices = {a.device for a in args if isinstance(a, torch.Tensor)}
            if fn.__name__ == "classify":
                devices.add(next(args[0].parameters()).device)
            seen.setdefault(fn.__name__, set()).update(devices)
            return fn(*args, **kwargs)
        return recording

    from acgan.evaluation import parts, stream

    for module, name in ((parts, "compute_class_ms_ssim"), (evaluation, "nearest_neighbours"), (stream, "classify"),
                         (parts, "classify")):
        monkeypatch.setattr(module, name, spy(getattr(module, name)))
    evaluate(store, STREAM_SETTINGS)
    assert seen == {name: {torch.device("cpu")} for name in ("compute_class_ms_ssim", "nearest_neighbours",
                                                              "classify")}
    # Real images go to the device asked for (meta: a device without data, the one other than the CPU here).
    for images, labels in evaluation.real_by_split(store, load_plan(store), 3, 0, torch.device("meta")):
        assert images.device.type == labels.device.type == "meta" and images.shape[0] == 6  # 2 classes of 3


def _prepared(root, num_classes: int):
    """A synthetic 32 px store of `num_classes` classes (10 images each) in splits of 2: data only, no classifier."""
    from acgan.data.prepare import PrepareConfig, prepare
    from acgan.store import LocalStore

    store = LocalStore(root)
    plan = prepare(PrepareConfig(dataset="synthetic", num_classes=num_classes, images_per_class=10, resolution=32,
                                 classes_per_split=2), store)
    return store, plan


def test_training_the_default_classifier_holds_one_split_of_real_images_at_a_time(tmp_path, monkeypatch):
    from acgan.evaluation.inputs import get_classifier

    settings = STREAM_SETTINGS.model_copy(update={"classifier_steps": 2})
    peaks = {}
    for num_classes in (2, 8):
        store, plan = _prepared(tmp_path / f"{num_classes}-classes", num_classes)
        with monkeypatch.context() as patch:
            real = _count_resident(patch, "real_of_split")
            _, info = get_classifier(store, plan, settings, torch.device("cpu"))
        assert real["calls"] == num_classes // 2  # every split loaded once
        assert info.train_images + info.heldout_images == 6 * num_classes  # trained on every class's chosen images
        peaks[num_classes] = real["peak"]
    assert peaks[2] == peaks[8] == 12  # one split (2 classes of 6) in memory at a time, whatever the classes


def test_classifier_trained_from_disk_equals_the_one_trained_in_memory(tmp_path, monkeypatch):
    from acgan.evaluation.inputs import real_on_disk
    from acgan.metrics.classifier import train_classifier

    store, plan = _prepared(tmp_path / "store", 8)
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


DISCRIMINABILITY_KEYS = {"accuracy", "real_accuracy", "accuracy_by_resolution", "real_accuracy_by_resolution",
                         "fraction_more_discriminable_than_at_quarter_resolution",
                         "fraction_more_discriminable_than_at_resolution"}
DIVERSITY_KEYS = {"ms_ssim_mean", "ms_ssim_std", "real_ms_ssim_mean", "real_ms_ssim_std", "real_ms_ssim_max",
                  "fraction_below_real_max", "fraction_at_most_real_ms_ssim"}
CLASS_ACCURACY_KEYS = {"accuracy", "accuracy_by_resolution", "real_accuracy", "real_accuracy_by_resolution"}
CLASS_MS_SSIM_KEYS = {"ms_ssim", "ms_ssim_se", "real_ms_ssim", "real_ms_ssim_se", "low_diversity"}
SAMPLE_METRIC_KEYS = {"precision", "recall", "density", "coverage", "intra_class_fid", "cas"}
CLASS_SAMPLE_METRIC_KEYS = {"precision", "recall", "density", "coverage", "fid", "cas"}


def _count_calls(monkeypatch, name: str) -> dict[str, int]:
    """Wraps <name> (the real function) where the evaluation's modules call it, to count its calls."""
    from acgan.evaluation import inputs, parts, stream

    count = {"calls": 0}
    for module in (inputs, parts, stream):
        if hasattr(module, name):
            def counted(*args, real=getattr(module, name), **kwargs):
                count["calls"] += 1
                return real(*args, **kwargs)

            monkeypatch.setattr(module, name, counted)
    return count


def test_every_analysis_by_default_writes_the_keys_it_always_wrote(tmp_path):
    """No --analyses: every analysis, and metrics.json has exactly the keys it had before analyses were chosen, and
    the sample metrics' (issue 39)."""
    store = _synthetic_ensemble(tmp_path / "store", 4)
    summary = evaluate(store, STREAM_SETTINGS)
    metrics = json.loads(store.read_bytes("eval/metrics.json"))
    assert set(metrics) == {"summary", "computed_on", "classes"}
    assert set(summary) == DISCRIMINABILITY_KEYS | DIVERSITY_KEYS | SAMPLE_METRIC_KEYS | {
        "accuracy_ms_ssim_correlation", "classes_low_diversity", "fraction_low_diversity_with_low_accuracy",
        "fraction_high_diversity_with_high_accuracy", "inception_score", "inception_score_std", "fid"}
    assert all(set(c) == {"id", "name", "split"} | CLASS_ACCURACY_KEYS | CLASS_MS_SSIM_KEYS | CLASS_SAMPLE_METRIC_KEYS
               for c in metrics["classes"])
    assert set(metrics["computed_on"]) == {
        "checkpoints", "generator", "samples_per_class", "pairs_per_class", "seed", "real_images", "real_per_class_at_most",
        "ms_ssim_standard_error", "collapse_threshold", "classifier", "ms_ssim_data_range", "resolution_study", "joint_thresholds",
        "inception_score", "fid", "overfitting", "peak_host_memory_bytes", "peak_device_memory_bytes",
        "class_feature_metrics", "cas"}


def test_the_sample_metrics_are_each_classs_in_the_classifiers_features_and_cas_tests_on_its_held_out_images(
        tmp_path, monkeypatch):
    """Precision, recall, density, coverage and FID per class, from the evaluation classifier's features of each
    class's samples and real images (as computing them on every image at once gives), their means in the summary;
    CAS trained on every sample (cas_steps) and tested on exactly the real images the store's classifier held out;
    the report shows each with its definition."""
    from acgan.data.plan import load_plan
    from acgan.evaluation.inputs import split_samples
    from acgan.metrics import cas as cas_module
    from acgan.metrics.classifier import heldout_mask, load_classifier
    from acgan.metrics.density_coverage import compute_density_coverage
    from acgan.metrics.intra_fid import compute_class_fid
    from acgan.metrics.precision_recall import compute_precision_recall

    store = _synthetic_ensemble(tmp_path / "store", 4)
    seen = {}
    real_cas = cas_module.compute_cas

    def recorded(samples, sample_labels, real, real_labels, num_classes, steps, seed, device):
        seen.update(samples=samples.clone(), real=real.clone(), real_labels=real_labels.clone(), steps=steps)
        return real_cas(samples, sample_labels, real, real_labels, num_classes, steps, seed, device)

    monkeypatch.setattr("acgan.evaluation.parts.compute_cas", recorded)
    summary = evaluate(store, STREAM_SETTINGS)
    metrics = json.loads(store.read_bytes("eval/metrics.json"))
    plan, manifest, model = load_plan(store), load_ensemble(store), load_classifier(store)[0]
    real, real_labels = load_real(store, plan, 6, 0)
    drawn = [split_samples(store, manifest, members, 4, 0, torch.device("cpu")) for members in plan.splits]
    samples, sample_labels = torch.cat([s for s, _ in drawn]), torch.cat([y for _, y in drawn])
    features, real_features = classify(model, samples, features=True).features, classify(model, real,
                                                                                          features=True).features
    for c in metrics["classes"]:
        mine, theirs = features[sample_labels == c["id"]], real_features[real_labels == c["id"]]
        assert (c["precision"], c["recall"]) == pytest.approx(compute_precision_recall(theirs, mine, 3))
        assert (c["density"], c["coverage"]) == pytest.approx(compute_density_coverage(theirs, mine, 5))
        assert c["fid"] == pytest.approx(compute_class_fid(theirs, mine), rel=1e-4)
    for name in ("precision", "recall", "density", "coverage"):
        assert summary[name] == pytest.approx(np.mean([c[name] for c in metrics["classes"]]))
    assert summary["intra_class_fid"] == pytest.approx(np.mean([c["fid"] for c in metrics["classes"]]))
    # CAS: every sample, and the real images train_classifier held out (the same seed and fraction).
    heldout = heldout_mask(real_labels, 4, 0.2, torch.Generator().manual_seed(0))
    assert torch.equal(seen["samples"], samples) and seen["steps"] == 2
    assert torch.equal(seen["real"], real[heldout]) and torch.equal(seen["real_labels"], real_labels[heldout])
    assert summary["cas"] == pytest.approx(np.mean([c["cas"] for c in metrics["classes"]]))  # one held out per class
    assert "2 steps" in metrics["computed_on"]["cas"] and "k = 3" in metrics["computed_on"]["class_feature_metrics"]
    page = store.read_bytes("eval/report.html").decode()
    for text in ("<dt>precision, recall</dt>", "<dt>density, coverage</dt>", "<dt>intra-class FID</dt>",
                 "<dt>CAS</dt>", "<th>recall</th>", "<th>CAS</th>", "<td>intra_class_fid</td>", "<td>cas</td>"):
        assert text in page, text
    only = evaluate(store, STREAM_SETTINGS.model_copy(update={"analyses": ["discriminability"]}))
    page = store.read_bytes("eval/report.html").decode()
    assert not SAMPLE_METRIC_KEYS & set(only) and "What the sample metrics measure" not in page


def test_discriminability_alone_classifies_and_computes_no_ms_ssim(tmp_path, monkeypatch):
    from acgan.evaluation.report import flat_summary
    from pipelines.console import summary_text

    store = _synthetic_ensemble(tmp_path / "store", 4)
    ms_ssim = _count_calls(monkeypatch, "compute_class_ms_ssim")
    everything = evaluate(store, STREAM_SETTINGS)
    assert ms_ssim["calls"] == 4  # samples and real images of each split: the count sees the real calls
    ms_ssim["calls"] = 0
    summary = evaluate(store, STREAM_SETTINGS.model_copy(update={"analyses": ["discriminability"]}))
    assert ms_ssim["calls"] == 0
    assert set(summary) == DISCRIMINABILITY_KEYS and summary == {k: everything[k] for k in DISCRIMINABILITY_KEYS}
    metrics = json.loads(store.read_bytes("eval/metrics.json"))
    assert metrics["summary"] == summary and set(flat_summary(summary)) < set(flat_summary(everything))  # KFP's
    assert all(set(c) == {"id", "name", "split"} | CLASS_ACCURACY_KEYS for c in metrics["classes"])
    assert "classifier" in metrics["computed_on"] and "resolution_study" in metrics["computed_on"]
    assert not {"pairs_per_class", "ms_ssim_standard_error", "joint_thresholds", "fid"} & set(metrics["computed_on"])
    # Its figure only: the previous evaluation's MS-SSIM figures are gone with its numbers.
    assert store.list("eval/figures/") == ["eval/figures/accuracy-by-resolution.png"]
    page = store.read_bytes("eval/report.html").decode()
    assert "Discriminability by resolution" in page and "MS-SSIM &plusmn;" not in page and "<th>recognised</th>" in page
    assert store.exists("eval/overfitting/nearest-ms-ssim.png") and store.exists("eval/samples-split-00001.png")
    # Consumers say what is missing: the comparison needs diversity; the console prints the accuracy part.
    with pytest.raises(UserError, match=r"has no diversity, which the comparison needs: run `acgan evaluate --store "
                                        r".* --analyses discriminability,diversity`"):
        compare([store, store])
    text = summary_text(metrics, "REPORT", "GRIDS", None)
    assert text.startswith(f"{summary['accuracy']:.1%} of samples are recognised") and "MS-SSIM" not in text
    rows = [line.split() for line in text.splitlines() if line.endswith("%")]  # name and accuracy, no MS-SSIM
    assert rows == [[c["name"][:12], f"{c['accuracy']:.1%}"] for c in metrics["classes"]]


def test_diversity_alone_trains_no_classifier(tmp_path, monkeypatch):
    from pipelines.console import summary_text

    store = _synthetic_ensemble(tmp_path / "store", 4, classifier=False)
    classified = _count_calls(monkeypatch, "classify")
    settings = STREAM_SETTINGS.model_copy(update={"analyses": ["diversity"], "classifier_steps": 2})
    summary = evaluate(store, settings)
    assert classified["calls"] == 0 and not store.list("eval/classifier")  # none trained, none saved
    assert set(summary) == DIVERSITY_KEYS
    metrics = json.loads(store.read_bytes("eval/metrics.json"))
    assert all(set(c) == {"id", "name", "split"} | CLASS_MS_SSIM_KEYS for c in metrics["classes"])
    assert not {"classifier", "resolution_study", "fid"} & set(metrics["computed_on"])
    assert "eval/figures/ms-ssim-samples-vs-real.png" in store.list("eval/figures/")
    page = store.read_bytes("eval/report.html").decode()
    assert "MS-SSIM &plusmn;" in page and "<th>recognised</th>" not in page and "classifier:" not in page
    with pytest.raises(UserError, match="has no discriminability, which the comparison needs"):
        compare([store, store])
    text = summary_text(metrics, "REPORT", "GRIDS", None)
    assert text.startswith("Diversity (mean MS-SSIM") and "recognised" not in text
    # The joint analysis reads both parts: the classifier is trained (and saved), and the MS-SSIM is the same.
    joint = evaluate(store, settings.model_copy(update={"analyses": ["joint"]}))
    assert classified["calls"] > 0 and store.exists("eval/classifier.safetensors")
    assert "accuracy_ms_ssim_correlation" in joint and "ms_ssim_mean" not in joint
    again = json.loads(store.read_bytes("eval/metrics.json"))
    assert [c["ms_ssim"] for c in again["classes"]] == [c["ms_ssim"] for c in metrics["classes"]]
    text = summary_text(again, "REPORT", "GRIDS", None)  # no overall figures, but both columns per class
    assert text.startswith("Recognised under 90%") and "recognised   MS-SSIM samples" in text
    fidelity = evaluate(store, settings.model_copy(update={"analyses": ["fidelity"]}))
    assert set(fidelity) == {"inception_score", "inception_score_std", "fid"}
    text = summary_text(json.loads(store.read_bytes("eval/metrics.json")), "REPORT", "GRIDS", None)
    assert text.startswith("Recognised under 90%") and "MS-SSIM" not in text  # it classified: accuracy per class


def test_the_pipelines_evaluation_step_computes_and_logs_only_the_chosen_analyses(tmp_path):
    """The evaluation component (its own function, with real KFP artifacts) takes `analyses` with the other
    evaluation settings from the run's settings in the store: its KFP metrics are the chosen analyses' figures, its
    HTML the report."""
    from kfp.dsl import HTML, Metrics

    from acgan.layout import EXPERIMENT_KEY
    from acgan.settings import RunSettings
    from acgan.store import write_json
    from components.evaluate_ensemble import evaluate_ensemble

    store = _synthetic_ensemble(tmp_path / "store", 4)
    run = RunSettings(store=store.uri, dataset="synthetic", num_classes=4, classes_per_split=2, samples_per_class=4,
                      pairs=3, classifier_steps=2, analyses=["diversity"])
    write_json(store, EXPERIMENT_KEY, run.model_dump(), checksum=True)  # what the plan's task records
    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"), metadata={})
    page = HTML(name="report", uri=str(tmp_path / "report.html"), metadata={})
    evaluate_ensemble.python_func(store=store.uri, ensemble="ensemble.json", metrics=metrics, report=page)
    assert set(metrics.metadata) == DIVERSITY_KEYS
    assert metrics.metadata == json.loads(store.read_bytes("eval/metrics.json"))["summary"]
    assert (tmp_path / "report.html").read_bytes() == store.read_bytes("eval/report.html")


def test_the_closing_summary_of_a_thousand_classes_stays_short():
    """A 1000-class run's summary named every class twice and tabulated all 1000: it names ten and tabulates twenty."""
    from pipelines.console import summary_text

    classes = [{"id": i, "name": f"n{i:08d}", "accuracy": 0.0, "ms_ssim": 0.99, "ms_ssim_se": 0.0,
                "real_ms_ssim": 0.25, "real_ms_ssim_se": 0.03, "low_diversity": True} for i in range(1000)]
    summary = {"accuracy": 0.001, "real_accuracy": 0.83, "ms_ssim_mean": 0.99, "real_ms_ssim_mean": 0.27,
               "fraction_below_real_max": 0.0, "real_ms_ssim_max": 0.40}
    on = {"collapse_threshold": 0.40}
    text = summary_text({"summary": summary, "classes": classes, "computed_on": on}, "REPORT", "GRIDS", None)
    assert ("Flagged as collapsing (samples' MS-SSIM at or above 0.40, the collapse alarm's line): 1000 of 1000 "
            "classes, n00000000, ") in text
    assert "n00000009 …. Recognised under 90%: 1000 of 1000 classes" in text and "n00000010" not in text.split("\n")[2]
    rows = [line for line in text.splitlines() if line.startswith("n0")]
    assert len(rows) == 20 and "… 980 more classes: every class is in the report" in text
    few = summary_text({"summary": summary, "classes": classes[:3], "computed_on": on}, "REPORT", "GRIDS", None)
    assert "n00000000, n00000001, n00000002." in few and "more classes" not in few


def test_the_report_escapes_what_it_did_not_write():
    """A class name is a folder name a user chose and a classifier's source a path they gave: the report shows them
    as text (jinja2's autoescape), never as markup."""
    from html.parser import HTMLParser

    from acgan.evaluation.report import render_report
    from acgan.metrics.classifier import ClassifierInfo

    name, source = "<img src=x onerror=alert(1)>", "/data/<script>x</script>.safetensors"
    info = ClassifierInfo(kind="file", source=source, channels=1, resolution=32, num_classes=1, heldout_images=2,
                          heldout_accuracy=0.5)
    per_class = [{"id": 0, "name": name, "split": 0, "accuracy": 0.5, "real_accuracy": 1.0}]
    page = render_report({"accuracy": 0.5, "real_accuracy": 1.0, "fid": float("nan")}, per_class,
                         {"samples_per_class": 2, "real_images": 2}, {}, {"eval/samples-split-00000.png": b"\x89PNG"},
                         info, 1, 32)

    class Tags(HTMLParser):
        tags, text = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

        def handle_data(self, data):
            self.text.append(data)

    parsed = Tags(convert_charrefs=True)
    parsed.feed(page)
    assert "script" not in parsed.tags and parsed.tags.count("img") == 1  # the grid's only
    assert name in parsed.text and any(source in t for t in parsed.text) and "n/a" in parsed.text


def test_a_store_of_the_same_data_reuses_the_classifier_another_store_trained(tmp_path, monkeypatch):
    """The evaluation's classifier was trained afresh for every store, the longest part of a small run's evaluation:
    it is kept by the real data's checksum and its settings, and another store of the same data reuses it."""
    from acgan.evaluation import inputs

    trained = _count_calls(monkeypatch, "train_classifier")
    first, second = (_synthetic_ensemble(tmp_path / name, 4, classifier=False) for name in ("first", "second"))
    settings = STREAM_SETTINGS.model_copy(update={"classifier_steps": 3, "classifier_cache": str(tmp_path / "cache")})
    assert evaluate(first, settings) == evaluate(second, settings)
    assert trained["calls"] == 1 and len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    assert second.read_bytes("eval/classifier.safetensors") == first.read_bytes("eval/classifier.safetensors")
    # Other settings, or no cache: trained again.
    for store in (first, second):
        for key in ("eval/classifier.safetensors", "eval/classifier.json"):
            store.delete(key)
    evaluate(first, settings.model_copy(update={"classifier_steps": 4}))
    evaluate(second, settings.model_copy(update={"classifier_cache": ""}))
    assert trained["calls"] == 3 and inputs.load_cached_classifier(tmp_path / "none", "x") is None
