"""The evaluation's analyses: a real evaluation of a tiny trained store end to end, a collapsed generator flagged,
the keys every analysis writes, the chosen analyses computing only the parts they read, the pipeline's evaluation
step."""

import io
import json

import numpy as np
import pytest
import torch

from acgan.ensemble import load_ensemble
from acgan.errors import UserError
from acgan.evaluation.analyses import ANALYSES, chosen_analyses, evaluate, parts_read
from acgan.evaluation.comparison import compare
from acgan.evaluation.parts import Accuracies, Cas, ClassFeatures, Diversity
from acgan.layout import ENSEMBLE_KEY
from acgan.metrics.classifier import classify
from acgan.experiment import prepare_experiment
from acgan.settings import EvalSettings, RunSettings
from acgan.store import open_store
from tests.evaluation.stores import STREAM_SETTINGS, load_real, synthetic_ensemble


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


def test_the_analyses_chosen_come_once_each_in_the_tables_order_every_one_when_none_is_named():
    assert chosen_analyses(["joint", "diversity", "joint"]) == ["diversity", "joint"]
    assert chosen_analyses([]) == list(ANALYSES)


@pytest.mark.parametrize("value, unknown", [("foo", "foo"), ("diversity,fid", "fid")])
def test_a_run_refuses_an_unknown_analysis_in_one_line_before_it_writes_anything(tmp_path, value, unknown):
    settings = RunSettings(store=str(tmp_path / "store"), dataset="digits", analyses=value)
    with pytest.raises(UserError) as e:
        prepare_experiment(settings)
    assert str(e.value) == f"--analyses: unknown analysis {unknown}: use a comma-separated subset of " \
                           "discriminability,diversity,joint,fidelity,precision_recall,density_coverage," \
                           "intra_class_fid,cas, or leave it empty for every one"
    assert list(open_store(settings.store).list("")) == []
    with pytest.raises(UserError, match=f"unknown analysis {unknown}"):
        evaluate(open_store(settings.store), EvalSettings(analyses=value))


def test_evaluate_needs_an_ensemble(digits_store):
    with pytest.raises(UserError, match="has no ensemble"):
        evaluate(digits_store, EvalSettings())


DISCRIMINABILITY_KEYS = {"accuracy", "real_accuracy", "accuracy_by_resolution", "real_accuracy_by_resolution",
                         "fraction_more_discriminable_than_at_quarter_resolution",
                         "fraction_more_discriminable_than_at_resolution"}


DIVERSITY_KEYS = {"ms_ssim_mean", "ms_ssim_std", "real_ms_ssim_mean", "real_ms_ssim_std", "real_ms_ssim_max",
                  "fraction_below_real_max", "fraction_at_most_real_ms_ssim"}


CLASS_ACCURACY_KEYS = {"accuracy", "accuracy_by_resolution", "real_accuracy", "real_accuracy_by_resolution"}


CLASS_MS_SSIM_KEYS = {"ms_ssim", "ms_ssim_se", "real_ms_ssim", "real_ms_ssim_se", "low_diversity"}


SAMPLE_METRIC_KEYS = {"precision", "recall", "density", "coverage", "intra_class_fid", "cas"}


CLASS_SAMPLE_METRIC_KEYS = {"precision", "recall", "density", "coverage", "fid", "cas"}


