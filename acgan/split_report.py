"""What the KFP UI shows for one trained split: its numbers as Metrics (final losses, images/s, steps, diversity
over training, the collapse alarm) and a small self-contained HTML page with a sample grid per class and the
diversity curve, images embedded as base64 PNG (split_page.html, a jinja2 template with autoescape)."""

from __future__ import annotations

import base64
import io
from importlib import resources

import jinja2
import numpy as np

from acgan.collapse import collapse_alarm, collapse_threshold, describe
from acgan.figures import ms_ssim_over_training
from acgan.sampling import generate, image_grid, load_split_generator
from acgan.stats import read_stats
from acgan.store import Store

SAMPLES_PER_CLASS = 8
_PAGE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
    resources.files("acgan").joinpath("split_page.html").read_text())


def split_metrics(store: Store, split: int) -> dict[str, float]:
    """Numbers of the split's stats lines: the last tick's, the first tick's diversity, and the alarm."""
    lines = read_stats(store, split)
    if not lines:
        return {}
    last, first = lines[-1], lines[0]
    threshold = collapse_threshold(store)
    alarm = collapse_alarm(store, split, threshold, lines)
    metrics = {"step": last["step"], "images_per_second": last["images_per_second"], "loss_d": last["loss_d"],
               "loss_g": last["loss_g"], "d_class_acc_fake": last["d_class_acc_fake"],
               "ms_ssim_mean": last["ms_ssim_mean"], "ms_ssim_max_class": max(last["ms_ssim"].values()),
               "ms_ssim_mean_first_tick": first["ms_ssim_mean"], "collapsing": float(alarm is not None)}
    if threshold is not None:
        metrics["ms_ssim_real_least_diverse"] = threshold
    if alarm is not None:
        metrics["last_healthy_checkpoint"] = float(-1 if alarm.last_healthy_checkpoint is None
                                                   else alarm.last_healthy_checkpoint)
    return metrics


def _png(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def split_page(store: Store, split: int, seed: int = 0) -> str:
    """HTML: one row of samples per class of the split's newest checkpoint, and its MS-SSIM over training."""
    G, meta = load_split_generator(store, split)
    classes = meta["classes"]
    rows = [generate(G, k, SAMPLES_PER_CLASS, seed + k) for k in range(len(classes))]
    grid = image_grid(np.concatenate(rows), columns=SAMPLES_PER_CLASS)
    lines = read_stats(store, split)
    threshold = collapse_threshold(store)
    alarm = collapse_alarm(store, split, threshold, lines)
    curve = None
    if lines:
        curves = {int(c): ([line["step"] for line in lines], [line["ms_ssim"][c] for line in lines])
                  for c in lines[-1]["ms_ssim"]}
        curve = base64.b64encode(ms_ssim_over_training(curves, threshold if threshold is not None else 1.0)).decode()
    return _PAGE.render(split=split, classes=classes, step=meta["step"], alarm=describe(alarm, store.uri) if alarm else None,
                        grid=_png(grid), samples_per_class=SAMPLES_PER_CLASS, curve=curve)
