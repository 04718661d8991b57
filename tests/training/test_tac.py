"""TAC-GAN's objective (Gong et al. 2019; TAC-BigGAN/train_fns.py, `Twin_AC`) on real training steps: the twin head
learns from generated images only, G's twin term has the opposite sign of its class term, checkpoints keep the twin
head and resume bit-identically, a checkpoint of the paper's objective is as before, and `acgan run --objective tac`
runs end to end."""

import copy
import json
import shutil
import subprocess
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors

from acgan.checkpoint import latest_checkpoint
from acgan.errors import UserError
from acgan.layout import TRAIN_STATE_FILE
from acgan.model import Discriminator, Generator, ModelConfig
from acgan.store import LocalStore, open_store
from acgan.training.losses import generator_loss, tac_generator_loss
from acgan.training.loop import train_split
from acgan.training.step import FastPath, TrainStep, make_optimizers
from tests.conftest import tiny_config

CFG = ModelConfig(resolution=32, channels=1, num_classes=3, width=0.0625, d_width=0.125, d_dropout=0.0,
                  d_noise_std=0.0, objective="tac")


def batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(8, 1, 32, 32, generator=g) * 2 - 1, torch.randint(3, (8,), generator=g),
            torch.randn(8, CFG.noise_dim, generator=g), torch.randint(3, (8,), generator=g))


def one_step(G, D, x_real, y_real, z, y_fake, d_fake_class_loss=False):
    """One real training step on copies of G and D; returns the copies after it."""
    G, D = copy.deepcopy(G), copy.deepcopy(D)
    TrainStep(G, D, *make_optimizers(G, D, 2e-4, (0.5, 0.999), FastPath()), FastPath(), d_fake_class_loss)(
        x_real, y_real, z, y_fake)
    return G, D


def test_the_twin_head_learns_from_generated_images_only():
    """Two steps from the same weights on different real batches and the same generated ones: the main head and
    D's features move differently, the twin head identically (its gradient is its term on the generated images).
    Other generated images move the twin head too: it is trained."""
    torch.manual_seed(0)
    G, D = Generator(CFG), Discriminator(CFG)
    x_real, y_real, z, y_fake = batch(0)
    other_real, other_labels, other_z, _ = batch(1)
    _, D_a = one_step(G, D, x_real, y_real, z, y_fake)
    _, D_b = one_step(G, D, other_real, other_labels, z, y_fake)
    _, D_c = one_step(G, D, x_real, y_real, other_z, y_fake)
    assert not torch.equal(D_a.head.weight, D_b.head.weight) and not torch.equal(D_a.net[1].weight, D_b.net[1].weight)
    assert torch.equal(D_a.twin_head.weight, D_b.twin_head.weight)
    assert torch.equal(D_a.twin_head.bias, D_b.twin_head.bias)
    assert not torch.equal(D_a.twin_head.weight, D.twin_head.weight)  # the step trained it ...
    assert not torch.equal(D_a.twin_head.weight, D_c.twin_head.weight)  # ... on the generated images


