"""acgan/training/state.py: a packed training state restores the run exactly, on the GPU's fast path too."""

import pytest
import torch

from acgan.model import Discriminator, Generator, ModelConfig
from acgan.training.state import pack_checkpoint, unpack_checkpoint
from acgan.training.step import FastPath, TrainStep, make_optimizers


@pytest.mark.parametrize("restore_first", [True, False], ids=["restored-then-channels-last", "channels-last-first"])
def test_fused_channels_last_resume_equals_uninterrupted_in_either_order(single_thread, restore_first):
    """The GPU fast path's layout on the CPU: whether the step turns G and D channels-last after the restore or
    before it, the next step equals the uninterrupted one."""
    fast = FastPath(channels_last=True, fused_adam=True)
    cfg = ModelConfig(resolution=32, channels=3, num_classes=4, width=0.0625, d_width=0.25)

    def rig():
        torch.manual_seed(0)
        G, D = Generator(cfg), Discriminator(cfg)
        return (G, D, *make_optimizers(G, D, 0.01, (0.5, 0.999), fast))

    def batch(i):
        g = torch.Generator().manual_seed(i)
        return (torch.rand(8, 3, 32, 32, generator=g) * 2 - 1, torch.randint(4, (8,), generator=g),
                torch.randn(8, cfg.noise_dim, generator=g), torch.randint(4, (8,), generator=g))

    G, D, opt_g, opt_d = rig()
    TrainStep(G, D, opt_g, opt_d, fast)(*batch(0))
    files = pack_checkpoint(G, D, opt_g, opt_d, torch.Generator(), {"step": 1})
    torch.manual_seed(1)
    TrainStep(G, D, opt_g, opt_d, fast)(*batch(1))

    G2, D2, opt_g2, opt_d2 = rig()
    if restore_first:
        unpack_checkpoint(files, G2, D2, opt_g2, opt_d2, torch.Generator())
        step = TrainStep(G2, D2, opt_g2, opt_d2, fast)
    else:
        step = TrainStep(G2, D2, opt_g2, opt_d2, fast)
        unpack_checkpoint(files, G2, D2, opt_g2, opt_d2, torch.Generator())
    torch.manual_seed(1)
    step(*batch(1))
    for a, b in zip([*G.parameters(), *D.parameters()], [*G2.parameters(), *D2.parameters()]):
        assert torch.equal(a, b), (a - b).abs().max().item()
