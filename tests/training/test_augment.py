"""DiffAugment: what each operation does to an image, its gradient, its randomness, and the policy's validation."""

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from acgan.settings import AugmentPolicy, RunSettings
from acgan.training.augment import cutout, diff_augment, translate


def _images(n=8, size=32):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_translation_shifts_each_image_within_an_eighth_and_fills_black():
    x = _images()
    out = translate(x, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), value=-1.0)
    shifts = []
    for i in range(len(x)):
        found = [(dy, dx) for dy in range(9) for dx in range(9)
                 if torch.equal(out[i], padded[i, :, dy:dy + 32, dx:dx + 32])]
        assert len(found) == 1, f"image {i} is not one shift of the input"
        shifts.append(found[0])
    assert len(set(shifts)) > 1  # each image draws its own shift


def test_cutout_blacks_out_one_square_of_half_the_side():
    x = _images()
    out = cutout(x, torch.Generator().manual_seed(2))
    changed = out != x
    assert torch.equal(out[changed], torch.full_like(out[changed], -1.0))
    for i in range(len(x)):
        rows, cols = changed[i, 0].nonzero(as_tuple=True)
        assert 0 < len(rows) <= 15 * 15  # clipped at the border, never larger
        assert rows.max() - rows.min() < 15 and cols.max() - cols.min() < 15


def test_augmentation_is_differentiable_and_follows_its_generator():
    x = _images().requires_grad_()
    a = diff_augment(x, "translation,cutout", torch.Generator().manual_seed(3))
    b = diff_augment(x, "translation,cutout", torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    a.sum().backward()
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0} and x.grad.sum() > 0  # gradient reaches every kept pixel
    assert diff_augment(x, "", torch.Generator()) is x


def test_policy_is_normalised_and_unknown_names_rejected():
    policy = TypeAdapter(AugmentPolicy)
    assert policy.validate_python("cutout, translation") == "translation,cutout"
    assert policy.validate_python("none") == policy.validate_python("") == ""
    with pytest.raises(ValidationError, match="unknown augmentation flip: use a comma-separated subset of "
                                              "translation, cutout, or none"):
        RunSettings(store="s", augment="flip,cutout")
