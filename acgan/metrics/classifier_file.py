"""A classifier a user gives the evaluation (`--classifier`): a safetensors file, a local path or a key in the store,
holding one of our classifiers (from another store) or torchvision's Inception-v3 ImageNet weights (needs torchvision;
convert torchvision's `.pth` once with `safetensors.torch.save_file(torch.load(path, weights_only=True), out)`).
Weights are never downloaded at run time and nothing is unpickled. Its kind is recognised from the file's tensors;
its accuracy is measured on the store's real images as the evaluation streams them."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from acgan.errors import UserError
from acgan.metrics.classifier import Classifier, ClassifierInfo, Network, load_weights
from acgan.store import Store, check_key

log = logging.getLogger(__name__)


def inception_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> Inception-v3's input (N, 3, 299, 299): grey to 3 channels, bilinear to 299x299, and the
    [-1, 1] scale its ImageNet weights (ported from Google's) were trained on. That is what torchvision feeds them with
    `transform_input=True` after the usual ImageNet normalisation; built from a weights file (`weights=None`)
    torchvision leaves that flag off, so we build the network with it off and give it this scale ourselves."""
    x = images.float() / 255.0
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    return x * 2.0 - 1.0


class InceptionV3(nn.Module):
    """torchvision's Inception-v3 from a user's ImageNet weights file (kind "inception-v3"), on uint8 images as our
    classifiers take them."""

    file_kind = "inception-v3"
    width = 0  # what ClassifierInfo records for it: not one of our widths

    def __init__(self, inception: nn.Module):
        super().__init__()
        self.inception = inception

    def logits_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, pooled features (N, 2048)) of uint8 images (N, C, H, W) from one forward pass."""
        pooled: list[torch.Tensor] = []
        hook = self.inception.avgpool.register_forward_hook(lambda module, inputs, out: pooled.append(out.flatten(1)))
        try:
            logits = self.inception(inception_input(images))
        finally:
            hook.remove()
        return logits, pooled[0]

    @property
    def num_classes(self) -> int:
        return self.inception.fc.out_features

    @property
    def feature_width(self) -> int:
        return self.inception.fc.in_features

    def widest_activation(self, images: torch.Tensor) -> int:
        return 32 * 149 * 149  # its first convolution on its 299x299 input

    @staticmethod
    def holds(tensors: dict[str, torch.Tensor]) -> bool:
        return any(k.startswith("Mixed_7c.") for k in tensors)

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], source: str, channels: int) -> "InceptionV3":
        try:
            from torchvision.models import inception_v3
        except ImportError:
            raise UserError(f"--classifier {source} holds Inception-v3 weights, which need torchvision: install the "
                            f"`inception` extra (pip install 'acgan-ensemble[inception]')") from None
        net = inception_v3(weights=None, aux_logits="AuxLogits.fc.weight" in tensors, init_weights=False,
                           num_classes=tensors["fc.weight"].shape[0], transform_input=False)  # see inception_input
        load_weights(net, tensors, source)
        return cls(net)




def read_classifier_file(source: str, store: Store) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors classifier file: a local path, else a key in the store."""
    if not source.endswith(".safetensors"):
        raise UserError(f"--classifier {source}: give a .safetensors file (we never unpickle .pth/.pt files; the "
                        f"docs/model.md shows the one-line conversion)")
    path = Path(source)
    if path.is_file():
        data = path.read_bytes()
    elif is_store_key(source) and store.exists(source):
        data = store.read_bytes(source)
    else:
        raise UserError(f"--classifier {source}: no such file, nor a key of the store {store.uri}")
    try:
        return load_safetensors(data)
    except (SafetensorError, ValueError) as e:
        raise UserError(f"--classifier {source} is not a readable safetensors file ({e}): check the file") from None


def is_store_key(text: str) -> bool:
    try:
        check_key(text)
    except UserError:
        return False
    return True


def classifier_from_tensors(tensors: dict[str, torch.Tensor], source: str, channels: int) -> Network:
    """Build the network a weights file describes: torchvision's Inception-v3, or one of our classifiers."""
    for kind in (InceptionV3, Classifier):
        if kind.holds(tensors):
            return kind.from_tensors(tensors, source, channels).eval()
    raise UserError(f"--classifier {source} is neither Inception-v3 weights nor an acgan classifier: use "
                    f"torchvision's Inception-v3 weights or another store's eval/classifier.safetensors")


def load_classifier_file(source: str, store: Store, channels: int, num_classes: int, device: torch.device) -> Network:
    """A user-supplied classifier on `device`, checked against the store's classes; the evaluation scores it on the
    real images as it streams them (file_classifier_info)."""
    net = classifier_from_tensors(read_classifier_file(source, store), source, channels)
    if net.num_classes != num_classes:
        raise UserError(f"--classifier {source} has {net.num_classes} classes, the store {num_classes}: use a "
                        f"classifier of this data set's classes (in the plan's order)")
    return net.to(device)


def file_classifier_info(net: Network, source: str, channels: int, resolution: int, real_images: int,
                         real_accuracy: float) -> ClassifierInfo:
    """What a user-supplied classifier is, with its accuracy on the store's real images."""
    log.info("classifier %s: accuracy on the store's real images %.3f", source, real_accuracy)
    return ClassifierInfo(kind=net.file_kind, source=source, channels=channels, resolution=resolution,
                          num_classes=net.num_classes, width=net.width, heldout_images=real_images,
                          heldout_accuracy=real_accuracy)
