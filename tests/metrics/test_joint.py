"""The joint analysis: Pearson's correlation and the low/high fractions, by hand."""

import pytest

from acgan.metrics.joint import joint_fractions, pearson


def test_pearson_by_hand():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert pearson([1, 1, 1], [1, 2, 3]) is None


def test_joint_fractions_by_hand():
    accuracy = [0.0, 0.005, 0.5, 0.9, 0.0, 0.8]
    ms_ssim = [0.3, 0.4, 0.25, 0.1, 0.1, 0.2]
    out = joint_fractions(accuracy, ms_ssim, ms_ssim_threshold=0.25, accuracy_threshold=0.01)
    assert out["classes_low_diversity"] == 3  # 0.3, 0.4 and 0.25 (at the threshold counts as low)
    assert out["fraction_low_diversity_with_low_accuracy"] == pytest.approx(2 / 3)
    assert out["fraction_high_diversity_with_high_accuracy"] == pytest.approx(2 / 3)
    none_low = joint_fractions([0.5], [0.1], 0.25, 0.01)
    assert none_low["fraction_low_diversity_with_low_accuracy"] is None
    assert none_low["fraction_high_diversity_with_high_accuracy"] == 1.0
