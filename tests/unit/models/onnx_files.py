"""Hand-made ONNX files for the ONNX tests: a Deepness-style "Segmentor" and broken variants of it.

The network is one 1x1 convolution (per-pixel logits), so its probabilities do not depend on how a raster is
tiled: a tiled, blended sweep must give exactly the per-pixel reference.
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any, Dict, Optional, Tuple

import numpy as np

#: Deepness's standardisation of the hand-made model (on values scaled to 0..1).
MEAN, STD = [0.4, 0.5, 0.45], [0.2, 0.25, 0.3]


def pointwise_net(classes: int, seed: int = 0):
    """A 1x1 convolution, 3 bands -> ``classes`` logits, with softmax (or sigmoid for one channel) inside."""
    import torch

    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(3, classes, kernel_size=1)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = conv

        def forward(self, x):
            logits = self.conv(x)
            return torch.sigmoid(logits) if classes == 1 else torch.softmax(logits, dim=1)

    return Net().eval()


def export_bytes(net, shape: Tuple[int, ...], dynamic: Optional[Dict[int, str]] = None) -> bytes:
    """``net`` as ONNX (opset 17) with one input of ``shape``; ``dynamic`` axes stay free."""
    import torch

    buffer = io.BytesIO()
    axes = {"input": dynamic, "output": dynamic} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(shape),), buffer, dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["output"], dynamic_axes=axes)
    return buffer.getvalue()


def with_metadata(data: bytes, values: Dict[str, Any]) -> bytes:
    """The model with ``values`` added as metadata (JSON text), as Deepness's docs show."""
    import onnx

    model = onnx.load_model_from_string(data)
    for key, value in values.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, json.dumps(value)
    return model.SerializeToString()


def deepness_metadata(**changes: Any) -> Dict[str, Any]:
    values = {"model_type": "Segmentor", "class_names": {0: "background", 1: "building"}, "resolution": 50,
              "tiles_size": 64, "tiles_overlap": 25, "seg_thresh": 0.6, "standardization_mean": MEAN,
              "standardization_std": STD}
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def deepness_model(path: str, size: Optional[int] = 64, classes: int = 2, **changes: Any) -> str:
    """Write a Deepness "Segmentor" (batch 1, ``size`` px tiles, or dynamic when None) to ``path``."""
    shape = (1, 3, size or 32, size or 32)
    dynamic = None if size else {0: "batch", 2: "height", 3: "width"}
    data = with_metadata(export_bytes(pointwise_net(classes), shape, dynamic), deepness_metadata(**changes))
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def reference(raw: np.ndarray, classes: int = 2) -> np.ndarray:
    """Foreground probabilities of :func:`pointwise_net` on raw 8-bit bands ``(N, 3, H, W)``, as Deepness
    preprocesses them (``/ 255``, then standardised)."""
    import torch

    x = (raw / 255.0 - np.reshape(MEAN, (1, 3, 1, 1))) / np.reshape(STD, (1, 3, 1, 1))
    with torch.no_grad():
        out = pointwise_net(classes)(torch.from_numpy(x.astype(np.float32))).numpy()
    return out if classes == 1 else out[:, 1:]
