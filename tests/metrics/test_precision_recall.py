"""Improved precision and recall (Kynkäänniemi et al. 2019) on cases computed by hand."""

import pytest
import torch

from acgan.metrics.precision_recall import compute_precision_recall, kth_neighbour_distance


def test_the_k_nearest_neighbour_manifolds_by_hand():
    # 1-d features. Real radii with k = 1 (the nearest other point): 0 -> 1, 1 -> 1, 2 -> 1, 3 -> 1, 10 -> 7.
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    assert kth_neighbour_distance(real, 1).tolist() == [1.0, 1.0, 1.0, 1.0, 7.0]
    # 0.5 is in 0's ball; 17 lies on 10's boundary (distance 7 = radius: inside, as Kynkäänniemi et al. count it);
    # 20 is in no ball. Sample radii with k = 1: 0.5 -> 16.5, 17 -> 3, 20 -> 3, so every real point is within 16.5
    # of 0.5: recall 1.
    samples = torch.tensor([[0.5], [17.0], [20.0]])
    assert compute_precision_recall(real, samples, k=1) == (pytest.approx(2 / 3), 1.0)
    # k = 2: real radii 2, 1, 1, 2, 8 (10's second neighbour is 2); 17 is 7 from 10: inside; still 2 of 3.
    assert compute_precision_recall(real, samples, k=2)[0] == pytest.approx(2 / 3)


def test_collapse_onto_one_real_image_is_precise_with_no_recall():
    """Every sample a copy of one real point (a generator collapsed onto one training image): precision 1, and the
    samples' manifold is that point alone (their neighbour distances are 0), so recall is 1 / N."""
    grid = torch.stack(torch.meshgrid(torch.arange(10.0), torch.arange(10.0), indexing="ij"), dim=-1).reshape(100, 2)
    samples = grid[37].repeat(20, 1)
    assert compute_precision_recall(grid, samples) == (1.0, pytest.approx(1 / 100))
    # The same distribution as the real images: everything inside both manifolds.
    assert compute_precision_recall(grid, grid.clone()) == (1.0, 1.0)
