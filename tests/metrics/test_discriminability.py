"""Discriminability: accuracy per class by hand, the resolution study's sizes and resizing, the headline fraction."""

import math

import pytest
import torch

from acgan.metrics import compute_accuracy
from acgan.metrics.discriminability import fractions_more_discriminable, resize_down_and_up, study_resolutions


def test_accuracy_by_hand():
    predicted = torch.tensor([0, 0, 1, 1, 2, 0])
    labels = torch.tensor([0, 1, 1, 1, 2, 2])
    overall, per_class = compute_accuracy(predicted, labels, 4)
    assert overall == pytest.approx(4 / 6)
    assert per_class[:3] == pytest.approx([1.0, 2 / 3, 0.5]) and math.isnan(per_class[3])


def test_headline_compares_full_resolution_with_a_quarter_of_it():
    from acgan.metrics.discriminability import fractions_more_discriminable

    # Four classes at 128 px: against 32 px (the paper's pair) 3 of 4 lose accuracy; against 8 px every one does.
    table = {128: [0.5, 0.4, 0.3, 0.2], 64: [0.5, 0.5, 0.2, 0.1], 32: [0.4, 0.3, 0.2, 0.2], 16: [0.1, 0.1, 0.1, 0.1],
             8: [0.0, 0.0, 0.0, 0.0]}
    fractions = fractions_more_discriminable(table)
    assert fractions == {64: 0.5, 32: 0.75, 16: 1.0, 8: 1.0}
    assert fractions_more_discriminable({32: [0.5, float("nan")], 16: [0.6, 0.1], 8: [0.1, 0.1]}) == {16: 0.0, 8: 0.5}


def test_resolution_study_sizes_and_resizing():
    from acgan.metrics.discriminability import (
        resize_down_and_up,
        study_resolutions,
    )

    assert study_resolutions(128) == [128, 64, 32, 16, 8]
    assert study_resolutions(32) == [32, 16, 8]
    stripes = torch.zeros(1, 1, 32, 32, dtype=torch.uint8)
    stripes[..., ::2] = 255  # 1-pixel stripes vanish at 16 px and below
    assert torch.equal(resize_down_and_up(stripes, 32), stripes)
    blurred = resize_down_and_up(stripes, 16)
    assert blurred.shape == stripes.shape and blurred.dtype == torch.uint8
    assert (blurred[..., 2:-2].float() - 127.5).abs().max() < 10  # the stripes are gone (edges aside)
    flat = torch.full((1, 3, 32, 32), 77, dtype=torch.uint8)
    assert torch.equal(resize_down_and_up(flat, 8), flat)  # no information lost, none invented
