"""The evaluation's one pass over the class splits: each split's samples and real images are loaded on the device,
handed to every part the chosen analyses read (`Part`, parts.py), and dropped before the next split loads; the sample
grids and the nearest-neighbour rows are taken on the way."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, Protocol

import torch
from tqdm import tqdm

from acgan import progress
from acgan.data.plan import SplitPlan
from acgan.ensemble import EnsembleManifest
from acgan.evaluation.inputs import grid_png, nearest_rows, real_by_split, split_samples
from acgan.layout import sample_grid_key
from acgan.metrics.classifier import ClassifierInfo, Network, Outputs, classify
from acgan.settings import EvalSettings
from acgan.store import Store

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 30.0


@dataclass(frozen=True)
class Context:
    """What every part may use: the store and its plan, the settings, the device, the classifier where a part needs
    one (`info` None for a user's file, measured on the real images as they stream), the real images used per class,
    and `hold`, which closes what a part opens when the evaluation ends."""

    store: Store
    plan: SplitPlan
    settings: EvalSettings
    device: torch.device
    model: Network | None
    info: ClassifierInfo | None
    used: dict[int, int]
    hold: contextlib.ExitStack


@dataclass(frozen=True)
class Split:
    """One split's images on the evaluation device, as every part sees them: uint8 (N, C, H, W) with their class
    ids, the split's classes (`members`) in the stream's order."""

    members: list[int]
    samples: torch.Tensor
    sample_labels: torch.Tensor
    real: torch.Tensor
    real_labels: torch.Tensor
    model: Network | None

    @cached_property
    def classified(self) -> tuple[Outputs, Outputs]:
        """The classifier's one full-resolution pass, shared by the parts that read it: the samples' predictions,
        logits and features, the real images' predictions and features."""
        return (classify(self.model, self.samples, logits=True, features=True),
                classify(self.model, self.real, features=True))


class Part(Protocol):
    """What some analyses read from the stream, gathered split by split (`add`, small outputs kept on the CPU) and
    completed once every split was seen (`finish`); then its own entries of each class's record and of
    `computed_on`. `classifier`: whether it needs the classifier network."""

    classifier: ClassVar[bool]

    def __init__(self, context: Context) -> None: ...

    def add(self, split: Split) -> None: ...

    def finish(self) -> None: ...

    def per_class(self, c: int) -> dict: ...

    def computed_on(self) -> dict: ...


@dataclass(frozen=True)
class Run:
    """What every analysis may read besides its parts: the settings, the plan's resolution and the images used."""

    settings: EvalSettings
    resolution: int
    samples: int
    real_images: int


def stream_splits(context: Context, manifest: EnsembleManifest, parts: list[Part], shown: list[int],
                  k: int) -> tuple[Run, dict[int, dict[str, list[torch.Tensor]]], dict[str, bytes]]:
    """One split's samples and real images at a time, on the device, given to each part. Returns the run's counts,
    the nearest-neighbour rows of the classes `shown`, and each split's sample grid."""
    plan, settings, device = context.plan, context.settings, context.device
    columns = min(settings.grid_columns, settings.samples_per_class)
    rows, grids, samples_seen, real_seen = {}, {}, 0, 0
    tty = sys.stderr.isatty()  # a bar in a terminal; in a pod's or a task's log, a line every PROGRESS_SECONDS
    splits = tqdm(plan.splits, desc="evaluate", unit="split", disable=not tty)
    start = last_log = time.perf_counter()
    reals = real_by_split(context.store, plan, settings.real_per_class, settings.seed, device)
    for index, members in enumerate(splits):
        if not tty and (time.perf_counter() - last_log >= PROGRESS_SECONDS or index == 0):
            last_log = time.perf_counter()
            log.info("evaluating split %d / %d, %.0f s so far", index + 1, len(plan.splits), last_log - start)
        real, real_labels = next(reals)  # not zip(): its reused result tuple would hold the last split's images
        samples, sample_labels = split_samples(context.store, manifest, members, settings.samples_per_class,
                                               settings.seed, device, settings.raw)
        split = Split(members, samples, sample_labels, real, real_labels, context.model)
        for part in parts:
            part.add(split)
        samples_seen, real_seen = samples_seen + len(sample_labels), real_seen + len(real_labels)
        for c in set(shown) & set(members):
            rows[c] = nearest_rows(samples[sample_labels == c][:2], real[real_labels == c], k)
        grids[sample_grid_key(index)] = grid_png(torch.cat(
            [samples[sample_labels == c][:columns] for c in members]), columns)
        del split, samples, sample_labels, real, real_labels  # freed before the next split is loaded
        progress.emit(progress.EVALUATE, "progress", part=progress.SPLITS, step=index + 1, total=len(plan.splits))
    return Run(settings, plan.resolution, samples_seen, real_seen), rows, grids
