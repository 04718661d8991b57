"""Intra-class FID: each class's Fréchet distance, computed by hand."""

import pytest
import torch

from acgan.metrics.intra_fid import compute_class_fid, compute_intra_class_fid


def test_a_class_fid_is_the_frechet_distance_by_hand():
    # Real: the corners of a 2 x 2 square: mean (1, 1), covariance 4/3 I (n - 1 in the denominator). Samples: the
    # same shape twice as large, at (5, 5): covariance 16/3 I. FID = |(4, 4)|^2 + 2 (4/3 + 16/3 - 2 sqrt(64/9)) = 32 +
    # 8/3.
    real = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    samples = real * 2 + 3
    assert compute_class_fid(real, samples) == pytest.approx(32 + 8 / 3, rel=1e-4)
    assert compute_class_fid(real, real.clone()) == pytest.approx(0.0, abs=1e-4)


def test_intra_class_fid_is_per_class_in_the_order_given():
    real = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]] * 2)
    real_labels = torch.tensor([3] * 4 + [1] * 4)
    samples = torch.cat([real[:4], real[:4] * 2 + 3])  # class 3 as its real images, class 1 moved and spread
    sample_labels = torch.tensor([3] * 4 + [1] * 4)
    assert compute_intra_class_fid(real, real_labels, samples, sample_labels, [1, 3]) == [
        pytest.approx(32 + 8 / 3, rel=1e-4), pytest.approx(0.0, abs=1e-4)]
