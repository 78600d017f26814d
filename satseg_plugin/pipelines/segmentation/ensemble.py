"""The models a segmentation run applies: one model file or a weighted ensemble, as one ``predict`` step.

:class:`Ensemble` loads the models, checks that they agree on bands and classes, and turns a batch of raw
tiles (band units) into blended foreground probabilities, normalised on the model's device.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import numpy as np

from ...core.deps import require
from ...core.errors import InputError
from ...core.fit import choose_precision
from ...core.progress import Feedback

__all__ = ["Ensemble"]


class Ensemble:
    """Loaded models with their normalisation and weights; turns a raw tile batch into probabilities."""

    def __init__(self, paths: Sequence[str], weights: Optional[Sequence[float]], device, amp: bool,
                 feedback: Feedback) -> None:
        torch = require("torch")
        from ...models.checkpoint import build_from_checkpoint, load_checkpoint
        from ...models.registry import input_multiple

        if not paths:
            raise InputError("give at least one model file.", "MODELS")
        if weights:
            if len(weights) != len(paths):
                raise InputError(f"{len(weights)} weights for {len(paths)} models; give one weight per model.",
                                 "WEIGHTS")
            if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
                raise InputError(f"weights must be finite, non-negative and not all zero, got "
                                 f"{', '.join(str(w) for w in weights)}; e.g. 0.7,0.15,0.15.", "WEIGHTS")
        self.checkpoints = [load_checkpoint(p, kind="segmentation") for p in paths]
        first = self.checkpoints[0].metadata
        for path, ckpt in zip(paths[1:], self.checkpoints[1:]):
            meta = ckpt.metadata
            if list(meta.bands) != list(first.bands) or list(meta.classes) != list(first.classes):
                raise InputError(f"'{os.path.basename(path)}' uses bands {meta.bands} and classes {meta.classes}, "
                                 f"but '{os.path.basename(paths[0])}' uses bands {first.bands} and classes "
                                 f"{first.classes}; models of an ensemble must agree on both.", "MODELS")
        if weights:
            total = float(sum(weights))
            self.weights = [w / total for w in weights]
        else:
            self.weights = [1.0 / len(paths)] * len(paths)
        self.device, self.torch = device, torch
        self.precision = choose_precision(device, amp, training=False)
        self.models = []
        for ckpt in self.checkpoints:
            model = build_from_checkpoint(ckpt).to(device).eval()
            self.models.append(model)
        self.metadata = first
        self.binary = len(first.classes) == 1
        self.multiple = max(input_multiple(c.metadata.architecture, c.metadata.encoder, **c.metadata.model_kwargs)
                            for c in self.checkpoints)
        self.threshold = float(sum(w * c.metadata.threshold for w, c in zip(self.weights, self.checkpoints)))
        #: per model, its band means and standard deviations as ``(1, C, 1, 1)`` float32 tensors on the device
        self.normalization = [tuple(torch.tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1)
                                    for v in (c.metadata.mean, c.metadata.std)) for c in self.checkpoints]
        #: the smallest object the models keep (models written before it was stored: every pixel)
        self.min_object_pixels = min(int(c.metadata.extra.get("min_object_pixels", 0)) for c in self.checkpoints)
        for path, w in zip(paths, self.weights):
            feedback.info(f"Model {os.path.basename(path)}: weight {w:.3f}")

    @property
    def out_bands(self) -> int:
        """Probability bands: one per foreground class."""
        return len(self.metadata.classes)

    def predict(self, raw: np.ndarray, tta: bool) -> np.ndarray:
        """Foreground probabilities ``(N, K, H, W)`` float32 for raw tiles ``(N, C, H, W)``."""
        torch = self.torch
        total = None
        for model, (mean, std), weight in zip(self.models, self.normalization, self.weights):
            if weight == 0:
                continue
            # normalised on the device: on a GPU the host's numpy pass was ~15 % of segment_raster's time; float32
            # either way, and torch.nan_to_num has numpy's defaults, so the CPU result is bit-identical
            x = torch.nan_to_num((torch.from_numpy(raw).to(self.device) - mean) / std)
            flips = [(), (-1,), (-2,), (-2, -1)] if tta else [()]
            acc = None
            with torch.no_grad(), self.precision.autocast():
                for dims in flips:
                    logits = model(x.flip(dims) if dims else x).float()
                    probs = torch.sigmoid(logits) if self.binary else torch.softmax(logits, dim=1)[:, 1:]
                    probs = probs.flip(dims) if dims else probs
                    acc = probs if acc is None else acc + probs
            acc = (acc / len(flips)) * weight
            total = acc if total is None else total + acc
        return total.cpu().numpy().astype(np.float32)
