"""acgan/sampling.py: drawing in batches gives the images of one batch."""

import numpy as np
import torch

from acgan import sampling
from acgan.model import Generator, ModelConfig


def test_generation_in_batches_draws_the_images_of_one_batch(monkeypatch):
    torch.manual_seed(0)
    G = Generator(ModelConfig(resolution=32, channels=1, num_classes=3, width=0.125)).eval()
    whole = sampling.generate(G, 2, 10, seed=5)
    monkeypatch.setattr(sampling, "CPU_BATCH_PIXELS", 3 * 32 * 32)  # batches of 3: the last one short
    batched = sampling.generate(G, 2, 10, seed=5)
    assert batched.shape == (10, 1, 32, 32) and batched.dtype == np.uint8
    assert np.abs(batched.astype(int) - whole.astype(int)).max() <= 1  # float rounding at most one level
    assert not np.array_equal(batched[0], batched[1])  # each image its own z
