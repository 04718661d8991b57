"""`acgan evaluate`: the paper's discriminability and diversity analyses of an assembled ensemble.

Samples are drawn through the ensemble (each class from the sub-model that owns it). Writes into the store:
  eval/metrics.json              `summary` and one entry per class, each number with what it was computed on
  eval/samples-split-NNNNN.png   a grid per split: one row per class
  eval/report.html               self-contained report (summary, per-class table, the grids)
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import sys
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from components.data.plan import SplitPlan, load_plan
from components.data.prepare import load_shard
from components.ensemble import EnsembleManifest, load_ensemble, load_member_generator
from components.errors import UserError
from components.metrics import compute_accuracy, compute_class_ms_ssim
from components.metrics.discriminability import resize_down_and_up, study_resolutions
from components.metrics.classifier import ClassifierInfo, load_classifier, predict, save_classifier, train_classifier
from components.sampling import generate, image_grid
from components.store import Store, write_json

log = logging.getLogger(__name__)
METRICS_KEY = "eval/metrics.json"
REPORT_KEY = "eval/report.html"


class EvalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples_per_class: int = Field(100, ge=2, le=100_000)
    pairs: int = Field(100, ge=1, le=1_000_000, description="random pairs per class for mean MS-SSIM")
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    classifier_steps: int = Field(1500, ge=1, le=1_000_000, description="training steps of the default classifier")
    grid_columns: int = Field(10, ge=1, le=100, description="samples per class in the report's grids")


def load_real(store: Store, plan: SplitPlan) -> tuple[torch.Tensor, torch.Tensor]:
    shards = [load_shard(store, split) for split in range(len(plan.splits))]
    return torch.cat([s[0] for s in shards]), torch.cat([s[1] for s in shards])


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


def pearson(x: list[float], y: list[float]) -> float | None:
    """Pearson r, or None where it is undefined (a constant series)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def evaluate(store: Store, settings: EvalSettings) -> dict:
    plan = load_plan(store)
    manifest = load_ensemble(store)
    if manifest is None:
        raise UserError(f"store {store.uri} has no ensemble (ensemble.json): run `acgan run` or `acgan rerun --store "
                        f"{store.uri}` to train and assemble it first")
    device = torch.device("cuda" if settings.device == "cuda" or (settings.device == "auto" and
                                                                 torch.cuda.is_available()) else "cpu")
    real_images, real_labels = load_real(store, plan)
    classes = [c.id for c in plan.classes]

    loaded = load_classifier(store)
    if loaded is not None and (loaded[1].num_classes, loaded[1].resolution) != (plan.num_classes, plan.resolution):
        raise UserError(f"the store's classifier has {loaded[1].num_classes} classes at {loaded[1].resolution}px, the "
                        f"plan {plan.num_classes} at {plan.resolution}px: delete {store.uri}/eval/classifier.* to retrain")
    if loaded is None:
        model, info = train_classifier(real_images, real_labels, plan.num_classes, settings.classifier_steps,
                                       seed=settings.seed, device=device)
        save_classifier(store, model.cpu(), info)
    else:
        model, info = loaded

    samples, sample_labels = draw_samples(store, manifest, plan, settings.samples_per_class, settings.seed, device)
    model = model.to(device)
    by_resolution, real_by_resolution = {}, {}
    for size in study_resolutions(plan.resolution):
        by_resolution[size] = compute_accuracy(predict(model, resize_down_and_up(samples, size)), sample_labels,
                                               plan.num_classes)
        real_by_resolution[size] = compute_accuracy(predict(model, resize_down_and_up(real_images, size)),
                                                    real_labels, plan.num_classes)[0]
    accuracy, per_class_accuracy = by_resolution[plan.resolution]
    smallest = min(by_resolution)
    ms_samples = compute_class_ms_ssim(samples, sample_labels, classes, settings.pairs, settings.seed)
    ms_real = compute_class_ms_ssim(real_images, real_labels, classes, settings.pairs, settings.seed)
    real_max = max(ms_real)

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
        "accuracy_ms_ssim_correlation": pearson(per_class_accuracy, ms_samples),
        "classes_low_diversity": int(sum(m >= real_max for m in ms_samples)),
        "accuracy_by_resolution": {str(size): acc for size, (acc, _) in by_resolution.items()},
        "real_accuracy_by_resolution": {str(size): acc for size, acc in real_by_resolution.items()},
        "fraction_more_discriminable_at_full_resolution": float(np.mean(
            [full > low for full, low in zip(per_class_accuracy, by_resolution[smallest][1])])),
    }
    computed_on = {
        "checkpoints": sorted({(m.split, m.step) for m in manifest.classes}),
        "samples_per_class": settings.samples_per_class, "pairs_per_class": settings.pairs, "seed": settings.seed,
        "real_images": int(len(real_labels)), "classifier": info.model_dump(), "ms_ssim_data_range": 255,
        "resolution_study": f"down to each size (antialiased bilinear), back up bilinearly; real accuracy is over all "
                            f"real images, the classifier's training images included; smallest {smallest}px",
    }
    per_class = [{"id": c.id, "name": c.name, "split": manifest.member(c.id).split, "accuracy": per_class_accuracy[c.id],
                  "accuracy_by_resolution": {str(size): acc[1][c.id] for size, acc in by_resolution.items()},
                  "ms_ssim": ms_samples[c.id], "real_ms_ssim": ms_real[c.id],
                  # Less diverse than the least diverse real class: collapsing (the paper's threshold).
                  "low_diversity": ms_samples[c.id] >= real_max} for c in plan.classes]

    grids = {}
    for split, members in enumerate(plan.splits):
        rows = [samples[sample_labels == c][:settings.grid_columns] for c in members]
        buffer = io.BytesIO()
        image_grid(torch.cat(rows).numpy(), columns=min(settings.grid_columns, settings.samples_per_class)).save(
            buffer, format="PNG")
        grids[split] = buffer.getvalue()
        store.write_bytes(f"eval/samples-split-{split:05d}.png", grids[split])
    store.write_bytes(REPORT_KEY, render_report(summary, per_class, computed_on, grids, info).encode())
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


