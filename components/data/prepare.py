"""`acgan prepare`: a data source -> one safetensors shard per split, then `plan.json` (written last: a store with a
plan is a prepared store).

Shard `data/split-NNNNN.safetensors`: `images` uint8 (N, C, R, R), `labels` int64 (N,) global class ids.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from tqdm import tqdm

from components.data.plan import PLAN_KEY, ClassInfo, SplitPlan, contiguous_splits, load_plan, save_plan, \
    splits_from_file
from components.data.sources import digits_source, cifar10_source, folder_source, synthetic_source, Source
from components.errors import UserError
from components.store import Store

log = logging.getLogger(__name__)
DATASETS = ("digits", "cifar10", "folder", "synthetic")


class PrepareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: Literal["digits", "cifar10", "folder", "synthetic"] = "digits"
    source: Path | None = Field(None, description="CIFAR-10 directory/.tar.gz, or the class-folder root")
    resolution: Literal[32, 64, 128] = 32
    classes_per_split: int = Field(10, ge=1)
    plan_file: Path | None = Field(None, description="JSON {'splits': [[class, ...], ...]}; overrides classes_per_split")
    num_classes: int = Field(10, ge=1, le=100_000, description="synthetic only")
    images_per_class: int = Field(100, ge=2, le=100_000, description="synthetic only")
    strict: bool = Field(False, description="folder: fail on the first unreadable image instead of skipping it")
    seed: int = 0

    @model_validator(mode="after")
    def _source_given(self) -> "PrepareConfig":
        if self.dataset in ("cifar10", "folder") and self.source is None:
            raise ValueError(f"dataset {self.dataset} needs --source (the {self.dataset} files to read)")
        return self


def shard_key(split: int) -> str:
    return f"data/split-{split:05d}.safetensors"


def open_source(cfg: PrepareConfig) -> Source:
    if cfg.dataset == "digits":
        return digits_source(cfg.resolution)
    if cfg.dataset == "cifar10":
        return cifar10_source(cfg.source, cfg.resolution)
    if cfg.dataset == "folder":
        return folder_source(cfg.source, cfg.resolution, cfg.strict)
    return synthetic_source(cfg.num_classes, cfg.images_per_class, cfg.resolution, cfg.seed)


def prepare(cfg: PrepareConfig, store: Store) -> SplitPlan:
    store.ensure_ready(create=True)
    source = open_source(cfg)
    names = source.class_names
    splits = splits_from_file(cfg.plan_file, names) if cfg.plan_file else contiguous_splits(len(names),
                                                                                           cfg.classes_per_split)
    if store.exists(PLAN_KEY):
        old = load_plan(store)
        if (old.dataset, old.resolution, [c.name for c in old.classes], old.splits) != (
                cfg.dataset, cfg.resolution, names, splits):
            raise UserError(f"store {store.uri} already holds a different plan ({old.dataset}, {old.resolution}px, "
                            f"{len(old.classes)} classes in {len(old.splits)} splits): use a new --store")
        missing = [split for split in range(len(old.splits)) if not store.exists(shard_key(split))]
        if not missing:
            log.info("store %s is already prepared with this plan; nothing to do", store.uri)
            return old
        log.warning("store %s lacks the data of split(s) %s; writing the data again", store.uri, missing[:10])
    counts: dict[int, int] = {}
    for split, members in enumerate(tqdm(splits, desc="prepare", unit="split", disable=not sys.stderr.isatty())):
        per_class = [source.load_class(c) for c in members]
        images = np.ascontiguousarray(np.concatenate(per_class))
        labels = np.concatenate([np.full(len(a), c, dtype=np.int64) for c, a in zip(members, per_class)])
        counts.update({c: len(a) for c, a in zip(members, per_class)})
        store.write_bytes(shard_key(split), save_safetensors({"images": torch.from_numpy(images),
                                                              "labels": torch.from_numpy(labels)}))
        log.info("split %d: %d images of classes %s", split, len(images), members)
    if source.skipped:
        log.warning("skipped %d unreadable image(s) in %d class(es)", sum(source.skipped.values()),
                    len(source.skipped))
    plan = SplitPlan(dataset=cfg.dataset, resolution=cfg.resolution, channels=source.channels,
                     classes=[ClassInfo(id=i, name=n, images=counts[i]) for i, n in enumerate(names)], splits=splits)
    save_plan(store, plan)
    return plan


def load_shard(store: Store, split: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, C, R, R), labels int64 global ids) of one split."""
    try:
        tensors = load_safetensors(store.read_bytes(shard_key(split)))
    except KeyError:
        raise UserError(f"store {store.uri} has no data for split {split}: run `acgan prepare` again") from None
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise UserError(f"data shard of split {split} in {store.uri} is corrupt ({e}): run `acgan prepare` "
                        "into a new store") from None
    return tensors["images"], tensors["labels"]
