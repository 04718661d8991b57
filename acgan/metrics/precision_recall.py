"""Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019) in a feature space.

Each set's manifold is the union of balls around its points, each ball reaching the point's k-th nearest neighbour
in its own set (k = 3, theirs; the point itself is not its own neighbour). Precision is the fraction of samples inside
the real images' manifold (how realistic they are); recall the fraction of real images inside the samples' manifold
(how much of the real variety the samples cover). A point on a ball's boundary is inside (`<=`), as in their code and
stylegan2-ada-pytorch's `metrics/precision_recall.py`.
"""

from __future__ import annotations

import torch


def kth_neighbour_distance(features: torch.Tensor, k: int) -> torch.Tensor:
    """(N,): each point's distance to its k-th nearest other point of the same set (at most the farthest one)."""
    distances = torch.cdist(features.double(), features.double())  # (N, N), zero on the diagonal
    return distances.kthvalue(min(k + 1, len(features)), dim=1).values  # the point itself is the smallest


def inside_manifold(points: torch.Tensor, manifold: torch.Tensor, k: int) -> torch.Tensor:
    """(M,) bool: whether each point lies within some manifold point's ball of its k-th neighbour distance."""
    radii = kth_neighbour_distance(manifold, k)
    return (torch.cdist(points.double(), manifold.double()) <= radii[None, :]).any(dim=1)


def compute_precision_recall(real: torch.Tensor, samples: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of `samples` (N, F) against `real` (M, F) features."""
    precision = inside_manifold(samples, real, k).double().mean().item()
    recall = inside_manifold(real, samples, k).double().mean().item()
    return precision, recall
