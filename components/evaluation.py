"""`acgan evaluate`: every analysis of the paper on an assembled ensemble, per class and overall.

Samples are drawn through the ensemble (each class from the sub-model that owns it); real images are at most
`real_per_class` per class from the store's shards. Everything is computed first and written at the end, the
summary (`eval/metrics.json`) last, so a failed evaluation never leaves a partial result that looks complete:
  eval/metrics.json              `summary`, `computed_on` (what every number was computed on) and one entry per class
  eval/report.html               self-contained report: summary, figures, grids, per-class table
  eval/figures/*.png             accuracy vs resolution, MS-SSIM scatter, accuracy vs MS-SSIM, MS-SSIM over training
  eval/samples-split-NNNNN.png   a grid per split: one row per class
  eval/overfitting/*.png         nearest training neighbours (L1, MS-SSIM), latent interpolation, fixed z across classes
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import sys
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from components import figures
from components.data.plan import SplitPlan, load_plan
from components.data.prepare import load_shard
from components.ensemble import EnsembleManifest, load_ensemble, load_member_generator
from components.errors import UserError
from components.metrics import compute_accuracy, compute_class_ms_ssim
from components.metrics.classifier import (
    ClassifierInfo,
    classify,
    load_classifier,
    load_classifier_file,
    save_classifier,
    train_classifier,
)
from components.metrics.discriminability import fractions_more_discriminable, study_resolutions
from components.metrics.fidelity import frechet_distance, inception_score
from components.metrics.joint import joint_fractions, pearson
from components.metrics.overfitting import (
    fixed_noise_across_classes,
    interpolation,
    nearest_neighbours,
)
from components.sampling import generate, image_grid
from components.store import Store, write_json

log = logging.getLogger(__name__)
METRICS_KEY = "eval/metrics.json"
REPORT_KEY = "eval/report.html"


class EvalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples_per_class: int = Field(100, ge=2, le=100_000)
    pairs: int = Field(1000, ge=1, le=1_000_000, description="random pairs per class for mean MS-SSIM (the paper: 100)")
    real_per_class: int = Field(200, ge=2, le=100_000, description="real images per class used (at most)")
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    classifier: str = Field("trained", min_length=1, description="'trained' (train one on the store's real images, "
                                                                 "or reuse it) or a .safetensors file")
    classifier_steps: int = Field(1500, ge=1, le=1_000_000, description="training steps of the default classifier")
    ms_ssim_threshold: float | None = Field(None, gt=0, le=1, description="joint analysis: a class is low-diversity "
                                                                         "at or above it (default: the max real class)")
    accuracy_threshold: float = Field(0.01, ge=0, lt=1, description="joint analysis: low accuracy at or below it "
                                                                    "(paper: 1%)")
    is_splits: int = Field(10, ge=1, le=100, description="Inception Score: the samples in this many parts")
    grid_columns: int = Field(10, ge=1, le=100, description="samples per class in the report's grids")
    report_splits: int = Field(10, ge=1, le=1000, description="splits whose sample grids the report shows")
    overfitting_classes: int = Field(4, ge=1, le=100, description="classes in the overfitting grids")
    neighbours: int = Field(5, ge=1, le=50, description="nearest training neighbours shown per sample")


def load_real(store: Store, plan: SplitPlan, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """At most `per_class` real images of every class (a seeded choice where a class has more), split by split."""
    gen = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for split in range(len(plan.splits)):
        x, y = load_shard(store, split)
        for c in plan.splits[split]:
            members = (y == c).nonzero().squeeze(1)
            members = members[torch.randperm(len(members), generator=gen)[:per_class]]
            images.append(x[members])
            labels.append(y[members])
    return torch.cat(images), torch.cat(labels)


def draw_samples(store: Store, manifest: EnsembleManifest, plan: SplitPlan, n: int, seed: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples of every class through the ensemble: uint8 (K * n, C, H, W) and their global class ids."""
    images, labels = [], []
    for split, members in enumerate(tqdm(plan.splits, desc="samples", unit="split", disable=not sys.stderr.isatty())):
        G = load_member_generator(store, manifest.member(members[0]), device)
        for c in members:
            images.append(torch.from_numpy(generate(G, manifest.member(c).local_index, n, seed + c)))
            labels.append(torch.full((n,), c, dtype=torch.long))
    return torch.cat(images), torch.cat(labels)


