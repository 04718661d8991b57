"""The classifier behind discriminability, Inception Score and FID. The paper used a pretrained Inception-v3; by
default we train a small CNN on the experiment's real training images (any data set, any resolution), holding out a
fraction of each class to report its accuracy on real images: the ceiling that samples are compared against.

Saved in the store as `eval/classifier.safetensors` + `eval/classifier.json`, so every evaluation of a store uses the
same classifier. A user may instead pass a safetensors file (classifier_file.py): one of our classifiers, or
torchvision's Inception-v3. Each kind of network is a class holding what differs between the kinds (`Network`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Literal, NamedTuple, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from tqdm import tqdm

from acgan.errors import UserError
from acgan.layout import CLASSIFIER_INFO_KEY, CLASSIFIER_WEIGHTS_KEY
from acgan.metrics.discriminability import resize_down_and_up
from acgan.store import Store

log = logging.getLogger(__name__)
# On a CPU a batch's widest activation stays within this many values (8 MiB): larger buffers pass glibc's mmap
# threshold, so every batch maps and page-faults them in afresh (at 500 images of 32 px: twice the wall time, half of
# it in the kernel).
CPU_BATCH_VALUES = 2**21
HELDOUT_FRACTION = 0.2  # of each class's real images, which the trained classifier never sees
INCEPTION_FEATURES = 2048  # the width of Inception-v3's pooled features: FID's usual feature space


class ClassifierInfo(BaseModel):
    """What a classifier is and how good it is on real images; recorded beside every number computed with it."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["trained", "file", "inception-v3"] = "trained"
    source: str | None = Field(None, description="the file it was loaded from (kinds file and inception-v3)")
    channels: int
    resolution: int
    num_classes: int
    width: int = 32
    steps: int | None = None
    batch_size: int | None = None
    train_images: int | None = None
    heldout_images: int
    heldout_accuracy: float = Field(description="accuracy on real images it was not trained on (for a file: on every "
                                                "real image of the store, which it may have seen)")
    seed: int | None = None

    def describe(self) -> str:
        if self.kind == "trained":
            return (f"a CNN trained on the store's real images ({self.steps} steps of {self.batch_size}; held-out "
                    f"accuracy {self.heldout_accuracy:.3f} on {self.heldout_images} real images)")
        return (f"{'Inception-v3' if self.kind == 'inception-v3' else 'a CNN'} from {self.source} (accuracy "
                f"{self.heldout_accuracy:.3f} on the store's {self.heldout_images} real images)")

    def feature_space(self) -> str:
        """The pooled features FID and the feature metrics are computed in, in words."""
        width = INCEPTION_FEATURES if self.kind == "inception-v3" else 4 * self.width
        return f"{self.kind} classifier's pooled features ({width}-d)"


class Classifier(nn.Module):
    """Four conv stages (the last three stride 2), global average pool, linear: resolution-agnostic. Ours: trained on
    a store's real images, or loaded from a user's file (kind "file")."""

    file_kind = "file"

    def __init__(self, channels: int, num_classes: int, width: int = 32):
        super().__init__()
        self.width = width
        widths = [width, width * 2, width * 4, width * 4]
        layers, c_in = [], channels
        for i, c_out in enumerate(widths):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(x))  # (N, K) logits

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate features (N, 4 * width): FID's feature space when this classifier is the feature net."""
        return self.features(x).mean(dim=(2, 3))

    def logits_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, pooled features) of uint8 images (N, C, H, W) from one forward pass."""
        pooled = self.pooled(to_input(images))
        return self.head(pooled), pooled

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def feature_width(self) -> int:
        return self.head.in_features

    def widest_activation(self, images: torch.Tensor) -> int:
        """Values per image of the widest activation: the first convolution's output."""
        return self.features[0].out_channels * images.shape[-2] * images.shape[-1]

    @staticmethod
    def holds(tensors: dict[str, torch.Tensor]) -> bool:
        return "head.weight" in tensors and "features.0.weight" in tensors

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], source: str, channels: int) -> "Classifier":
        width, in_channels = tensors["features.0.weight"].shape[:2]
        if in_channels != channels:
            raise UserError(f"--classifier {source} takes {in_channels}-channel images, the store's have {channels}: "
                            f"use a classifier trained on this data set")
        net = cls(channels, tensors["head.weight"].shape[0], width)
        load_weights(net, tensors, source)
        return net


