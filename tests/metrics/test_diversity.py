"""Diversity: each class's mean MS-SSIM of pairs, its standard error, bad input."""

import pytest
import torch

from acgan.errors import UserError
from acgan.metrics import compute_class_ms_ssim


def test_class_ms_ssim_bad_input():
    images = torch.randint(0, 256, (5, 1, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 0, 0, 1, 2])
    with pytest.raises(UserError, match="class 1 has 1 image"):
        compute_class_ms_ssim(images, labels, [0, 1], pairs=2)
    with pytest.raises(UserError, match="--pairs 4 is more than the 3 distinct pairs"):
        compute_class_ms_ssim(images, labels, [0], pairs=4)


def test_class_ms_ssim_standard_error_predicts_the_spread_of_estimates():
    from acgan.data.sources import digits_source

    source = digits_source(32)
    ones, threes = (torch.from_numpy(a) for a in source.load_classes([1, 3]))
    images, labels = torch.cat([ones, threes]), torch.tensor([1] * len(ones) + [3] * len(threes))
    estimates = torch.tensor([compute_class_ms_ssim(images, labels, [1, 3], pairs=40, seed=seed)[0]
                              for seed in range(0, 60, 2)])  # (30 draws, 2 classes); seed + c never repeats
    means, errors = compute_class_ms_ssim(images, labels, [1, 3], pairs=40, seed=1000)
    for k in range(2):
        assert 0.5 < estimates[:, k].std().item() / errors[k] < 1.6  # the error is the spread of a 40-pair estimate
    assert abs(means[0] - estimates[:, 0].mean().item()) < 3 * errors[0]
    identical = torch.zeros(4, 1, 32, 32, dtype=torch.uint8) + 128
    same_means, same_errors = compute_class_ms_ssim(identical, torch.zeros(4, dtype=torch.long), [0], pairs=5)
    assert same_means == [pytest.approx(1.0, abs=1e-4)] and same_errors == [pytest.approx(0.0, abs=1e-6)]
