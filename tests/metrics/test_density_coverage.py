"""Density and coverage (Naeem et al. 2020) on cases computed by hand."""

import pytest
import torch

from acgan.metrics.density_coverage import compute_density_coverage


def test_density_and_coverage_by_hand():
    # Real radii with k = 1: 0 -> 1, 1 -> 1, 2 -> 1, 3 -> 1, 10 -> 7. Strictly inside (`<`, the prdc package's):
    # 0.5 is in the balls of 0 and 1; 1.5 in those of 1 and 2; 17 lies on 10's boundary, outside.
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    samples = torch.tensor([[0.5], [17.0], [1.5]])
    density, coverage = compute_density_coverage(real, samples, k=1)
    assert density == pytest.approx((2 + 0 + 2) / 3)  # balls holding each sample, / k, mean over the samples
    assert coverage == pytest.approx(3 / 5)  # the balls of 0, 1 and 2 hold a sample; those of 3 and 10 none
    # k = 2: radii 2, 1, 1, 2, 8; 0.5 is in 0's and 1's balls, 1.5 in 0's, 1's, 2's and 3's, 17 in 10's (7 < 8).
    density, coverage = compute_density_coverage(real, samples, k=2)
    assert density == pytest.approx((2 + 1 + 4) / 2 / 3) and coverage == pytest.approx(5 / 5)


def test_narrow_accurate_samples_are_dense_and_cover_little():
    """Samples packed around one real point: every one inside real balls (high density), few real balls covered."""
    grid = torch.stack(torch.meshgrid(torch.arange(10.0), torch.arange(10.0), indexing="ij"), dim=-1).reshape(100, 2)
    narrow = grid[55] + 0.01 * torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    density, coverage = compute_density_coverage(grid, narrow, k=5)
    # An inner grid point's 5th neighbour is at distance sqrt(2) (4 at 1, then diagonals): balls of points within
    # sqrt(2) of 55 hold the samples: 55 itself, its 4 sides and its 4 diagonals (at exactly sqrt(2), minus 0.01-ish
    # noise: inside for some samples only), so density is between 5/5 and 9/5 and coverage 5 to 9 of 100.
    assert 1.0 <= density <= 9 / 5 and 0.05 <= coverage <= 0.09
