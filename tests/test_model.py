import pytest
import torch

from acgan.model import Discriminator, Dropout, Generator, ModelConfig


@pytest.mark.parametrize("resolution", [32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_ranges(resolution, channels):
    cfg = ModelConfig(resolution=resolution, channels=channels, num_classes=7, width=0.125)
    G, D = Generator(cfg), Discriminator(cfg)
    z, y = torch.randn(3, cfg.noise_dim), torch.tensor([0, 3, 6])
    x = G(z, y)
    assert x.shape == (3, channels, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1  # tanh: the scale of the data
    source, classes, twin = D(x)
    assert source.shape == (3,) and classes.shape == (3, 7) and twin is None  # the paper's D: no twin head


def test_paper_architecture_at_128():
    """Paper appendix: G 110 -> 768x8x8 -> 384, 256, 192 -> 3 (5x5 stride 2); D six 3x3 convs 16..512."""
    cfg = ModelConfig(resolution=128, channels=3, num_classes=10)
    G, D = Generator(cfg), Discriminator(cfg)
    assert G.fc.in_features == 110 and G.fc.out_features == 768 * 8 * 8
    convs = [m for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in convs] == [
        (768, 384, (5, 5), (2, 2)), (384, 256, (5, 5), (2, 2)), (256, 192, (5, 5), (2, 2)), (192, 3, (5, 5), (2, 2))]
    assert not isinstance(list(G.net)[-2], torch.nn.BatchNorm2d)  # no batch norm before tanh
    d_convs = [m for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(m.out_channels, m.stride[0], m.kernel_size) for m in d_convs] == [
        (16, 2, (3, 3)), (32, 1, (3, 3)), (64, 2, (3, 3)), (128, 1, (3, 3)), (256, 2, (3, 3)), (512, 1, (3, 3))]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules()) == 5  # all but the first
    assert sum(isinstance(m, Dropout) and m.p == 0.5 for m in D.modules()) == 6
    assert D.head.out_features == 11
    weights = torch.cat([m.weight.flatten() for m in convs + d_convs])
    assert abs(weights.std().item() - 0.02) < 0.002 and abs(weights.mean().item()) < 0.001
    assert all((m.bias == 0).all() for m in convs + d_convs)


def test_d_width_scales_every_discriminator_layer():
    D = Discriminator(ModelConfig(resolution=32, channels=1, num_classes=5, d_width=0.5))
    d_convs = [m for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in d_convs] == [8, 16, 32, 64, 128, 256]
    assert D.head.in_features == 256 * 4 * 4 and D.head.out_features == 6
    source, classes, _ = D(torch.randn(2, 1, 32, 32))
    assert source.shape == (2,) and classes.shape == (2, 5)
    assert "d_width" in ModelConfig.SHAPE_FIELDS  # a checkpoint of one D width never loads into another


def test_tac_adds_a_twin_class_head_on_ds_features_and_nothing_else():
    """TAC-GAN's D (TAC-BigGAN/BigGAN.py: `linear_mi` beside `linear_c` on the same features): the paper's D's
    weights, drawn as before, plus one linear head of K classes; the objective is a shape field, so a checkpoint of
    one objective never resumes into the other."""
    cfg = ModelConfig(resolution=32, channels=1, num_classes=5, d_width=0.5)
    torch.manual_seed(0)
    paper = Discriminator(cfg)
    torch.manual_seed(0)
    tac = Discriminator(cfg.model_copy(update={"objective": "tac"}))
    twin = {k: v for k, v in tac.state_dict().items() if k not in paper.state_dict()}
    assert set(twin) == {"twin_head.weight", "twin_head.bias"} and twin["twin_head.weight"].shape == (5, 256 * 4 * 4)
    assert all(torch.equal(v, tac.state_dict()[k]) for k, v in paper.state_dict().items())
    assert abs(twin["twin_head.weight"].std().item() - 0.02) < 0.002 and (twin["twin_head.bias"] == 0).all()
    x = torch.randn(2, 1, 32, 32)
    (s0, c0, _), (s1, c1, t1) = paper.eval()(x), tac.eval()(x)
    assert torch.equal(s0, s1) and torch.equal(c0, c1) and t1.shape == (2, 5) and not torch.equal(t1, c1)
    assert "objective" in ModelConfig.SHAPE_FIELDS


def test_32px_generator_follows_the_papers_cifar10_table():
    """Appendix, CIFAR-10: linear to 384 channels, then 5x5 stride-2 transposed convolutions to 192, 96 and 3."""
    G = Generator(ModelConfig(resolution=32, channels=3, num_classes=10, g_layout="paper"))
    assert G.fc.out_features == 384 * 4 * 4
    deconvs = [m for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in deconvs] == [
        (384, 192, (5, 5), (2, 2)), (192, 96, (5, 5), (2, 2)), (96, 3, (5, 5), (2, 2))]
    assert G(torch.randn(2, 100), torch.tensor([0, 9])).shape == (2, 3, 32, 32)
    assert Generator(ModelConfig(resolution=32, channels=3, num_classes=10)).fc.out_features == 384 * 4 * 4  # default
    # The ImageNet G's 8x8 start, which the embedded run (the demo preset) was tuned with.
    demo = Generator(ModelConfig(resolution=32, channels=3, num_classes=10, g_layout="imagenet-start"))
    assert demo.fc.out_features == 768 * 8 * 8 and "g_layout" in ModelConfig.SHAPE_FIELDS
    # At 64 and 128 px there is one generator.
    for resolution in (64, 128):
        shapes = [tuple(p.shape) for g in ("paper", "imagenet-start")
                  for p in Generator(ModelConfig(resolution=resolution, g_layout=g)).parameters()]
        assert shapes[:len(shapes) // 2] == shapes[len(shapes) // 2:]


def test_activation_noise_only_while_training():
    cfg = ModelConfig(resolution=32, channels=1, num_classes=2, width=0.125, d_noise_std=0.5)
    D = Discriminator(cfg).eval()
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(D(x)[0], D(x)[0])
    D.train()
    assert not torch.equal(D(x)[0], D(x)[0])


@pytest.mark.parametrize("p", [0.25, 0.5, 0.3])
def test_dropout_drops_a_fraction_p_and_rescales_the_rest(p):
    # An element count not a multiple of four; no element zero (randn gives an exact 0.0 about once in 15 million,
    # which a dropped element's zero could not be told from).
    x = (torch.rand(1001, 999) + 0.5).requires_grad_()
    torch.manual_seed(0)
    y = Dropout(p)(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - p) < 0.003  # 1M elements: the standard error is 0.0005
    assert torch.allclose(y[kept], x[kept] / (1 - p))
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept) and torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 1 / (1 - p)))
    # No pattern across the mask's 16-bit lanes or rows: each of the four lanes of a 64-bit draw drops p.
    lanes = kept.flatten()[:1000 * 999 // 4 * 4].view(-1, 4).float().mean(0)
    assert (lanes - (1 - p)).abs().max() < 0.006
    torch.manual_seed(0)
    assert torch.equal(Dropout(p)(x), y)  # the seed gives the mask: a resumed run draws what it would have


def test_dropout_only_while_training_and_torchs_own_off_the_cpu(monkeypatch):
    x = torch.randn(4, 8)
    assert torch.equal(Dropout(0.5).eval()(x), x) and torch.equal(Dropout(0.0)(x), x)
    # On another device (meta: shapes without data) it is F.dropout, whose lowering torch.compile knows.
    calls, real = [], torch.nn.functional.dropout
    monkeypatch.setattr(torch.nn.functional, "dropout", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    assert Dropout(0.25)(torch.empty(4, 8, device="meta")).shape == (4, 8) and calls == [0.25]


def test_bad_config_rejected():
    with pytest.raises(ValueError, match="resolution must be one of"):
        ModelConfig(resolution=48)
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        ModelConfig(channels=2)