def get_classifier(store: Store, plan: SplitPlan, settings: EvalSettings, real_images: torch.Tensor,
                   real_labels: torch.Tensor, device: torch.device) -> tuple[torch.nn.Module, ClassifierInfo]:
    if settings.classifier != "trained":
        return load_classifier_file(settings.classifier, store, real_images, real_labels, plan.num_classes, device)
    loaded = load_classifier(store)
    if loaded is not None and (loaded[1].num_classes, loaded[1].resolution) != (plan.num_classes, plan.resolution):
        raise UserError(f"the store's classifier has {loaded[1].num_classes} classes at {loaded[1].resolution}px, the "
                        f"plan {plan.num_classes} at {plan.resolution}px: delete {store.uri}/eval/classifier.* to retrain")
    if loaded is not None:
        return loaded[0].to(device), loaded[1]
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


def overfitting_grids(store: Store, manifest: EnsembleManifest, plan: SplitPlan, settings: EvalSettings,
                      samples: torch.Tensor, sample_labels: torch.Tensor, real_images: torch.Tensor,
                      real_labels: torch.Tensor, device: torch.device) -> dict[str, bytes]:
    """PNG grids for a few classes spread over the plan; each row starts with a sample or a class."""
    chosen = sorted({int(c) for c in np.linspace(0, plan.num_classes - 1, settings.overfitting_classes).round()})
    rows_per_class = 2
    k = min([settings.neighbours] + [int((real_labels == c).sum()) for c in chosen])  # one row length for all
    grids = {}
    for metric in ("l1", "ms_ssim"):
        rows = []
        for c in chosen:
            mine, real = samples[sample_labels == c][:rows_per_class], real_images[real_labels == c]
            nearest = nearest_neighbours(mine, real, k, metric)
            rows += [torch.cat([s[None], real[idx]]) for s, idx in zip(mine, nearest)]
        grids[f"eval/overfitting/nearest-{metric.replace('_', '-')}.png"] = _grid(torch.cat(rows), 1 + k)
    gen = torch.Generator(device).manual_seed(settings.seed)
    rows, fixed = [], []
    for c in chosen:
        member = manifest.member(c)
        G = load_member_generator(store, member, device)
        z = torch.randn(2, G.cfg.noise_dim, generator=gen, device=device)
        rows.append(interpolation(G, member.local_index, z[0], z[1], 10))
        if member.split not in {m for m, _ in fixed}:
            fixed.append((member.split, fixed_noise_across_classes(
                G, torch.randn(4, G.cfg.noise_dim, generator=gen, device=device))))
    grids["eval/overfitting/interpolation.png"] = _grid(torch.cat(rows), 10)
    for split, images in fixed:
        grids[f"eval/overfitting/fixed-z-split-{split:05d}.png"] = _grid(images, len(plan.splits[split]))
    return grids


def _grid(images: torch.Tensor, columns: int) -> bytes:
    buffer = io.BytesIO()
    image_grid(images.numpy(), columns=columns).save(buffer, format="PNG")
    return buffer.getvalue()


