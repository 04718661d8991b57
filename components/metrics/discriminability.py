"""Discriminability (paper section 4.1): the fraction of samples of class k that a classifier labels k."""

from __future__ import annotations

import torch


def compute_accuracy(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[float, list[float]]:
    """(overall accuracy, per-class accuracy); a class with no images gets NaN, never a made-up number."""
    correct = (predicted == labels).float()
    per_class = [correct[labels == c].mean().item() if (labels == c).any() else float("nan")
                 for c in range(num_classes)]
    return correct.mean().item(), per_class
