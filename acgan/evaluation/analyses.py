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

import io
import json
import logging
import resource
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torchmetrics.image.fid import FrechetInceptionDistance
from tqdm import tqdm

from acgan import figures
from acgan.data.plan import SplitPlan, load_plan
from acgan.data.prepare import load_shard, shard_info
from acgan.ensemble import EnsembleManifest, load_ensemble, load_member_generator
from acgan.errors import UserError
from acgan.evaluation import report
from acgan.metrics import compute_accuracy, compute_class_ms_ssim
from acgan.metrics.classifier import (
    ClassifierInfo,
    classify,
    feature_width,
    file_classifier_info,
    load_classifier,
    load_classifier_file,
    save_classifier,
    train_classifier,
)
from acgan.metrics.discriminability import fractions_more_discriminable, study_resolutions
from acgan.metrics.fidelity import frechet_accumulator, inception_score
from acgan.metrics.joint import joint_fractions, pearson
from acgan.metrics.overfitting import (
    fixed_noise_across_classes,
    interpolation,
    nearest_neighbours,
)
from acgan.sampling import generate, image_grid
from acgan.settings import EvaluationSettings
from acgan.store import Store, write_json

log = logging.getLogger(__name__)
METRICS_KEY = "eval/metrics.json"
REPORT_KEY = "eval/report.html"


class EvalSettings(EvaluationSettings):
    """`acgan evaluate`'s settings: the evaluation's shared ones (`EvaluationSettings`: samples, pairs, classifier,
    analyses) and those only it takes."""

    real_per_class: int = Field(200, ge=2, le=100_000, description="real images per class used (at most)")
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    ms_ssim_threshold: float | None = Field(None, gt=0, le=1, description="joint analysis: a class is low-diversity "
                                                                         "at or above it (default: the max real class)")
    accuracy_threshold: float = Field(0.01, ge=0, lt=1, description="joint analysis: low accuracy at or below it "
                                                                    "(paper: 1%)")
    is_splits: int = Field(10, ge=1, le=100, description="Inception Score: the samples in this many parts")
    grid_columns: int = Field(10, ge=1, le=100, description="samples per class in the report's grids")
    report_splits: int = Field(10, ge=1, le=1000, description="splits whose sample grids the report shows")
    overfitting_classes: int = Field(4, ge=1, le=100, description="classes in the overfitting grids")
    neighbours: int = Field(5, ge=1, le=50, description="nearest training neighbours shown per sample")


