"""Diversity (paper section 4.2): per-class mean MS-SSIM over random pairs of distinct images of the class."""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from components.errors import UserError
from components.metrics.ms_ssim import mean_ms_ssim


def compute_class_ms_ssim(images: torch.Tensor, labels: torch.Tensor, classes: list[int], pairs: int,
                          seed: int = 0) -> list[float]:
    """Mean MS-SSIM of each class in `classes` over `pairs` random pairs of its uint8 images (data range 255)."""
    out = []
    for c in tqdm(classes, desc="MS-SSIM", unit="class", disable=not sys.stderr.isatty() or len(classes) < 50):
        members = images[labels == c]
        if len(members) < 2:
            raise UserError(f"class {c} has {len(members)} image(s): MS-SSIM needs at least two")
        if pairs > len(members) * (len(members) - 1) // 2:
            raise UserError(f"--pairs {pairs} is more than the {len(members) * (len(members) - 1) // 2} distinct pairs "
                            f"of class {c}'s {len(members)} images: lower --pairs")
        out.append(mean_ms_ssim(members.float(), pairs, data_range=255.0,
                                generator=torch.Generator().manual_seed(seed + c)))
    return out
