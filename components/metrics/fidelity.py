"""Inception Score and FID through torchmetrics, on the evaluation's classifier as the feature network.

The paper reports the Inception Score (CIFAR-10: 8.25); both figures depend on the network that computes them, so the
results always name it: our trained classifier (logits for IS, its pooled features for FID) unless the user supplied
Inception-v3 weights. Scores from different feature networks are not comparable.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore

from components.metrics.classifier import UInt8Head


@torch.no_grad()
def inception_score(model: nn.Module, samples: torch.Tensor, splits: int = 10, seed: int = 0,
                    batch_size: int = 500) -> tuple[float, float]:
    """(mean, std) over `splits` equal parts of the uint8 samples (N, C, H, W)."""
    metric = InceptionScore(feature=UInt8Head(model, "logits"), splits=splits)
    device = next(model.parameters()).device
    metric = metric.to(device)
    for i in range(0, len(samples), batch_size):
        metric.update(samples[i:i + batch_size].to(device))
    with torch.random.fork_rng(devices=[]):  # torchmetrics shuffles the parts with the global generator
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


@torch.no_grad()
def frechet_distance(model: nn.Module, real: torch.Tensor, samples: torch.Tensor, batch_size: int = 500) -> float:
    """FID between uint8 real images and samples (N, C, H, W) in the feature space of `model`."""
    metric = FrechetInceptionDistance(feature=UInt8Head(model, "features"), input_img_size=tuple(real.shape[1:]))
    device = next(model.parameters()).device
    metric = metric.to(device)
    for images, is_real in ((real, True), (samples, False)):
        for i in range(0, len(images), batch_size):
            metric.update(images[i:i + batch_size].to(device), real=is_real)
    return float(metric.compute())
