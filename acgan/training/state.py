"""Training state <-> checkpoint files. Tensors go to safetensors, everything else to JSON: nothing is pickled.

An optimiser's state_dict is flattened to tensors `<name>.<param index>.<field>` plus its param_groups in JSON. With
an averaged generator (acgan/training/ema.py) the sampling snapshot is the average, under the same `G.` names, and
the training state holds both (`G.` the trained G, `G_ema.` the average); the meta's `ema` says which the snapshot
is. A checkpoint without an average (written with `ema_kimg` 0) samples from the trained G.
"""

from __future__ import annotations

import json
import logging

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from acgan.layout import GENERATOR_FILE, META_FILE, TRAIN_STATE_FILE
from acgan.snapshot import unprefixed
from acgan.training.step import match_param_layouts

log = logging.getLogger(__name__)


def _tensors(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in state.items()}


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    flat = {f"{idx}.{field}": (v if torch.is_tensor(v) else torch.tensor(v))
            for idx, fields in sd["state"].items() for field, v in fields.items()}
    return flat, sd["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, flat: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        idx, field = key.split(".", 1)
        state.setdefault(int(idx), {})[field] = v
    # Hyper-parameters come from the checkpoint, except the learning rate (`--lr` continues a diverged split with a
    # lower one); the implementation (fused on a GPU, not on a CPU) comes from this run.
    from_this_run = ("lr", "fused", "foreach", "capturable", "differentiable")
    groups = [{**saved, **{k: own[k] for k in from_this_run if k in own}}
              for saved, own in zip(groups, opt.param_groups)]
    opt.load_state_dict({"state": state, "param_groups": groups})
    match_param_layouts(opt)  # saved moments are contiguous; a channels-last weight needs them channels-last


def pack_checkpoint(G, D, opt_g, opt_d, data_rng: torch.Generator, meta: dict, G_ema=None) -> dict[str, bytes]:
    """The files of one checkpoint: the sampling snapshot (the averaged G if there is one, else G; + meta) and the
    full training state."""
    g_opt, g_groups = optimizer_tensors(opt_g)
    d_opt, d_groups = optimizer_tensors(opt_d)
    tensors = {**_tensors("G", G.state_dict()), **_tensors("D", D.state_dict()),
               **_tensors("opt_g", g_opt), **_tensors("opt_d", d_opt),
               "rng.torch": torch.get_rng_state(), "rng.data": data_rng.get_state()}
    if G_ema is not None:
        tensors.update(_tensors("G_ema", G_ema.state_dict()))
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    meta = {**meta, "device": data_rng.device.type, "optimizer_groups": {"opt_g": g_groups, "opt_d": d_groups},
            "ema": G_ema is not None}
    snapshot = G if G_ema is None else G_ema
    return {GENERATOR_FILE: save_safetensors(_tensors("G", snapshot.state_dict())),
            TRAIN_STATE_FILE: save_safetensors(tensors),
            META_FILE: json.dumps(meta, indent=2, sort_keys=True).encode()}


def unpack_checkpoint(files: dict[str, bytes], G, D, opt_g, opt_d, data_rng: torch.Generator, G_ema=None) -> dict:
    """Restore everything saved by pack_checkpoint; returns the meta. A `G_ema` given for a checkpoint without an
    average (one written with `ema_kimg` 0) starts from the restored G."""
    meta = json.loads(files[META_FILE])
    tensors = load_safetensors(files[TRAIN_STATE_FILE])
    G.load_state_dict(unprefixed(tensors, "G"))
    D.load_state_dict(unprefixed(tensors, "D"))
    if G_ema is not None:
        averaged = unprefixed(tensors, "G_ema")
        if not averaged:
            log.info("checkpoint of step %s has no averaged G: the average starts from its G", meta["step"])
        G_ema.load_state_dict(averaged or unprefixed(tensors, "G"))
    load_optimizer(opt_g, unprefixed(tensors, "opt_g"), meta["optimizer_groups"]["opt_g"])
    load_optimizer(opt_d, unprefixed(tensors, "opt_d"), meta["optimizer_groups"]["opt_d"])
    torch.set_rng_state(tensors["rng.torch"])
    _restore_data_rng(data_rng, tensors["rng.data"], meta)
    cuda_states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[:torch.cuda.device_count()])
    return meta


def _restore_data_rng(data_rng: torch.Generator, state: torch.Tensor, meta: dict) -> None:
    """A CPU generator's state does not fit a CUDA one and back: a split moved to the other device type draws from
    a generator seeded by its seed and step, the same on every such move."""
    saved = meta["device"]
    if saved == data_rng.device.type:
        data_rng.set_state(state)
        return
    seed, step = meta["train"]["seed"], meta["step"]
    data_rng.manual_seed((seed * 2**32 + step) % 2**63)
    log.warning("checkpoint of step %s was written on %s and resumes on %s: the data generator is re-seeded from "
                "the seed and step, so the run is not bit-identical to one that stayed on %s", step, saved,
                data_rng.device.type, saved)
