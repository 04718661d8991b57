"""Checkpoints: save -> perturb -> load -> equal; latest complete; half-written and corrupt ones ignored; retention."""

import hashlib
import json
import logging

import pytest
import torch

from acgan.checkpoint import (CheckpointExists, complete_steps, latest_checkpoint, load_checkpoint, prune_checkpoints,
                              save_checkpoint)
from acgan.layout import MARKER, checkpoint_prefix
from acgan.model import Discriminator, Generator, ModelConfig
from acgan.store import LocalStore, open_store
from acgan.training.state import pack_checkpoint, unpack_checkpoint
from tests.conftest import stored_file


def _models(seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(resolution=32, channels=1, num_classes=3, width=0.0625)
    G, D = Generator(cfg), Discriminator(cfg)
    opt_g, opt_d = torch.optim.Adam(G.parameters(), lr=1e-3), torch.optim.Adam(D.parameters(), lr=1e-3)
    # One real step so the optimisers have state to save.
    x = G(torch.randn(4, cfg.noise_dim), torch.tensor([0, 1, 2, 0]))
    (D(x)[0].mean() + D(x)[1].mean()).backward()
    opt_g.step()
    opt_d.step()
    return G, D, opt_g, opt_d


def _all_tensors(G, D, opt_g, opt_d):
    out = {f"G.{k}": v for k, v in G.state_dict().items()} | {f"D.{k}": v for k, v in D.state_dict().items()}
    for name, opt in (("g", opt_g), ("d", opt_d)):
        for i, st in opt.state_dict()["state"].items():
            out |= {f"{name}.{i}.{k}": v for k, v in st.items()}
    return out


def test_save_perturb_load_equal(tmp_path):
    store = LocalStore(tmp_path)
    G, D, opt_g, opt_d = _models()
    rng = torch.Generator().manual_seed(5)
    torch.manual_seed(123)
    expected = {k: v.clone() for k, v in _all_tensors(G, D, opt_g, opt_d).items()}
    expected_rng, expected_global = rng.get_state().clone(), torch.get_rng_state().clone()
    save_checkpoint(store, 0, 10, pack_checkpoint(G, D, opt_g, opt_d, rng, {"step": 10}))

    with torch.no_grad():  # perturb everything
        for p in list(G.parameters()) + list(D.parameters()):
            p.add_(1.0)
    for opt in (opt_g, opt_d):
        for st in opt.state.values():
            st["exp_avg"].add_(1.0)
    rng.manual_seed(99)
    torch.manual_seed(99)

    step, files = latest_checkpoint(store, 0)
    assert step == 10
    unpack_checkpoint(files, G, D, opt_g, opt_d, rng)
    got = _all_tensors(G, D, opt_g, opt_d)
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    assert torch.equal(rng.get_state(), expected_rng) and torch.equal(torch.get_rng_state(), expected_global)


def test_latest_is_highest_complete_and_half_written_is_ignored(tmp_path):
    store = LocalStore(tmp_path)
    for step in (5, 10):
        save_checkpoint(store, 3, step, {"a.bin": f"weights {step}".encode()})
    # A step that died mid-write: files but no marker.
    store.write_bytes(f"{checkpoint_prefix(3, 15)}/a.bin", b"half")
    assert complete_steps(store, 3) == [5, 10]
    step, files = latest_checkpoint(store, 3)
    assert (step, files["a.bin"]) == (10, b"weights 10")


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_corrupt_newest_is_skipped_with_a_warning(tmp_path, caplog, damage):
    store = LocalStore(tmp_path)
    for step in (5, 10):
        save_checkpoint(store, 0, step, {"a.bin": bytes(range(200)), "meta.json": b"{}"})
    key = stored_file(store, 0, 10, "a.bin")
    data = store.read_bytes(key)
    if damage == "flip":
        store.write_bytes(key, data[:50] + bytes([data[50] ^ 0xFF]) + data[51:])
    elif damage == "truncate":
        store.write_bytes(key, data[:100])
    else:
        store.delete(key)
    with caplog.at_level(logging.WARNING):
        step, _ = latest_checkpoint(store, 0)
    assert step == 5
    assert f"{key}" in caplog.text


@pytest.fixture(params=["local", "s3"])
def any_store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path)
    return open_store(request.getfixturevalue("s3_env"))


def _snapshot(store, split, step) -> dict[str, bytes]:
    """Every object of a checkpoint's prefix, byte for byte."""
    return {key: store.read_bytes(key) for key in store.list(f"{checkpoint_prefix(split, step)}/")}


def test_complete_checkpoint_never_overwritten(any_store):
    save_checkpoint(any_store, 0, 5, {"a.bin": b"first"})
    with pytest.raises(FileExistsError):
        save_checkpoint(any_store, 0, 5, {"a.bin": b"second"})
    assert load_checkpoint(any_store, 0, 5)["a.bin"] == b"first"


def test_late_writer_cannot_replace_a_committed_checkpoint(any_store):
    """Writer A passes its checks, then B commits the same step (A paused, its lease expired); A's files lie beside
    B's under A's own names and A's marker is refused: B's checkpoint stays byte-identical, and A's files are gone."""
    committed = {}

    def b_commits_meanwhile():
        if not committed:
            save_checkpoint(any_store, 0, 5, {"a.bin": b"by B", "b.bin": b"B too"})
            committed.update(_snapshot(any_store, 0, 5))

    with pytest.raises(CheckpointExists, match="completed by another writer first"):
        save_checkpoint(any_store, 0, 5, {"a.bin": b"by A", "b.bin": b"A too"}, fence=b_commits_meanwhile)
    assert _snapshot(any_store, 0, 5) == committed
    assert load_checkpoint(any_store, 0, 5) == {"a.bin": b"by B", "b.bin": b"B too"}


