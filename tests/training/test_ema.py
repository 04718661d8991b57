"""The averaged generator: its arithmetic against hand-computed cases, kept in checkpoints (resume bit-identical),
the snapshot that sampling and evaluation read, the trained G still loadable, and checkpoints from before it."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_safetensors

from acgan.checkpoint import latest_checkpoint
from acgan.ensemble import assemble_ensemble, load_member_generator
from acgan.layout import GENERATOR_FILE, META_FILE, TRAIN_STATE_FILE
from acgan.sampling import load_split_generator
from acgan.store import LocalStore
from acgan.training.ema import averaged_copy, ema_beta, update_ema
from acgan.training.loop import train_split
from tests.conftest import tiny_config

EMA = dict(ema_kimg=1.0, ema_rampup=0.05)


def _state(store, split=0):
    step, files = latest_checkpoint(store, split)
    return step, load_safetensors(files[TRAIN_STATE_FILE]), load_safetensors(files[GENERATOR_FILE]), files


def _part(tensors, prefix):
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_beta_follows_the_half_life_and_the_ramp_up_by_hand():
    # batch 64, half-life 10 kimg: 0.5 ** (64 / 10000) per step, once the run is past 200,000 images (10k / 0.05)
    assert ema_beta(5000, 64, 10.0, 0.05) == pytest.approx(0.5 ** (64 / 10_000), rel=1e-12)
    assert ema_beta(100, 64, 10.0, 0.0) == pytest.approx(0.995573, abs=1e-6)  # no ramp-up: 0.5 ** 0.0064
    # step 100: the ramp-up caps the half-life at 100 * 64 * 0.05 = 320 images, 5 steps: 0.5 ** 0.2
    assert ema_beta(100, 64, 10.0, 0.05) == pytest.approx(0.870551, abs=1e-6)
    assert ema_beta(1, 64, 10.0, 0.05) == pytest.approx(0.5 ** 20)  # the first step nearly copies G


def test_an_update_is_a_lerp_and_a_half_life_halves_the_gap():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    averaged = averaged_copy(net)
    with torch.no_grad():
        for t in net.state_dict().values():
            t.fill_(3 if t.is_floating_point() else 7)
        for t in averaged.state_dict().values():
            t.fill_(1 if t.is_floating_point() else 0)
    update_ema(averaged, net, 0.25)
    for name, t in averaged.state_dict().items():  # 3 + 0.25 * (1 - 3); BatchNorm's statistics averaged too
        assert torch.equal(t, torch.full_like(t, 2.5 if t.is_floating_point() else 7)), name
    # 640 images of half-life at batch 64 without ramp-up: ten steps towards a G held at 3 halve the gap, 0.5 -> 0.25
    for step in range(1, 11):
        update_ema(averaged, net, ema_beta(step, 64, 0.64, 0.0))
    assert torch.allclose(averaged[0].weight, torch.full((2, 2), 2.75), atol=1e-6)
    assert not averaged.training and not any(p.requires_grad for p in averaged.parameters())


def test_resumed_run_with_the_average_equals_uninterrupted(digits_store, tmp_path, single_thread):
    other = LocalStore(tmp_path / "other")
    shutil.copytree(digits_store.root, other.root)
    train_split(digits_store, tiny_config(steps=20, **EMA))
    train_split(other, tiny_config(steps=10, **EMA))
    train_split(other, tiny_config(steps=20, **EMA))
    (step, a, snapshot, files), (_, b, _, _) = _state(digits_store), _state(other)
    assert step == 20 and _equal(a, b) and _part(a, "G_ema")
    assert _equal(_part(snapshot, "G"), _part(a, "G_ema"))  # the snapshot is the average ...
    assert not _equal(_part(a, "G"), _part(a, "G_ema"))  # ... not the trained G
    assert json.loads(files[META_FILE])["ema"] is True


def test_sampling_reads_the_average_and_the_trained_g_still_loads(digits_store):
    train_split(digits_store, tiny_config(steps=10, **EMA))
    _, tensors, _, _ = _state(digits_store)
    averaged, _ = load_split_generator(digits_store, 0)
    trained, meta = load_split_generator(digits_store, 0, raw=True)
    assert _equal(averaged.state_dict(), _part(tensors, "G_ema")) and meta["step"] == 10
    assert _equal(trained.state_dict(), _part(tensors, "G"))
    train_split(digits_store, tiny_config(split=1, steps=10, **EMA))
    first = assemble_ensemble(digits_store, 10).member(0)  # the evaluation, `acgan sample` through the ensemble and serving load this way
    assert _equal(load_member_generator(digits_store, first).state_dict(), _part(tensors, "G_ema"))
    assert _equal(load_member_generator(digits_store, first, raw=True).state_dict(), _part(tensors, "G"))


def test_a_checkpoint_without_the_average_loads_and_resumes_with_one(digits_store, caplog):
    """One written with ema_kimg 0 (no `G_ema.` tensors): its snapshot is the trained G, raw or not, and a run
    resumed with the average on starts it from that G."""
    import logging

    train_split(digits_store, tiny_config(steps=5))
    _, tensors, snapshot, files = _state(digits_store)
    assert json.loads(files[META_FILE])["ema"] is False and not _part(tensors, "G_ema")
    for raw in (False, True):
        assert _equal(load_split_generator(digits_store, 0, raw=raw)[0].state_dict(), _part(snapshot, "G"))
    with caplog.at_level(logging.INFO):
        train_split(digits_store, tiny_config(steps=10, **EMA))
    assert any("has no averaged G" in r.getMessage() for r in caplog.records)
    assert _part(_state(digits_store)[1], "G_ema")


def test_acgan_sample_raw_draws_from_the_trained_g(capsys, digits_store, tmp_path):
    from acgan_cli.main import main

    train_split(digits_store, tiny_config(split=1, steps=10, **EMA))
    outs = {}
    for flags in ([], ["--raw"]):
        outs[bool(flags)] = tmp_path / f"{bool(flags)}.npz"
        assert main(["sample", "--store", str(digits_store.root), "--class", "7", "-n", "4",
                     "--out", str(outs[bool(flags)]), *flags]) == 0
        assert ("split 1's trained G at step 10" if flags else "split 1's sampling snapshot at step 10") in \
            capsys.readouterr().out
    assert not np.array_equal(np.load(outs[False])["images"], np.load(outs[True])["images"])


def test_a_damaged_training_state_is_skipped_by_raw_sampling_like_a_damaged_snapshot(capsys, digits_store):
    """With --raw the trained G is read from the training state: a damaged one sends sampling to the previous
    checkpoint, and with none intact the command ends in one line, as for a damaged snapshot."""
    from acgan_cli.main import main

    train_split(digits_store, tiny_config(steps=10, checkpoint_every=5, **EMA))
    checkpoints = digits_store.root / "splits" / "split-00000" / "checkpoints"
    newest = next((checkpoints / "step-00000010").glob(f"*{TRAIN_STATE_FILE}"))
    newest.write_bytes(newest.read_bytes()[:100])
    assert load_split_generator(digits_store, 0, raw=True)[1]["step"] == 5
    assert load_split_generator(digits_store, 0)[1]["step"] == 10  # the snapshot itself is intact
    next((checkpoints / "step-00000005").glob(f"*{TRAIN_STATE_FILE}")).unlink()
    assert main(["sample", "--store", str(digits_store.root), "--class", "1", "-n", "2", "--raw",
                 "--out", str(digits_store.root / "raw.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("acgan sample: error: split 0 of ") and "no complete checkpoint" in err[-1]
    assert not (digits_store.root / "raw.png").exists()
