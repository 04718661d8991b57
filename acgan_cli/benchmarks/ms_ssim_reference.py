"""A straightforward numpy/scipy implementation of PAPER.md's MS-SSIM, one pair at a time (the classic
tensorflow/models msssim.py, with the per-scale clamp at 0), independent of acgan.metrics.ms_ssim: the yardstick
its tests check against and its benchmark is measured against. Not used by the evaluation."""

import numpy as np
from scipy import signal
from scipy.ndimage import convolve


def _fspecial_gauss(size, sigma):
    radius = size // 2
    offset, start, stop = 0.0, -radius, radius + 1
    if size % 2 == 0:
        offset, stop = 0.5, stop - 1
    x, y = np.mgrid[offset + start:stop, offset + start:stop]
    g = np.exp(-((x**2 + y**2) / (2.0 * sigma**2)))
    return g / g.sum()


def _ssim_for_scale(img1, img2, max_val):
    _, height, width, _ = img1.shape
    size = min(11, height, width)
    sigma = size * 1.5 / 11
    window = np.reshape(_fspecial_gauss(size, sigma), (1, size, size, 1))
    mu1 = signal.fftconvolve(img1, window, mode="valid")
    mu2 = signal.fftconvolve(img2, window, mode="valid")
    sigma11 = signal.fftconvolve(img1 * img1, window, mode="valid") - mu1 * mu1
    sigma22 = signal.fftconvolve(img2 * img2, window, mode="valid") - mu2 * mu2
    sigma12 = signal.fftconvolve(img1 * img2, window, mode="valid") - mu1 * mu2
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    v1, v2 = 2.0 * sigma12 + c2, sigma11 + sigma22 + c2
    ssim = np.mean(((2.0 * mu1 * mu2 + c1) * v1) / ((mu1 * mu1 + mu2 * mu2 + c1) * v2))
    return ssim, np.mean(v1 / v2)


def ms_ssim_pair(img1, img2, max_val):
    """img1, img2: (H, W, C) arrays. Returns one float."""
    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    im1, im2 = img1[None].astype(np.float64), img2[None].astype(np.float64)
    box = np.ones((1, 2, 2, 1)) / 4.0
    mssim, mcs = [], []
    for _ in range(len(weights)):
        ssim, cs = _ssim_for_scale(im1, im2, max_val)
        mssim.append(max(ssim, 0.0))
        mcs.append(max(cs, 0.0))
        im1, im2 = [convolve(im, box, mode="reflect")[:, ::2, ::2, :] for im in (im1, im2)]
    return float(np.prod(np.array(mcs[:-1]) ** weights[:-1]) * mssim[-1] ** weights[-1])
