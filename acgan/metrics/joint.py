"""The joint analysis (paper section 4.3): are the diverse classes also the discriminable ones?

Paper: per-class accuracy and MS-SSIM correlate at r = -0.16; 74% of classes with MS-SSIM >= 0.25 (the least diverse
real class) have accuracy <= 1%, and 78% of classes with MS-SSIM < 0.25 have accuracy > 1%.
"""

from __future__ import annotations

import numpy as np


def pearson(x: list[float], y: list[float]) -> float | None:
    """Pearson r, or None where it is undefined (a constant series)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def joint_fractions(accuracy: list[float], ms_ssim: list[float], ms_ssim_threshold: float,
                    accuracy_threshold: float) -> dict[str, float | int | None]:
    """The paper's two conditional fractions; None where the condition selects no class."""
    acc, ms = np.asarray(accuracy, dtype=float), np.asarray(ms_ssim, dtype=float)
    low = ms >= ms_ssim_threshold
    return {
        "classes_low_diversity": int(low.sum()),
        "fraction_low_diversity_with_low_accuracy": float(np.mean(acc[low] <= accuracy_threshold)) if low.any() else None,
        "fraction_high_diversity_with_high_accuracy":
            float(np.mean(acc[~low] > accuracy_threshold)) if (~low).any() else None,
    }
