"""The collapse alarm: a split whose generated images of some class have grown more alike (higher MS-SSIM) than the
real images of the data set's least diverse class, the paper's threshold for low diversity (Odena et al. 2016, §4.2).

The real classes are measured when each split's data is prepared (`data/real-ms-ssim/split-NNNNN.json`), with the
protocol of the training stats lines (the same images per class and pairs, images in [-1, 1]), so a tick's per-class
MS-SSIM and the threshold are comparable. The last healthy checkpoint is the newest kept checkpoint whose tick was
under it.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel

from acgan.checkpoint import complete_steps
from acgan.data.prepare import load_shard
from acgan.errors import command
from acgan.layout import REAL_DIVERSITY_PREFIX, real_diversity_key
from acgan.metrics import mean_ms_ssim
from acgan.stats import PAIRS, SAMPLES_PER_CLASS, read_stats
from acgan.store import Store, read_json, write_json


class CollapseAlarm(BaseModel):
    step: int  # the newest stats tick, where the alarm holds
    classes: dict[str, float]  # the classes above the threshold there, with their MS-SSIM
    threshold: float  # MS-SSIM of the real data's least diverse class
    last_healthy_checkpoint: int | None  # newest kept checkpoint whose tick was under the threshold


def collapsing(ms_ssim: float, threshold: float) -> bool:
    """A class is collapsing when its samples are at least as alike as the real data's least diverse class: the one
    rule of the alarm, the evaluation's flag, its figures and `acgan run`'s summary."""
    return ms_ssim >= threshold


def record_real_diversity(store: Store, split: int) -> dict[str, float]:
    """Per class of `split` (global id as text): mean MS-SSIM of its real images, as the training stats measure
    samples. Computed once, by the task that prepares the split's shard; returns the recorded values."""
    key = real_diversity_key(split)
    if store.exists(key):
        return read_json(store, key)["classes"]
    per_class, pairs = SAMPLES_PER_CLASS, PAIRS
    rng = torch.Generator().manual_seed(split)
    images, labels = load_shard(store, split)
    out = {}
    for c in labels.unique().tolist():
        members = images[labels == c]
        chosen = members[torch.randperm(len(members), generator=rng)[:per_class]]
        if len(chosen) >= 2:
            out[str(c)] = mean_ms_ssim(chosen.float() / 127.5 - 1.0, pairs, data_range=2.0, generator=rng)
    write_json(store, key, {"classes": out, "images_per_class": per_class, "pairs": pairs})
    return out


def real_diversity(store: Store) -> dict[str, float]:
    """Every class measured so far (the splits whose data is prepared): global id as text -> MS-SSIM."""
    return {c: v for key in store.list(REAL_DIVERSITY_PREFIX) if key.endswith(".json")
            for c, v in read_json(store, key)["classes"].items()}


def collapse_threshold(store: Store) -> float | None:
    """MS-SSIM of the real data's least diverse class, over the splits prepared so far (every split, once the
    fan-out has prepared each shard); None for a store prepared before it was recorded."""
    measured = real_diversity(store)
    return max(measured.values()) if measured else None


def collapse_alarm(store: Store, split: int, threshold: float | None, lines: list[dict] | None = None
                   ) -> CollapseAlarm | None:
    """The alarm when the split's newest tick has a class above `threshold`, else None."""
    lines = read_stats(store, split) if lines is None else lines
    if threshold is None or not lines:
        return None
    above = {c: v for c, v in lines[-1]["ms_ssim"].items() if collapsing(v, threshold)}
    if not above:
        return None
    healthy = {line["step"] for line in lines if not collapsing(max(line["ms_ssim"].values()), threshold)}
    kept = [s for s in complete_steps(store, split) if s in healthy]
    return CollapseAlarm(step=lines[-1]["step"], classes=above, threshold=threshold,
                         last_healthy_checkpoint=kept[-1] if kept else None)


def describe(alarm: CollapseAlarm, store_uri: str) -> str:
    """The alarm in words, with what to do about it."""
    worst = max(alarm.classes, key=alarm.classes.get)
    others = len(alarm.classes) - 1
    look = command("acgan", "sample", "--store", store_uri, "--class", worst, "--out", f"class-{worst}.png")
    what = (f"class {worst}{f' and {others} more' if others else ''} collapsing at step {alarm.step}: its samples are "
            f"as alike as MS-SSIM {alarm.classes[worst]:.3f}, at or above {alarm.threshold:.3f}, the real data's "
            f"least diverse class")
    if alarm.last_healthy_checkpoint is not None:
        todo = (f"its checkpoint of step {alarm.last_healthy_checkpoint} is the last before it; look at its samples "
                f"({look}), and if they are alike, train the split again in a new store with "
                "--mode-seeking or --augment")
    else:
        todo = (f"no kept checkpoint is from before it; look at its samples ({look}), and if they are alike, "
                "train again in a new store with more --steps, --mode-seeking or --augment")
    return f"{what}. What to do: {todo}"
