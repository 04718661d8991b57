"""`acgan evaluate`: the paper's analyses of an assembled ensemble, per class and overall; those named in
`analyses` (every one by default), computing only what they need: each names the parts of the stream it reads
(`ANALYSES`, the one table of them; parts.py), and one pass over the splits gathers those (stream.py).

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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from acgan import figures
from acgan.data.plan import SplitPlan, load_plan
from acgan.ensemble import EnsembleManifest, load_ensemble
from acgan.errors import UserError, rerun_command
from acgan.evaluation import report
from acgan.evaluation.inputs import (
    class_image_counts,
    evaluation_device,
    get_classifier,
    overfitting_grids,
    peak_memory,
)
from acgan.evaluation.parts import (
    DENSITY_COVERAGE_K,
    PRECISION_RECALL_K,
    Accuracies,
    Cas,
    ClassFeatures,
    Diversity,
)
from acgan.evaluation.stream import Context, Part, Run, stream_splits
from acgan.layout import FIGURES_PREFIX, METRICS_KEY, REPORT_KEY
from acgan.metrics.classifier import HELDOUT_FRACTION
from acgan.metrics.discriminability import fractions_more_discriminable
from acgan.metrics.fidelity import inception_score
from acgan.metrics.joint import joint_fractions, pearson
from acgan.settings import EvalSettings
from acgan.store import Store, write_json

log = logging.getLogger(__name__)


def discriminability(run: Run, a: Accuracies) -> dict:
    """The classifier's accuracy on the samples at the plan's size and at each smaller one, against its accuracy on
    real images; the fraction of classes more discriminable than at a quarter of the size (paper section 4.1)."""
    more = fractions_more_discriminable({size: acc[1] for size, acc in a.by_resolution.items()})
    return {"accuracy": a.by_resolution[run.resolution][0],
            "real_accuracy": a.info.heldout_accuracy,
            "accuracy_by_resolution": {str(size): acc for size, (acc, _) in a.by_resolution.items()},
            "real_accuracy_by_resolution": {str(size): acc for size, (acc, _) in a.real_by_resolution.items()},
            "fraction_more_discriminable_than_at_quarter_resolution": more[run.resolution // 4],
            "fraction_more_discriminable_than_at_resolution": {str(size): f for size, f in more.items()}}


def discriminability_figures(run: Run, a: Accuracies) -> dict[str, bytes]:
    sizes = sorted(a.by_resolution)
    return {f"{FIGURES_PREFIX}accuracy-by-resolution.png": figures.accuracy_vs_resolution(
        sizes, [a.by_resolution[s][0] for s in sizes], [a.real_by_resolution[s][0] for s in sizes])}


def discriminability_notes(run: Run, a: Accuracies) -> dict:
    quarter = run.resolution // 4
    return {"resolution_study": f"down to each size (antialiased bilinear), back up bilinearly; real accuracy is over "
                                f"the real images used, the classifier's training images included; the headline "
                                f"fraction of classes more discriminable compares {run.resolution}px with {quarter}px, "
                                f"a quarter (the paper: 128 with 32)"}


def diversity(run: Run, d: Diversity) -> dict:
    """Mean MS-SSIM of each class's samples against its real images' (paper section 4.2)."""
    return {"ms_ssim_mean": float(np.mean(d.samples)),
            "ms_ssim_std": float(np.std(d.samples)),
            "real_ms_ssim_mean": float(np.mean(d.real)),
            "real_ms_ssim_std": float(np.std(d.real)),
            "real_ms_ssim_max": d.real_max,
            "fraction_below_real_max": float(np.mean([m < d.real_max for m in d.samples])),
            "fraction_at_most_real_ms_ssim": float(np.mean([s <= m for s, m in zip(d.samples, d.real)]))}


def diversity_figures(run: Run, d: Diversity) -> dict[str, bytes]:
    pictures = {f"{FIGURES_PREFIX}ms-ssim-samples-vs-real.png": figures.ms_ssim_scatter(d.real, d.samples, d.threshold)}
    if d.curves:
        pictures[f"{FIGURES_PREFIX}ms-ssim-over-training.png"] = figures.ms_ssim_over_training(d.curves, d.threshold)
    return pictures


def joint(run: Run, a: Accuracies, d: Diversity) -> dict:
    """Accuracy against diversity per class: their correlation and the low/high fractions (paper section 4.3)."""
    return {"accuracy_ms_ssim_correlation": pearson(a.per_class_accuracy, d.samples),
            **joint_fractions(a.per_class_accuracy, d.samples, d.threshold, run.settings.accuracy_threshold)}


def joint_figures(run: Run, a: Accuracies, d: Diversity) -> dict[str, bytes]:
    return {f"{FIGURES_PREFIX}accuracy-vs-ms-ssim.png": figures.accuracy_vs_ms_ssim(
        d.samples, a.per_class_accuracy, d.threshold, run.settings.accuracy_threshold,
        pearson(a.per_class_accuracy, d.samples))}


def joint_notes(run: Run, a: Accuracies, d: Diversity) -> dict:
    return {"joint_thresholds": {"ms_ssim": d.threshold, "accuracy": run.settings.accuracy_threshold,
                                 "ms_ssim_is_real_max": d.threshold == d.real_max}}


def fidelity(run: Run, a: Accuracies) -> dict:
    """Inception Score and FID, in the evaluation classifier's logits and feature space."""
    is_mean, is_std = inception_score(a.logits, run.settings.is_splits, run.settings.seed)
    return {"inception_score": is_mean, "inception_score_std": is_std, "fid": float(a.fid_sums.compute())}


