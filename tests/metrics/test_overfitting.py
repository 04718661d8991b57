"""Overfitting checks: nearest neighbours find a copy, interpolation's endpoints, fixed noise across classes."""

import torch

from acgan.metrics.overfitting import fixed_noise_across_classes, interpolation, nearest_neighbours
from acgan.model import Generator, ModelConfig, to_uint8


def test_nearest_neighbours_find_the_copied_image():
    torch.manual_seed(0)
    real = torch.randint(0, 256, (30, 1, 32, 32), dtype=torch.uint8)
    copies = real[[7, 21]].clone()
    copies[:, :, :2, :2] = 0  # near-copies, not exact
    for metric in ("l1", "ms_ssim"):
        nearest = nearest_neighbours(copies, real, 3, metric)
        assert nearest.shape == (2, 3) and nearest[:, 0].tolist() == [7, 21]


def test_interpolation_ends_at_its_endpoints_and_fixed_z_spans_the_classes():
    G = Generator(ModelConfig(resolution=32, channels=1, num_classes=3, width=0.0625)).eval()
    z = torch.randn(2, 100)
    path = interpolation(G, 1, z[0], z[1], 5)
    ends = torch.from_numpy(to_uint8(G(z, torch.tensor([1, 1]))))
    assert path.shape == (5, 1, 32, 32) and torch.equal(path[0], ends[0]) and torch.equal(path[-1], ends[1])
    grid = fixed_noise_across_classes(G, z)
    assert grid.shape == (6, 1, 32, 32)
    assert torch.equal(grid[1], torch.from_numpy(to_uint8(G(z[:1], torch.tensor([1]))))[0])
