"""One AC-GAN training step (a D update, then a G update on the same generated batch), and its fast path.

The fast path is the default on a GPU: bf16 autocast (the weights and Adam stay float32), channels-last memory,
fused Adam, and `torch.compile` of G and D. On a CPU it falls back to the plain float32 eager step, which the
benchmark also keeps as its reference. The step never reads a value back to the host: the stats it returns stay on
the device until the loop's tick.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict

from acgan.errors import UserError
from acgan.model import Discriminator, Generator
from acgan.training.augment import diff_augment
from acgan.training.losses import OBJECTIVES, mode_seeking_loss

Toggle = Literal["auto", "on", "off"]
log = logging.getLogger(__name__)


class CompileFailed(UserError):
    """torch.compile could not build the step here (no C++ compiler or no Python headers for Inductor, a Triton
    launcher that does not build): a restart would fail the same way, so it is one line naming the setting."""


def _compile_failure(e: Exception) -> str | None:
    """What went wrong, in a line, if `e` is torch.compile failing to build (Dynamo's errors, Inductor's
    InductorError among them, and Inductor's own where they escape unwrapped: the backward graph is compiled at the
    first backward); None for any other error, which keeps its traceback."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import CppCompileError, InvalidCxxCompiler

    if not isinstance(e, (TorchDynamoException, CppCompileError, InvalidCxxCompiler)):
        return None
    inner = getattr(e, "inner_exception", None) or e
    lines = [line.strip() for line in str(getattr(inner, "output", "") or inner).splitlines() if line.strip()]
    detail = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "")
    return f"{type(inner).__name__}: {detail}"[:300]


class FastPath(BaseModel):
    """The resolved options; saved in the split's config, since bf16 changes the numerics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bf16: bool = False
    channels_last: bool = False
    fused_adam: bool = False
    compile: bool = False

    @classmethod
    def resolve(cls, device: torch.device, precision: Literal["auto", "fp32", "bf16"] = "auto",
                compile: Toggle = "auto") -> "FastPath":
        gpu = device.type == "cuda"
        return cls(bf16=precision == "bf16" or (precision == "auto" and gpu), channels_last=gpu, fused_adam=gpu,
                   compile=compile == "on" or (compile == "auto" and gpu))


def make_optimizers(G: Generator, D: Discriminator, lr: float, betas: tuple[float, float],
                    fast: FastPath) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    fused = {"fused": True} if fast.fused_adam else {}
    return (torch.optim.Adam(G.parameters(), lr=lr, betas=betas, **fused),
            torch.optim.Adam(D.parameters(), lr=lr, betas=betas, **fused))


def match_param_layouts(opt: torch.optim.Optimizer) -> None:
    """Give each Adam moment its weight's memory layout (channels-last or not). Fused Adam walks both as flat memory:
    a moment restored or created in another layout would pair with other weight elements."""
    for p, fields in opt.state.items():
        for field, v in fields.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                fields[field] = torch.empty_like(p, dtype=v.dtype).copy_(v)


# The stats a step returns, in order: the losses, then D's accuracy at telling real from generated images and at
# naming the class of each (losses.discriminator_loss); each tick's stats line names them so.
STATS = ("loss_d", "loss_g", "d_source_acc_real", "d_source_acc_fake", "d_class_acc_real", "d_class_acc_fake")


class TrainStep:
    """`step(x_real, y_real, z, y_fake)` -> on-device stats, in the order of `STATS`.

    The losses are those of D's objective (`OBJECTIVES`: the paper's AC-GAN, or TAC-GAN's with D's twin head). With
    an `augment` policy, D sees real and generated images through it, drawing from `generator` (the loop's data
    generator, so a resumed run draws what an uninterrupted one would). Checkpoints keep using the original G and D:
    the compiled wrappers share their parameters."""

    def __init__(self, G: Generator, D: Discriminator, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                 fast: FastPath, d_fake_class_loss: bool = True, mode_seeking: float = 0.0, augment: str = "",
                 generator: torch.Generator | None = None):
        if fast.channels_last:
            G.to(memory_format=torch.channels_last)
            D.to(memory_format=torch.channels_last)
            match_param_layouts(opt_g)
            match_param_layouts(opt_d)
        self.G = torch.compile(G) if fast.compile else G
        self.D = torch.compile(D) if fast.compile else D
        self.opt_g, self.opt_d, self.fast = opt_g, opt_d, fast
        self._discriminator = D
        self.discriminator_loss, self.generator_loss = OBJECTIVES[D.cfg.objective]
        self.d_fake_class_loss, self.mode_seeking = d_fake_class_loss, mode_seeking
        self.augment, self.generator = augment, generator
        self.device_type = next(G.parameters()).device.type

    def _view(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.augment, self.generator)

    def _autocast(self):
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.fast.bf16)

    def __call__(self, x_real: torch.Tensor, y_real: torch.Tensor, z: torch.Tensor,
                 y_fake: torch.Tensor) -> torch.Tensor:
        try:
            return self._step(x_real, y_real, z, y_fake)
        except Exception as e:
            problem = _compile_failure(e) if self.fast.compile else None
            if problem is None:
                raise
            log.debug("torch.compile failed", exc_info=True)  # the whole error, with -v
            raise CompileFailed(f"torch.compile failed ({problem}): rerun with --compile off (pipeline parameter "
                                "compile=off), or give the image a C++ compiler and Python's headers") from None

    def _step(self, x_real: torch.Tensor, y_real: torch.Tensor, z: torch.Tensor, y_fake: torch.Tensor) -> torch.Tensor:
        if self.fast.channels_last:
            x_real = x_real.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            x_fake = self.G(z, y_fake)
            # torch.compile builds D once per input signature (dtype, layout, requires_grad): real images in G's
            # output dtype (autocast casts them at D's first convolution anyway) and D-step inputs that ask for a
            # gradient, like the G step's fakes, make D's three calls one signature. That gradient costs one
            # input-gradient of D's first convolution; an eager step does not need it.
            x_real, fake_for_d = x_real.to(x_fake.dtype), x_fake.detach()
            if self.fast.compile:
                x_real, fake_for_d = x_real.detach().requires_grad_(), fake_for_d.requires_grad_()
            loss_d, d_stats = self.discriminator_loss(self.D, self._view(x_real), y_real, self._view(fake_for_d),
                                                 y_fake, self.d_fake_class_loss)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        # G's update needs D's input gradients only: with D's weights frozen, its backward skips their gradients
        # (which the next D step would discard), a third of D's backward.
        self._discriminator.requires_grad_(False)
        try:
            with self._autocast():
                loss_g = self.generator_loss(self.D, self._view(x_fake), y_fake)
                if self.mode_seeking:
                    loss_g = loss_g + self.mode_seeking * mode_seeking_loss(x_fake.float(), z)
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
        finally:
            self._discriminator.requires_grad_(True)
        self.opt_g.step()
        return torch.cat([torch.stack([loss_d.detach().float(), loss_g.detach().float()]), d_stats.float()])
