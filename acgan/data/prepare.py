"""`acgan prepare`: a data source -> the split plan, then one checksummed safetensors shard per split.

The plan is made from a listing of class names only (`plan_data`); each split's shard is then built on its own
(`prepare_shard`), reading only that split's classes, so the pipeline builds them in parallel inside its fan-out.
Store layout:
  plan.json                       the classes (id = position) and the splits
  data/prepare.json               the preparation settings every shard task reads
  data/split-NNNNN.safetensors    `images` uint8 (N, C, R, R), `labels` int64 (N,) global class ids
  data/split-NNNNN.json           written after the shard: its sha256, images per class, unreadable files skipped
A shard counts as complete only once its sidecar exists and the shard matches its checksum: a task killed before
that is rebuilt by the next run, a complete one is never rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from acgan.data.plan import ClassInfo, SplitPlan, contiguous_splits, load_plan, save_plan, splits_from_file
from acgan.data.sources import Source, cifar10_source, digits_source, folder_source
from acgan.data.synthetic import synthetic_source
from acgan.errors import UserError, command, one_line
from acgan.layout import PLAN_KEY, PREPARE_KEY, shard_info_key, shard_key
from acgan.settings import DataSettings
from acgan.store import Store, read_model, write_json

log = logging.getLogger(__name__)


class PrepareConfig(DataSettings):
    """What `acgan prepare` reads and how it splits it: `DataSettings`' fields, and these of its own."""

    plan_file: Path | None = Field(None, description='a JSON file {"splits": [[class, ...], ...]}: the splits, '
                                                     "instead of contiguous groups of classes_per_split")
    strict: bool = Field(False, description="folder: fail on the first unreadable image instead of skipping it")


class ShardInfo(BaseModel):
    """The sidecar of one shard, written after it."""

    model_config = ConfigDict(extra="forbid")

    sha256: str
    bytes: int
    images: dict[str, int]  # class name -> images in the shard
    skipped: dict[str, int] = Field(default_factory=dict)  # class name -> unreadable files left out


def open_source(cfg: PrepareConfig) -> Source:
    if cfg.dataset == "digits":
        return digits_source(cfg.resolution)
    if cfg.dataset == "cifar10":
        return cifar10_source(Path(cfg.source), cfg.resolution)
    if cfg.dataset == "folder":
        return folder_source(cfg.source, cfg.resolution, cfg.strict, cfg.class_list)
    return synthetic_source(cfg.num_classes, cfg.images_per_class, cfg.resolution, cfg.seed)


def plan_data(cfg: PrepareConfig, store: Store) -> SplitPlan:
    """Make (or check) the plan from the source's class names and record the settings the shard tasks read. The
    source and the plan are checked before anything is written: a plan in the store can only be kept."""
    source = open_source(cfg)
    source.check_classes()
    names = source.class_names
    splits = splits_from_file(cfg.plan_file, names) if cfg.plan_file else contiguous_splits(len(names),
                                                                                           cfg.classes_per_split)
    store.ensure_ready(create=True)
    plan = SplitPlan(dataset=cfg.dataset, resolution=cfg.resolution, channels=source.channels,
                     classes=[ClassInfo(id=i, name=n) for i, n in enumerate(names)], splits=splits)
    if store.exists(PLAN_KEY):
        old = load_plan(store)
        if (old.dataset, old.resolution, [c.name for c in old.classes], old.splits) != (
                cfg.dataset, cfg.resolution, names, splits):
            raise UserError(f"store {store.uri} already holds a different plan ({old.dataset}, {old.resolution}px, "
                            f"{len(old.classes)} classes in {len(old.splits)} splits): use a new --store")
        plan = old
    # The source may have moved (a bucket copied to a volume): the shard tasks read it where it is now.
    write_json(store, PREPARE_KEY, cfg.model_dump(mode="json"))
    if not store.exists(PLAN_KEY):
        save_plan(store, plan)
    log.info("plan: %d classes in %d splits", plan.num_classes, len(plan.splits))
    return plan


def shard_problem(store: Store, split: int) -> str | None:
    """Why the shard of `split` is not complete, or None when it is (its sidecar exists and the checksum matches)."""
    if not store.exists(shard_info_key(split)):
        return "it was never finished" if store.exists(shard_key(split)) else "it is missing"
    info = shard_info(store, split)
    try:
        data = store.read_bytes(shard_key(split))
    except KeyError:
        return "it is missing"
    if hashlib.sha256(data).hexdigest() != info.sha256:
        return f"it does not match its checksum in {shard_info_key(split)} (damaged)"
    return None


