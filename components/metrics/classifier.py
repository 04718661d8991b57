"""The classifier behind discriminability. The paper used a pretrained Inception-v3; by default we train a small CNN
on the experiment's real training images (any data set, any resolution), holding out a fraction of each class to
report its accuracy on real images: the ceiling that samples are compared against.

Saved in the store as `eval/classifier.safetensors` + `eval/classifier.json`, so every evaluation of a store uses the
same classifier.
"""

from __future__ import annotations

import json
import logging
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from tqdm import tqdm

from components.store import Store

log = logging.getLogger(__name__)
WEIGHTS_KEY = "eval/classifier.safetensors"
INFO_KEY = "eval/classifier.json"


class ClassifierInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = "trained"
    channels: int
    resolution: int
    num_classes: int
    width: int = 32
    steps: int
    batch_size: int
    train_images: int
    heldout_images: int
    heldout_accuracy: float
    seed: int


class Classifier(nn.Module):
    """Four conv stages (the last three stride 2), global average pool, linear: resolution-agnostic."""

    def __init__(self, channels: int, num_classes: int, width: int = 32):
        super().__init__()
        widths = [width, width * 2, width * 4, width * 4]
        layers, c_in = [], channels
        for i, c_out in enumerate(widths):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))  # (N, K) logits


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [-1, 1], the scale G produces."""
    return images.float() / 127.5 - 1.0


@torch.no_grad()
def predict(model: Classifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted class for uint8 images (N, C, H, W)."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(to_input(images[i:i + batch_size].to(device))).argmax(1).cpu()
                      for i in range(0, len(images), batch_size)])


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int = 1500,
                     heldout_fraction: float = 0.2, seed: int = 0, device: str | torch.device = "cpu",
                     batch_size: int = 64) -> tuple[Classifier, ClassifierInfo]:
    """Train on all but a held-out fraction of each class; report accuracy on the held-out images."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=gen)
    heldout = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(num_classes):
        members = order[labels[order] == c]
        heldout[members[:max(1, int(len(members) * heldout_fraction))]] = True
    train_x, train_y = images[~heldout], labels[~heldout]
    torch.manual_seed(seed)
    model = Classifier(images.shape[1], num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    model.train()
    for _ in tqdm(range(steps), desc="classifier", unit="step", disable=not sys.stderr.isatty()):
        idx = torch.randint(len(train_y), (batch_size,), generator=gen)
        x = to_input(train_x[idx]).to(device)
        # Small random shifts: the classifier must judge shapes, not exact pixel positions.
        shift = torch.randint(-2, 3, (2,), generator=gen).tolist()
        x = torch.roll(x, shifts=shift, dims=(2, 3))
        loss = F.cross_entropy(model(x), train_y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    accuracy = (predict(model, images[heldout]) == labels[heldout]).float().mean().item()
    info = ClassifierInfo(channels=images.shape[1], resolution=images.shape[-1], num_classes=num_classes,
                          steps=steps, batch_size=batch_size, train_images=int((~heldout).sum()), heldout_images=int(heldout.sum()),
                          heldout_accuracy=accuracy, seed=seed)
    log.info("classifier: held-out accuracy on real images %.3f (%d images)", accuracy, info.heldout_images)
    return model.eval(), info


def save_classifier(store: Store, model: Classifier, info: ClassifierInfo) -> None:
    store.write_bytes(WEIGHTS_KEY, save_safetensors({k: v.contiguous().cpu() for k, v in model.state_dict().items()}))
    store.write_bytes(INFO_KEY, json.dumps(info.model_dump(), indent=2).encode())


def load_classifier(store: Store) -> tuple[Classifier, ClassifierInfo] | None:
    if not (store.exists(INFO_KEY) and store.exists(WEIGHTS_KEY)):
        return None
    info = ClassifierInfo.model_validate(json.loads(store.read_bytes(INFO_KEY)))
    model = Classifier(info.channels, info.num_classes, info.width)
    model.load_state_dict(load_safetensors(store.read_bytes(WEIGHTS_KEY)))
    return model.eval(), info
