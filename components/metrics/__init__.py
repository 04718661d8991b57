"""Metrics of the paper's evaluation; `ms_ssim` takes two (N, C, H, W) batches and returns one score per pair."""

from components.metrics.ms_ssim import mean_ms_ssim, ms_ssim

__all__ = ["ms_ssim", "mean_ms_ssim"]