def fidelity_notes(run: Run, a: Accuracies) -> dict:
    return {"inception_score": f"{a.info.kind} classifier's logits, {run.samples} samples in "
                               f"{run.settings.is_splits} parts",
            "fid": f"{a.info.feature_space()}, {run.real_images} real images vs {run.samples} samples; not comparable "
                   f"across feature networks"}


def precision_recall(run: Run, a: Accuracies, f: ClassFeatures) -> dict:
    """Kynkäänniemi et al.'s precision and recall of each class's samples against its real images, mean of the
    classes."""
    return {"precision": float(np.mean(f.values["precision"])), "recall": float(np.mean(f.values["recall"]))}


def density_coverage(run: Run, a: Accuracies, f: ClassFeatures) -> dict:
    """Naeem et al.'s density and coverage of each class's samples against its real images, mean of the classes."""
    return {"density": float(np.mean(f.values["density"])), "coverage": float(np.mean(f.values["coverage"]))}


def intra_class_fid(run: Run, a: Accuracies, f: ClassFeatures) -> dict:
    """FID of each class's samples against its real images, mean of the classes."""
    return {"intra_class_fid": float(np.mean(f.values["fid"]))}


def class_feature_notes(run: Run, a: Accuracies, f: ClassFeatures) -> dict:
    return {"class_feature_metrics": f"{a.info.feature_space()}; each class's samples against its real images (at "
                                     f"most {run.settings.real_per_class}), the mean over the classes; precision and "
                                     f"recall with k = {PRECISION_RECALL_K}, density and coverage with k = "
                                     f"{DENSITY_COVERAGE_K}"}


def cas(run: Run, c: Cas) -> dict:
    """Classification Accuracy Score: a classifier trained on the samples only, its accuracy on real images."""
    return {"cas": c.accuracy}


def cas_notes(run: Run, c: Cas) -> dict:
    return {"cas": f"the evaluation classifier's network and recipe ({run.settings.cas_training_steps} steps) trained "
                   f"on the {run.samples} samples, tested on the held-out {HELDOUT_FRACTION:.0%} of each class's real "
                   f"images (those the evaluation classifier, trained here, did not see)"}


@dataclass(frozen=True)
class Analysis:
    """One analysis: `reads`, the parts of the stream it reads (parts.py); `compute` turns the run and those parts
    (in the order of `reads`) into its summary figures, `figures` into its PNGs, `notes` into what `computed_on` says
    of its numbers. An evaluation gathers only the parts its chosen analyses read."""

    reads: tuple[type[Part], ...]
    compute: Callable[..., dict]
    figures: Callable[..., dict[str, bytes]] = lambda run, *parts: {}
    notes: Callable[..., dict] = lambda run, *parts: {}

    def inputs(self, gathered: dict[type[Part], Part]) -> list[Part]:
        """The parts it reads, of those gathered, in the order its functions take them."""
        return [gathered[kind] for kind in self.reads]


# The evaluation's analyses by name, in the summary's order: the one list of them (the `analyses` setting names some,
# or none for every one). The parts they read come in each class's record and in `computed_on` in the order this
# table first reads them.
ANALYSES: dict[str, Analysis] = {
    "discriminability": Analysis((Accuracies,), discriminability, discriminability_figures, discriminability_notes),
    "diversity": Analysis((Diversity,), diversity, diversity_figures),
    "joint": Analysis((Accuracies, Diversity), joint, joint_figures, joint_notes),
    "fidelity": Analysis((Accuracies,), fidelity, notes=fidelity_notes),
    "precision_recall": Analysis((Accuracies, ClassFeatures), precision_recall, notes=class_feature_notes),
    "density_coverage": Analysis((Accuracies, ClassFeatures), density_coverage, notes=class_feature_notes),
    "intra_class_fid": Analysis((Accuracies, ClassFeatures), intra_class_fid, notes=class_feature_notes),
    "cas": Analysis((Cas,), cas, notes=cas_notes),
}


def chosen_analyses(names: list[str]) -> list[str]:
    """The analyses `names` asks for, each once, in the table's order; every one when it names none. An unknown name
    is refused with the table's names: a run checks before it trains (acgan/experiment.py, prepare_experiment)."""
    unknown = [name for name in dict.fromkeys(names) if name not in ANALYSES]
    if unknown:
        raise UserError(f"--analyses: unknown analysis {', '.join(unknown)}: use a comma-separated subset of "
                        f"{','.join(ANALYSES)}, or leave it empty for every one")
    return [name for name in ANALYSES if not names or name in names]


