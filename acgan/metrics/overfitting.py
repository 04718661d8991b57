"""Overfitting checks (paper section 4.4): does G copy its training images, and does its latent space interpolate?

- Nearest training neighbours of samples, by L1 distance in pixel space (the paper's) and by MS-SSIM (the reviewers'
  suggestion), searched among the real images of the sample's own class.
- Latent interpolation: images along the straight line between two noise vectors; a memorising G jumps between
  training images instead of morphing smoothly.
- One fixed `z` across every class of a split: the global structure (pose, stroke, background) should stay.
"""

from __future__ import annotations

from typing import Literal

import torch

from acgan.metrics.ms_ssim import ms_ssim
from acgan.model import Generator, to_uint8


@torch.no_grad()
def nearest_neighbours(samples: torch.Tensor, real: torch.Tensor, k: int, metric: Literal["l1", "ms_ssim"],
                       batch_size: int = 1024) -> torch.Tensor:
    """Indices (n, k) into `real` of each uint8 sample's k nearest real images, nearest first."""
    k = min(k, len(real))
    if metric == "l1":
        distance = torch.cdist(samples.flatten(1).float(), real.flatten(1).float(), p=1)
    else:
        rows = []
        for s in samples:
            scores = torch.cat([ms_ssim(s.expand_as(real[i:i + batch_size]), real[i:i + batch_size], data_range=255.0)
                                for i in range(0, len(real), batch_size)])
            rows.append(1.0 - scores)  # most similar = nearest
        distance = torch.stack(rows)
    return distance.topk(k, dim=1, largest=False).indices


@torch.no_grad()
def interpolation(G: Generator, local_index: int, z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """uint8 (steps, C, H, W): G's images of one class along the line from z0 to z1."""
    t = torch.linspace(0, 1, steps, device=z0.device).unsqueeze(1)
    z = (1 - t) * z0 + t * z1
    return torch.from_numpy(to_uint8(G(z, torch.full((steps,), local_index, dtype=torch.long, device=z0.device))))


@torch.no_grad()
def fixed_noise_across_classes(G: Generator, z: torch.Tensor) -> torch.Tensor:
    """uint8 (len(z) * K, C, H, W): row r holds every class of the split drawn with noise z[r]."""
    K = G.cfg.num_classes
    labels = torch.arange(K, device=z.device).repeat(len(z))
    return torch.from_numpy(to_uint8(G(z.repeat_interleave(K, dim=0), labels)))
