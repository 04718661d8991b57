"""The paper's evaluation metrics, one file each; `ms_ssim` takes two (N, C, H, W) batches and returns one score per
pair."""

from acgan.metrics.discriminability import compute_accuracy
from acgan.metrics.diversity import compute_class_ms_ssim
from acgan.metrics.ms_ssim import mean_ms_ssim, ms_ssim, pair_ms_ssim

__all__ = ["compute_accuracy", "compute_class_ms_ssim", "mean_ms_ssim", "ms_ssim", "pair_ms_ssim"]
