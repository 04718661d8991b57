"""Intra-class FID (Miyato & Koyama 2018, as StudioGAN reports it): the FID between each class's samples and its real
images, averaged over the classes. FID over all classes at once can stay low while each class collapses onto a few
modes, as long as the classes together still fill the space; per class it cannot.

Each class's distance is torchmetrics' FID (`fidelity.frechet_accumulator`) on features computed beforehand, in the
evaluation classifier's feature space: ||mu_r - mu_s||^2 + Tr(S_r + S_s - 2 (S_r S_s)^(1/2)). With few images per
class (the evaluation's 100 samples against at most 200 real images) it is biased upwards, the more so the wider the
features: compare it between runs with the same counts and classifier only.
"""

from __future__ import annotations

import torch

from acgan.metrics.fidelity import frechet_accumulator


def compute_class_fid(real: torch.Tensor, samples: torch.Tensor) -> float:
    """FID between one class's real features (M, F) and its samples' (N, F); M and N at least 2."""
    metric = frechet_accumulator(real.shape[1])
    metric.update(real, real=True)
    metric.update(samples, real=False)
    return float(metric.compute())


def compute_intra_class_fid(real: torch.Tensor, real_labels: torch.Tensor, samples: torch.Tensor,
                            sample_labels: torch.Tensor, classes: list[int]) -> list[float]:
    """Each class's FID, in the order of `classes` (their mean is the intra-class FID)."""
    return [compute_class_fid(real[real_labels == c], samples[sample_labels == c]) for c in classes]
