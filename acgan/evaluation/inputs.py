"""What the evaluation reads: the real images it uses, split by split (or all of them mapped from disk, to train the
default classifier), samples through the ensemble, the classifier, the training curves; the overfitting grids.
`stream.py` runs the pass over the splits, `parts.py` keeps what the analyses read of it."""

from __future__ import annotations

import io
import resource
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from acgan import progress
from acgan.data.plan import SplitPlan
from acgan.data.prepare import load_shard, shard_info
from acgan.ensemble import EnsembleManifest, load_member_generator
from acgan.errors import UserError
from acgan.layout import OVERFITTING_PREFIX
from acgan.metrics.classifier import (
    ClassifierInfo,
    Network,
    cache_classifier,
    classifier_key,
    load_cached_classifier,
    load_classifier,
    save_classifier,
    train_classifier,
)
from acgan.metrics.classifier_file import load_classifier_file
from acgan.metrics.overfitting import (
    fixed_noise_across_classes,
    interpolation,
    nearest_neighbours,
)
from acgan.sampling import generate, image_grid
from acgan.settings import EvalSettings
from acgan.stats import read_stats
from acgan.store import Store

def real_of_split(store: Store, split: int, members: list[int], per_class: int,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """At most `per_class` real images of each class of a split (a seeded choice where a class has more); the rest of
    the split's shard is dropped on return."""
    x, y = load_shard(store, split)
    chosen = []
    for c in members:
        indices = (y == c).nonzero().squeeze(1)
        chosen.append(indices[torch.randperm(len(indices), generator=gen)[:per_class]])
    chosen = torch.cat(chosen)
    return x[chosen], y[chosen]


def real_by_split(store: Store, plan: SplitPlan, per_class: int, seed: int,
                  device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Split by split, the real images the evaluation uses, on `device`: one split's images are held at a time."""
    gen = torch.Generator().manual_seed(seed)
    for split, members in enumerate(plan.splits):  # no name holds a yielded split: the caller's drop frees it
        yield tuple(t.to(device) for t in real_of_split(store, split, members, per_class, gen))


@contextmanager
def real_on_disk(store: Store, plan: SplitPlan, per_class: int,
                 seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every split's real images (the ones real_by_split chooses, in its order) as one uint8 tensor mapped from a
    temporary file on local disk (`ImageFile`), their labels in RAM. Training the default classifier draws batches
    from every class, yet at the ImageNet shape the images are ~10 GB: written split by split, only one split and the
    pages a batch reads are in memory, and the kernel can drop those again."""
    with ImageFile() as file:
        for images, split_labels in real_by_split(store, plan, per_class, seed, torch.device("cpu")):
            file.append(images, split_labels)
            del images  # else it holds this split's images while the next split loads, and the last one throughout
        yield file.mapped()


class ImageFile:
    """uint8 images (N, C, H, W) appended part by part to a temporary file on local disk, their labels kept in RAM;
    `mapped()` gives them back as one tensor mapped from the file. The file is unlinked from the start: gone when
    closed."""

    def __init__(self):
        self.file = tempfile.TemporaryFile(prefix="acgan-images-")
        self.labels: list[torch.Tensor] = []
        self.shape: tuple[int, ...] = ()

    def __enter__(self) -> "ImageFile":
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

    def append(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.file.write(images.cpu().contiguous().numpy())
        self.labels.append(labels.cpu())
        self.shape = tuple(images.shape[1:])

    def mapped(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.file.flush()
        labels = torch.cat(self.labels)
        # Copy-on-write: a writable array for torch, whose writes (none are made) would never reach the file.
        return torch.from_numpy(np.memmap(self.file, np.uint8, "c", shape=(len(labels), *self.shape))), labels


def split_samples(store: Store, manifest: EnsembleManifest, members: list[int], n: int, seed: int,
                  device: torch.device, raw: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples of each class of one split through the ensemble (its sampling snapshot, or with `raw` its trained
    G), on `device`: uint8 (len(members) * n, C, H, W) and their global class ids."""
    G = load_member_generator(store, manifest.member(members[0]), device, raw)
    images = [torch.from_numpy(generate(G, manifest.member(c).local_index, n, seed + c)) for c in members]
    return torch.cat(images).to(device), torch.tensor(members, device=device).repeat_interleave(n)


def get_classifier(store: Store, plan: SplitPlan, settings: EvalSettings,
                   device: torch.device) -> tuple[Network, ClassifierInfo | None]:
    """The classifier on `device` and its info; for a user's file no info yet: it waits for its accuracy on the real
    images (file_classifier_info)."""
    if settings.classifier != "trained":
        return load_classifier_file(settings.classifier, store, plan.channels, plan.num_classes, device), None
    loaded = load_classifier(store)
    if loaded is not None and (loaded[1].num_classes, loaded[1].resolution) != (plan.num_classes, plan.resolution):
        raise UserError(f"the store's classifier has {loaded[1].num_classes} classes at {loaded[1].resolution}px, the "
                        f"plan {plan.num_classes} at {plan.resolution}px: delete {store.uri}/eval/classifier.* to retrain")
    if loaded is not None:
        return loaded[0].to(device), loaded[1]
    cache = Path(settings.classifier_cache).expanduser() if settings.classifier_cache else None
    key = classifier_key([shard_info(store, split).sha256 for split in range(len(plan.splits))],
                         settings.model_dump(include={"classifier_steps", "seed", "real_per_class"}))
    cached = load_cached_classifier(cache, key) if cache else None
    if cached is not None:  # another store of the same data, evaluated with the same settings
        save_classifier(store, *cached)
        return cached[0].to(device), cached[1]
    # Training draws from every class at once: the first evaluation of a store maps them from disk while it trains.
    with real_on_disk(store, plan, settings.real_per_class, settings.seed) as (real_images, real_labels):
        model, info = train_classifier(real_images, real_labels, plan.num_classes, settings.classifier_steps,
                                       seed=settings.seed, device=device, on_step=_classifier_progress(settings))
    save_classifier(store, model.cpu(), info)
    if cache:
        cache_classifier(cache, key, model, info)
    return model.to(device), info


def _classifier_progress(settings: EvalSettings) -> Callable[[int], None]:
    """The classifier's training steps as progress events of the evaluation (acgan/progress.py)."""
    throttle = progress.Throttle()

    def report(step: int) -> None:
        if throttle.due() or step == settings.classifier_steps:
            progress.emit(progress.EVALUATE, "progress", part=progress.CLASSIFIER, step=step,
                          total=settings.classifier_steps)
    return report


def training_curves(store: Store, plan: SplitPlan) -> dict[int, tuple[list[int], list[float]]]:
    """Per class: (steps, MS-SSIM of the split's fixed samples) from the training stats lines."""
    curves: dict[int, tuple[list[int], list[float]]] = {}
    for split in range(len(plan.splits)):
        for stats in read_stats(store, split):
            for class_id, value in stats.get("ms_ssim", {}).items():
                steps, values = curves.setdefault(int(class_id), ([], []))
                steps.append(stats["step"])
                values.append(value)
    return curves


def nearest_rows(samples: torch.Tensor, real: torch.Tensor, k: int) -> dict[str, list[torch.Tensor]]:
    """Per distance, one grid row per sample (on the CPU): the sample, then its k nearest real images of its class."""
    rows = {}
    for metric in ("l1", "ms_ssim"):
        nearest = nearest_neighbours(samples, real, k, metric)
        rows[metric] = [torch.cat([s[None], real[idx]]).cpu() for s, idx in zip(samples, nearest)]
    return rows


def overfitting_grids(store: Store, manifest: EnsembleManifest, plan: SplitPlan, settings: EvalSettings,
                      chosen: list[int], rows: dict[int, dict[str, list[torch.Tensor]]], k: int,
                      device: torch.device) -> dict[str, bytes]:
    """PNG grids for a few classes spread over the plan (`chosen`, whose nearest-neighbour `rows` the stream kept);
    each row starts with a sample or a class."""
    grids = {f"{OVERFITTING_PREFIX}nearest-{metric.replace('_', '-')}.png":
             grid_png(torch.cat([row for c in chosen for row in rows[c][metric]]), 1 + k) for metric in ("l1", "ms_ssim")}
    gen = torch.Generator(device).manual_seed(settings.seed)
    interpolations, fixed = [], []
    for c in chosen:
        member = manifest.member(c)
        G = load_member_generator(store, member, device, settings.raw)
        z = torch.randn(2, G.cfg.noise_dim, generator=gen, device=device)
        interpolations.append(interpolation(G, member.local_index, z[0], z[1], 10))
        if member.split not in {m for m, _ in fixed}:
            fixed.append((member.split, fixed_noise_across_classes(
                G, torch.randn(4, G.cfg.noise_dim, generator=gen, device=device))))
    grids[f"{OVERFITTING_PREFIX}interpolation.png"] = grid_png(torch.cat(interpolations), 10)
    for split, images in fixed:
        grids[f"{OVERFITTING_PREFIX}fixed-z-split-{split:05d}.png"] = grid_png(images, len(plan.splits[split]))
    return grids


def grid_png(images: torch.Tensor, columns: int) -> bytes:
    buffer = io.BytesIO()
    image_grid(images.cpu().numpy(), columns=columns).save(buffer, format="PNG")
    return buffer.getvalue()


def evaluation_device(settings: EvalSettings) -> torch.device:
    return torch.device(settings.torch_device)


def peak_memory(device: torch.device) -> dict[str, int | None]:
    """The process's peak resident set so far (the evaluation's, when it runs alone as `acgan evaluate` does) and,
    on a GPU, the most memory torch allocated on it since the evaluation began."""
    return {"peak_host_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "peak_device_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None}


def class_image_counts(store: Store, plan: SplitPlan) -> dict[int, int]:
    """Real images per class id: from the plan where it counted them, else from each split's shard sidecar (a plan
    made from a listing knows names only)."""
    counts = {c.id: c.images for c in plan.classes if c.images is not None}
    for split, members in enumerate(plan.splits):
        if any(c not in counts for c in members):
            by_name = shard_info(store, split).images
            counts.update({c: by_name[plan.classes[c].name] for c in members})
    return counts
