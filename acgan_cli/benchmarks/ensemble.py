"""An ensemble to time, not to judge: untrained generators' sampling snapshots, which cost what trained ones cost
(the evaluation's and the server's benchmarks draw from it)."""

from __future__ import annotations

import json

from safetensors.torch import save as save_safetensors

from acgan.checkpoint import save_checkpoint
from acgan.data.prepare import PrepareConfig, prepare
from acgan.ensemble import assemble_ensemble
from acgan.layout import GENERATOR_FILE, META_FILE
from acgan.model import Generator, ModelConfig


def untrained_ensemble(store, classes: int, resolution: int = 128, width: float = 1.0, classes_per_split: int = 10,
                       g_layout: str = "paper"):
    """A prepared store of `classes` synthetic classes (at 128px, 10 a split, by default) whose ensemble members are
    untrained generators' sampling snapshots (G at `width` and `g_layout`; no split trained, no training state
    written); returns its plan."""
    plan = prepare(PrepareConfig(dataset="synthetic", num_classes=classes, images_per_class=100, resolution=resolution,
                                 classes_per_split=classes_per_split), store)
    for split, members in enumerate(plan.splits):
        cfg = ModelConfig(resolution=resolution, channels=plan.channels, num_classes=len(members), width=width,
                          g_layout=g_layout)
        weights = {f"G.{k}": v.contiguous() for k, v in Generator(cfg).state_dict().items()}
        save_checkpoint(store, split, 1, {GENERATOR_FILE: save_safetensors(weights),
                                          META_FILE: json.dumps({"step": 1, "model": cfg.model_dump()}).encode()})
    assemble_ensemble(store, 1)
    return plan