class Network(Protocol):
    """A kind of classifier network, as `classify` and the evaluation use it: ours (`Classifier`) or Inception-v3
    (`classifier_file.InceptionV3`), each an nn.Module whose class holds what differs between the kinds."""

    file_kind: str  # ClassifierInfo's kind for it loaded from a user's file
    width: int  # ClassifierInfo's width for it
    num_classes: int
    feature_width: int  # of the pooled features: FID's feature space

    def logits_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def widest_activation(self, images: torch.Tensor) -> int: ...


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [-1, 1], the scale G produces."""
    return images.float() / 127.5 - 1.0


def _images_per_pass(model: Network, images: torch.Tensor, device: torch.device) -> int:
    """Images per forward pass: 500 on a GPU; on a CPU as many as keep the widest activation (the first convolution's
    output) within CPU_BATCH_VALUES."""
    if device.type != "cpu":
        return 500
    return max(1, CPU_BATCH_VALUES // model.widest_activation(images))


class Outputs(NamedTuple):
    predicted: torch.Tensor  # (N,) class ids
    logits: torch.Tensor | None  # (N, K), when asked for: the Inception Score's input
    features: torch.Tensor | None  # (N, F) pooled features, when asked for: FID's feature space


@torch.no_grad()
def classify(model: Network, images: torch.Tensor, *, logits: bool = False, features: bool = False,
             size: int | None = None, desc: str | None = None) -> Outputs:
    """The classifier on uint8 images (N, C, H, W), in batches on its device, one forward pass serving every output;
    the results on the CPU. With `size`, each batch is first taken down to size x size and back up (the resolution
    study). `desc` names a progress bar."""
    model.eval()
    device = next(model.parameters()).device
    step = _images_per_pass(model, images, device)
    kept: dict[str, list[torch.Tensor]] = {"predicted": [], "logits": [], "features": []}
    for i in tqdm(range(0, len(images), step), desc=desc, unit="batch", disable=desc is None or not sys.stderr.isatty()):
        batch = images[i:i + step] if size is None else resize_down_and_up(images[i:i + step], size)
        batch_logits, batch_features = model.logits_and_features(batch.to(device))
        kept["predicted"].append(batch_logits.argmax(1).cpu())
        if logits:
            kept["logits"].append(batch_logits.float().cpu())
        if features:
            kept["features"].append(batch_features.float().cpu())
    return Outputs(**{name: torch.cat(parts) if parts else None for name, parts in kept.items()})


def heldout_mask(labels: torch.Tensor, num_classes: int, fraction: float, gen: torch.Generator) -> torch.Tensor:
    """(N,) bool: a random `fraction` of each class's images (at least one), drawn from `gen`."""
    order = torch.randperm(len(labels), generator=gen)
    heldout = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(num_classes):
        members = order[labels[order] == c]
        heldout[members[:max(1, int(len(members) * fraction))]] = True
    return heldout


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int = 1500,
                     heldout_fraction: float = HELDOUT_FRACTION, seed: int = 0, device: str | torch.device = "cpu",
                     batch_size: int = 64, on_step: Callable[[int], None] = lambda step: None,
                     ) -> tuple[Classifier, ClassifierInfo]:
    """Train on all but a held-out fraction of each class; report accuracy on the held-out images. `images` may be
    mapped from a file (evaluation.real_on_disk): only a batch of them is ever copied, never the training set.
    `on_step(n)` follows each of the `steps` (n: the steps done)."""
    gen = torch.Generator().manual_seed(seed)
    heldout = heldout_mask(labels, num_classes, heldout_fraction, gen)
    train = (~heldout).nonzero().squeeze(1)  # indices into images: a batch is images[train[idx]]
    model = fit_classifier(images, labels, train, num_classes, steps, gen, seed, device, batch_size, on_step)
    accuracy = heldout_accuracy(model, images, labels, heldout.nonzero().squeeze(1))
    info = ClassifierInfo(channels=images.shape[1], resolution=images.shape[-1], num_classes=num_classes,
                          steps=steps, batch_size=batch_size, train_images=len(train), heldout_images=int(heldout.sum()),
                          heldout_accuracy=accuracy, seed=seed)
    log.info("classifier: held-out accuracy on real images %.3f (%d images)", accuracy, info.heldout_images)
    return model, info