def prepare_shard(store: Store, split: int) -> ShardInfo:
    """Build the shard of `split` from the recorded settings, unless it is already complete."""
    plan = load_plan(store)
    members = plan.check_split(split)
    problem = shard_problem(store, split)
    if problem is None:
        log.info("split %d: shard %s is complete; not rebuilt", split, shard_key(split))
        return shard_info(store, split)
    if problem != "it is missing":
        log.warning("split %d: rebuilding %s: %s", split, shard_key(split), problem)
    if not store.exists(PREPARE_KEY):
        raise UserError(f"store {store.uri} has no {PREPARE_KEY}: run {_prepare_again(store)} with the settings "
                        "it was prepared with")
    cfg = read_model(store, PREPARE_KEY, PrepareConfig, f"delete it and run {_prepare_again(store)} with the "
                     "settings it was prepared with")
    source = open_source(cfg)
    if source.class_names != [c.name for c in plan.classes]:
        raise UserError(f"the source {cfg.source} no longer has the classes of {store.uri}/{PLAN_KEY}: restore it "
                        "or use a new --store")
    per_class = source.load_classes(members)
    images = np.ascontiguousarray(np.concatenate(per_class))
    labels = np.concatenate([np.full(len(a), c, dtype=np.int64) for c, a in zip(members, per_class)])
    data = save_safetensors({"images": torch.from_numpy(images), "labels": torch.from_numpy(labels)})
    store.write_bytes(shard_key(split), data)
    info = ShardInfo(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data),
                     images={plan.classes[c].name: len(a) for c, a in zip(members, per_class)},
                     skipped={n: k for n, k in source.skipped.items() if k})
    write_json(store, shard_info_key(split), info.model_dump())
    log.info("split %d: %d images of classes %s%s", split, len(images), members,
             f"; skipped {sum(info.skipped.values())} unreadable file(s)" if info.skipped else "")
    return info


def shard_info(store: Store, split: int) -> ShardInfo:
    return read_model(store, shard_info_key(split), ShardInfo, "the shard's record is damaged: delete it, and the "
                      "next run builds the shard again")


def prepare(cfg: PrepareConfig, store: Store) -> SplitPlan:
    """The plan and every split's shard, one after the other (the pipeline builds the shards in parallel)."""
    plan = plan_data(cfg, store)
    for split in range(len(plan.splits)):
        prepare_shard(store, split)
    return plan


def load_shard(store: Store, split: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, C, R, R), labels int64 global ids) of one split, after checking the shard's checksum."""
    key = shard_key(split)
    if not store.exists(shard_info_key(split)):
        raise UserError(f"store {store.uri} has no complete data for split {split} ({key}): run "
                        f"{_prepare_again(store)}")
    info = shard_info(store, split)
    try:
        data = store.read_bytes(key)
    except KeyError:
        raise UserError(f"store {store.uri} has no data for split {split}: run {_prepare_again(store)}") from None
    if hashlib.sha256(data).hexdigest() != info.sha256:
        raise UserError(f"{store.uri}/{key} does not match its checksum in {shard_info_key(split)} (damaged): "
                        f"run {_prepare_again(store)} to rebuild it")
    rebuild = f"delete {store.uri}/{shard_info_key(split)} and run {_prepare_again(store)} to build it again"
    try:
        tensors = load_safetensors(data)
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise UserError(f"{store.uri}/{key} is not a data shard ({one_line(str(e))[:200]}): {rebuild}") from None
    images, labels = tensors.get("images"), tensors.get("labels")
    # Content with a matching checksum may still be hostile: shapes are checked before anything indexes them.
    if images is None or labels is None or images.dtype != torch.uint8 or images.dim() != 4:
        problem = "it needs uint8 images (N, C, R, R) and int64 labels (N)"
    elif labels.dtype != torch.int64 or labels.dim() != 1 or len(labels) != len(images):
        problem = f"its {len(images)} images have {labels.numel()} labels of type {labels.dtype}, not one int64 each"
    elif len(images) == 0:
        problem = "it holds no images"
    else:
        return images, labels
    raise UserError(f"{store.uri}/{key}: {problem}; the shard is damaged: {rebuild}")


def _prepare_again(store: Store) -> str:
    """The command that builds a store's missing or damaged shards with the settings it recorded (prepare.json)."""
    return command("acgan", "prepare", "--store", store.uri)


def continued_prepare_config(store: Store, given: dict) -> PrepareConfig:
    """`acgan prepare` on a store that recorded its preparation settings (prepare.json) keeps them, each setting given
    replacing its recorded value (a preset given other than the recorded one applies its values instead); a new
    store takes the given preset's values, the paper's by default."""
    if not store.exists(PREPARE_KEY):
        return PrepareConfig(**{"preset": "paper", **given})
    recorded = read_model(store, PREPARE_KEY, PrepareConfig, f"delete it and run {_prepare_again(store)} with the "
                          "settings it was prepared with")
    if given.get("preset", recorded.preset) != recorded.preset:
        return PrepareConfig(**given)
    return PrepareConfig(**{**recorded.model_dump(), **given})
