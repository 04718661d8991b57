"""Drawing images from a split's generator, and writing them as a PNG grid or an .npz."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from acgan.checkpoint import latest_checkpoint, load_checkpoint
from acgan.errors import UserError, command
from acgan.layout import GENERATOR_FILE, META_FILE, TRAIN_STATE_FILE
from acgan.model import Generator, ModelConfig, to_uint8
from acgan.snapshot import generator_file_names, load_generator_weights
from acgan.store import Store

# Output pixels per batch on a CPU: 8 images of 128x128 (the paper's G: 10% faster than 100 at once, whose buffers
# are mapped and page-faulted in afresh each call), 128 of 32x32.
CPU_BATCH_PIXELS = 2**17


def load_split_generator(store: Store, split: int, device: str | torch.device = "cpu",
                         raw: bool = False) -> tuple[Generator, dict]:
    """The sampling snapshot of a split's newest complete, intact checkpoint (with `raw`, its trained G), in eval
    mode, and its meta."""
    # With `raw` the training state is verified too (it holds the trained G where the snapshot is its average), so
    # a checkpoint whose state is damaged is skipped like one whose snapshot is.
    latest = latest_checkpoint(store, split, [GENERATOR_FILE, META_FILE, *([TRAIN_STATE_FILE] if raw else [])])
    if latest is None:
        raise UserError(f"split {split} of {store.uri} has no complete checkpoint: run "
                        f"{command('acgan', 'train-split', '--store', store.uri, '--split', split)} first")
    return generator_from_files(latest[1], device, raw)


def with_raw_weights(store: Store, split: int, step: int, files: dict[str, bytes], raw: bool) -> dict[str, bytes]:
    """A checkpoint's snapshot files, plus, with `raw` where the snapshot is the averaged G, the training state that
    holds the trained G (verified)."""
    missing = [name for name in generator_file_names(json.loads(files[META_FILE]), raw) if name not in files]
    return {**files, **load_checkpoint(store, split, step, missing)} if missing else files


def generator_from_files(files: dict[str, bytes], device: str | torch.device = "cpu",
                         raw: bool = False) -> tuple[Generator, dict]:
    """A checkpoint's sampling snapshot (generator + meta files, already verified), or with `raw` its trained G (the
    files `with_raw_weights` adds), as a Generator in eval mode."""
    meta = json.loads(files[META_FILE])
    G = Generator(ModelConfig.model_validate(meta["model"]))
    load_generator_weights(G, files, raw)
    return G.to(device).eval(), meta


@torch.no_grad()
def generate(G: Generator, local_index: int, n: int, seed: int = 0) -> np.ndarray:
    """n images of the split-local class `local_index` as uint8 (n, C, H, W); the same seed gives the same images,
    drawn in batches (500 on a GPU; on a CPU, CPU_BATCH_PIXELS output pixels) so that any n fits in memory."""
    device = next(G.parameters()).device
    rng = torch.Generator(device).manual_seed(seed)
    z = torch.randn(n, G.cfg.noise_dim, generator=rng, device=device)
    y = torch.full((n,), local_index, dtype=torch.long, device=device)
    step = 500 if device.type != "cpu" else max(1, CPU_BATCH_PIXELS // G.cfg.resolution**2)
    return np.concatenate([to_uint8(G(z[i:i + step], y[i:i + step])) for i in range(0, n, step)])


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 2) -> Image.Image:
    """uint8 (N, C, H, W) -> one PIL image, `columns` wide (default: about square)."""
    n, c, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top:top + h, left:left + w] = img.transpose(1, 2, 0)
    return Image.fromarray(grid[..., 0] if c == 1 else grid)


def write_samples(images: np.ndarray, labels: np.ndarray, out: Path) -> None:
    """`.png`: a grid; `.npz`: `images` uint8 (N, H, W, C) and `labels` (global class ids)."""
    suffix = out.suffix.lower()
    if suffix not in (".png", ".npz"):
        raise UserError(f"--out {out}: use a .png (image grid) or .npz (arrays) file name")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: directory {out.parent} does not exist")
    if suffix == ".png":
        image_grid(images).save(out)
    else:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, images=images.transpose(0, 2, 3, 1), labels=labels)
        out.write_bytes(buffer.getvalue())
