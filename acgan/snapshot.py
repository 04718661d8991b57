"""A checkpoint's sampling snapshot read back: which of its files holds the weights to sample from, and loading them
into a generator. The files are named in acgan/layout.py and written by acgan/training/state.py; with an averaged
generator the snapshot is the average, and the trained G is in the training state (the meta's `ema` says which).
"""

from __future__ import annotations

import json

import torch
from safetensors.torch import load as load_safetensors

from acgan.layout import GENERATOR_FILE, META_FILE, TRAIN_STATE_FILE


def unprefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors saved under `<prefix>.`, without it."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def generator_file_names(meta: dict, raw: bool) -> list[str]:
    """The file that holds the weights to sample from: the snapshot, or with `raw` the trained G, which is in the
    training state when the snapshot is its average."""
    return [TRAIN_STATE_FILE if raw and meta.get("ema") else GENERATOR_FILE]


def load_generator_weights(G, files: dict[str, bytes], raw: bool = False) -> None:
    """G's weights from a checkpoint's files (those `generator_file_names` names, and the meta)."""
    name = generator_file_names(json.loads(files[META_FILE]), raw)[0]
    G.load_state_dict(unprefixed(load_safetensors(files[name]), "G"))