def test_a_marker_without_writer_tokens_is_not_a_checkpoint(tmp_path, caplog):
    """0.1.0 writes every marker with its writer's token and object names; one without them is damage."""
    store = LocalStore(tmp_path)
    prefix = checkpoint_prefix(0, 5)
    store.write_bytes(f"{prefix}/a.bin", b"old")
    store.write_bytes(f"{prefix}/{MARKER}", json.dumps({"step": 5, "files": {"a.bin": {
        "bytes": 3, "sha256": hashlib.sha256(b"old").hexdigest()}}}).encode())
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(store, 0) is None
    assert f"{prefix}/{MARKER}: writer: Field required" in caplog.text


@pytest.mark.parametrize("files", [{"a.bin": {"bytes": "3", "sha256": "0" * 64}}, {"a.bin": {"bytes": 3}},
                                   {"a.bin": {"bytes": 3, "sha256": "0" * 64, "object": "../../lease.json"}},
                                   ["a.bin"], {"a.bin": {"bytes": 3.5, "sha256": "0" * 64}}])
def test_marker_with_wrong_field_types_falls_back(tmp_path, caplog, files):
    store = LocalStore(tmp_path)
    save_checkpoint(store, 0, 5, {"a.bin": b"five"})
    save_checkpoint(store, 0, 10, {"a.bin": b"ten"})
    store.write_bytes(f"{checkpoint_prefix(0, 10)}/{MARKER}", json.dumps({"step": 10, "files": files}).encode())
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(store, 0) == (5, {"a.bin": b"five"})
    assert f"{checkpoint_prefix(0, 10)}/{MARKER}" in caplog.text


def test_retention_keeps_newest_two(tmp_path):
    store = LocalStore(tmp_path)
    store.write_bytes(f"{checkpoint_prefix(0, 3)}/a.bin", b"half-written, old")
    for step in (5, 10, 15, 20):
        save_checkpoint(store, 0, step, {"a.bin": b"x"})
        prune_checkpoints(store, 0, keep=2)
    assert complete_steps(store, 0) == [15, 20]
    assert store.list("splits/split-00000/checkpoints/") == sorted(
        [f"{checkpoint_prefix(0, s)}/{MARKER}" for s in (15, 20)]
        + [stored_file(store, 0, s, "a.bin") for s in (15, 20)])
    marker = json.loads(store.read_bytes(f"{checkpoint_prefix(0, 20)}/{MARKER}"))
    assert marker["files"]["a.bin"]["bytes"] == 1 and len(marker["files"]["a.bin"]["sha256"]) == 64


def test_checkpoints_from_step_10_to_the_8_resume_show_prune_and_assemble(digits_store, capsys):
    """step-100000000 has nine digits: resume, status, pruning and the ensemble see it as they see step-00000005,
    and --steps is bounded where checkpoint names still sort and KFP's numbers stay exact."""
    from acgan.ensemble import assemble_ensemble
    from acgan.experiment import split_statuses
    from acgan.training.loop import TrainConfig, train_split
    from acgan_cli.main import main
    from tests.conftest import tiny_config

    big = 10**8
    train_split(digits_store, tiny_config(split=0, steps=5))
    train_split(digits_store, tiny_config(split=1, steps=5))
    files = load_checkpoint(digits_store, 0, 5)  # as a run that long would have written it at step 10^8
    files["meta.json"] = json.dumps({**json.loads(files["meta.json"]), "step": big}).encode()
    save_checkpoint(digits_store, 0, big, files)
    assert complete_steps(digits_store, 0) == [5, big]
    assert split_statuses(digits_store)[0].step == big

    result = train_split(digits_store, tiny_config(split=0, steps=big + 5))
    assert result["resumed_from"] == big and result["step"] == big + 5
    assert complete_steps(digits_store, 0) == [big, big + 5]  # step 5 pruned, two kept
    manifest = assemble_ensemble(digits_store, 5)
    assert {m.split: m.step for m in manifest.classes} == {0: big + 5, 1: 5}

    from acgan.settings import MAX_STEPS

    TrainConfig(steps=MAX_STEPS, checkpoint_every=MAX_STEPS)
    for flag in ("--steps", "--checkpoint-every"):
        for value in (MAX_STEPS + 1, 10**21):
            code = main(["train-split", "--store", str(digits_store.root), "--split", "1", flag, str(value)])
            err = capsys.readouterr().err
            assert code == 2 and flag in err and "Traceback" not in err, err
    assert main(["plan", "--images-per-second", "100", "--steps", str(10**21)]) == 2
    assert "--steps" in capsys.readouterr().err


def test_training_on_keeps_the_checkpoints_the_ensemble_samples_from(digits_store, tmp_path):
    """Issue 36: training on past an assembled ensemble pruned its step once two newer checkpoints existed, and
    `acgan sample` then failed on it. The ensemble's checkpoint stays until a new assembly replaces it."""
    from acgan.ensemble import assemble_ensemble, sample
    from acgan.training.loop import train_split
    from tests.conftest import tiny_config

    for split in (0, 1):
        train_split(digits_store, tiny_config(split=split, steps=10))
    assemble_ensemble(digits_store, 10)
    train_split(digits_store, tiny_config(split=0, steps=25))
    assert complete_steps(digits_store, 0) == [10, 20, 25]  # 15 pruned, the ensemble's 10 kept
    assert sample(digits_store, "0", 2, 0, tmp_path / "s.png")["step"] == 10
    assert assemble_ensemble(digits_store, 10).classes[0].step == 25  # a new ensemble: step 10 is not needed
    train_split(digits_store, tiny_config(split=0, steps=30))
    assert complete_steps(digits_store, 0) == [25, 30]
