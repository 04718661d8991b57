"""Inception Score and FID: FID given part by part against its definition, the Inception Score's bounds."""

import numpy as np
import pytest
import torch

from acgan.metrics.classifier import Classifier, classify
from acgan.metrics.fidelity import frechet_accumulator, inception_score


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID by its definition, in numpy and scipy: |mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))."""
    from scipy import linalg

    a, b = real.double().numpy(), fake.double().numpy()
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_fid_given_part_by_part_is_the_frechet_distance():
    """The evaluation's FID (torchmetrics' running sums, fed a split at a time) against the definition: zero on
    identical sets, growing with the distance."""
    torch.manual_seed(0)
    model = Classifier(1, 10).eval()
    real = torch.randint(0, 256, (200, 1, 32, 32), dtype=torch.uint8)
    features = classify(model, real, features=True).features
    darker = classify(model, (real // 2).to(torch.uint8), features=True).features

    def streamed(a: torch.Tensor, b: torch.Tensor) -> float:
        metric = frechet_accumulator(a.shape[1])
        for part in a.split(64):
            metric.update(part, real=True)
        for part in b.split(50):
            metric.update(part, real=False)
        return float(metric.compute())

    assert streamed(features, features) == pytest.approx(0, abs=1e-6)
    for other in (darker, features[:100]):
        assert streamed(features, other) == pytest.approx(frechet_distance(features, other), rel=1e-4)
    assert streamed(features, darker) > streamed(features, features[:100]) + 1e-3


def test_inception_score_is_one_when_every_image_gets_the_same_prediction():
    model = Classifier(1, 2).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
        model.head.bias.copy_(torch.tensor([3.0, -3.0]))  # zero features: the head's bias decides
    ones = torch.full((20, 1, 32, 32), 255, dtype=torch.uint8)
    mean, _ = inception_score(classify(model, ones, logits=True).logits, splits=2)
    assert mean == pytest.approx(1.0, abs=1e-4)
    spread = torch.tensor([[4.0, -4.0], [-4.0, 4.0]]).repeat(10, 1)  # confident and balanced: IS near its maximum 2
    assert inception_score(spread, splits=1)[0] == pytest.approx(2.0, abs=0.01)