def evaluate(store: Store, settings: EvalSettings) -> dict:
    plan = load_plan(store)
    manifest = load_ensemble(store)
    if manifest is None:
        raise UserError(f"store {store.uri} has no ensemble (ensemble.json): run `acgan run` or `acgan rerun --store "
                        f"{store.uri}` to train and assemble it first")
    device = torch.device("cuda" if settings.device == "cuda" or (settings.device == "auto" and
                                                                 torch.cuda.is_available()) else "cpu")
    real_images, real_labels = load_real(store, plan, settings.real_per_class, settings.seed)
    classes = [c.id for c in plan.classes]
    # Checked before any work: every class needs two real images and enough distinct pairs.
    for c in classes:
        n = int((real_labels == c).sum())
        if n < 2:
            raise UserError(f"class {c} has {n} real image(s): MS-SSIM needs at least two; prepare more data")
    possible = min(settings.samples_per_class, int(torch.bincount(real_labels, minlength=len(classes)).min()))
    if settings.pairs > possible * (possible - 1) // 2:
        raise UserError(f"--pairs {settings.pairs} is more than the {possible * (possible - 1) // 2} distinct pairs "
                        f"of {possible} images (the smallest class or --samples-per-class): lower --pairs")

    model, info = get_classifier(store, plan, settings, real_images, real_labels, device)
    samples, sample_labels = draw_samples(store, manifest, plan, settings.samples_per_class, settings.seed, device)

    # Discriminability and the resolution study. One pass over each image set at full resolution also gives the
    # Inception Score's logits and FID's features; each smaller size is one more pass.
    full = classify(model, samples, logits=True, features=True, desc="classify samples")
    real_full = classify(model, real_images, features=True, desc="classify real images")
    by_resolution = {plan.resolution: compute_accuracy(full.predicted, sample_labels, plan.num_classes)}
    real_by_resolution = {plan.resolution: compute_accuracy(real_full.predicted, real_labels, plan.num_classes)}
    for size in study_resolutions(plan.resolution)[1:]:
        by_resolution[size] = compute_accuracy(classify(model, samples, size=size, desc=f"samples at {size}px")
                                               .predicted, sample_labels, plan.num_classes)
        real_by_resolution[size] = compute_accuracy(classify(model, real_images, size=size, desc=f"real at {size}px")
                                                    .predicted, real_labels, plan.num_classes)
    accuracy, per_class_accuracy = by_resolution[plan.resolution]
    more_discriminable = fractions_more_discriminable({size: acc[1] for size, acc in by_resolution.items()})
    quarter = plan.resolution // 4  # the paper's pair: 128 px against 32 px

    # Diversity.
    ms_samples, se_samples = compute_class_ms_ssim(samples, sample_labels, classes, settings.pairs, settings.seed)
    ms_real, se_real = compute_class_ms_ssim(real_images, real_labels, classes, settings.pairs, settings.seed)
    real_max = max(ms_real)
    ms_threshold = settings.ms_ssim_threshold or real_max
    correlation = pearson(per_class_accuracy, ms_samples)

    # Inception Score and FID in the classifier's feature space.
    is_mean, is_std = inception_score(full.logits, settings.is_splits, settings.seed)
    fid = frechet_distance(real_full.features, full.features)

    summary = {
        "accuracy": accuracy,
        "real_accuracy": info.heldout_accuracy,
        "ms_ssim_mean": float(np.mean(ms_samples)),
        "ms_ssim_std": float(np.std(ms_samples)),
        "real_ms_ssim_mean": float(np.mean(ms_real)),
        "real_ms_ssim_std": float(np.std(ms_real)),
        "real_ms_ssim_max": real_max,
        "fraction_below_real_max": float(np.mean([m < real_max for m in ms_samples])),
        "fraction_at_most_real_ms_ssim": float(np.mean([s <= r for s, r in zip(ms_samples, ms_real)])),
        "accuracy_ms_ssim_correlation": correlation,
        **joint_fractions(per_class_accuracy, ms_samples, ms_threshold, settings.accuracy_threshold),
        "accuracy_by_resolution": {str(size): acc for size, (acc, _) in by_resolution.items()},
        "real_accuracy_by_resolution": {str(size): acc for size, (acc, _) in real_by_resolution.items()},
        "fraction_more_discriminable_than_at_quarter_resolution": more_discriminable[quarter],
        "fraction_more_discriminable_than_at_resolution": {str(size): f for size, f in more_discriminable.items()},
        "inception_score": is_mean,
        "inception_score_std": is_std,
        "fid": fid,
    }
    computed_on = {
        "checkpoints": sorted({(m.split, m.step) for m in manifest.classes}),
        "samples_per_class": settings.samples_per_class, "pairs_per_class": settings.pairs, "seed": settings.seed,
        "real_images": int(len(real_labels)), "real_per_class_at_most": settings.real_per_class,
        "ms_ssim_standard_error": "per class, the standard deviation of the pair scores over the square root of the "
                                  "number of pairs",
        "classifier": info.model_dump(), "ms_ssim_data_range": 255,
        "resolution_study": f"down to each size (antialiased bilinear), back up bilinearly; real accuracy is over the "
                            f"real images used, the classifier's training images included; the headline fraction of "
                            f"classes more discriminable compares {plan.resolution}px with {quarter}px, a quarter "
                            f"(the paper: 128 with 32)",
        "joint_thresholds": {"ms_ssim": ms_threshold, "accuracy": settings.accuracy_threshold,
                             "ms_ssim_is_real_max": settings.ms_ssim_threshold is None},
        "inception_score": f"{info.kind} classifier's logits, {len(samples)} samples in {settings.is_splits} parts",
        "fid": f"{info.kind} classifier's pooled features ({'2048' if info.kind == 'inception-v3' else 4 * info.width}"
               f"-d), {len(real_labels)} real images vs {len(samples)} samples; not comparable across feature networks",
        "overfitting": f"nearest neighbours among the real images of the sample's class; L1 in pixel space and "
                       f"1 - MS-SSIM; {settings.neighbours} per sample",
    }
    per_class = [{"id": c.id, "name": c.name, "split": manifest.member(c.id).split, "accuracy": per_class_accuracy[c.id],
                  "accuracy_by_resolution": {str(size): acc[1][c.id] for size, acc in by_resolution.items()},
                  "real_accuracy": real_by_resolution[plan.resolution][1][c.id],
                  "real_accuracy_by_resolution": {str(size): acc[1][c.id] for size, acc in real_by_resolution.items()},
                  "ms_ssim": ms_samples[c.id], "ms_ssim_se": se_samples[c.id],
                  "real_ms_ssim": ms_real[c.id], "real_ms_ssim_se": se_real[c.id],
                  # Less diverse than the least diverse real class: collapsing (the paper's threshold).
                  "low_diversity": ms_samples[c.id] >= real_max} for c in plan.classes]

    # Pictures: everything in memory first, written below with the metrics last.
    sizes = sorted(by_resolution)
    pictures = {
        "eval/figures/accuracy-by-resolution.png": figures.accuracy_vs_resolution(
            sizes, [by_resolution[s][0] for s in sizes], [real_by_resolution[s][0] for s in sizes]),
        "eval/figures/ms-ssim-samples-vs-real.png": figures.ms_ssim_scatter(ms_real, ms_samples, real_max),
        "eval/figures/accuracy-vs-ms-ssim.png": figures.accuracy_vs_ms_ssim(
            ms_samples, per_class_accuracy, ms_threshold, settings.accuracy_threshold, correlation),
    }
    curves = training_curves(store, plan)
    if curves:
        pictures["eval/figures/ms-ssim-over-training.png"] = figures.ms_ssim_over_training(curves, real_max)
    pictures.update(overfitting_grids(store, manifest, plan, settings, samples, sample_labels, real_images,
                                      real_labels, device))
    columns = min(settings.grid_columns, settings.samples_per_class)
    grids = {f"eval/samples-split-{split:05d}.png": _grid(torch.cat(
        [samples[sample_labels == c][:columns] for c in members]), columns) for split, members in enumerate(plan.splits)}

    for key, png in {**pictures, **grids}.items():
        store.write_bytes(key, png)
    shown = dict(list(grids.items())[:settings.report_splits])
    store.write_bytes(REPORT_KEY, render_report(summary, per_class, computed_on, pictures, shown, info,
                                                len(grids)).encode())
    write_json(store, METRICS_KEY, {"summary": summary, "computed_on": computed_on, "classes": per_class})
    log.info("evaluation written to %s/%s", store.uri, METRICS_KEY)
    return summary


