"""Classification Accuracy Score (Ravuri & Vinyals, NeurIPS 2019): a classifier trained on generated samples only,
tested on real images. A class whose samples are recognisable but narrow teaches a classifier too little of the class
to name its real images: CAS falls where discriminability (a classifier trained on real images, tested on samples)
does not. The classifier is the evaluation classifier's network and recipe (`classifier.fit_classifier`: the same
steps and batch), so a CAS equal to that classifier's held-out accuracy on real images means the samples teach as
much as the real training images."""

from __future__ import annotations

import torch

from acgan.metrics.classifier import classify, fit_classifier
from acgan.metrics.discriminability import compute_accuracy


def compute_cas(samples: torch.Tensor, sample_labels: torch.Tensor, real: torch.Tensor, real_labels: torch.Tensor,
                num_classes: int, steps: int, seed: int = 0,
                device: str | torch.device = "cpu") -> tuple[float, list[float]]:
    """(accuracy, per-class accuracy) on the uint8 `real` images (M, C, H, W) of a classifier trained `steps` steps on
    every uint8 sample (N, C, H, W) with its label; either may be mapped from a file (a batch is copied at a time)."""
    gen = torch.Generator().manual_seed(seed)
    model = fit_classifier(samples, sample_labels, torch.arange(len(sample_labels)), num_classes, steps, gen, seed,
                           device)
    return compute_accuracy(classify(model, real).predicted, real_labels.cpu(), num_classes)
