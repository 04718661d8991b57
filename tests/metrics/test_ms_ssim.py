"""acgan.metrics.ms_ssim against an independent numpy implementation of PAPER.md's definition."""

import numpy as np
import pytest
import torch

from acgan.metrics import mean_ms_ssim, ms_ssim
from acgan_cli.benchmarks.ms_ssim_reference import ms_ssim_pair


def _pairs(resolution, channels, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (6, resolution, resolution, channels)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 30, a.shape), 0, 255)  # noisy copies: high similarity
    b[2] = rng.integers(0, 256, b[2].shape)  # unrelated: negative cs at some scale -> clamped to 0
    yy, xx = np.mgrid[:resolution, :resolution] / resolution
    a[3] = (128 + 100 * np.sin(8 * xx))[..., None]  # structured pairs: gradients and stripes
    b[3] = (128 + 100 * np.sin(8 * xx + 0.5))[..., None]
    a[4] = (255 * yy)[..., None]
    b[4] = (255 * xx)[..., None]
    b[5] = a[5][::-1]  # flipped
    return a, b


@pytest.mark.parametrize("resolution", [32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_matches_reference(resolution, channels):
    a, b = _pairs(resolution, channels, seed=resolution + channels)
    expected = np.array([ms_ssim_pair(a[i], b[i], 255) for i in range(len(a))])
    got = ms_ssim(torch.from_numpy(a).permute(0, 3, 1, 2), torch.from_numpy(b).permute(0, 3, 1, 2), 255).numpy()
    assert np.abs(got - expected).max() < 1e-4
    assert expected[2] < 0.2 and expected[0] > 0.5  # the pairs span the range


def test_odd_sizes_and_other_data_range():
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, (3, 45, 37, 3))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), -1, 1)
    expected = [ms_ssim_pair(a[i], b[i], 2.0) for i in range(3)]
    got = ms_ssim(torch.from_numpy(a).permute(0, 3, 1, 2), torch.from_numpy(b).permute(0, 3, 1, 2), 2.0)
    assert np.allclose(got.numpy(), expected, atol=1e-4)


def test_identical_images_score_one_and_never_nan():
    x = torch.rand(4, 3, 64, 64) * 255
    assert torch.allclose(ms_ssim(x, x, 255), torch.ones(4), atol=1e-5)
    noise = torch.rand(64, 1, 32, 32) * 255
    scores = ms_ssim(noise, torch.rand(64, 1, 32, 32) * 255, 255)
    assert torch.isfinite(scores).all() and (scores >= 0).all()
    assert ms_ssim(noise[:0], noise[:0], 255).shape == (0,)  # no pairs: no scores


def test_collapsed_class_scores_near_one():
    collapsed = torch.rand(1, 1, 32, 32).repeat(10, 1, 1, 1) * 2 - 1
    diverse = torch.rand(10, 1, 32, 32) * 2 - 1
    assert mean_ms_ssim(collapsed, 50, data_range=2.0) > 0.99
    assert mean_ms_ssim(diverse, 50, data_range=2.0) < 0.2


def test_shape_errors():
    with pytest.raises(ValueError, match="one shape"):
        ms_ssim(torch.zeros(2, 1, 32, 32), torch.zeros(2, 1, 32, 31), 1.0)
    with pytest.raises(ValueError, match="at least 16x16"):
        ms_ssim(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), 1.0)
    with pytest.raises(ValueError, match="at least two images"):
        mean_ms_ssim(torch.zeros(1, 1, 32, 32), 5, 1.0)


def test_libraries_agree_where_the_window_never_shrinks():
    """At 256 px every one of the 5 scales is at least 16 px wide, so no window is capped: there pytorch-msssim
    (same window, 'valid' filtering, clamped terms, same weights) computes the same definition on grey images. (On
    colour images it clamps and weights each channel on its own, where the paper's code pools the channels.)"""
    from pytorch_msssim import ms_ssim as library_ms_ssim

    a, b = _pairs(256, 1, seed=7)
    x, y = torch.from_numpy(a).permute(0, 3, 1, 2).float(), torch.from_numpy(b).permute(0, 3, 1, 2).float()
    ours = ms_ssim(x, y, 255)
    theirs = library_ms_ssim(x, y, data_range=255, size_average=False)
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_batches_score_like_single_pairs():
    """CPU batches run in chunks and the blur in tiles: neither may change a pair's score."""
    x, y = torch.rand(100, 3, 64, 64), torch.rand(100, 3, 64, 64)  # two chunks of 64 pairs at 3x64x64
    y[:50] = (x[:50] + 0.1 * y[:50]).clamp(0, 1)
    batched = ms_ssim(x, y, 1.0)
    single = torch.cat([ms_ssim(x[i:i + 1], y[i:i + 1], 1.0) for i in range(100)])
    assert torch.allclose(batched, single, atol=1e-6)
    assert batched[:50].min() > 0.5 > batched[50:].max()