def test_gs_twin_term_has_the_opposite_sign_of_its_class_term():
    """On a tiny model, G's gradient under TAC is its AC-GAN gradient minus the gradient of the twin head's
    cross-entropy, which is not the main head's (StudioGAN's TACGAN computes it on the main head, so that G's two
    class terms cancel)."""
    torch.manual_seed(0)
    G, D = Generator(CFG), Discriminator(CFG)
    _, _, z, y_fake = batch(2)

    def g_gradient(loss_of) -> torch.Tensor:
        G.zero_grad()
        loss_of(G(z, y_fake)).backward()
        return torch.cat([p.grad.flatten() for p in G.parameters()])

    tac = g_gradient(lambda x: tac_generator_loss(D, x, y_fake))
    acgan = g_gradient(lambda x: generator_loss(D, x, y_fake))
    twin = g_gradient(lambda x: F.cross_entropy(D(x)[2], y_fake))
    main_class = g_gradient(lambda x: F.cross_entropy(D(x)[1], y_fake))
    assert twin.norm() > 0 and torch.allclose(tac, acgan - twin, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(twin, main_class, rtol=0.1)


def test_a_tac_step_updates_as_the_objective_written_out():
    """TrainStep with TAC against TAC-BigGAN's update written plainly: D minimises its AC-GAN loss plus
    CE(C_mi(x_fake), y); G minimises BCE(fake -> real) + CE(C(x_fake), y) - CE(C_mi(x_fake), y)."""
    torch.manual_seed(0)
    G, D = Generator(CFG), Discriminator(CFG)
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
    step = TrainStep(G, D, *make_optimizers(G, D, 2e-4, (0.5, 0.999), FastPath()), FastPath(), False)
    opt_g, opt_d = make_optimizers(G_ref, D_ref, 2e-4, (0.5, 0.999), FastPath())
    for i in range(3):
        x_real, y_real, z, y_fake = batch(i)
        step(x_real, y_real, z, y_fake)
        x_fake = G_ref(z, y_fake)
        (s_real, c_real, _), (s_fake, _, t_fake) = D_ref(x_real), D_ref(x_fake.detach())
        loss_d = (F.binary_cross_entropy_with_logits(s_real, torch.ones_like(s_real))
                  + F.binary_cross_entropy_with_logits(s_fake, torch.zeros_like(s_fake))
                  + F.cross_entropy(c_real, y_real) + F.cross_entropy(t_fake, y_fake))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        s_fake, c_fake, t_fake = D_ref(x_fake)
        opt_g.zero_grad()
        (F.binary_cross_entropy_with_logits(s_fake, torch.ones_like(s_fake)) + F.cross_entropy(c_fake, y_fake)
         - F.cross_entropy(t_fake, y_fake)).backward()
        opt_g.step()
    for p, q in zip([*G.parameters(), *D.parameters()], [*G_ref.parameters(), *D_ref.parameters()]):
        assert torch.allclose(p, q, rtol=0, atol=1e-6)


def _train_state(store) -> dict[str, torch.Tensor]:
    return load_safetensors(latest_checkpoint(store, 0)[1][TRAIN_STATE_FILE])


def test_a_tac_checkpoint_keeps_the_twin_head_and_resumes_bit_identically(digits_store, tmp_path, single_thread):
    other = LocalStore(tmp_path / "other")
    shutil.copytree(digits_store.root, other.root)
    train_split(digits_store, tiny_config(steps=20, objective="tac"))
    train_split(other, tiny_config(steps=10, objective="tac"))
    train_split(other, tiny_config(steps=20, objective="tac"))
    a, b = _train_state(digits_store), _train_state(other)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert {"D.twin_head.weight", "D.twin_head.bias"} <= set(a)
    twin_moments = [k for k in a if k.startswith("opt_d.") and k.endswith(".exp_avg")]
    assert len(twin_moments) == len([k for k in a if k.startswith("D.") and "running" not in k
                                     and "num_batches" not in k])  # Adam holds the twin head's moments too


def test_a_checkpoint_of_the_papers_objective_is_as_before_and_keeps_its_objective(digits_store):
    """Trained with `acgan`: no twin head in D or its optimiser, its meta records the objective, and it resumes as
    the paper's; resuming it with `tac` is refused in one line (D would gain a head its optimiser never saw)."""
    train_split(digits_store, tiny_config(steps=5))
    state = _train_state(digits_store)
    assert not [k for k in state if "twin" in k]
    meta = json.loads(latest_checkpoint(digits_store, 0)[1]["meta.json"])
    assert meta["model"]["objective"] == "acgan" and meta["train"]["objective"] == "acgan"
    try:
        train_split(digits_store, tiny_config(steps=10, objective="tac"))
    except UserError as e:
        message = str(e)
    else:
        raise AssertionError("a split trained with acgan resumed with tac")
    assert "objective acgan) than requested" in message and "objective tac)" in message and "\n" not in message
    assert train_split(digits_store, tiny_config(steps=10))["step"] == 10


def test_acgan_run_with_tac_end_to_end(tmp_path):
    """The whole pipeline through kfp.local with TAC, tiny: every split trains with the twin head, and the ensemble
    is assembled and evaluated."""
    store_path = tmp_path / "store"
    run = subprocess.run(
        [sys.executable, "-m", "acgan_cli.main", "run", "--store", str(store_path), "--objective", "tac",
         "--steps", "20", "--samples-per-class", "8", "--pairs", "8", "--classifier-steps", "30",
         "--pipeline-root", str(tmp_path / "kfp")], capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    store = open_store(str(store_path))
    assert json.loads(store.read_bytes("experiment.json"))["objective"] == "tac"
    for split in (0, 1):
        step, files = latest_checkpoint(store, split)
        assert step == 20 and "D.twin_head.weight" in load_safetensors(files[TRAIN_STATE_FILE])
    metrics = json.loads(store.read_bytes("eval/metrics.json"))
    assert len(metrics["classes"]) == 10 and 0 <= metrics["summary"]["accuracy"] <= 1
