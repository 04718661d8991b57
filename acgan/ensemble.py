"""The ensemble: every class mapped to the sub-model (split checkpoint) that owns it. Written as `ensemble.json`.

Assembly reads the plan and each split's newest complete checkpoint whose files all verify against the checksums
in its marker (what training would resume from), and refuses to write a partial ensemble: it lists every missing or
incomplete split instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from acgan.checkpoint import CorruptCheckpoint, load_checkpoint, verified_step
from acgan.data.plan import load_plan
from acgan.errors import UserError, rerun_command
from acgan.layout import ENSEMBLE_KEY, GENERATOR_FILE, META_FILE, checkpoint_prefix
from acgan.model import Generator
from acgan.sampling import generate, generator_from_files, load_split_generator, with_raw_weights, write_samples
from acgan.store import Store, read_model, write_json

log = logging.getLogger(__name__)


class EnsembleMember(BaseModel):
    model_config = ConfigDict(extra="forbid")

    class_id: int = Field(ge=0)
    name: str
    split: int = Field(ge=0)
    local_index: int = Field(ge=0)
    checkpoint: str = Field(pattern=r"^splits/split-\d{5}/checkpoints/step-\d{8,}$")
    step: int = Field(ge=1)

    @model_validator(mode="after")
    def _checkpoint_of_its_split(self) -> "EnsembleMember":
        if self.checkpoint != checkpoint_prefix(self.split, self.step):
            raise ValueError(f"class {self.class_id}: checkpoint {self.checkpoint} is not split {self.split}'s step "
                             f"{self.step}")
        return self


class EnsembleManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: int
    channels: int
    target_steps: int = Field(ge=1)
    classes: list[EnsembleMember] = Field(min_length=1)

    @model_validator(mode="after")
    def _each_class_once(self) -> "EnsembleManifest":
        ids = [m.class_id for m in self.classes]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"classes {duplicates} appear more than once in the ensemble")
        if sorted(ids) != list(range(len(ids))):
            raise ValueError(f"the ensemble must cover classes 0..{len(ids) - 1} exactly; missing "
                             f"{sorted(set(range(len(ids))) - set(ids))[:10]}")
        return self

    def member(self, class_id: int) -> EnsembleMember:
        if not 0 <= class_id < len(self.classes):
            raise UserError(f"class {class_id} is out of range: the ensemble has classes 0..{len(self.classes) - 1}")
        return next(m for m in self.classes if m.class_id == class_id)


def assemble_ensemble(store: Store, target_steps: int) -> EnsembleManifest:
    """Map every class to its split's newest complete checkpoint whose files all verify; fail listing every split not
    ready."""
    plan = load_plan(store)
    problems, chosen = [], {}
    for split in range(len(plan.splits)):
        step, damaged = verified_step(store, split)  # as the plan judges it, so one rerun retrains what fails here
        if step is not None and step >= target_steps:
            chosen[split] = step
        elif damaged is not None:
            problems.append(f"split {split}: {damaged}")
        else:
            problems.append(f"split {split}: " + ("no complete checkpoint" if step is None else
                                                  f"at step {step} of {target_steps}"))
    if problems:
        raise UserError(f"cannot assemble the ensemble, {len(problems)} of {len(plan.splits)} splits are not ready ("
                        + "; ".join(problems) + f"): run {rerun_command(store.uri)}")
    manifest = EnsembleManifest(
        resolution=plan.resolution, channels=plan.channels, target_steps=target_steps,
        classes=[EnsembleMember(class_id=c.id, name=c.name, split=split, local_index=local,
                                checkpoint=checkpoint_prefix(split, chosen[split]), step=chosen[split])
                 for c in plan.classes for split, local in [plan.split_of(c.id)]])
    write_json(store, ENSEMBLE_KEY, manifest.model_dump())
    return manifest


def load_ensemble(store: Store) -> EnsembleManifest | None:
    if not store.exists(ENSEMBLE_KEY):
        return None
    return read_model(store, ENSEMBLE_KEY, EnsembleManifest, "it is not a valid ensemble manifest: assemble it "
                      f"again with {rerun_command(store.uri)}")


def load_member_generator(store: Store, member: EnsembleMember, device: str | torch.device = "cpu",
                          raw: bool = False) -> Generator:
    """The generator of the checkpoint the manifest names (verified), in eval mode: its sampling snapshot, or with
    `raw` its trained G."""
    try:
        files = load_checkpoint(store, member.split, member.step, [GENERATOR_FILE, META_FILE])
        files = with_raw_weights(store, member.split, member.step, files, raw)
    except CorruptCheckpoint as e:
        raise UserError(f"the ensemble's checkpoint for class {member.class_id} does not verify ({e}): "
                        f"run {rerun_command(store.uri)} to retrain and re-assemble") from None
    return generator_from_files(files, device, raw)[0]


def sample(store: Store, class_text: str, n: int, seed: int, out: Path, device: str = "cpu",
           raw: bool = False) -> dict:
    """`acgan sample`: through the ensemble manifest if the store has one, else the newest checkpoint of the split;
    the sampling snapshot, or with `raw` the trained G."""
    if n < 1:
        raise UserError(f"-n {n}: ask for at least one sample")
    plan = load_plan(store)
    class_id = plan.class_id(class_text)
    manifest = load_ensemble(store)
    if manifest is not None:
        member = manifest.member(class_id)
        G, split, step, local = (load_member_generator(store, member, device, raw), member.split, member.step,
                                 member.local_index)
    else:
        split, local = plan.split_of(class_id)
        G, meta = load_split_generator(store, split, device, raw)
        step = meta["step"]
    write_samples(generate(G, local, n, seed), np.full(n, class_id, dtype=np.int64), out)
    return {"class": class_id, "name": plan.classes[class_id].name, "split": split, "step": step, "out": str(out),
            "via": "ensemble" if manifest is not None else "latest checkpoint", "raw": raw}
