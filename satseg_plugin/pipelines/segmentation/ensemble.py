"""The models a segmentation run applies: one model file or a weighted ensemble, as one ``predict`` step.

:class:`Ensemble` loads the models (SatSeg ``.satseg`` files, and ``.onnx`` files through onnxruntime:
SatSeg's own exports and Deepness-style "Segmentor" models, see :mod:`...models.onnx_model`), checks that they
agree on bands and classes, and turns a batch of raw tiles (band units) into blended foreground probabilities,
normalised on the model's device.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, List, Optional, Sequence

import numpy as np

from ...core.deps import require
from ...core.errors import InputError
from ...core.fit import choose_precision
from ...core.progress import Feedback

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Ensemble"]


class _TorchModel:
    """A ``.satseg`` segmentation network: normalised tiles -> foreground probabilities on the device."""

    def __init__(self, path: str, device: Any, precision: Any) -> None:
        from ...models.checkpoint import build_from_checkpoint, load_checkpoint
        from ...models.registry import input_multiple

        ckpt = load_checkpoint(path, kind="segmentation")
        self.metadata = meta = ckpt.metadata
        self.model = build_from_checkpoint(ckpt).to(device).eval()
        self.binary = len(meta.classes) == 1
        self.multiple = input_multiple(meta.architecture, meta.encoder, **meta.model_kwargs)
        self.fixed_tile: Optional[int] = None
        self.precision = precision
        self.label = "torch"
        self.warning = None

    def probabilities(self, x: "torch.Tensor") -> "torch.Tensor":
        """``(N, K, H, W)`` foreground probabilities (float32, on the device) of normalised tiles ``x``."""
        torch = require("torch")
        with self.precision.autocast():
            logits = self.model(x).float()
        return torch.sigmoid(logits) if self.binary else torch.softmax(logits, dim=1)[:, 1:]


class _OnnxModel:
    """An ``.onnx`` segmentation model in onnxruntime: normalised tiles -> foreground probabilities."""

    def __init__(self, path: str, device: Any) -> None:
        from ...models.onnx_model import OnnxSegmenter

        self.segmenter = OnnxSegmenter(path, device, "MODELS")
        self.metadata = self.segmenter.metadata
        self.multiple = self.segmenter.info.multiple
        self.fixed_tile = self.segmenter.info.fixed_size
        self.device = device
        self.label = f"onnxruntime {self.segmenter.providers[0]}, {self.segmenter.info.source} metadata"
        #: said once when the run asked for a GPU that this onnxruntime cannot use
        self.warning = None
        if getattr(device, "type", str(device)) == "cuda" and "CUDAExecutionProvider" not in self.segmenter.providers:
            self.warning = (f"{os.path.basename(path)} runs on the CPU: this onnxruntime has no CUDA execution "
                            "provider. Install onnxruntime-gpu (matching your CUDA) to run ONNX models on the GPU.")

    def probabilities(self, x: "torch.Tensor") -> "torch.Tensor":
        """As :meth:`_TorchModel.probabilities`; onnxruntime takes host arrays, so the tiles go through the host."""
        torch = require("torch")
        return torch.from_numpy(self.segmenter.run(x.float().cpu().numpy())).to(self.device)


class Ensemble:
    """Loaded models with their normalisation and weights; turns a raw tile batch into probabilities.

    Attributes:
        metadata: the first model's metadata (bands, classes, mean, std, pixel size, threshold).
        multiple: the multiple every tile side must have (a fixed-size ONNX model's side).
        fixed_tile: the tile side a fixed-size ONNX model takes, or None.
        threshold: the weighted mean of the models' thresholds.
        min_object_pixels: the smallest object the models keep.
    """

    def __init__(self, paths: Sequence[str], weights: Optional[Sequence[float]], device, amp: bool,
                 feedback: Feedback) -> None:
        from ...models.onnx_model import is_onnx

        torch = require("torch")
        if not paths:
            raise InputError("give at least one model file (.satseg or .onnx).", "MODELS")
        if weights:
            if len(weights) != len(paths):
                raise InputError(f"{len(weights)} weights for {len(paths)} models; give one weight per model.",
                                 "WEIGHTS")
            if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
                raise InputError(f"weights must be finite, non-negative and not all zero, got "
                                 f"{', '.join(str(w) for w in weights)}; e.g. 0.7,0.15,0.15.", "WEIGHTS")
        self.device, self.torch = device, torch
        self.precision = choose_precision(device, amp, training=False)
        self.members: List[Any] = [_OnnxModel(p, device) if is_onnx(p) else _TorchModel(p, device, self.precision)
                                   for p in paths]
        first = self.members[0].metadata
        for path, member in zip(paths[1:], self.members[1:]):
            meta = member.metadata
            if list(meta.bands) != list(first.bands) or list(meta.classes) != list(first.classes):
                raise InputError(f"'{os.path.basename(path)}' uses bands {meta.bands} and classes {meta.classes}, "
                                 f"but '{os.path.basename(paths[0])}' uses bands {first.bands} and classes "
                                 f"{first.classes}; models of an ensemble must agree on both.", "MODELS")
        if weights:
            total = float(sum(weights))
            self.weights = [w / total for w in weights]
        else:
            self.weights = [1.0 / len(paths)] * len(paths)
        self.metadata = first
        self.binary = len(first.classes) == 1
        fixed = sorted({m.fixed_tile for m in self.members if m.fixed_tile})
        if len(fixed) > 1:
            raise InputError(f"the ONNX models take tiles of {' and '.join(map(str, fixed))} px only; models of an "
                             "ensemble must accept one tile size.", "MODELS")
        self.fixed_tile: Optional[int] = fixed[0] if fixed else None
        others = math.lcm(*(m.multiple for m in self.members if not m.fixed_tile))
        if self.fixed_tile and self.fixed_tile % others:
            raise InputError(f"an ONNX model takes tiles of {self.fixed_tile} px only, but the other models need "
                             f"tiles whose side is a multiple of {others} px; use models that agree.", "MODELS")
        self.multiple = self.fixed_tile or others
        self.threshold = float(sum(w * m.metadata.threshold for w, m in zip(self.weights, self.members)))
        #: per model, its band means and standard deviations as ``(1, C, 1, 1)`` float32 tensors on the device
        self.normalization = [tuple(torch.tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1)
                                    for v in (m.metadata.mean, m.metadata.std)) for m in self.members]
        #: the smallest object the models keep (models written before it was stored: every pixel)
        self.min_object_pixels = min(int(m.metadata.extra.get("min_object_pixels", 0)) for m in self.members)
        for path, w, member in zip(paths, self.weights, self.members):
            feedback.info(f"Model {os.path.basename(path)} ({member.label}): weight {w:.3f}")
            if member.warning:
                feedback.warning(member.warning)

    @property
    def out_bands(self) -> int:
        """Probability bands: one per foreground class."""
        return len(self.metadata.classes)

    def tile_size(self, requested: Optional[int], feedback: Optional[Feedback] = None) -> Optional[int]:
        """The tile side to plan with: a fixed-size ONNX model's own side, else ``requested`` (TILE_SIZE)."""
        if self.fixed_tile is None:
            return requested
        if requested and requested != self.fixed_tile and feedback is not None:
            feedback.info(f"TILE_SIZE {requested} px ignored: the ONNX model takes tiles of {self.fixed_tile} px "
                          "only.")
        return self.fixed_tile

    def predict(self, raw: np.ndarray, tta: bool, on_device: bool = False) -> Any:
        """Foreground probabilities ``(N, K, H, W)`` float32 for raw tiles ``(N, C, H, W)``.

        ``on_device``: return them as a tensor on the models' device instead of a numpy array (for a blend that
        accumulates there, :class:`~...core.tiling.HannBlend` with a device).
        """
        torch = self.torch
        total = None
        for member, (mean, std), weight in zip(self.members, self.normalization, self.weights):
            if weight == 0:
                continue
            # normalised on the device: on a GPU the host's numpy pass was ~15 % of segment_raster's time; float32
            # either way, and torch.nan_to_num has numpy's defaults, so the CPU result is bit-identical
            x = torch.nan_to_num((torch.from_numpy(raw).to(self.device) - mean) / std)
            flips = [(), (-1,), (-2,), (-2, -1)] if tta else [()]
            acc = None
            with torch.no_grad():
                for dims in flips:
                    probs = member.probabilities(x.flip(dims) if dims else x)
                    probs = probs.flip(dims) if dims else probs
                    acc = probs if acc is None else acc + probs
            acc = (acc / len(flips)) * weight
            total = acc if total is None else total + acc
        total = total.float()
        return total if on_device else total.cpu().numpy()