def test_every_analysis_by_default_writes_the_keys_it_always_wrote(tmp_path):
    """No --analyses: every analysis, and metrics.json has exactly the keys it had before analyses were chosen, and
    the sample metrics' (issue 39)."""
    store = synthetic_ensemble(tmp_path / "store", 4)
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
        tmp_path):
    """Precision, recall, density, coverage and FID per class, from the evaluation classifier's features of each
    class's samples and real images (as computing them on every image at once gives), their means in the summary;
    CAS trained on every sample (cas_steps) and tested on exactly the real images the store's classifier held out;
    the report shows each with its definition."""
    from acgan.data.plan import load_plan
    from acgan.evaluation.inputs import split_samples
    from acgan.metrics.cas import compute_cas
    from acgan.metrics.classifier import heldout_mask, load_classifier
    from acgan.metrics.density_coverage import compute_density_coverage
    from acgan.metrics.intra_fid import compute_class_fid
    from acgan.metrics.precision_recall import compute_precision_recall

    store = synthetic_ensemble(tmp_path / "store", 4)
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
    # CAS: trained cas_steps steps on every sample, tested on the real images train_classifier held out (the same
    # seed and fraction): what compute_cas gives on exactly those.
    heldout = heldout_mask(real_labels, 4, 0.2, torch.Generator().manual_seed(0))
    accuracy, by_class = compute_cas(samples, sample_labels, real[heldout], real_labels[heldout], 4, 2, 0)
    assert summary["cas"] == pytest.approx(accuracy)
    assert [c["cas"] for c in metrics["classes"]] == pytest.approx(by_class)
    assert summary["cas"] == pytest.approx(np.mean([c["cas"] for c in metrics["classes"]]))  # one held out per class
    assert "2 steps" in metrics["computed_on"]["cas"] and "k = 3" in metrics["computed_on"]["class_feature_metrics"]
    page = store.read_bytes("eval/report.html").decode()
    for text in ("<dt>precision, recall</dt>", "<dt>density, coverage</dt>", "<dt>intra-class FID</dt>",
                 "<dt>CAS</dt>", "<th>recall</th>", "<th>CAS</th>", "<td>intra_class_fid</td>", "<td>cas</td>"):
        assert text in page, text
    only = evaluate(store, STREAM_SETTINGS.model_copy(update={"analyses": ["discriminability"]}))
    page = store.read_bytes("eval/report.html").decode()
    assert not SAMPLE_METRIC_KEYS & set(only) and "What the sample metrics measure" not in page


def test_discriminability_alone_classifies_and_computes_no_ms_ssim(tmp_path):
    from acgan.evaluation.report import flat_summary
    from pipelines.console import summary_text

    # Every analysis reads every part of the stream; discriminability the classifier's only, no MS-SSIM.
    assert parts_read(list(ANALYSES)) == [Accuracies, Diversity, ClassFeatures, Cas]
    assert parts_read(["discriminability"]) == [Accuracies]
    store = synthetic_ensemble(tmp_path / "store", 4)
    everything = evaluate(store, STREAM_SETTINGS)
    summary = evaluate(store, STREAM_SETTINGS.model_copy(update={"analyses": ["discriminability"]}))
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


def test_diversity_alone_trains_no_classifier(tmp_path):
    from pipelines.console import summary_text

    assert parts_read(["diversity"]) == [Diversity] and not Diversity.classifier  # it needs no classifier
    store = synthetic_ensemble(tmp_path / "store", 4, classifier=False)
    settings = STREAM_SETTINGS.model_copy(update={"analyses": ["diversity"], "classifier_steps": 2})
    summary = evaluate(store, settings)
    assert not store.list("eval/classifier")  # none trained, none saved
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
    assert parts_read(["joint"]) == [Accuracies, Diversity]
    joint = evaluate(store, settings.model_copy(update={"analyses": ["joint"]}))
    assert store.exists("eval/classifier.safetensors")
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

    store = synthetic_ensemble(tmp_path / "store", 4)
    run = RunSettings(store=store.uri, dataset="synthetic", num_classes=4, classes_per_split=2, samples_per_class=4,
                      pairs=3, classifier_steps=2, analyses=["diversity"])
    write_json(store, EXPERIMENT_KEY, run.model_dump(), checksum=True)  # what the plan's task records
    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"), metadata={})
    page = HTML(name="report", uri=str(tmp_path / "report.html"), metadata={})
    evaluate_ensemble.python_func(store=store.uri, ensemble="ensemble.json", metrics=metrics, report=page)
    assert set(metrics.metadata) == DIVERSITY_KEYS
    assert metrics.metadata == json.loads(store.read_bytes("eval/metrics.json"))["summary"]
    assert (tmp_path / "report.html").read_bytes() == store.read_bytes("eval/report.html")
