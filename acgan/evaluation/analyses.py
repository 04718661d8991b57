"""`acgan evaluate`: the paper's analyses of an assembled ensemble, per class and overall; those named in
`analyses` (every one by default), computing only what they need (`ANALYSES`: the classifier, MS-SSIM or both).

Samples are drawn through the ensemble (each class from the sub-model that owns it); real images are at most
`real_per_class` per class from the store's shards. Everything is computed first and written at the end, the
summary (`eval/metrics.json`) last, so a failed evaluation never leaves a partial result that looks complete:
  eval/metrics.json              `summary`, `computed_on` (what every number was computed on) and one entry per class
  eval/report.html               self-contained report: summary, figures, grids, per-class table
  eval/figures/*.png             the chosen analyses' figures: accuracy vs resolution, MS-SSIM scatter, accuracy vs
                                 MS-SSIM, MS-SSIM over training
  eval/samples-split-NNNNN.png   a grid per split: one row per class
  eval/overfitting/*.png         nearest training neighbours (L1, MS-SSIM), latent interpolation, fixed z across classes
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from tqdm import tqdm

from acgan import figures, progress
from acgan.collapse import collapse_threshold, collapsing
from acgan.data.plan import SplitPlan, load_plan
from acgan.ensemble import EnsembleManifest, load_ensemble
from acgan.errors import UserError, rerun_command
from acgan.evaluation import report
from acgan.evaluation.inputs import (
    CLASS_FEATURE_METRICS,
    DENSITY_COVERAGE_K,
    PRECISION_RECALL_K,
    CasInputs,
    analyse_split,
    class_image_counts,
    evaluation_device,
    get_classifier,
    grid_png,
    nearest_rows,
    overfitting_grids,
    peak_memory,
    real_by_split,
    split_samples,
    training_curves,
)
from acgan.layout import FIGURES_PREFIX, METRICS_KEY, REPORT_KEY, sample_grid_key
from acgan.metrics import compute_accuracy
from acgan.metrics.classifier import (
    HELDOUT_FRACTION,
    ClassifierInfo,
    feature_width,
    file_classifier_info,
)
from acgan.metrics.discriminability import (
    fractions_more_discriminable,
    study_resolutions,
)
from acgan.metrics.fidelity import frechet_accumulator, inception_score
from acgan.metrics.joint import joint_fractions, pearson
from acgan.settings import EvalSettings
from acgan.store import Store, write_json

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 30.0


@dataclass
class Streamed:
    """What the analyses read once every split has been streamed: always the counts and the training curves; where
    the classifier ran, its info, accuracies per size (overall, per class), the samples' logits and FID's running
    sums; where MS-SSIM ran, each class's mean MS-SSIM and its standard error, of samples and of real images (class
    order); where the feature metrics ran, each class's (`CLASS_FEATURE_METRICS`, class order); where CAS ran, its
    accuracy overall and per class."""

    settings: EvalSettings
    resolution: int
    samples: int
    real_images: int
    curves: dict[int, tuple[list[int], list[float]]]
    info: ClassifierInfo | None = None
    by_resolution: dict[int, tuple[float, list[float]]] | None = None
    real_by_resolution: dict[int, tuple[float, list[float]]] | None = None
    logits: torch.Tensor | None = None
    fid_sums: FrechetInceptionDistance | None = None
    ms_samples: list[float] | None = None
    ms_samples_se: list[float] | None = None
    ms_real: list[float] | None = None
    ms_real_se: list[float] | None = None
    class_features: dict[str, list[float]] | None = None
    cas: tuple[float, list[float]] | None = None
    recorded_threshold: float | None = None  # the collapse alarm's (acgan/collapse.py), where the store has it

    @property
    def real_max(self) -> float:
        return max(self.ms_real)

    @property
    def ms_ssim_threshold(self) -> float:
        """Where a class is collapsing: --ms-ssim-threshold, else the collapse alarm's threshold (the real data's
        least diverse class, measured as training measures its samples), so that `acgan status`, the report and
        the summary draw one line; the evaluation's own least diverse real class for a store without it."""
        return self.settings.ms_ssim_threshold or self.recorded_threshold or self.real_max

    @property
    def per_class_accuracy(self) -> list[float]:
        return self.by_resolution[self.resolution][1]