def render_report(summary: dict, per_class: list[dict], computed_on: dict, grids: dict[int, bytes],
                  info: ClassifierInfo) -> str:
    rows = "".join(f"<tr><td>{k}</td><td>{_fmt(v)}</td></tr>" for k, v in flat_summary(summary).items())
    class_rows = "".join(
        f"<tr><td>{c['id']}</td><td>{html.escape(c['name'])}</td><td>{c['split']}</td><td>{_fmt(c['accuracy'])}</td>"
        f"<td>{_fmt(c['ms_ssim'])}</td><td>{_fmt(c['real_ms_ssim'])}</td></tr>" for c in per_class)
    images = "".join(f"<h3>split {s}</h3><img alt='samples of split {s}' src='data:image/png;base64,"
                     f"{base64.b64encode(png).decode()}'>" for s, png in grids.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>acgan-ensemble evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:2px 8px;text-align:right}}img{{image-rendering:pixelated;width:min(100%,640px)}}</style></head><body>
<h1>acgan-ensemble evaluation</h1>
<p>{computed_on['samples_per_class']} samples per class through the ensemble, {computed_on['pairs_per_class']} MS-SSIM
pairs per class, classifier: {info.kind} CNN ({info.steps} steps of {info.batch_size}, held-out accuracy on real images
{info.heldout_accuracy:.3f}).</p>
<h2>Summary</h2><table>{rows}</table>
<h2>Samples (one row per class)</h2>{images}
<h2>Per class</h2><table><tr><th>id</th><th>name</th><th>split</th><th>accuracy</th><th>MS-SSIM</th>
<th>real MS-SSIM</th></tr>{class_rows}</table></body></html>
"""
