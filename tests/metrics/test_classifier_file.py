"""A user's classifier file: Inception-v3's input scale and network as torchvision's ImageNet weights expect."""

import pytest
import torch

from acgan.metrics.classifier_file import classifier_from_tensors, inception_input


IMAGENET_MEAN, IMAGENET_STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def _torchvision_transform_input(x: torch.Tensor) -> torch.Tensor:
    """torchvision's Inception3._transform_input (transform_input=True), channel by channel: ImageNet-normalised
    input back to the [-1, 1] scale of the ported Google weights."""
    return torch.cat([x[:, i:i + 1] * (IMAGENET_STD[i] / 0.5) + (IMAGENET_MEAN[i] - 0.5) / 0.5 for i in range(3)], 1)


def test_inception_input_is_the_scale_its_imagenet_weights_expect():
    from acgan.metrics.classifier_file import inception_input

    grey = torch.tensor([0, 255, 51], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 8, 8)
    x = inception_input(grey)
    assert x.shape == (3, 3, 299, 299)
    for image, value in zip(x, (-1.0, 1.0, 51 / 127.5 - 1)):
        assert torch.allclose(image, torch.full_like(image, value), atol=1e-6)  # every channel, every pixel
    # What torchvision computes with transform_input=True from the usual ImageNet normalisation of the same images.
    colour = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    imagenet = (torch.nn.functional.interpolate(colour.float() / 255, size=(299, 299), mode="bilinear",
                                                align_corners=False) - IMAGENET_MEAN.view(1, 3, 1, 1)) \
        / IMAGENET_STD.view(1, 3, 1, 1)
    assert torch.allclose(inception_input(colour), _torchvision_transform_input(imagenet), atol=1e-5)


def test_inception_network_is_built_without_a_second_input_transform():
    pytest.importorskip("torchvision", reason="torchvision is not installed: the `inception` extra")
    from torchvision.models import inception_v3

    from acgan.metrics.classifier_file import classifier_from_tensors

    weights = inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=10).state_dict()
    net = classifier_from_tensors(weights, "inception.safetensors", 3)
    assert net.file_kind == "inception-v3" and net.inception.transform_input is False  # inception_input gives its scale
    imagenet = torch.randn(1, 3, 8, 8)
    assert torch.allclose(inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=True)
                          ._transform_input(imagenet), _torchvision_transform_input(imagenet))
