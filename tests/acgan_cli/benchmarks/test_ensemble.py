"""The benchmarks' untrained ensemble (acgan_cli/benchmarks/ensemble.py)."""

import torch

from acgan.checkpoint import complete_steps, load_checkpoint
from acgan.ensemble import load_ensemble, load_member_generator
from acgan.layout import GENERATOR_FILE, META_FILE
from acgan.store import LocalStore
from acgan_cli.benchmarks.ensemble import untrained_ensemble


def test_evaluation_benchmark_ensemble_is_untrained_snapshots(tmp_path):
    """The evaluation benchmark times the evaluation: its members are untrained generators' sampling snapshots (on a
    GPU it used to train 100 splits and write their full training states into a temporary folder)."""
    store = LocalStore(tmp_path)
    plan = untrained_ensemble(store, 20)
    assert len(plan.splits) == 2
    for split in range(2):
        assert complete_steps(store, split) == [1]
        assert set(load_checkpoint(store, split, 1)) == {GENERATOR_FILE, META_FILE}
    manifest = load_ensemble(store)
    G = load_member_generator(store, manifest.member(19))
    assert G(torch.randn(2, G.cfg.noise_dim), torch.tensor([0, 9])).shape == (2, 3, 128, 128)
