"""Diversity (paper section 4.2): per-class mean MS-SSIM over random pairs of distinct images of the class.

Each mean comes with its standard error over the pairs. Single pairs vary a lot (a per-pair standard deviation of
0.2-0.35 on digits), so the paper's 100 pairs leave an error of about 0.03: as large as the gap between a sample class
and its real images that the comparison is meant to resolve."""

from __future__ import annotations

import math
import sys

import torch
from tqdm import tqdm

from acgan.errors import UserError
from acgan.metrics.ms_ssim import pair_ms_ssim


def compute_class_ms_ssim(images: torch.Tensor, labels: torch.Tensor, classes: list[int], pairs: int,
                          seed: int = 0) -> tuple[list[float], list[float]]:
    """(mean, standard error) of the MS-SSIM of each class in `classes` over `pairs` random pairs of its uint8 images
    (data range 255), as two lists in the order of `classes`."""
    means, errors = [], []
    for c in tqdm(classes, desc="MS-SSIM", unit="class", disable=not sys.stderr.isatty() or len(classes) < 50):
        members = images[labels == c]
        if len(members) < 2:
            raise UserError(f"class {c} has {len(members)} image(s): MS-SSIM needs at least two")
        if pairs > len(members) * (len(members) - 1) // 2:
            raise UserError(f"--pairs {pairs} is more than the {len(members) * (len(members) - 1) // 2} distinct pairs "
                            f"of class {c}'s {len(members)} images: lower --pairs")
        scores = pair_ms_ssim(members.float(), pairs, data_range=255.0,
                              generator=torch.Generator().manual_seed(seed + c))
        means.append(scores.mean().item())
        errors.append(scores.std().item() / math.sqrt(pairs) if pairs > 1 else math.nan)
    return means, errors
