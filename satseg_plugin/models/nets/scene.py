"""Scene (patch-level) classifier: torchvision ResNet-18 with a softmax head over the scene classes.

Used by ``satseg:pretrainscene`` (urban / rural / uninhabited) and as the starting point of
``satseg:deepcluster``. Weights start random (no downloads) or from a user's SatSeg scene model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...core.deps import require
from ...core.errors import CheckpointError, InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..checkpoint import Checkpoint

__all__ = ["SCENE_ARCHITECTURE", "build_scene_model", "scene_model_from_checkpoint", "feature_dim", "features"]

#: ``ModelMetadata.architecture`` of scene models.
SCENE_ARCHITECTURE = "resnet18"


def build_scene_model(num_classes: int, in_channels: int = 3) -> "torch.nn.Module":
    """A randomly initialised ResNet-18 for ``in_channels`` bands and ``num_classes`` outputs.

    The module's ``fc`` is the classification head; ``model.fc.in_features`` (512) is the feature size.
    Features of a batch: ``torch.nn.Sequential(*list(model.children())[:-1])(x).flatten(1)``, or
    :func:`features` below.
    """
    torch = require("torch")
    torchvision = require("torchvision")
    if num_classes < 1 or in_channels < 1:
        raise InputError(f"a scene model needs at least one class and one band, got {num_classes} and "
                         f"{in_channels}.")
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = torch.nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def feature_dim(model: "torch.nn.Module") -> int:
    """Size of the pooled features the head reads (512 for ResNet-18)."""
    return int(model.fc.in_features)


def features(model: "torch.nn.Module", x: "torch.Tensor") -> "torch.Tensor":
    """Pooled backbone features ``(N, 512)`` of normalised patches ``(N, C, H, W)`` (the head is skipped)."""
    torch = require("torch")
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)


def scene_model_from_checkpoint(ckpt: "Checkpoint", num_classes: int = 0) -> "torch.nn.Module":
    """Build the ResNet-18 a ``scene`` checkpoint describes and load its weights with ``strict=True``.

    Args:
        ckpt: a loaded scene checkpoint.
        num_classes: build the head with this many outputs and load only the backbone (strictly: every
            backbone weight must be present and fit) - how DeepCluster starts from a pretrained classifier.
            0: the checkpoint's own head.

    Raises:
        CheckpointError: the weights do not fit (the message names the file).
    """
    from ..checkpoint import mismatch_summary, model_label

    meta = ckpt.metadata
    own = len(meta.classes)
    model = build_scene_model(num_classes or own, meta.in_channels)
    state = dict(ckpt.model_state)
    if num_classes and num_classes != own:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        expected = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    else:
        expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        name = model_label(ckpt.path)
        raise CheckpointError(f"the weights in '{name}' do not fit a ResNet-18 scene model with {meta.in_channels} "
                              f"band(s): {mismatch_summary(expected, state)}. Choose a SatSeg scene model.",
                              ckpt.path or None)
    model.load_state_dict(state, strict=not (num_classes and num_classes != own))
    return model.eval()