def real_of_split(store: Store, split: int, members: list[int], per_class: int,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """At most `per_class` real images of each class of a split (a seeded choice where a class has more); the rest of
    the split's shard is dropped on return."""
    x, y = load_shard(store, split)
    chosen = []
    for c in members:
        indices = (y == c).nonzero().squeeze(1)
        chosen.append(indices[torch.randperm(len(indices), generator=gen)[:per_class]])
    chosen = torch.cat(chosen)
    return x[chosen], y[chosen]


def real_by_split(store: Store, plan: SplitPlan, per_class: int, seed: int,
                  device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Split by split, the real images the evaluation uses, on `device`: one split's images are held at a time."""
    gen = torch.Generator().manual_seed(seed)
    for split, members in enumerate(plan.splits):  # no name holds a yielded split: the caller's drop frees it
        yield tuple(t.to(device) for t in real_of_split(store, split, members, per_class, gen))


@contextmanager
def real_on_disk(store: Store, plan: SplitPlan, per_class: int,
                 seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every split's real images (the ones real_by_split chooses, in its order) as one uint8 tensor mapped from a
    temporary file on local disk, their labels in RAM. Training the default classifier draws batches from every class,
    yet at the ImageNet shape the images are ~10 GB: written split by split, only one split and the pages a batch
    reads are in memory, and the kernel can drop those again. The file is unlinked from the start: gone on exit."""
    with tempfile.TemporaryFile(prefix="acgan-real-") as file:
        labels, shape = [], None
        for images, split_labels in real_by_split(store, plan, per_class, seed, torch.device("cpu")):
            file.write(images.contiguous().numpy())
            labels.append(split_labels)
            shape = images.shape[1:]
            del images  # else it holds this split's images while the next split loads, and the last one throughout
        file.flush()
        labels = torch.cat(labels)
        # Copy-on-write: a writable array for torch, whose writes (none are made) would never reach the file.
        yield torch.from_numpy(np.memmap(file, np.uint8, "c", shape=(len(labels), *shape))), labels


def split_samples(store: Store, manifest: EnsembleManifest, members: list[int], n: int, seed: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples of each class of one split through the ensemble, on `device`: uint8 (len(members) * n, C, H, W)
    and their global class ids."""
    G = load_member_generator(store, manifest.member(members[0]), device)
    images = [torch.from_numpy(generate(G, manifest.member(c).local_index, n, seed + c)) for c in members]
    return torch.cat(images).to(device), torch.tensor(members, device=device).repeat_interleave(n)


def get_classifier(store: Store, plan: SplitPlan, settings: EvalSettings,
                   device: torch.device) -> tuple[torch.nn.Module, ClassifierInfo | Literal["file", "inception-v3"]]:
    """The classifier on `device` and its info; for a user's file its kind, the info waiting for its accuracy on the
    real images (file_classifier_info)."""
    if settings.classifier != "trained":
        return load_classifier_file(settings.classifier, store, plan.channels, plan.num_classes, device)
    loaded = load_classifier(store)
    if loaded is not None and (loaded[1].num_classes, loaded[1].resolution) != (plan.num_classes, plan.resolution):
        raise UserError(f"the store's classifier has {loaded[1].num_classes} classes at {loaded[1].resolution}px, the "
                        f"plan {plan.num_classes} at {plan.resolution}px: delete {store.uri}/eval/classifier.* to retrain")
    if loaded is not None:
        return loaded[0].to(device), loaded[1]
    # Training draws from every class at once: the first evaluation of a store maps them from disk while it trains.
    with real_on_disk(store, plan, settings.real_per_class, settings.seed) as (real_images, real_labels):
        model, info = train_classifier(real_images, real_labels, plan.num_classes, settings.classifier_steps,
                                       seed=settings.seed, device=device)
    save_classifier(store, model.cpu(), info)
    return model.to(device), info


def training_curves(store: Store, plan: SplitPlan) -> dict[int, tuple[list[int], list[float]]]:
    """Per class: (steps, MS-SSIM of the split's fixed samples) from the training stats lines."""
    curves: dict[int, tuple[list[int], list[float]]] = {}
    for split in range(len(plan.splits)):
        key = f"splits/split-{split:05d}/stats.jsonl"
        if not store.exists(key):
            continue
        for line in store.read_bytes(key).decode().splitlines():
            stats = json.loads(line)
            for class_id, value in stats.get("ms_ssim", {}).items():
                steps, values = curves.setdefault(int(class_id), ([], []))
                steps.append(stats["step"])
                values.append(value)
    return curves


def nearest_rows(samples: torch.Tensor, real: torch.Tensor, k: int) -> dict[str, list[torch.Tensor]]:
    """Per distance, one grid row per sample (on the CPU): the sample, then its k nearest real images of its class."""
    rows = {}
    for metric in ("l1", "ms_ssim"):
        nearest = nearest_neighbours(samples, real, k, metric)
        rows[metric] = [torch.cat([s[None], real[idx]]).cpu() for s, idx in zip(samples, nearest)]
    return rows


def overfitting_grids(store: Store, manifest: EnsembleManifest, plan: SplitPlan, settings: EvalSettings,
                      chosen: list[int], rows: dict[int, dict[str, list[torch.Tensor]]], k: int,
                      device: torch.device) -> dict[str, bytes]:
    """PNG grids for a few classes spread over the plan (`chosen`, whose nearest-neighbour `rows` the stream kept);
    each row starts with a sample or a class."""
    grids = {f"eval/overfitting/nearest-{metric.replace('_', '-')}.png":
             _grid(torch.cat([row for c in chosen for row in rows[c][metric]]), 1 + k) for metric in ("l1", "ms_ssim")}
    gen = torch.Generator(device).manual_seed(settings.seed)
    interpolations, fixed = [], []
    for c in chosen:
        member = manifest.member(c)
        G = load_member_generator(store, member, device)
        z = torch.randn(2, G.cfg.noise_dim, generator=gen, device=device)
        interpolations.append(interpolation(G, member.local_index, z[0], z[1], 10))
        if member.split not in {m for m, _ in fixed}:
            fixed.append((member.split, fixed_noise_across_classes(
                G, torch.randn(4, G.cfg.noise_dim, generator=gen, device=device))))
    grids["eval/overfitting/interpolation.png"] = _grid(torch.cat(interpolations), 10)
    for split, images in fixed:
        grids[f"eval/overfitting/fixed-z-split-{split:05d}.png"] = _grid(images, len(plan.splits[split]))
    return grids


def _grid(images: torch.Tensor, columns: int) -> bytes:
    buffer = io.BytesIO()
    image_grid(images.cpu().numpy(), columns=columns).save(buffer, format="PNG")
    return buffer.getvalue()


def evaluation_device(settings: EvalSettings) -> torch.device:
    return torch.device("cuda" if settings.device == "cuda" or (settings.device == "auto" and
                                                               torch.cuda.is_available()) else "cpu")


def peak_memory(device: torch.device) -> dict[str, int | None]:
    """The process's peak resident set so far (the evaluation's, when it runs alone as `acgan evaluate` does) and,
    on a GPU, the most memory torch allocated on it since the evaluation began."""
    return {"peak_host_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "peak_device_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None}


def analyse_split(model: torch.nn.Module | None, sizes: list[int], settings: EvalSettings, ms_ssim: bool,
                  samples: torch.Tensor, sample_labels: torch.Tensor, real: torch.Tensor, real_labels: torch.Tensor,
                  members: list[int], kept: dict[str, list], fid_sums: FrechetInceptionDistance | None) -> None:
    """What the chosen analyses need from one split's samples and real images, on their device: small outputs
    appended to `kept` (on the CPU), features summed into `fid_sums`, so that the images themselves can be dropped.
    The classifier's predictions where a `model` is given, MS-SSIM of pairs where `ms_ssim`."""
    if model is not None:
        # Discriminability and the resolution study. One pass over each image set at full resolution also gives the
        # Inception Score's logits and FID's features; each smaller size is one more pass.
        full = classify(model, samples, logits=True, features=True)
        real_full = classify(model, real, features=True)
        kept["logits"].append(full.logits)
        fid_sums.update(real_full.features, real=True)
        fid_sums.update(full.features, real=False)
        kept[f"predicted_{sizes[0]}"].append(full.predicted)
        kept[f"real_predicted_{sizes[0]}"].append(real_full.predicted)
        for size in sizes[1:]:
            kept[f"predicted_{size}"].append(classify(model, samples, size=size).predicted)
            kept[f"real_predicted_{size}"].append(classify(model, real, size=size).predicted)
    kept["sample_labels"].append(sample_labels.cpu())
    kept["real_labels"].append(real_labels.cpu())
    if ms_ssim:
        # Diversity: each class's pairs come from a generator seeded by its id, so a split alone gives the same pairs.
        for name, images, labels in (("ms", samples, sample_labels), ("real_ms", real, real_labels)):
            means, errors = compute_class_ms_ssim(images, labels, members, settings.pairs, settings.seed)
            kept[name] += means
            kept[f"{name}_se"] += errors


def class_image_counts(store: Store, plan: SplitPlan) -> dict[int, int]:
    """Real images per class id: from the plan where it counted them, else from each split's shard sidecar (a plan
    made from a listing knows names only)."""
    counts = {c.id: c.images for c in plan.classes if c.images is not None}
    for split, members in enumerate(plan.splits):
        if any(c not in counts for c in members):
            by_name = shard_info(store, split).images
            counts.update({c: by_name[plan.classes[c].name] for c in members})
    return counts



@dataclass
class Streamed:
    """What the analyses read once every split has been streamed: always the counts and the training curves; where
    the classifier ran, its info, accuracies per size (overall, per class), the samples' logits and FID's running
    sums; where MS-SSIM ran, each class's mean MS-SSIM and its standard error, of samples and of real images (class
    order)."""

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

    @property
    def real_max(self) -> float:
        return max(self.ms_real)

    @property
    def ms_ssim_threshold(self) -> float:
        return self.settings.ms_ssim_threshold or self.real_max

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
    return {"eval/figures/accuracy-by-resolution.png": figures.accuracy_vs_resolution(
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
    pictures = {"eval/figures/ms-ssim-samples-vs-real.png": figures.ms_ssim_scatter(r.ms_real, r.ms_samples,
                                                                                    r.real_max)}
    if r.curves:
        pictures["eval/figures/ms-ssim-over-training.png"] = figures.ms_ssim_over_training(r.curves, r.real_max)
    return pictures


def joint(r: Streamed) -> dict:
    """Accuracy against diversity per class: their correlation and the low/high fractions (paper section 4.3)."""
    return {"accuracy_ms_ssim_correlation": pearson(r.per_class_accuracy, r.ms_samples),
            **joint_fractions(r.per_class_accuracy, r.ms_samples, r.ms_ssim_threshold, r.settings.accuracy_threshold)}


def joint_figures(r: Streamed) -> dict[str, bytes]:
    return {"eval/figures/accuracy-vs-ms-ssim.png": figures.accuracy_vs_ms_ssim(
        r.ms_samples, r.per_class_accuracy, r.ms_ssim_threshold, r.settings.accuracy_threshold,
        pearson(r.per_class_accuracy, r.ms_samples))}


def joint_notes(r: Streamed) -> dict:
    return {"joint_thresholds": {"ms_ssim": r.ms_ssim_threshold, "accuracy": r.settings.accuracy_threshold,
                                 "ms_ssim_is_real_max": r.settings.ms_ssim_threshold is None}}


def fidelity(r: Streamed) -> dict:
    """Inception Score and FID, in the evaluation classifier's logits and feature space."""
    is_mean, is_std = inception_score(r.logits, r.settings.is_splits, r.settings.seed)
    return {"inception_score": is_mean, "inception_score_std": is_std, "fid": float(r.fid_sums.compute())}


def fidelity_notes(r: Streamed) -> dict:
    width = "2048" if r.info.kind == "inception-v3" else 4 * r.info.width
    return {"inception_score": f"{r.info.kind} classifier's logits, {r.samples} samples in {r.settings.is_splits} "
                               f"parts",
            "fid": f"{r.info.kind} classifier's pooled features ({width}-d), {r.real_images} real images vs "
                   f"{r.samples} samples; not comparable across feature networks"}


@dataclass(frozen=True)
class Analysis:
    """One analysis: `compute` turns what was streamed into its summary figures, `figures` into its PNGs, `notes`
    into what `computed_on` says of its numbers. `classifier` and `ms_ssim` are the streamed parts it reads: the
    classifier's predictions (training or loading it, classifying samples and real images) and MS-SSIM of each
    class's pairs (the slow part); an evaluation streams only the parts its chosen analyses read."""

    compute: Callable[[Streamed], dict]
    classifier: bool
    ms_ssim: bool
    figures: Callable[[Streamed], dict[str, bytes]] = lambda r: {}
    notes: Callable[[Streamed], dict] = lambda r: {}


# The evaluation's analyses by name, in the summary's order (acgan.settings.ANALYSIS_NAMES lists the same names).
ANALYSES: dict[str, Analysis] = {
    "discriminability": Analysis(discriminability, classifier=True, ms_ssim=False, figures=discriminability_figures,
                                 notes=discriminability_notes),
    "diversity": Analysis(diversity, classifier=False, ms_ssim=True, figures=diversity_figures),
    "joint": Analysis(joint, classifier=True, ms_ssim=True, figures=joint_figures, notes=joint_notes),
    "fidelity": Analysis(fidelity, classifier=True, ms_ssim=False, notes=fidelity_notes),
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
                           # Less diverse than the least diverse real class: collapsing (the paper's threshold).
                           "low_diversity": r.ms_samples[c.id] >= r.real_max})
        records.append(record)
    return records


def computed_on_record(manifest: EnsembleManifest, settings: EvalSettings, r: Streamed,
                       chosen: list[Analysis]) -> dict:
    """What every number was computed on: the checkpoints and counts; the classifier where it ran; the MS-SSIM
    pairs where MS-SSIM ran; what each analysis chosen notes of its own numbers."""
    computed_on = {
        "checkpoints": sorted({(m.split, m.step) for m in manifest.classes}),
        "samples_per_class": settings.samples_per_class, "seed": settings.seed,
        "real_images": r.real_images, "real_per_class_at_most": settings.real_per_class,
        "overfitting": f"nearest neighbours among the real images of the sample's class; L1 in pixel space and "
                       f"1 - MS-SSIM; {settings.neighbours} per sample",
    }
    if r.info is not None:
        computed_on["classifier"] = r.info.model_dump()
    if r.ms_samples is not None:
        computed_on.update({"pairs_per_class": settings.pairs, "ms_ssim_data_range": 255,
                            "ms_ssim_standard_error": "per class, the standard deviation of the pair scores over "
                                                      "the square root of the number of pairs"})
    for analysis in chosen:
        computed_on.update(analysis.notes(r))
    return computed_on


def evaluate(store: Store, settings: EvalSettings) -> dict:
    plan = load_plan(store)
    manifest = load_ensemble(store)
    if manifest is None:
        raise UserError(f"store {store.uri} has no ensemble (ensemble.json): run `acgan run` or `acgan rerun --store "
                        f"{store.uri}` to train and assemble it first")
    chosen = [ANALYSES[name] for name in settings.analyses]
    use_classifier, use_ms_ssim = any(a.classifier for a in chosen), any(a.ms_ssim for a in chosen)
    device = evaluation_device(settings)
    classes = [c.id for c in plan.classes]
    used = {c: min(n, settings.real_per_class) for c, n in class_image_counts(store, plan).items()}  # real per class
    # Checked before any work: every class needs two real images and enough distinct pairs.
    for c in classes:
        if used[c] < 2:
            raise UserError(f"class {c} has {used[c]} real image(s): MS-SSIM needs at least two; prepare more data")
    possible = min(settings.samples_per_class, min(used.values()))
    if use_ms_ssim and settings.pairs > possible * (possible - 1) // 2:
        raise UserError(f"--pairs {settings.pairs} is more than the {possible * (possible - 1) // 2} distinct pairs "
                        f"of {possible} images (the smallest class or --samples-per-class): lower --pairs")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    model, info = get_classifier(store, plan, settings, device) if use_classifier else (None, None)
    sizes = study_resolutions(plan.resolution)
    shown = sorted({int(c) for c in np.linspace(0, plan.num_classes - 1, settings.overfitting_classes).round()})
    k = min([settings.neighbours] + [used[c] for c in shown])  # one row length for every class
    columns = min(settings.grid_columns, settings.samples_per_class)
    # One split's samples and real images at a time, on the device; what later steps need is kept on the CPU.
    kept: dict[str, list] = defaultdict(list)
    fid_sums = frechet_accumulator(feature_width(model)) if model is not None else None  # no features kept
    rows, grids = {}, {}
    splits = tqdm(plan.splits, desc="evaluate", unit="split", disable=not sys.stderr.isatty())
    reals = real_by_split(store, plan, settings.real_per_class, settings.seed, device)
    for split, members in enumerate(splits):
        real, real_labels = next(reals)  # not zip(): its reused result tuple would hold the last split's images
        samples, sample_labels = split_samples(store, manifest, members, settings.samples_per_class, settings.seed,
                                               device)
        analyse_split(model, sizes, settings, use_ms_ssim, samples, sample_labels, real, real_labels, members, kept,
                      fid_sums)
        for c in set(shown) & set(members):
            rows[c] = nearest_rows(samples[sample_labels == c][:2], real[real_labels == c], k)
        grids[f"eval/samples-split-{split:05d}.png"] = _grid(torch.cat(
            [samples[sample_labels == c][:columns] for c in members]), columns)
        del samples, sample_labels, real, real_labels  # freed before the next split is loaded

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
    if use_ms_ssim:  # in class order (the splits may list classes in any order)
        order = [c for members in plan.splits for c in members]
        streamed.ms_samples, streamed.ms_samples_se, streamed.ms_real, streamed.ms_real_se = (
            [dict(zip(order, kept[name]))[c] for c in classes] for name in ("ms", "ms_se", "real_ms", "real_ms_se"))
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
    for key in store.list("eval/figures/"):
        if key not in pictures:  # of an analysis not chosen this time: the store's figures are this evaluation's
            store.delete(key)
    per_class = class_records(plan, manifest, streamed)
    in_report = dict(list(grids.items())[:settings.report_splits])
    store.write_bytes(REPORT_KEY, report.render_report(summary, per_class, computed_on, pictures, in_report, info,
                                                       len(grids)).encode())
    write_json(store, METRICS_KEY, {"summary": summary, "computed_on": computed_on, "classes": per_class})
    log.info("evaluation written to %s/%s", store.uri, METRICS_KEY)
    return summary
