"""The averaged generator: an exponential moving average of G's weights, the sampling snapshot when
`ema_kimg` > 0 (Karras et al. 2018 onwards; the half-life and ramp-up as in EDM's training loop).

After each step's G update, every float tensor of G's state moves towards G's: `ema = lerp(G, ema, beta)` with
`beta = 0.5 ** (batch / half_life_images)`, the half-life `ema_kimg * 1000` images, capped by the ramp-up at
`ema_rampup` times the images trained so far, so that a short run's first weights fade within it.

BatchNorm's running mean and variance are averaged with the same beta, not copied from G (BigGAN's EMA averages
its BatchNorm statistics too): in eval mode the averaged weights need the statistics of their own window of steps,
and G's running statistics only describe its last few batches (momentum 0.1), which the averaged weights lag behind.
Integer buffers (BatchNorm's batch counter) are copied.
"""

from __future__ import annotations

import copy

import torch

from acgan.model import Generator


def ema_beta(step: int, batch_size: int, ema_kimg: float, ema_rampup: float) -> float:
    """How much of the average stays at training step `step` (1 for the first step): 0.5 per half-life."""
    half_life = ema_kimg * 1000
    if ema_rampup > 0:
        half_life = min(half_life, step * batch_size * ema_rampup)
    return 0.5 ** (batch_size / max(half_life, 1e-8))


def averaged_copy(G: Generator) -> Generator:
    """The average's starting point: G's weights now, in eval mode, outside autograd."""
    return copy.deepcopy(G).eval().requires_grad_(False)


@torch.no_grad()
def update_ema(G_ema: Generator, G: Generator, beta: float) -> None:
    for averaged, current in zip(G_ema.state_dict().values(), G.state_dict().values()):
        if averaged.is_floating_point():
            averaged.copy_(current.detach().lerp(averaged, beta))
        else:
            averaged.copy_(current)