def discriminability(r: Streamed) -> dict:
    """The classifier's accuracy on the samples at the plan's size and at each smaller one, against its accuracy on
    real images; the fraction of classes more discriminable than at a quarter of the size (paper section 4.1)."""
    more = fractions_more_discriminable({size: acc[1] for size, acc in r.by_resolution.items()})
    return {"accuracy": r.by_resolution[r.resolution][0],
            "real_accuracy": r.info.heldout_accuracy,
            "accuracy_by_resolution": {str(size): acc for size, (acc, _) in r.by_resolution.items()},
            "real_accuracy_by_resolution": {str(size): acc for size, (acc, _) in r.real_by_resolution.items()},
            "fraction_more_discriminable_than_at_quarter_resolution": more[r.resolution // 4],
            "fraction_more_discriminable_than_at_resolution": {str(size): f for size, f in more.items()}}


def discriminability_figures(r: Streamed) -> dict[str, bytes]:
    sizes = sorted(r.by_resolution)
    return {f"{FIGURES_PREFIX}accuracy-by-resolution.png": figures.accuracy_vs_resolution(
        sizes, [r.by_resolution[s][0] for s in sizes], [r.real_by_resolution[s][0] for s in sizes])}


def discriminability_notes(r: Streamed) -> dict:
    quarter = r.resolution // 4
    return {"resolution_study": f"down to each size (antialiased bilinear), back up bilinearly; real accuracy is over "
                                f"the real images used, the classifier's training images included; the headline "
                                f"fraction of classes more discriminable compares {r.resolution}px with {quarter}px, "
                                f"a quarter (the paper: 128 with 32)"}


def diversity(r: Streamed) -> dict:
    """Mean MS-SSIM of each class's samples against its real images' (paper section 4.2)."""
    return {"ms_ssim_mean": float(np.mean(r.ms_samples)),
            "ms_ssim_std": float(np.std(r.ms_samples)),
            "real_ms_ssim_mean": float(np.mean(r.ms_real)),
            "real_ms_ssim_std": float(np.std(r.ms_real)),
            "real_ms_ssim_max": r.real_max,
            "fraction_below_real_max": float(np.mean([m < r.real_max for m in r.ms_samples])),
            "fraction_at_most_real_ms_ssim": float(np.mean([s <= m for s, m in zip(r.ms_samples, r.ms_real)]))}


def diversity_figures(r: Streamed) -> dict[str, bytes]:
    pictures = {f"{FIGURES_PREFIX}ms-ssim-samples-vs-real.png": figures.ms_ssim_scatter(r.ms_real, r.ms_samples,
                                                                                    r.ms_ssim_threshold)}
    if r.curves:
        pictures[f"{FIGURES_PREFIX}ms-ssim-over-training.png"] = figures.ms_ssim_over_training(r.curves,
                                                                                           r.ms_ssim_threshold)
    return pictures


def joint(r: Streamed) -> dict:
    """Accuracy against diversity per class: their correlation and the low/high fractions (paper section 4.3)."""
    return {"accuracy_ms_ssim_correlation": pearson(r.per_class_accuracy, r.ms_samples),
            **joint_fractions(r.per_class_accuracy, r.ms_samples, r.ms_ssim_threshold, r.settings.accuracy_threshold)}


def joint_figures(r: Streamed) -> dict[str, bytes]:
    return {f"{FIGURES_PREFIX}accuracy-vs-ms-ssim.png": figures.accuracy_vs_ms_ssim(
        r.ms_samples, r.per_class_accuracy, r.ms_ssim_threshold, r.settings.accuracy_threshold,
        pearson(r.per_class_accuracy, r.ms_samples))}


def joint_notes(r: Streamed) -> dict:
    return {"joint_thresholds": {"ms_ssim": r.ms_ssim_threshold, "accuracy": r.settings.accuracy_threshold,
                                 "ms_ssim_is_real_max": r.ms_ssim_threshold == r.real_max}}


def fidelity(r: Streamed) -> dict:
    """Inception Score and FID, in the evaluation classifier's logits and feature space."""
    is_mean, is_std = inception_score(r.logits, r.settings.is_splits, r.settings.seed)
    return {"inception_score": is_mean, "inception_score_std": is_std, "fid": float(r.fid_sums.compute())}


def fidelity_notes(r: Streamed) -> dict:
    return {"inception_score": f"{r.info.kind} classifier's logits, {r.samples} samples in {r.settings.is_splits} "
                               f"parts",
            "fid": f"{_feature_space(r)}, {r.real_images} real images vs {r.samples} samples; not comparable across "
                   f"feature networks"}


def _feature_space(r: Streamed) -> str:
    width = "2048" if r.info.kind == "inception-v3" else 4 * r.info.width
    return f"{r.info.kind} classifier's pooled features ({width}-d)"


def _class_mean(r: Streamed, name: str) -> float:
    return float(np.mean(r.class_features[name]))


def precision_recall(r: Streamed) -> dict:
    """Kynkäänniemi et al.'s precision and recall of each class's samples against its real images, mean of the
    classes."""
    return {"precision": _class_mean(r, "precision"), "recall": _class_mean(r, "recall")}


def density_coverage(r: Streamed) -> dict:
    """Naeem et al.'s density and coverage of each class's samples against its real images, mean of the classes."""
    return {"density": _class_mean(r, "density"), "coverage": _class_mean(r, "coverage")}


def intra_class_fid(r: Streamed) -> dict:
    """FID of each class's samples against its real images, mean of the classes."""
    return {"intra_class_fid": _class_mean(r, "fid")}


def class_feature_notes(r: Streamed) -> dict:
    return {"class_feature_metrics": f"{_feature_space(r)}; each class's samples against its real images (at most "
                                     f"{r.settings.real_per_class}), the mean over the classes; precision and "
                                     f"recall with k = {PRECISION_RECALL_K}, density and coverage with k = "
                                     f"{DENSITY_COVERAGE_K}"}


def cas(r: Streamed) -> dict:
    """Classification Accuracy Score: a classifier trained on the samples only, its accuracy on real images."""
    return {"cas": r.cas[0]}


def cas_notes(r: Streamed) -> dict:
    return {"cas": f"the evaluation classifier's network and recipe ({r.settings.cas_training_steps} steps) trained "
                   f"on the {r.samples} samples, tested on the held-out {HELDOUT_FRACTION:.0%} of each class's real "
                   f"images (those the evaluation classifier, trained here, did not see)"}


@dataclass(frozen=True)
class Analysis:
    """One analysis: `compute` turns what was streamed into its summary figures, `figures` into its PNGs, `notes`
    into what `computed_on` says of its numbers. `classifier` and `ms_ssim` are the streamed parts it reads: the
    classifier's predictions (training or loading it, classifying samples and real images) and MS-SSIM of each
    class's pairs (the slow part); `class_features` each class's feature metrics (with the classifier), `cas` a
    classifier trained on the samples; an evaluation streams only the parts its chosen analyses read."""

    compute: Callable[[Streamed], dict]
    classifier: bool
    ms_ssim: bool
    class_features: bool = False
    cas: bool = False
    figures: Callable[[Streamed], dict[str, bytes]] = lambda r: {}
    notes: Callable[[Streamed], dict] = lambda r: {}


# The evaluation's analyses by name, in the summary's order (acgan.settings.ANALYSIS_NAMES lists the same names).
ANALYSES: dict[str, Analysis] = {
    "discriminability": Analysis(discriminability, classifier=True, ms_ssim=False, figures=discriminability_figures,
                                 notes=discriminability_notes),
    "diversity": Analysis(diversity, classifier=False, ms_ssim=True, figures=diversity_figures),
    "joint": Analysis(joint, classifier=True, ms_ssim=True, figures=joint_figures, notes=joint_notes),
    "fidelity": Analysis(fidelity, classifier=True, ms_ssim=False, notes=fidelity_notes),
    "precision_recall": Analysis(precision_recall, classifier=True, ms_ssim=False, class_features=True,
                                 notes=class_feature_notes),
    "density_coverage": Analysis(density_coverage, classifier=True, ms_ssim=False, class_features=True,
                                 notes=class_feature_notes),
    "intra_class_fid": Analysis(intra_class_fid, classifier=True, ms_ssim=False, class_features=True,
                                notes=class_feature_notes),
    "cas": Analysis(cas, classifier=False, ms_ssim=False, cas=True, notes=cas_notes),
}


def class_records(plan: SplitPlan, manifest: EnsembleManifest, r: Streamed) -> list[dict]:
    """One entry per class: its accuracies where the classifier ran, its MS-SSIM where MS-SSIM ran."""
    records = []
    for c in plan.classes:
        record = {"id": c.id, "name": c.name, "split": manifest.member(c.id).split}
        if r.by_resolution is not None:
            record.update({
                "accuracy": r.per_class_accuracy[c.id],
                "accuracy_by_resolution": {str(size): acc[1][c.id] for size, acc in r.by_resolution.items()},
                "real_accuracy": r.real_by_resolution[r.resolution][1][c.id],
                "real_accuracy_by_resolution": {str(size): acc[1][c.id] for size, acc in r.real_by_resolution.items()}})
        if r.ms_samples is not None:
            record.update({"ms_ssim": r.ms_samples[c.id], "ms_ssim_se": r.ms_samples_se[c.id],
                           "real_ms_ssim": r.ms_real[c.id], "real_ms_ssim_se": r.ms_real_se[c.id],
                           # As alike as the least diverse real class: collapsing (acgan/collapse.py).
                           "low_diversity": collapsing(r.ms_samples[c.id], r.ms_ssim_threshold)})
        if r.class_features is not None:
            record.update({name: values[c.id] for name, values in r.class_features.items()})
        if r.cas is not None:
            record["cas"] = r.cas[1][c.id]
        records.append(record)
    return records


def computed_on_record(manifest: EnsembleManifest, settings: EvalSettings, r: Streamed,
                       chosen: list[Analysis]) -> dict:
    """What every number was computed on: the checkpoints and counts; the classifier where it ran; the MS-SSIM
    pairs where MS-SSIM ran; what each analysis chosen notes of its own numbers."""
    computed_on = {
        "checkpoints": sorted({(m.split, m.step) for m in manifest.classes}),
        "generator": "raw" if settings.raw else "snapshot",  # --raw: the trained G; else the averaged G, where kept
        "samples_per_class": settings.samples_per_class, "seed": settings.seed,
        "real_images": r.real_images, "real_per_class_at_most": settings.real_per_class,
        "overfitting": f"nearest neighbours among the real images of the sample's class; L1 in pixel space and "
                       f"1 - MS-SSIM; {settings.neighbours} per sample",
    }
    if r.info is not None:
        computed_on["classifier"] = r.info.model_dump()
    if r.ms_samples is not None:
        computed_on.update({"collapse_threshold": r.ms_ssim_threshold, "pairs_per_class": settings.pairs,
                            "ms_ssim_data_range": 255,
                            "ms_ssim_standard_error": "per class, the standard deviation of the pair scores over "
                                                      "the square root of the number of pairs"})
    for analysis in chosen:
        computed_on.update(analysis.notes(r))
    return computed_on


def evaluate(store: Store, settings: EvalSettings) -> dict:
    plan = load_plan(store)
    manifest = load_ensemble(store)
    if manifest is None:
        raise UserError(f"store {store.uri} has no ensemble (ensemble.json): run "
                        f"{rerun_command(store.uri)} to train and assemble it first")
    chosen = [ANALYSES[name] for name in settings.analyses]
    use_classifier, use_ms_ssim = any(a.classifier for a in chosen), any(a.ms_ssim for a in chosen)
    use_features = any(a.class_features for a in chosen)
    device = evaluation_device(settings)
    used = {c: min(n, settings.real_per_class) for c, n in class_image_counts(store, plan).items()}  # real per class
    _check_counts(used, settings, use_ms_ssim)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    model, info = get_classifier(store, plan, settings, device) if use_classifier else (None, None)
    shown = sorted({int(c) for c in np.linspace(0, plan.num_classes - 1, settings.overfitting_classes).round()})
    k = min([settings.neighbours] + [used[c] for c in shown])  # one row length for every class
    with CasInputs(plan, settings, used) if any(a.cas for a in chosen) else contextlib.nullcontext() as cas_inputs:
        streamed, rows, grids = _stream(store, plan, manifest, settings, model, info, use_ms_ssim, use_features,
                                        cas_inputs, shown, k, device)
        if cas_inputs is not None:
            log.info("CAS: training a classifier on the samples (%d steps)", settings.cas_training_steps)
            streamed.cas = cas_inputs.score(plan.num_classes, settings.cas_training_steps, settings.seed, device)
    streamed.recorded_threshold = collapse_threshold(store)
    summary = {name: value for analysis in chosen for name, value in analysis.compute(streamed).items()}
    computed_on = computed_on_record(manifest, settings, streamed, chosen)

    # Pictures: everything in memory first, written below with the metrics last.
    pictures = {key: png for analysis in chosen for key, png in analysis.figures(streamed).items()}
    pictures.update(overfitting_grids(store, manifest, plan, settings, shown, rows, k, device))
    computed_on.update(peak_memory(device))
    log.info("evaluation's peak memory: %.2f GiB resident on the host%s", computed_on["peak_host_memory_bytes"] / 2**30,
             "" if device.type != "cuda" else f", {computed_on['peak_device_memory_bytes'] / 2**30:.2f} GiB on the GPU")
    for key, png in {**pictures, **grids}.items():
        store.write_bytes(key, png)
    for key in store.list(FIGURES_PREFIX):
        if key not in pictures:  # of an analysis not chosen this time: the store's figures are this evaluation's
            store.delete(key)
    per_class = class_records(plan, manifest, streamed)
    in_report = dict(list(grids.items())[:settings.report_splits])
    store.write_bytes(REPORT_KEY, report.render_report(summary, per_class, computed_on, pictures, in_report,
                                                       streamed.info, len(grids), plan.resolution).encode())
    write_json(store, METRICS_KEY, {"summary": summary, "computed_on": computed_on, "classes": per_class})
    log.info("evaluation written to %s/%s", store.uri, METRICS_KEY)
    return summary


def _check_counts(used: dict[int, int], settings: EvalSettings, use_ms_ssim: bool) -> None:
    """Before any work: every class needs two real images, and MS-SSIM enough distinct pairs."""
    for c in sorted(used):
        if used[c] < 2:
            raise UserError(f"class {c} has {used[c]} real image(s): MS-SSIM needs at least two; prepare more data")
    possible = min(settings.samples_per_class, min(used.values()))
    if use_ms_ssim and settings.pairs > possible * (possible - 1) // 2:
        raise UserError(f"--pairs {settings.pairs} is more than the {possible * (possible - 1) // 2} distinct pairs "
                        f"of {possible} images (the smallest class or --samples-per-class): lower --pairs")


def _stream(store: Store, plan: SplitPlan, manifest: EnsembleManifest, settings: EvalSettings, model, info,
            use_ms_ssim: bool, use_features: bool, cas_inputs: CasInputs | None, shown: list[int], k: int,
            device: torch.device):
    """One split's samples and real images at a time, on the device; what the analyses read is kept on the CPU.
    Returns what was streamed, the nearest-neighbour rows of the classes `shown`, and each split's sample grid."""
    sizes = study_resolutions(plan.resolution)
    columns = min(settings.grid_columns, settings.samples_per_class)
    kept: dict[str, list] = defaultdict(list)
    fid_sums = frechet_accumulator(feature_width(model)) if model is not None else None  # no features kept
    rows, grids = {}, {}
    tty = sys.stderr.isatty()  # a bar in a terminal; in a pod's or a task's log, a line every PROGRESS_SECONDS
    splits = tqdm(plan.splits, desc="evaluate", unit="split", disable=not tty)
    start = last_log = time.perf_counter()
    reals = real_by_split(store, plan, settings.real_per_class, settings.seed, device)
    for split, members in enumerate(splits):
        if not tty and (time.perf_counter() - last_log >= PROGRESS_SECONDS or split == 0):
            last_log = time.perf_counter()
            log.info("evaluating split %d / %d, %.0f s so far", split + 1, len(plan.splits), last_log - start)
        real, real_labels = next(reals)  # not zip(): its reused result tuple would hold the last split's images
        samples, sample_labels = split_samples(store, manifest, members, settings.samples_per_class, settings.seed,
                                               device, settings.raw)
        analyse_split(model, sizes, settings, use_ms_ssim, use_features, samples, sample_labels, real, real_labels,
                      members, kept, fid_sums)
        if cas_inputs is not None:
            cas_inputs.add(samples, sample_labels, real, real_labels)
        for c in set(shown) & set(members):
            rows[c] = nearest_rows(samples[sample_labels == c][:2], real[real_labels == c], k)
        grids[sample_grid_key(split)] = grid_png(torch.cat(
            [samples[sample_labels == c][:columns] for c in members]), columns)
        del samples, sample_labels, real, real_labels  # freed before the next split is loaded
        progress.emit(progress.EVALUATE, "progress", part=progress.SPLITS, step=split + 1, total=len(plan.splits))

    sample_labels, real_labels = torch.cat(kept["sample_labels"]), torch.cat(kept["real_labels"])
    streamed = Streamed(settings=settings, resolution=plan.resolution, samples=len(sample_labels),
                        real_images=int(len(real_labels)), curves=training_curves(store, plan))
    if model is not None:
        streamed.by_resolution = {size: compute_accuracy(torch.cat(kept[f"predicted_{size}"]), sample_labels,
                                                         plan.num_classes) for size in sizes}
        streamed.real_by_resolution = {size: compute_accuracy(torch.cat(kept[f"real_predicted_{size}"]), real_labels,
                                                              plan.num_classes) for size in sizes}
        if not isinstance(info, ClassifierInfo):  # a user's file: scored on the real images streamed above
            info = file_classifier_info(model, info, settings.classifier, plan.channels, plan.resolution,
                                        len(real_labels), streamed.real_by_resolution[plan.resolution][0])
        streamed.info, streamed.logits, streamed.fid_sums = info, torch.cat(kept["logits"]), fid_sums
    order = [c for members in plan.splits for c in members]  # the stream's; the results' are the classes' ids
    classes = [c.id for c in plan.classes]
    if use_features:
        streamed.class_features = {name: [dict(zip(order, kept[name]))[c] for c in classes]
                                   for name in CLASS_FEATURE_METRICS}
    if use_ms_ssim:
        streamed.ms_samples, streamed.ms_samples_se, streamed.ms_real, streamed.ms_real_se = (
            [dict(zip(order, kept[name]))[c] for c in classes] for name in ("ms", "ms_se", "real_ms", "real_ms_se"))
    return streamed, rows, grids
