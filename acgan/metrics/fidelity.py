"""Inception Score and FID through torchmetrics, on the evaluation's classifier as the feature network.

The paper reports the Inception Score (CIFAR-10: 8.25); both figures depend on the network that computes them, so the
results always name it: our trained classifier (logits for IS, its pooled features for FID) unless the user supplied
Inception-v3 weights. Scores from different feature networks are not comparable. The evaluation classifies each image
set once (`classifier.classify`) and hands the outputs here, so torchmetrics' feature network is the identity.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore


class _Computed(nn.Identity):
    """torchmetrics' feature-network slot for features computed beforehand; FID reads their width from it."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features


@torch.no_grad()
def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """(mean, std) over `splits` equal parts of the samples' classifier logits (N, K)."""
    with warnings.catch_warnings():  # it keeps every logit, as the caller already does
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = InceptionScore(feature=_Computed(logits.shape[1]), splits=splits)
    metric.update(logits)
    with torch.random.fork_rng(devices=[]):  # torchmetrics shuffles the parts with the global generator
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def frechet_accumulator(num_features: int) -> FrechetInceptionDistance:
    """FID over features (N, F) given part by part (`update(features, real=...)`, then `compute()`): it keeps running
    sums of each side's features and their products, so its memory does not grow with the number of images."""
    return FrechetInceptionDistance(feature=_Computed(num_features))