def flat_summary(summary: dict) -> dict[str, float | None]:
    """One number per name (per-resolution figures become `<name>_<size>px`): KFP metrics and the printed table."""
    flat = {}
    for name, value in summary.items():
        if isinstance(value, dict):
            flat.update({f"{name}_{size}px": v for size, v in value.items()})
        else:
            flat[name] = value
    return flat


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def _img(title: str, png: bytes) -> str:
    return (f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def render_report(summary: dict, per_class: list[dict], computed_on: dict, pictures: dict[str, bytes],
                  grids: dict[str, bytes], info: ClassifierInfo, total_grids: int) -> str:
    rows = "".join(f"<tr><td>{k}</td><td>{_fmt(v)}</td></tr>" for k, v in flat_summary(summary).items())
    class_rows = "".join(
        f"<tr><td>{c['id']}</td><td>{html.escape(c['name'])}</td><td>{c['split']}</td><td>{_fmt(c['accuracy'])}</td>"
        f"<td>{_fmt(c['real_accuracy'])}</td><td>{_fmt(c['ms_ssim'])} &plusmn; {_fmt(c['ms_ssim_se'])}</td>"
        f"<td>{_fmt(c['real_ms_ssim'])} &plusmn; {_fmt(c['real_ms_ssim_se'])}</td>"
        f"<td>{'yes' if c['low_diversity'] else ''}</td></tr>" for c in per_class)
    figs = "".join(_img(key.rsplit("/", 1)[1].removesuffix(".png").replace("-", " "), png)
                   for key, png in pictures.items() if key.startswith("eval/figures/"))
    checks = "".join(_img(key.rsplit("/", 1)[1].removesuffix(".png").replace("-", " "), png)
                     for key, png in pictures.items() if key.startswith("eval/overfitting/"))
    images = "".join(_img(key.rsplit("/", 1)[1].removesuffix(".png"), png) for key, png in grids.items())
    more = f"<p>{total_grids - len(grids)} more split grids are in the store under eval/.</p>" \
        if total_grids > len(grids) else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>acgan-ensemble evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:2px 8px;text-align:right}}figure{{display:inline-block;margin:0 1em 1em 0}}
