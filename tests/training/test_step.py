"""The training step's update against the objective written out plainly."""

import copy

import torch

from acgan.model import Discriminator, Generator, ModelConfig
from acgan.training.losses import discriminator_loss, generator_loss
from acgan.training.step import FastPath, TrainStep, make_optimizers

CFG = ModelConfig(resolution=32, channels=1, num_classes=3, width=0.0625, d_width=0.125, d_dropout=0.0,
                  d_noise_std=0.0)


def batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(8, 1, 32, 32, generator=g) * 2 - 1, torch.randint(3, (8,), generator=g),
            torch.randn(8, CFG.noise_dim, generator=g), torch.randint(3, (8,), generator=g))


def test_g_update_computes_no_gradient_for_d_weights_and_updates_as_the_plain_objective():
    torch.manual_seed(0)
    G, D = Generator(CFG), Discriminator(CFG)
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
    step = TrainStep(G, D, *make_optimizers(G, D, 2e-4, (0.5, 0.999), FastPath()), FastPath())
    opt_g, opt_d = make_optimizers(G_ref, D_ref, 2e-4, (0.5, 0.999), FastPath())
    computed = []
    for p in D.parameters():
        p.register_hook(lambda grad: computed.append(grad))
    for i in range(3):
        x_real, y_real, z, y_fake = batch(i)
        computed.clear()
        step(x_real, y_real, z, y_fake)
        # One gradient per D weight and step, from D's own update: G's update computed none.
        assert len(computed) == len(list(D.parameters()))
        # The same step written plainly, D's weights taking gradients in G's update too.
        x_fake = G_ref(z, y_fake)
        loss_d, _ = discriminator_loss(D_ref, x_real, y_real, x_fake.detach(), y_fake)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        generator_loss(D_ref, x_fake, y_fake).backward()
        opt_g.step()
    for p, q in zip([*G.parameters(), *D.parameters()], [*G_ref.parameters(), *D_ref.parameters()]):
        assert torch.allclose(p, q, rtol=0, atol=1e-6)
    assert all(p.requires_grad for p in D.parameters())  # D trains again in the next step
