"""AC-GAN generator and discriminator (Odena, Olah & Shlens 2016, appendix table for ImageNet 128x128).

Our readings of the paper, where it is silent:
- G's 110-d input is 100 noise dims plus a one-hot of the class (here: `noise_dim` plus one-hot of `num_classes`).
- Four stride-2 5x5 transposed convolutions reach 128x128, so the linear layer outputs 768 x 8 x 8. At 64x64 (not
  tabled) we drop the last hidden stride-2 stage (192 channels): the 8x8 start and 768/384/256 widths stay.
- At 32x32 the paper's appendix tables a CIFAR-10 generator: linear to 384 channels, then 5x5 stride-2 transposed
  convolutions to 192, 96 and 3 channels. Three stride-2 layers reach 32 from 4, so the linear layer outputs
  384 x 4 x 4 (`g_layout="paper"`). `g_layout="imagenet-start"` keeps the ImageNet G's 768 x 8 x 8 start at 32 px
  too (two transposed convolutions, to 384 and the image): the network the embedded digits run was tuned with.
- D keeps all six 3x3 convolutions at every resolution; only the input of its final linear layer shrinks.
- `width` and `d_width` scale G's and D's channel counts, for CPU runs; 1.0 is the paper's network. At 32 px with G
  at width 0.125, the full D is nine tenths of a training step; at half width a step costs half as much. At a
  quarter (4 channels in D's first layer) D no longer tells real from fake well enough for recognisable digits.
- "Weights from N(0, 0.02), biases 0": batch-norm scales are drawn from N(1, 0.02) instead (a zero scale would switch
  the layer off), as in DCGAN.
- D's Gaussian activation noise (Salimans et al. 2016) is added to the input of every convolution while training.

Not in the paper: with `objective="tac"` D has a second class head, the twin auxiliary classifier of TAC-GAN (Gong et
al., NeurIPS 2019: the linear `linear_mi` beside `linear_c` on D's features in their TAC-BigGAN/BigGAN.py), which the
losses train on generated images only (acgan/training/losses.py). The paper's D (`acgan`) has no such head, so its
weights, their initial values and its checkpoints are those of the paper's objective.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import ConfigDict, Field, field_validator

from acgan.settings import ModelSettings

G_WIDTHS = (768, 384, 256, 192)  # ImageNet: linear to 768 (8x8), transposed convs to 384, 256, 192, then the image
G_WIDTHS_CIFAR = (384, 192, 96)  # CIFAR-10, 32 px: linear to 384 (4x4), transposed convs to 192, 96, then the image
D_WIDTHS = (16, 32, 64, 128, 256, 512)
D_STRIDES = (2, 1, 2, 1, 2, 1)
RESOLUTIONS = (32, 64, 128)


class ModelConfig(ModelSettings):
    """The shapes of G and D (a checkpoint only loads into a model of the same shapes) and D's regularisation: the
    run's model settings (`ModelSettings`, acgan/settings.py) and what the split's plan fixes."""

    SHAPE_FIELDS: ClassVar[tuple[str, ...]] = ("resolution", "channels", "num_classes", "noise_dim", "width", "d_width",
                                               "g_layout", "objective")

    model_config = ConfigDict(extra="forbid", frozen=True)

    resolution: int = Field(128, description="the plan's image size: 32, 64 or 128")
    channels: int = Field(3, description="the plan's image channels: 1 (grey) or 3 (RGB)")
    num_classes: int = Field(10, ge=1, description="classes of this split (K)")

    @field_validator("resolution")
    @classmethod
    def _known_resolution(cls, v: int) -> int:
        if v not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {v}")
        return v

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, v: int) -> int:
        if v not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {v}")
        return v


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.resolution == 32 and cfg.g_layout == "paper":
            self.start, hidden = 4, G_WIDTHS_CIFAR
        else:
            self.start, hidden = 8, G_WIDTHS[:{32: 2, 64: 3, 128: 4}[cfg.resolution]]
        n_up = len(hidden)
        widths = tuple(scaled(c, cfg.width) for c in hidden) + (cfg.channels,)
        self.fc = nn.Linear(cfg.noise_dim + cfg.num_classes, widths[0] * self.start * self.start)
        self.base_width = widths[0]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            # kernel 5, stride 2, padding 2, output_padding 1: exactly doubles height and width
            layers.append(nn.ConvTranspose2d(c_in, c_out, 5, stride=2, padding=2, output_padding=1))
            last = i == n_up - 1
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(labels, self.cfg.num_classes).to(z.dtype)
        h = F.relu(self.fc(torch.cat([z, onehot], dim=1)))
        h = h.view(z.shape[0], self.base_width, self.start, self.start)  # (N, 768, 8, 8) or (N, 384, 4, 4) at width 1
        return self.net(h)  # (N, C, R, R) in [-1, 1]


class GaussianNoise(nn.Module):
    def __init__(self, std: float):
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            return x + torch.randn_like(x) * self.std
        return x


class Dropout(nn.Module):
    """Dropout whose mask comes, on a CPU, from random 16-bit integers, four to each 64-bit draw: `bernoulli_` (what
    nn.Dropout uses) draws one 32-bit number per element there and was a fifth of the demo network's training step.
    An element is dropped with probability round(p * 65536) / 65536, p itself for the 0.5 and 0.25 the presets use.
    Elsewhere (a GPU's generator is fast, and torch.compile lowers `F.dropout` itself) it is nn.Dropout's."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.threshold = round(p * 65536) - 32768  # drop where the uniform int16 is below it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        bits = torch.randint(-2**63, 2**63 - 1, ((x.numel() + 3) // 4,), dtype=torch.int64)
        keep = bits.view(torch.int16)[:x.numel()].view(x.shape) >= self.threshold
        return x * keep * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Discriminator(nn.Module):
    """Returns (source logit of shape (N,), class logits of shape (N, K), the twin head's class logits of shape
    (N, K) or None without it). Losses apply sigmoid/softmax themselves."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in = cfg.channels
        for i, (c_out, stride) in enumerate(zip((scaled(c, cfg.d_width) for c in D_WIDTHS), D_STRIDES)):
            layers += [GaussianNoise(cfg.d_noise_std), nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)]
            if i > 0:
                layers.append(nn.BatchNorm2d(c_out))
            layers += [nn.LeakyReLU(0.2, inplace=True), Dropout(cfg.d_dropout)]
            c_in = c_out
        self.net = nn.Sequential(*layers)
        side = cfg.resolution // 8  # three stride-2 layers
        self.head = nn.Linear(c_in * side * side, 1 + cfg.num_classes)
        init_weights(self)
        # Drawn after the paper's D: one seed gives G and the shared part of D the same weights under either objective.
        self.twin_head = nn.Linear(c_in * side * side, cfg.num_classes) if cfg.objective == "tac" else None
        if self.twin_head is not None:
            init_weights(self.twin_head)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        features = self.net(x).flatten(1)
        out = self.head(features)  # (N, 1 + K)
        twin = None if self.twin_head is None else self.twin_head(features)  # (N, K)
        return out[:, 0], out[:, 1:], twin


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """G's [-1, 1] floats -> uint8 pixels, same layout."""
    return ((x.float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
