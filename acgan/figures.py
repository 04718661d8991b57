"""The evaluation's figures as PNG bytes (matplotlib's object API: no pyplot state, no display needed)."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def accuracy_vs_resolution(sizes: list[int], samples: list[float], real: list[float]) -> bytes:
    """The paper's Figure 2 (top): classifier accuracy after resizing down to each size and back up."""
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    ax.plot(sizes, real, "o-", label="real images")
    ax.plot(sizes, samples, "s-", label="samples")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set(xlabel="spatial resolution (px)", ylabel="accuracy", ylim=(0, 1.02), title="Discriminability by resolution")
    ax.legend()
    ax.grid(alpha=0.3)
    return _png(fig)


def ms_ssim_scatter(real: list[float], samples: list[float], collapsing: float) -> bytes:
    """The paper's Figure 4 (right): per-class MS-SSIM of samples against that of real images; a class at or above
    `collapsing` is collapsing (acgan/collapse.py)."""
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    ax.scatter(real, samples, s=12, alpha=0.7)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, label="samples = real")
    ax.axhline(collapsing, color="red", lw=0.8, ls="--", label=f"collapsing at or above {collapsing:.2f}")
    ax.set(xlabel="MS-SSIM of real images", ylabel="MS-SSIM of samples", xlim=(0, 1), ylim=(0, 1),
           title="Diversity per class (lower = more diverse)")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def accuracy_vs_ms_ssim(ms_ssim: list[float], accuracy: list[float], ms_threshold: float,
                        accuracy_threshold: float, r: float | None) -> bytes:
    """The paper's Figure 6: per-class accuracy against MS-SSIM of the samples."""
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    ax.scatter(ms_ssim, accuracy, s=12, alpha=0.7)
    ax.axvline(ms_threshold, color="red", lw=0.8, ls="--", label=f"collapsing at or above {ms_threshold:.2f}")
    ax.axhline(accuracy_threshold, color="grey", lw=0.8, ls=":", label=f"accuracy {accuracy_threshold:.2f}")
    ax.set(xlabel="MS-SSIM of samples", ylabel="accuracy", xlim=(0, 1), ylim=(-0.02, 1.02),
           title=f"Accuracy vs diversity (r = {'n/a' if r is None else f'{r:.2f}'})")
    ax.legend(loc="lower left", fontsize=8)
    return _png(fig)


def ms_ssim_over_training(curves: dict[int, tuple[list[int], list[float]]], collapsing: float) -> bytes:
    """The paper's Figure 5: per-class MS-SSIM of fixed samples during training (collapse rises towards 1); a class
    at or above `collapsing` is collapsing (acgan/collapse.py)."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    alpha = 0.8 if len(curves) <= 20 else 0.15
    for class_id, (steps, values) in curves.items():
        ax.plot(steps, values, lw=1, alpha=alpha, label=str(class_id) if len(curves) <= 10 else None)
    ax.axhline(collapsing, color="red", lw=0.8, ls="--", label=f"collapsing at or above {collapsing:.2f}")
    ax.set(xlabel="training step", ylabel="MS-SSIM of samples", ylim=(0, 1), title="Diversity during training")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _png(fig)


def ms_ssim_by_classes_per_model(runs: list[dict]) -> bytes:
    """The paper's Figure 10: mean MS-SSIM of samples against the number of classes per model, one point per store."""
    runs = sorted(runs, key=lambda r: r["classes_per_model"])
    x = np.array([r["classes_per_model"] for r in runs])
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    ax.errorbar(x, [r["ms_ssim_mean"] for r in runs], yerr=[r["ms_ssim_std"] for r in runs], fmt="o-", capsize=3,
                label="samples")
    ax.plot(x, [r["real_ms_ssim_mean"] for r in runs], "k--", lw=0.8, label="real images")
    ax.set_xscale("log")
    ax.set_xticks(x, [str(v) for v in x])
    ax.set(xlabel="classes per model", ylabel="mean MS-SSIM", ylim=(0, 1), title="Diversity by classes per model")
    ax.legend()
    ax.grid(alpha=0.3)
    return _png(fig)
