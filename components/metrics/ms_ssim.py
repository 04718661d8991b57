"""Multi-scale SSIM as the AC-GAN paper computed it (Wang, Simoncelli & Bovik 2003; the classic numpy code).

pytorch-msssim and torchmetrics keep one window size at every scale, so they refuse or disagree on 32 and 64 pixel
images (see PAPER.md). This is the classic definition, batched over pairs:
- Gaussian window 11x11, sigma 1.5, capped to min(11, H, W) at each scale with sigma scaled in proportion;
  'valid' filtering; C1 = (0.01 L)^2, C2 = (0.03 L)^2.
- 5 scales weighted (0.0448, 0.2856, 0.3001, 0.2363, 0.1333); a 2x2 box average keeping every second pixel between them.
- Channels pooled into the means (one cs and one ssim per pair and scale); each term clamped at 0 before its exponent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03


def gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """1-d factor of the classic fspecial window (even sizes are centred between pixels), normalised to sum 1."""
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def band_matrix(length: int, g: torch.Tensor) -> torch.Tensor:
    """(length, length - size + 1): `v @ band` is the 'valid' correlation of each row v with the window g."""
    size = g.shape[0]
    out = length - size + 1
    band = torch.zeros(length, out, dtype=g.dtype, device=g.device)
    cols = torch.arange(out, device=g.device)
    for k in range(size):
        band[cols + k, cols] = g[k]
    return band


def _ssim_terms(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ssim and cs per pair at one scale, for images already scaled to a dynamic range of 1."""
    n, c, h, w = x.shape
    size = min(WINDOW, h, w)
    g = gaussian_window(size, SIGMA * size / WINDOW, x.dtype, x.device)
    maps = torch.empty(n, 5, c, h, w, dtype=x.dtype, device=x.device)
    maps[:, 0], maps[:, 1] = x, y
    torch.mul(x, x, out=maps[:, 2])
    torch.mul(y, y, out=maps[:, 3])
    torch.mul(x, y, out=maps[:, 4])
    # The separable 'valid' blur as two matrix products with banded matrices: far faster than a depthwise
    # convolution on CPUs, and as fast on GPUs.
    maps = band_matrix(h, g).T @ (maps.view(n, 5 * c, h, w) @ band_matrix(w, g))  # (N, 5C, H', W')
    mu_x, mu_y, xx, yy, xy = maps.split(c, dim=1)
    # The memory-bound part, in place: cs = v1 / v2, ssim = cs * (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1).
    c1, c2 = K1**2, K2**2
    mu_xy = mu_x * mu_y
    v1 = xy.sub_(mu_xy).mul_(2).add_(c2)  # 2 cov + C2
    mu_x.square_()
    mu_y.square_()
    v2 = xx.add_(yy).sub_(mu_x).sub_(mu_y).add_(c2)  # var_x + var_y + C2
    cs_map = v1.div_(v2)
    luminance = mu_xy.mul_(2).add_(c1).div_(mu_x.add_(mu_y).add_(c1))
    cs = cs_map.mean(dim=(1, 2, 3))
    return luminance.mul_(cs_map).mean(dim=(1, 2, 3)), cs


def _downsample(x: torch.Tensor) -> torch.Tensor:
    """2x2 box average, keeping every second pixel; an odd edge repeats its last row/column (scipy 'reflect')."""
    pad_w, pad_h = x.shape[-1] % 2, x.shape[-2] % 2
    if pad_w or pad_h:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return F.avg_pool2d(x, 2)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One MS-SSIM score per pair (x[i], y[i]); x and y are (N, C, H, W) on any device, any real dtype.

    `data_range` is L: 255 for uint8 images, 2 for images in [-1, 1]. Identical images score 1; images whose
    cs or ssim goes negative at some scale score 0 there (clamped), never NaN.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ms_ssim needs two (N, C, H, W) batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < 2 ** (len(WEIGHTS) - 1):
        raise ValueError(f"ms_ssim needs images of at least 16x16 for 5 scales, got {tuple(x.shape[-2:])}")
    # Scaling to a range of 1 keeps float32 accurate (variances stay small next to C2) and leaves SSIM unchanged.
    x = x.to(dtype) / data_range
    y = y.to(dtype) / data_range
    score = torch.ones(x.shape[0], dtype=dtype, device=x.device)
    for level, weight in enumerate(WEIGHTS):
        ssim, cs = _ssim_terms(x, y)
        last = level == len(WEIGHTS) - 1
        score = score * (ssim if last else cs).clamp(min=0) ** weight
        if not last:
            x, y = _downsample(x), _downsample(y)
    return score


def mean_ms_ssim(images: torch.Tensor, pairs: int, data_range: float, generator: torch.Generator | None = None,
                 batch_size: int = 256) -> float:
    """Mean MS-SSIM over `pairs` random pairs of distinct images of one class (the paper's diversity figure)."""
    n = images.shape[0]
    if n < 2:
        raise ValueError(f"mean MS-SSIM needs at least two images, got {n}")
    first = torch.randint(n, (pairs,), generator=generator)
    # A second index drawn from the n-1 others keeps every pair distinct without rejection sampling.
    second = (first + 1 + torch.randint(n - 1, (pairs,), generator=generator)) % n
    first, second = first.to(images.device), second.to(images.device)
    scores = [ms_ssim(images[first[i:i + batch_size]], images[second[i:i + batch_size]], data_range)
              for i in range(0, pairs, batch_size)]
    return torch.cat(scores).mean().item()