def fit_classifier(images: torch.Tensor, labels: torch.Tensor, train: torch.Tensor, num_classes: int, steps: int,
                   gen: torch.Generator, seed: int = 0, device: str | torch.device = "cpu",
                   batch_size: int = 64, on_step: Callable[[int], None] = lambda step: None) -> Classifier:
    """A classifier trained `steps` steps on images[train] (batches drawn from `gen`), in eval mode: the evaluation
    classifier's recipe, and CAS's on samples (acgan/metrics/cas.py)."""
    torch.manual_seed(seed)
    model = Classifier(images.shape[1], num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    model.train()
    for step in tqdm(range(1, steps + 1), desc="classifier", unit="step", disable=not sys.stderr.isatty()):
        idx = train[torch.randint(len(train), (batch_size,), generator=gen)]
        x = to_input(images[idx]).to(device)
        # Small random shifts: the classifier must judge shapes, not exact pixel positions.
        shift = torch.randint(-2, 3, (2,), generator=gen).tolist()
        x = torch.roll(x, shifts=shift, dims=(2, 3))
        loss = F.cross_entropy(model(x), labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        on_step(step)
    return model.eval()


def heldout_accuracy(model: Classifier, images: torch.Tensor, labels: torch.Tensor, heldout: torch.Tensor) -> float:
    """Accuracy on images[heldout], gathered one forward pass's worth at a time (classify's own batches, so the
    predictions are those of one call on every held-out image) rather than copied out all at once."""
    step = _images_per_pass(model, images, next(model.parameters()).device)
    predicted = [classify(model, images[heldout[i:i + step]]).predicted for i in range(0, len(heldout), step)]
    return (torch.cat(predicted) == labels[heldout]).float().mean().item()


def save_classifier(store: Store, model: Classifier, info: ClassifierInfo) -> None:
    weights = {k: v.contiguous().cpu() for k, v in model.state_dict().items()}
    store.write_bytes(CLASSIFIER_WEIGHTS_KEY, save_safetensors(weights))
    store.write_bytes(CLASSIFIER_INFO_KEY, json.dumps(info.model_dump(), indent=2).encode())


def load_classifier(store: Store) -> tuple[Classifier, ClassifierInfo] | None:
    if not (store.exists(CLASSIFIER_INFO_KEY) and store.exists(CLASSIFIER_WEIGHTS_KEY)):
        return None
    info = ClassifierInfo.model_validate(json.loads(store.read_bytes(CLASSIFIER_INFO_KEY)))
    model = Classifier(info.channels, info.num_classes, info.width)
    model.load_state_dict(load_safetensors(store.read_bytes(CLASSIFIER_WEIGHTS_KEY)))
    return model.eval(), info


def classifier_key(shards: list[str], settings: dict) -> str:
    """What identifies a trained classifier: the real data (each shard's sha256, in the plan's order) and what it
    was trained with."""
    return hashlib.sha256(json.dumps({"shards": shards, "settings": settings}, sort_keys=True).encode()).hexdigest()


def load_cached_classifier(folder: Path, key: str) -> tuple[Classifier, ClassifierInfo] | None:
    """The classifier kept under `key` in a cache folder, None if there is none or it cannot be read."""
    weights, info = folder / f"{key}.safetensors", folder / f"{key}.json"
    try:
        meta = ClassifierInfo.model_validate_json(info.read_bytes())
        model = Classifier(meta.channels, meta.num_classes, meta.width)
        model.load_state_dict(load_safetensors(weights.read_bytes()))
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:  # none kept, or a damaged one: train again
        if not isinstance(e, FileNotFoundError):
            log.warning("classifier cache %s: %s unreadable (%s); training the classifier again", folder, key[:12], e)
        return None
    return model.eval(), meta


def cache_classifier(folder: Path, key: str, model: Classifier, info: ClassifierInfo) -> None:
    """Best effort: a folder that cannot be written (a pod's read-only home) only loses the reuse."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in ((f"{key}.safetensors", save_safetensors({k: v.contiguous().cpu() for k, v in
                                                                    model.state_dict().items()})),
                           (f"{key}.json", info.model_dump_json().encode())):
            partial = folder / f".{name}.{os.getpid()}"
            partial.write_bytes(data)
            partial.replace(folder / name)  # whole or not at all, for an evaluation reading it at once
    except OSError as e:
        log.warning("classifier cache %s not written (%s); the classifier is in the store all the same", folder, e)


def load_weights(net: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """A user's weights into the network their file names; a mismatch is one line naming the first difference."""
    try:
        net.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise UserError(f"--classifier {source} does not fit the network it names ({first}): check the file") from None
