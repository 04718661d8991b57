"""Multi-scale SSIM as the AC-GAN paper computed it (Wang, Simoncelli & Bovik 2003; the classic numpy code).

pytorch-msssim and torchmetrics keep one window size at every scale, so they refuse or disagree on 32 and 64 pixel
images (see PAPER.md). This is the classic definition, batched over pairs:
- Gaussian window 11x11, sigma 1.5, capped to min(11, H, W) at each scale with sigma scaled in proportion;
  'valid' filtering; C1 = (0.01 L)^2, C2 = (0.03 L)^2.
- 5 scales weighted (0.0448, 0.2856, 0.3001, 0.2363, 0.1333); a 2x2 box average keeping every second pixel between them.
- Channels pooled into the means (one cs and one ssim per pair and scale); each term clamped at 0 before its exponent.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
TILES = 2  # the blurred maps are computed in TILES x TILES tiles (see blur)
# Pixel values per pass on a CPU: 16 pairs of 3x128x128 images, whose maps stay in cache (twice as fast as 256
# pairs at once). Smaller images take more pairs per pass: 768 of 1x32x32 run 5x faster than 16 would.
CPU_CHUNK_VALUES = 16 * 3 * 128 * 128


def gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """1-d factor of the classic fspecial window (even sizes are centred between pixels), normalised to sum 1."""
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


@functools.lru_cache(maxsize=64)
def band_matrix(length: int, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(length, length - size + 1): `v @ band` is the 'valid' correlation of each row v with the window of `size`."""
    g = gaussian_window(size, SIGMA * size / WINDOW, dtype, device)
    out = length - size + 1
    band = torch.zeros(length, out, dtype=dtype, device=device)
    cols = torch.arange(out, device=device)
    for k in range(size):
        band[cols + k, cols] = g[k]
    return band


def _tiling(length: int, size: int) -> tuple[int, int]:
    """(number of tiles, outputs per tile) along an axis: TILES equal tiles where they divide the output."""
    out = length - size + 1
    tiles = TILES if out % TILES == 0 else 1
    return tiles, out // tiles


def blur(maps: torch.Tensor, size: int) -> torch.Tensor:
    """'Valid' separable Gaussian blur of (B, H, W) maps, returned as (tiles, B, pixels per tile), tiles in any order.

    Each axis is two matrix products with banded matrices, far faster than a depthwise convolution on CPUs and as fast
    on GPUs. A product per output tile only spans the tile plus the window, so 2 tiles per axis halve the work.
    """
    b, h, w = maps.shape
    tiles_w, step_w = _tiling(w, size)
    tiles_h, step_h = _tiling(h, size)
    band_w = band_matrix(step_w + size - 1, size, maps.dtype, maps.device)
    band_h = band_matrix(step_h + size - 1, size, maps.dtype, maps.device).T
    rows = maps.view(b * h, w)
    across = torch.empty(tiles_w, b * h, step_w, dtype=maps.dtype, device=maps.device)
    for j in range(tiles_w):
        torch.mm(rows[:, j * step_w:(j + 1) * step_w + size - 1], band_w, out=across[j])
    across = across.view(tiles_w * b, h, step_w)
    out = torch.empty(tiles_h, tiles_w * b, step_h, step_w, dtype=maps.dtype, device=maps.device)
    for i in range(tiles_h):
        torch.matmul(band_h, across[:, i * step_h:(i + 1) * step_h + size - 1], out=out[i])
    return out.view(tiles_h * tiles_w, b, step_h * step_w)