def parts_read(names: list[str]) -> list[type[Part]]:
    """The parts of the stream the analyses `names` read, in the table's order."""
    every = dict.fromkeys(part for analysis in ANALYSES.values() for part in analysis.reads)
    return [part for part in every if any(part in ANALYSES[name].reads for name in names)]


def class_records(plan: SplitPlan, manifest: EnsembleManifest, parts: list[Part]) -> list[dict]:
    """One entry per class: its name and split, then each part's entries (the accuracies where the classifier ran,
    the MS-SSIM where MS-SSIM ran, ...)."""
    records = []
    for c in plan.classes:
        record = {"id": c.id, "name": c.name, "split": manifest.member(c.id).split}
        for part in parts:
            record.update(part.per_class(c.id))
        records.append(record)
    return records


def computed_on_record(manifest: EnsembleManifest, settings: EvalSettings, run: Run, parts: list[Part],
                       chosen: list[Analysis], gathered: dict[type[Part], Part]) -> dict:
    """What every number was computed on: the checkpoints and counts; what each part gathered says of itself (the
    classifier where it ran, the MS-SSIM pairs where MS-SSIM ran); what each analysis chosen notes of its own
    numbers."""
    computed_on = {
        "checkpoints": sorted({(m.split, m.step) for m in manifest.classes}),
        "generator": "raw" if settings.raw else "snapshot",  # --raw: the trained G; else the averaged G, where kept
        "samples_per_class": settings.samples_per_class, "seed": settings.seed,
        "real_images": run.real_images, "real_per_class_at_most": settings.real_per_class,
        "overfitting": f"nearest neighbours among the real images of the sample's class; L1 in pixel space and "
                       f"1 - MS-SSIM; {settings.neighbours} per sample",
    }
    for part in parts:
        computed_on.update(part.computed_on())
    for analysis in chosen:
        computed_on.update(analysis.notes(run, *analysis.inputs(gathered)))
    return computed_on


def evaluate(store: Store, settings: EvalSettings) -> dict:
    names = chosen_analyses(settings.analyses)
    plan = load_plan(store)
    manifest = load_ensemble(store)
    if manifest is None:
        raise UserError(f"store {store.uri} has no ensemble (ensemble.json): run "
                        f"{rerun_command(store.uri)} to train and assemble it first")
    chosen = [ANALYSES[name] for name in names]
    kinds = parts_read(names)
    device = evaluation_device(settings)
    used = {c: min(n, settings.real_per_class) for c, n in class_image_counts(store, plan).items()}  # real per class
    _check_counts(used, settings, Diversity in kinds)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    model, info = get_classifier(store, plan, settings, device) if any(k.classifier for k in kinds) else (None, None)
    shown = sorted({int(c) for c in np.linspace(0, plan.num_classes - 1, settings.overfitting_classes).round()})
    k = min([settings.neighbours] + [used[c] for c in shown])  # one row length for every class
    with contextlib.ExitStack() as hold:
        context = Context(store, plan, settings, device, model, info, used, hold)
        gathered = {kind: kind(context) for kind in kinds}
        parts = list(gathered.values())
        run, rows, grids = stream_splits(context, manifest, parts, shown, k)
        for part in parts:
            part.finish()
    summary = {name: value for analysis in chosen
               for name, value in analysis.compute(run, *analysis.inputs(gathered)).items()}
    computed_on = computed_on_record(manifest, settings, run, parts, chosen, gathered)

    # Pictures: everything in memory first, written below with the metrics last.
    pictures = {key: png for analysis in chosen
                for key, png in analysis.figures(run, *analysis.inputs(gathered)).items()}
    pictures.update(overfitting_grids(store, manifest, plan, settings, shown, rows, k, device))
    computed_on.update(peak_memory(device))
    log.info("evaluation's peak memory: %.2f GiB resident on the host%s", computed_on["peak_host_memory_bytes"] / 2**30,
             "" if device.type != "cuda" else f", {computed_on['peak_device_memory_bytes'] / 2**30:.2f} GiB on the GPU")
    for key, png in {**pictures, **grids}.items():
        store.write_bytes(key, png)
    for key in store.list(FIGURES_PREFIX):
        if key not in pictures:  # of an analysis not chosen this time: the store's figures are this evaluation's
            store.delete(key)
    per_class = class_records(plan, manifest, parts)
    in_report = dict(list(grids.items())[:settings.report_splits])
    info = gathered[Accuracies].info if Accuracies in gathered else None
    store.write_bytes(REPORT_KEY, report.render_report(summary, per_class, computed_on, pictures, in_report, info,
                                                       len(grids), plan.resolution).encode())
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
