"""Differentiable augmentation for D (DiffAugment, Zhao et al. 2020); not in the paper.

D sees every image, real and generated, through the same random transformation, and G's gradient flows back through
it. On a small data set (digits: about 180 images per class) D otherwise learns the real images by heart, and G
answers with a few convincing samples per class: exactly the within-class collapse the paper measures with MS-SSIM.
Augmenting both sides leaves the distribution G must match unchanged, since D never sees an unaugmented image.

The policy is a comma-separated subset of `translation` (shift by up to an eighth of the side, the border filled with
black, -1) and `cutout` (a black square of half the side at a random centre); "" is no augmentation. Policies are
validated where they are set (`acgan.settings.AugmentPolicy`).
"""

from __future__ import annotations

import torch


def diff_augment(x: torch.Tensor, policy: str, generator: torch.Generator) -> torch.Tensor:
    """x: (N, C, H, W) in [-1, 1]; returns a new tensor, differentiable in x. Each image draws its own parameters."""
    ops = policy.split(",") if policy else []
    if "translation" in ops:
        x = translate(x, generator)
    if "cutout" in ops:
        x = cutout(x, generator)
    return x


def translate(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    r = max(1, round(min(h, w) * ratio))
    padded = torch.nn.functional.pad(x, (r, r, r, r), value=-1.0)
    dy, dx = torch.randint(0, 2 * r + 1, (2, n, 1), generator=generator, device=x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def cutout(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    half_h, half_w = max(1, round(h * ratio) // 2), max(1, round(w * ratio) // 2)
    cy = torch.randint(0, h, (n, 1, 1), generator=generator, device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), generator=generator, device=x.device)
    inside = (((torch.arange(h, device=x.device)[None, :, None] - cy).abs() < half_h)
              & ((torch.arange(w, device=x.device)[None, None, :] - cx).abs() < half_w))  # (N, H, W)
    return x.masked_fill(inside[:, None], -1.0)
