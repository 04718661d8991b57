"""Classification Accuracy Score (Ravuri & Vinyals 2019): cases whose answer is known by construction."""

import torch

from acgan.metrics.cas import compute_cas


def _images(classes: list[int], n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n uint8 16 x 16 grey images per class: class c is a bright bar filling row band c (of 4), on noise; the
    classifier's training shifts (up to 2 px) leave each bar in its band."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 60, (len(classes) * n, 1, 16, 16), generator=gen, dtype=torch.uint8)
    labels = torch.tensor(classes).repeat_interleave(n)
    for i, c in enumerate(labels.tolist()):
        images[i, 0, 4 * c:4 * c + 4] = 250
    return images, labels


def test_samples_as_varied_as_the_real_images_score_as_real_ones():
    samples, labels = _images([0, 1, 2, 3], 30, seed=0)
    real, real_labels = _images([0, 1, 2, 3], 10, seed=1)
    overall, per_class = compute_cas(samples, labels, real, real_labels, 4, steps=40)
    assert overall == 1.0 and per_class == [1.0] * 4


def test_classes_drawn_as_each_other_score_nothing_on_them():
    """A generator that draws class 2 as 3 and 3 as 2, every image recognisable: a classifier trained on its samples
    names every real 2 a 3 and every real 3 a 2; classes 0 and 1 are unaffected."""
    samples, labels = _images([0, 1, 3, 2], 30, seed=0)
    labels = torch.tensor([0, 1, 2, 3]).repeat_interleave(30)
    real, real_labels = _images([0, 1, 2, 3], 10, seed=1)
    overall, per_class = compute_cas(samples, labels, real, real_labels, 4, steps=40)
    assert per_class == [1.0, 1.0, 0.0, 0.0] and overall == 0.5
