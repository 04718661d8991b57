"""The evaluation classifier: one pass gives every output in CPU-sized batches."""

import torch

from acgan.metrics import classifier
from acgan.metrics.classifier import Classifier, classify
from acgan.metrics.discriminability import resize_down_and_up


def test_one_classifier_pass_gives_every_output_in_cpu_sized_batches(monkeypatch):
    torch.manual_seed(0)
    model = Classifier(1, 10).eval()
    images = torch.randint(0, 256, (50, 1, 32, 32), dtype=torch.uint8)
    monkeypatch.setattr(classifier, "CPU_BATCH_VALUES", 7 * 32 * 32 * 32)  # batches of 7: the last one short
    out = classify(model, images, logits=True, features=True)
    with torch.no_grad():
        x = images.float() / 127.5 - 1
        assert torch.allclose(out.features, model.pooled(x), atol=1e-5)
        assert torch.allclose(out.logits, model(x), atol=1e-5)
        assert torch.equal(out.predicted, model(x).argmax(1))
        small = classify(model, images, size=8, logits=True)
        assert small.features is None and classify(model, images).logits is None  # only what was asked for
        assert torch.allclose(small.logits, model(resize_down_and_up(images, 8).float() / 127.5 - 1), atol=1e-5)
    assert not torch.allclose(small.logits, out.logits, atol=1e-3)  # the resize reached the classifier