img{{image-rendering:pixelated;max-width:min(100%,640px)}}</style></head><body>
<h1>acgan-ensemble evaluation</h1>
<p>{computed_on['samples_per_class']} samples per class through the ensemble, {computed_on['pairs_per_class']} MS-SSIM
pairs per class, {computed_on['real_images']} real images; classifier: {html.escape(info.describe())}. Inception
Score and FID use this classifier as their feature network: they compare runs evaluated with the same classifier only.
</p>
<h2>Summary</h2><table>{rows}</table>
<h2>Figures</h2>{figs}
<h2>Samples (one row per class)</h2>{images}{more}
<h2>Overfitting checks</h2><p>Nearest neighbours: each row is a sample followed by its nearest real images of the
class. Interpolation: one row per class, z moving in a straight line. Fixed z: one row per z, one column per class.</p>
{checks}
<h2>Per class</h2><table><tr><th>id</th><th>name</th><th>split</th><th>accuracy</th><th>real accuracy</th>
<th>MS-SSIM &plusmn; s.e.</th><th>real MS-SSIM &plusmn; s.e.</th><th>low diversity</th></tr>{class_rows}</table>
</body></html>
"""


def compare(stores: list[Store]) -> tuple[list[dict], bytes]:
    """The class-split study (paper Figure 10): mean MS-SSIM of each evaluated store against its classes per model."""
    runs = []
    for store in stores:
        if not store.exists(METRICS_KEY):
            raise UserError(f"store {store.uri} has no evaluation ({METRICS_KEY}): run `acgan evaluate --store "
                            f"{store.uri}` first")
        metrics = json.loads(store.read_bytes(METRICS_KEY))
        plan = load_plan(store)
        runs.append({"store": store.uri, "classes_per_model": plan.num_classes / len(plan.splits),
                     **{k: metrics["summary"][k] for k in ("ms_ssim_mean", "ms_ssim_std", "real_ms_ssim_mean",
                                                           "accuracy")}})
    return runs, figures.ms_ssim_by_classes_per_model(runs)
