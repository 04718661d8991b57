"""The synthetic source: procedurally drawn shapes, any number of classes (up to 1000 distinct looks), each class a
distinct colour, shape, stripe angle and background; for tests and benchmarks at any scale without a data set."""

from __future__ import annotations

import colorsys

import numpy as np

from acgan.data.sources import Source, each_class


def _synthetic_class(c: int, n: int, resolution: int, rng: np.random.Generator) -> np.ndarray:
    """Class c: hue (10) x shape (5) x stripe angle (4) x background level (5) = 1000 distinct looks."""
    hue, shape, angle, level = c % 10, (c // 10) % 5, (c // 50) % 4, (c // 200) % 5
    coords = (np.arange(resolution) + 0.5) / resolution * 2 - 1
    y, x = np.meshgrid(coords, coords, indexing="ij")  # (R, R)
    cx, cy = rng.uniform(-0.25, 0.25, (2, n, 1, 1))
    size = rng.uniform(0.45, 0.7, (n, 1, 1))
    dx, dy = x - cx, y - cy  # (n, R, R)
    r = np.hypot(dx, dy)
    masks = [r < size,
             np.maximum(abs(dx), abs(dy)) < size * 0.8,
             (dy < size * 0.7) & (abs(dx) < (dy + size * 0.7) * 0.6),
             (r < size) & (r > size * 0.55),
             ((abs(dx) < size * 0.3) | (abs(dy) < size * 0.3)) & (np.maximum(abs(dx), abs(dy)) < size)]
    mask = masks[shape][:, None]  # (n, 1, R, R)
    theta = angle * np.pi / 4
    stripes = np.sin(6 * np.pi * (x * np.cos(theta) + y * np.sin(theta)))
    background = 0.15 + 0.15 * level + 0.08 * stripes  # (R, R)
    colour = np.array(colorsys.hsv_to_rgb(hue / 10, 0.85, 0.95))[None, :, None, None]  # (1, 3, 1, 1)
    img = np.where(mask, colour, background[None, None])
    img = img + rng.normal(0, 0.04, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def synthetic_source(num_classes: int, images_per_class: int, resolution: int, seed: int) -> Source:
    def load(c: int) -> np.ndarray:
        return _synthetic_class(c, images_per_class, resolution, np.random.default_rng([seed, c]))

    return Source("synthetic", 3, [f"synthetic-{c:04d}" for c in range(num_classes)], each_class(load))
