"""acgan/snapshot.py: a checkpoint's sampling weights are the snapshot's, or with `raw` the trained G's, which the
training state holds where the snapshot is the average."""

import json

import torch

from acgan.layout import GENERATOR_FILE, META_FILE, TRAIN_STATE_FILE
from acgan.model import Discriminator, Generator, ModelConfig
from acgan.snapshot import generator_file_names, load_generator_weights
from acgan.training.state import pack_checkpoint
from acgan.training.step import FastPath, make_optimizers


def test_the_file_to_sample_from():
    assert generator_file_names({"ema": True}, raw=False) == [GENERATOR_FILE]
    assert generator_file_names({"ema": True}, raw=True) == [TRAIN_STATE_FILE]
    assert generator_file_names({"ema": False}, raw=True) == [GENERATOR_FILE]


def test_the_average_or_the_trained_g_loads_from_a_packed_checkpoint():
    cfg = ModelConfig(resolution=32, channels=1, num_classes=3, width=0.0625)
    torch.manual_seed(0)
    G, D, G_ema = Generator(cfg), Discriminator(cfg), Generator(cfg)
    opt_g, opt_d = make_optimizers(G, D, 2e-4, (0.5, 0.999), FastPath())
    files = pack_checkpoint(G, D, opt_g, opt_d, torch.Generator(), {"step": 1, "train": {"seed": 0}}, G_ema)
    assert json.loads(files[META_FILE])["ema"] is True
    for raw, source in ((False, G_ema), (True, G)):
        loaded = Generator(cfg)
        load_generator_weights(loaded, files, raw)
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), source.state_dict().values()))