def _ssim_terms(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ssim and cs per pair at one scale, for images already scaled to a dynamic range of 1."""
    n, c, h, w = x.shape
    c1, c2 = K1**2, K2**2
    # Four maps to blur: x, y, x^2 + y^2 + C1 + C2 and 2xy + C2 (the window sums to 1: constants pass through).
    maps = torch.empty(4, n, c, h, w, dtype=x.dtype, device=x.device)
    maps[0], maps[1] = x, y
    torch.addcmul(torch.tensor(c1 + c2, dtype=x.dtype, device=x.device), x, x, out=maps[2]).addcmul_(y, y)
    torch.addcmul(torch.tensor(c2, dtype=x.dtype, device=x.device), x, y, value=2, out=maps[3])
    blurred = blur(maps.view(4 * n * c, h, w), min(WINDOW, h, w))
    mu_x, mu_y, sq, xy = blurred.view(blurred.shape[0], 4, n, -1).unbind(1)  # each (tiles, N, C * pixels)
    # The memory-bound part, in place: cs = v1 / v2, ssim = cs * (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1).
    luminance = torch.addcmul(torch.tensor(c1, dtype=x.dtype, device=x.device), mu_x, mu_y, value=2)
    v1 = xy.addcmul_(mu_x, mu_y, value=-2)  # 2 cov + C2
    den = mu_x.mul_(mu_x).addcmul_(mu_y, mu_y).add_(c1)
    v2 = sq.sub_(den)  # var_x + var_y + C2
    cs_map = v1.div_(v2)
    count = cs_map.shape[0] * cs_map.shape[2]
    cs = cs_map.sum(dim=(0, 2)) / count
    return luminance.div_(den).mul_(cs_map).sum(dim=(0, 2)) / count, cs


def _downsample(x: torch.Tensor) -> torch.Tensor:
    """2x2 box average, keeping every second pixel; an odd edge repeats its last row/column (scipy 'reflect')."""
    pad_w, pad_h = x.shape[-1] % 2, x.shape[-2] % 2
    if pad_w or pad_h:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    rows = x[..., 0::2, :] + x[..., 1::2, :]
    return (rows[..., 0::2] + rows[..., 1::2]).mul_(0.25)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One MS-SSIM score per pair (x[i], y[i]); x and y are (N, C, H, W) on any device, any real dtype.

    `data_range` is L: 255 for uint8 images, 2 for images in [-1, 1]. Identical images score 1; images whose
    cs or ssim goes negative at some scale score 0 there (clamped), never NaN.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ms_ssim needs two (N, C, H, W) batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < 2 ** (len(WEIGHTS) - 1):
        raise ValueError(f"ms_ssim needs images of at least 16x16 for 5 scales, got {tuple(x.shape[-2:])}")
    if x.shape[0] == 0:  # no pairs, no scores
        return torch.empty(0, dtype=dtype, device=x.device)
    chunk = max(1, CPU_CHUNK_VALUES // math.prod(x.shape[1:]))
    if x.device.type == "cpu" and x.shape[0] > chunk:
        return torch.cat([_ms_ssim(x[i:i + chunk], y[i:i + chunk], data_range, dtype)
                          for i in range(0, x.shape[0], chunk)])
    return _ms_ssim(x, y, data_range, dtype)


def _ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float, dtype: torch.dtype) -> torch.Tensor:
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


def pair_ms_ssim(images: torch.Tensor, pairs: int, data_range: float, generator: torch.Generator | None = None,
                 batch_size: int = 256) -> torch.Tensor:
    """MS-SSIM of `pairs` random pairs of distinct images of one class: one score per pair, shape (pairs,)."""
    n = images.shape[0]
    if n < 2:
        raise ValueError(f"mean MS-SSIM needs at least two images, got {n}")
    first = torch.randint(n, (pairs,), generator=generator)
    # A second index drawn from the n-1 others keeps every pair distinct without rejection sampling.
    second = (first + 1 + torch.randint(n - 1, (pairs,), generator=generator)) % n
    first, second = first.to(images.device), second.to(images.device)
    return torch.cat([ms_ssim(images[first[i:i + batch_size]], images[second[i:i + batch_size]], data_range)
                      for i in range(0, pairs, batch_size)])


def mean_ms_ssim(images: torch.Tensor, pairs: int, data_range: float, generator: torch.Generator | None = None,
                 batch_size: int = 256) -> float:
    """Mean MS-SSIM over `pairs` random pairs of distinct images of one class (the paper's diversity figure)."""
    return pair_ms_ssim(images, pairs, data_range, generator, batch_size).mean().item()
