"""Density and coverage (Naeem et al., ICML 2020) in a feature space: precision and recall made robust to outliers.

Both use only the real images' balls, each reaching its point's k-th nearest real neighbour (k = 5, theirs). Density
counts, per sample, the real balls containing it, divided by k and averaged over the samples: 1 on average where the
samples are distributed as the real images, above 1 where they crowd into dense real regions. Coverage is the fraction
of real images whose ball holds at least one sample: a class whose samples are accurate but narrow covers little.
A point on a boundary is outside (`<`), as in the authors' prdc package (`prdc/prdc.py`, `compute_prdc`).
"""

from __future__ import annotations

import torch

from acgan.metrics.precision_recall import kth_neighbour_distance


def compute_density_coverage(real: torch.Tensor, samples: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """(density, coverage) of `samples` (N, F) against `real` (M, F) features."""
    radii = kth_neighbour_distance(real, k)  # (M,)
    within = torch.cdist(real.double(), samples.double()) < radii[:, None]  # (M, N): sample n in real ball m
    density = (within.sum(dim=0).double() / k).mean().item()
    coverage = within.any(dim=1).double().mean().item()
    return density, coverage
