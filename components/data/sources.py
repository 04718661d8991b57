"""Image sources. Each turns its input into class names and, per class, a uint8 array of shape (N, C, R, R).

- digits:    the 8x8 digits that ship with scikit-learn, upsampled bilinearly (1 channel, 10 classes).
- cifar10:   the standard python-pickle batches, a directory or the .tar.gz (read with a restricted unpickler).
- folder:    one sub-folder per class of JPEG/PNG images, as ImageNet's train set is laid out.
- synthetic: procedurally drawn shapes, any number of classes, each class a distinct colour/shape/background.
"""

from __future__ import annotations

import colorsys
import io
import logging
import os
import pickle
import tarfile
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from components.errors import UserError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass
class Source:
    dataset: str
    channels: int
    class_names: list[str]
    load_class: Callable[[int], np.ndarray]  # class id -> (N, C, R, R) uint8
    skipped: dict[str, int] = field(default_factory=dict)  # class name -> unreadable files skipped


def resize_batch(images: np.ndarray, resolution: int) -> np.ndarray:
    """(N, C, h, w) uint8 -> (N, C, R, R) uint8, bilinear."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    x = torch.from_numpy(images).float()
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def digits_source(resolution: int) -> Source:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    images = resize_batch(images, resolution)
    labels = bunch.target
    return Source("digits", 1, [str(n) for n in bunch.target_names], lambda c: images[labels == c])


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles; allow only what they contain (numpy arrays and plain containers)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # how protocol-2 pickles written by Python 3 spell bytes

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        return super().find_class(module, name)


def _load_cifar_batch(data: bytes, name: str) -> dict:
    try:
        batch = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise UserError(f"{name} is not a CIFAR-10 python batch ({e})") from None
    if not isinstance(batch, dict):
        raise UserError(f"{name} is not a CIFAR-10 python batch (not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def cifar10_source(path: Path, resolution: int) -> Source:
    files: dict[str, bytes] = {}
    if path.is_dir():
        files = {p.name: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    elif path.is_file():
        try:
            with tarfile.open(path, "r:*") as tar:
                for m in tar.getmembers():
                    if m.isfile():
                        files[Path(m.name).name] = tar.extractfile(m).read()
        except tarfile.TarError as e:
            raise UserError(f"{path} is neither a CIFAR-10 directory nor a readable .tar.gz ({e})") from None
    else:
        raise UserError(f"CIFAR-10 source {path} does not exist: pass --source DIR or --source cifar-10-python.tar.gz")
    batch_names = sorted(n for n in files if n.startswith("data_batch_"))
    if not batch_names:
        raise UserError(f"{path} holds no data_batch_* files: is it the CIFAR-10 *python* version?")
    data, labels = [], []
    for name in batch_names:
        batch = _load_cifar_batch(files[name], name)
        data.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch["labels"], dtype=np.int64))
    images, targets = resize_batch(np.concatenate(data), resolution), np.concatenate(labels)
    names = [str(i) for i in range(int(targets.max()) + 1)]
    if "batches.meta" in files:
        meta = _load_cifar_batch(files["batches.meta"], "batches.meta")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", names)]
    return Source("cifar10", 3, names, lambda c: images[targets == c])


def _decode(job: tuple[str, int]) -> np.ndarray | None:
    """One image file -> (3, R, R) uint8: shorter side resized to R, then centre-cropped. None if unreadable."""
    path, resolution = job
    try:
        with Image.open(path) as img:
            img.draft("RGB", (resolution, resolution))  # JPEG: decode at reduced size, much faster
            img = img.convert("RGB")
            w, h = img.size
            scale = resolution / min(w, h)
            img = img.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))),
                             Image.Resampling.BILINEAR, reducing_gap=None)
            left, top = (img.width - resolution) // 2, (img.height - resolution) // 2
            img = img.crop((left, top, left + resolution, top + resolution))
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def folder_source(path: Path, resolution: int, strict: bool, workers: int | None = None) -> Source:
    if not path.is_dir():
        raise UserError(f"folder source {path} does not exist or is not a directory: pass --source DIR "
                        "with one sub-folder per class")
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise UserError(f"{path} has no class sub-folders: lay it out as {path}/<class name>/<image>.jpg")
    for p in class_dirs:
        try:
            p.name.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"class folder {os.fsencode(p)!r} has a name that is not UTF-8: rename it (class names "
                            "are written to the plan as JSON)") from None
    workers = workers or os.cpu_count() or 1
    skipped: dict[str, int] = {}

    def load(c: int) -> np.ndarray:
        files = sorted(str(p) for p in class_dirs[c].iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        jobs = [(f, resolution) for f in files]
        if workers > 1 and len(jobs) > 64:
            with Pool(workers) as pool:
                decoded = pool.map(_decode, jobs, chunksize=16)
        else:
            decoded = [_decode(j) for j in jobs]
        bad = [f for f, img in zip(files, decoded) if img is None]
        if bad and strict:
            raise UserError(f"unreadable image {bad[0]} (--strict): remove or replace it, or drop --strict to skip")
        if bad:
            skipped[class_dirs[c].name] = len(bad)
            log.warning("class %s: skipped %d unreadable file(s), e.g. %s", class_dirs[c].name, len(bad), bad[0])
        good = [img for img in decoded if img is not None]
        if not good:
            raise UserError(f"class folder {class_dirs[c]} has no readable JPEG/PNG images: add images or remove it")
        return np.stack(good)

    return Source("folder", 3, [p.name for p in class_dirs], load, skipped)


def _synthetic_class(c: int, n: int, resolution: int, rng: np.random.Generator) -> np.ndarray:
    """Class c: hue (10) x shape (5) x stripe angle (4) x background level (5) = 1000 distinct looks."""
    hue, shape, angle, level = c % 10, (c // 10) % 5, (c // 50) % 4, (c // 200) % 5
    coords = (np.arange(resolution) + 0.5) / resolution * 2 - 1
    y, x = np.meshgrid(coords, coords, indexing="ij")  # (R, R)
    cx, cy = rng.uniform(-0.25, 0.25, (2, n, 1, 1))
    size = rng.uniform(0.45, 0.7, (n, 1, 1))
    dx, dy = x - cx, y - cy  # (n, R, R)
    r = np.hypot(dx, dy)
    masks = [r < size,
             np.maximum(abs(dx), abs(dy)) < size * 0.8,
             (dy < size * 0.7) & (abs(dx) < (dy + size * 0.7) * 0.6),
             (r < size) & (r > size * 0.55),
             ((abs(dx) < size * 0.3) | (abs(dy) < size * 0.3)) & (np.maximum(abs(dx), abs(dy)) < size)]
    mask = masks[shape][:, None]  # (n, 1, R, R)
    theta = angle * np.pi / 4
    stripes = np.sin(6 * np.pi * (x * np.cos(theta) + y * np.sin(theta)))
    background = 0.15 + 0.15 * level + 0.08 * stripes  # (R, R)
    colour = np.array(colorsys.hsv_to_rgb(hue / 10, 0.85, 0.95))[None, :, None, None]  # (1, 3, 1, 1)
    img = np.where(mask, colour, background[None, None])
    img = img + rng.normal(0, 0.04, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def synthetic_source(num_classes: int, images_per_class: int, resolution: int, seed: int) -> Source:
    def load(c: int) -> np.ndarray:
        return _synthetic_class(c, images_per_class, resolution, np.random.default_rng([seed, c]))

    return Source("synthetic", 3, [f"synthetic-{c:04d}" for c in range(num_classes)], load)
