"""The objective's terms on tiny cases computed by hand."""

import math

import torch

from acgan.training.losses import (
    discriminator_loss,
    generator_loss,
    mode_seeking_loss,
    tac_discriminator_loss,
    tac_generator_loss,
)


class FixedD:
    """Returns given logits for the real batch and for the fake batch, like a discriminator would (the paper's D:
    no twin head's logits, unless given)."""

    def __init__(self, real, fake):
        self.out = {"real": real, "fake": fake}

    def __call__(self, x):
        out = self.out["real" if x.sum() > 0 else "fake"]
        return out if out is None or len(out) == 3 else (*out, None)


def log_softmax(logits, i):
    return logits[i] - math.log(sum(math.exp(v) for v in logits))


def log_sigmoid(v):
    return -math.log1p(math.exp(-v))


def test_discriminator_maximises_ls_plus_lc():
    real = (torch.tensor([2.0]), torch.tensor([[1.0, 0.0, -1.0]]))
    fake = (torch.tensor([-0.5]), torch.tensor([[0.2, 0.3, 0.5]]))
    D = FixedD(real, fake)
    x_real, x_fake = torch.ones(1, 1, 2, 2), -torch.ones(1, 1, 2, 2)
    y_real, y_fake = torch.tensor([0]), torch.tensor([2])
    L_S = log_sigmoid(2.0) + log_sigmoid(0.5)  # log P(real|real) + log P(fake|fake) = log(1 - sigmoid(-0.5))
    L_C = log_softmax([1.0, 0.0, -1.0], 0) + log_softmax([0.2, 0.3, 0.5], 2)
    loss, stats = discriminator_loss(D, x_real, y_real, x_fake, y_fake, fake_class_term=True)
    assert math.isclose(loss.item(), -(L_S + L_C), rel_tol=1e-6)
    assert stats.tolist() == [1.0, 1.0, 1.0, 1.0]
    # Without the fake-image class term (Keras example, StudioGAN): only the real class term remains.
    loss, _ = discriminator_loss(D, x_real, y_real, x_fake, y_fake, fake_class_term=False)
    assert math.isclose(loss.item(), -(L_S + log_softmax([1.0, 0.0, -1.0], 0)), rel_tol=1e-6)


def test_generator_non_saturating_lc_minus_ls():
    fake = (torch.tensor([-0.5]), torch.tensor([[0.2, 0.3, 0.5]]))
    D = FixedD(None, fake)
    loss = generator_loss(D, -torch.ones(1, 1, 2, 2), torch.tensor([1]))
    # Non-saturating: G maximises log P(S=real | fake) + log P(C=c | fake).
    expected = -(log_sigmoid(-0.5) + log_softmax([0.2, 0.3, 0.5], 1))
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)


def test_tac_adds_the_twin_heads_term_on_generated_images_to_d_and_subtracts_it_from_g():
    """TAC-BigGAN/train_fns.py (`Twin_AC`): D adds CE(C_mi(x_fake), y); G's class terms are CE(C(x_fake), y) -
    CE(C_mi(x_fake), y). The twin head's logits on the real batch are in no term."""
    real = (torch.tensor([2.0]), torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[9.0, -9.0, 0.0]]))
    fake = (torch.tensor([-0.5]), torch.tensor([[0.2, 0.3, 0.5]]), torch.tensor([[0.7, -0.1, 0.4]]))
    D = FixedD(real, fake)
    x_real, x_fake = torch.ones(1, 1, 2, 2), -torch.ones(1, 1, 2, 2)
    y_real, y_fake = torch.tensor([0]), torch.tensor([2])
    L_S = log_sigmoid(2.0) + log_sigmoid(0.5)
    L_C = log_softmax([1.0, 0.0, -1.0], 0)  # the demo's D: no fake-image class term on the main head
    twin = log_softmax([0.7, -0.1, 0.4], 2)
    loss, stats = tac_discriminator_loss(D, x_real, y_real, x_fake, y_fake, fake_class_term=False)
    assert math.isclose(loss.item(), -(L_S + L_C + twin), rel_tol=1e-6)
    assert stats.tolist() == discriminator_loss(D, x_real, y_real, x_fake, y_fake, False)[1].tolist()
    expected = -(log_sigmoid(-0.5) + log_softmax([0.2, 0.3, 0.5], 2)) + twin  # - CE(twin) = + log P_mi
    assert math.isclose(tac_generator_loss(D, x_fake, y_fake).item(), expected, rel_tol=1e-6)
    assert math.isclose(generator_loss(D, x_fake, y_fake).item() - expected, -twin, rel_tol=1e-6)


def test_mode_seeking_falls_as_same_class_pairs_move_apart():
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [3.0, 1.0]])  # pairs (0, 2) and (1, 3): mean |dz| = 1
    x = torch.zeros(4, 1, 2, 2)
    x[2:] = 0.3  # mean |dx| = 0.3
    assert math.isclose(mode_seeking_loss(x, z).item(), 1 / (0.3 / 1.0 + 1e-5), rel_tol=1e-5)
    x[2:] = 0.9
    assert mode_seeking_loss(x, z).item() < 1 / (0.3 / 1.0)  # further apart: lower loss
