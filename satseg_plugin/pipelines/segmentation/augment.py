"""Training augmentations applied identically to image and label tensors.

Geometric transforms (flips, rotation) move image and mask together; radiometric ones (brightness,
contrast, to-grey) touch only the image. Works for any band count: the colour operations act in the
normalised space, so they do not assume 8-bit RGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ...core.labels import IGNORE

__all__ = ["AugmentConfig", "augment_batch"]


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the augmentations (defaults follow the segmentation competition work)."""

    flip_p: float = 0.5
    rotate_p: float = 0.5
    rotate_limit: float = 30.0
    jitter_p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    grey_p: float = 0.1


def augment_batch(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                  config: AugmentConfig = AugmentConfig()) -> Tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch sample by sample.

    Args:
        images: ``(N, C, H, W)`` float, normalised.
        labels: ``(N, H, W)`` uint8/long class labels (:data:`IGNORE` where unknown).
        generator: the torch generator all random draws come from (reproducible runs).
        config: what to apply.

    Returns:
        The augmented ``(images, labels)``; pixels rotated in from outside become 0 / IGNORE.
    """

    def draw() -> float:
        return float(torch.rand((), generator=generator))

    out_images, out_labels = [], []
    for image, label in zip(images, labels):
        label = label[None]
        if draw() < config.flip_p:
            image, label = image.flip(-1), label.flip(-1)
        if draw() < config.flip_p:
            image, label = image.flip(-2), label.flip(-2)
        if draw() < config.rotate_p:
            angle = (2 * draw() - 1) * config.rotate_limit
            image = TF.rotate(image, angle, interpolation=InterpolationMode.BILINEAR, fill=0.0)
            label = TF.rotate(label.to(torch.uint8), angle, interpolation=InterpolationMode.NEAREST,
                              fill=IGNORE).to(labels.dtype)
        if draw() < config.jitter_p:
            scale = 1 + (2 * draw() - 1) * config.contrast
            shift = (2 * draw() - 1) * config.brightness
            image = image * scale + shift
        if image.shape[0] >= 3 and draw() < config.grey_p:
            grey = image[:3].mean(dim=0, keepdim=True)
            image = torch.cat([grey.expand(3, -1, -1), image[3:]], dim=0)
        out_images.append(image)
        out_labels.append(label[0])
    return torch.stack(out_images), torch.stack(out_labels)
