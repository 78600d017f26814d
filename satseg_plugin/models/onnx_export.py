"""SatSeg model files to ONNX, with the metadata Deepness reads and SatSeg's own, checked against torch.

A segmentation model becomes a graph from normalised tiles to class *probabilities* (sigmoid for one class,
softmax over background + classes otherwise), as Deepness's "Segmentor" expects; a ClusterNet becomes its
feature network (``features(x)``: learned channels plus weighted bands), a Deepness "Regressor" with one output
map per feature channel.

Normalisation is declared in the metadata, not folded into the graph: Deepness always feeds ``raw / 255``
standardised with ``standardization_mean``/``std``, so writing ``mean / 255`` and ``std / 255`` there gives
exactly SatSeg's ``(raw - mean) / std``, and SatSeg's own keys keep the raw-unit values for its sweep
(:mod:`.onnx_model`). (Deepness reads 8-bit imagery only; a model trained on other data still runs in SatSeg.)

The exporter is torch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``): the default
``torch.export``-based exporter of torch >= 2.9 needs the ``onnxscript`` package, which QGIS installs rarely
have, and the traced graph of smp's U-Net/PSPNet/DeepLabV3+ keeps dynamic batch, height and width. Every
export is run with onnxruntime on sample tiles (the caller's, or tiles drawn from the model's band statistics)
at two tile sizes and batch sizes and compared with torch; a difference over the tolerance writes nothing.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.deps import require
from ..core.errors import InputError, OutputError
from ..core.paths import check_outputs
from ..core.progress import Feedback, NullFeedback
from ..core.staging import StagedFile
from ..core.tiling import fit_tile
from ..core.version import __version__
from .checkpoint import ModelMetadata, load_checkpoint
from .onnx_model import DEEPNESS_SCALE, MAX_OPSET, METRE_UNITS, MIN_OPSET, ONNX_SUFFIX

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["DEFAULT_TOLERANCE", "EXPORT_KINDS", "OnnxExportResult", "export_onnx",
           "onnx_metadata", "raster_samples"]

#: Largest difference between the ONNX model's and torch's outputs an export may have.
DEFAULT_TOLERANCE = 1e-4
#: Model kinds that export, with the Deepness model type each becomes.
EXPORT_KINDS = {"segmentation": "Segmentor", "clusternet": "Regressor"}
#: The ONNX graph's input and output names.
INPUT_NAME, OUTPUT_NAME = "input", "output"


@dataclass
class OnnxExportResult:
    """What an export wrote.

    Attributes:
        path: the ONNX file.
        kind: the model kind (``segmentation`` or ``clusternet``).
        opset: the ONNX opset.
        max_difference: the largest difference between onnxruntime's and torch's outputs on the samples.
        checked_shapes: the input shapes the comparison ran on.
        metadata: the metadata written (key -> JSON text).
    """

    path: str
    kind: str
    opset: int
    max_difference: float
    checked_shapes: List[Tuple[int, ...]] = field(default_factory=list)
    metadata: Dict[str, str] = field(default_factory=dict)


def _wrap(kind: str, net: "torch.nn.Module", binary: bool) -> "torch.nn.Module":
    """The module that is exported: probabilities (segmentation) or per-pixel features (ClusterNet)."""
    torch = require("torch")

    class Exported(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            if kind == "clusternet":
                return self.net.features(x)
            logits = self.net(x)
            return torch.sigmoid(logits) if binary else torch.softmax(logits, dim=1)

    return Exported().eval()


def onnx_metadata(meta: ModelMetadata, kind: str, multiple: int, output_channels: int) -> Dict[str, str]:
    """Deepness's keys and SatSeg's for a model, each value as JSON text.

    Args:
        meta: the model file's metadata.
        kind: ``segmentation`` or ``clusternet``.
        multiple: the input multiple of the network.
        output_channels: the graph's output channels.
    """
    if kind == "segmentation":
        names = meta.classes if len(meta.classes) == 1 else ["background"] + list(meta.classes)
    else:
        names = [f"feature_{i + 1}" for i in range(output_channels)]
    values: Dict[str, Any] = {
        "model_type": EXPORT_KINDS[kind],
        "class_names": {str(i): name for i, name in enumerate(names)},
        "tiles_size": fit_tile(None, multiple),
        "tiles_overlap": 25,  # percent: SatSeg's own default overlap, a quarter tile
        "standardization_mean": [m / DEEPNESS_SCALE for m in meta.mean],
        "standardization_std": [s / DEEPNESS_SCALE for s in meta.std],
        "satseg_kind": kind, "satseg_version": __version__, "bands": list(meta.bands),
        "classes": list(meta.classes), "mean": list(meta.mean), "std": list(meta.std),
        "input_multiple": int(multiple), "pixel_size": list(meta.pixel_size), "crs_units": meta.crs_units,
        "architecture": meta.architecture, "encoder": meta.encoder,
    }
    if kind == "segmentation":
        values.update(seg_thresh=meta.threshold, threshold=meta.threshold,
                      min_object_pixels=int(meta.extra.get("min_object_pixels", 0)))
    if meta.crs_units in METRE_UNITS and len(meta.pixel_size) == 2:
        values["resolution"] = float(meta.pixel_size[0]) * 100.0  # Deepness: centimetres per pixel
    return {key: json.dumps(value) for key, value in values.items()}


def raster_samples(path: str, bands: Sequence[int], side: int, count: int = 4,
                   parameter: str = "SAMPLE_RASTER") -> np.ndarray:
    """``count`` tiles ``(count, C, side, side)`` float32 of a raster's ``bands``, spread along its diagonal.

    Windows past the raster's edge are filled with zeros; nodata stays as stored (the comparison only needs the
    same input on both sides).
    """
    from rasterio.windows import Window

    from ..core.raster import open_raster, raster_env

    with raster_env(), open_raster(path) as src:
        if max(bands) > src.count:
            raise InputError(f"the model reads bands {list(bands)}, but the raster has {src.count} band(s).",
                             parameter)
        tiles = []
        for i in range(count):
            fraction = (i + 0.5) / count
            col = int(max(src.width - side, 0) * fraction)
            row = int(max(src.height - side, 0) * fraction)
            tiles.append(src.read(list(bands), window=Window(col, row, side, side), boundless=True, fill_value=0,
                                  out_dtype="float32"))
    return np.stack(tiles)


def _load(model_path: str) -> Tuple[ModelMetadata, "torch.nn.Module", int, str]:
    """The model file's metadata, network (CPU, eval), input multiple and kind."""
    from .checkpoint import build_from_checkpoint
    from .nets.clusternet import clusternet_from_checkpoint
    from .registry import input_multiple

    ckpt = load_checkpoint(model_path)
    meta = ckpt.metadata
    if meta.kind not in EXPORT_KINDS:
        raise InputError(f"'{os.path.abspath(model_path)}' is a {meta.kind} model; ONNX export takes a "
                         "segmentation or ClusterNet model file.", "MODEL")
    net = build_from_checkpoint(ckpt) if meta.kind == "segmentation" else clusternet_from_checkpoint(ckpt)
    multiple = int(meta.extra.get("input_multiple") or
                   input_multiple(meta.architecture, meta.encoder, **meta.model_kwargs))
    return meta, net.eval(), multiple, meta.kind


def _compare(session: Any, wrapped: "torch.nn.Module", batches: Sequence[np.ndarray]) -> float:
    """The largest absolute difference between onnxruntime's and torch's outputs over ``batches``."""
    torch = require("torch")
    worst = 0.0
    for x in batches:
        with torch.no_grad():
            expected = wrapped(torch.from_numpy(x)).numpy()
        got = session.run(None, {INPUT_NAME: x})[0]
        if got.shape != expected.shape:
            raise OutputError(f"the ONNX model gave outputs of shape {got.shape} for input {x.shape}, torch "
                              f"{expected.shape}; nothing was written.", "OUTPUT")
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - expected))))
    return worst


def export_onnx(model_path: str, output_path: str, opset: int = MIN_OPSET, samples: Optional[np.ndarray] = None,
                tolerance: float = DEFAULT_TOLERANCE, feedback: Optional[Feedback] = None) -> OnnxExportResult:
    """Export a SatSeg segmentation or ClusterNet model file to ONNX, checked against torch.

    Args:
        model_path: the ``.satseg`` model file.
        output_path: the ``.onnx`` file to write (staged: nothing is left behind on an error; never an input).
        opset: ONNX opset, :data:`MIN_OPSET` to :data:`MAX_OPSET`.
        samples: raw tiles ``(N, C, H, W)`` (band units, e.g. from :func:`raster_samples`) the ONNX model is
            checked on, besides tiles drawn from the model's band means and deviations at two sizes.
        tolerance: the largest accepted difference between onnxruntime's and torch's outputs.
        feedback: log and progress.

    Returns:
        The :class:`OnnxExportResult`.

    Raises:
        InputError: a model file that does not export (kind, opset), naming MODEL or OPSET.
        OutputError: the output is not ``.onnx``, is the input, or the check failed (nothing is written).
        CheckpointError: the model file cannot be read.
    """
    torch = require("torch")
    onnx = require("onnx")
    ort = require("onnxruntime")
    feedback = feedback or NullFeedback()
    if os.path.splitext(output_path)[1].lower() != ONNX_SUFFIX:
        raise OutputError(f"give a file name ending in {ONNX_SUFFIX}, not '{output_path}'.", "OUTPUT")
    check_outputs({"MODEL": model_path}, {"OUTPUT": output_path})
    if isinstance(opset, bool) or not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise InputError(f"must be from {MIN_OPSET} to {MAX_OPSET}, got {opset}.", "OPSET")
    if not 0 < tolerance < 1:
        raise InputError(f"must lie between 0 and 1, got {tolerance}.", "TOLERANCE")
    meta, net, multiple, kind = _load(model_path)
    wrapped = _wrap(kind, net, len(meta.classes) == 1)
    channels = meta.in_channels
    side = 2 * multiple
    rng = np.random.default_rng(0)
    mean = np.asarray(meta.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(meta.std, np.float32).reshape(1, -1, 1, 1)

    def drawn(n: int, size: int) -> np.ndarray:  # normalised tiles, as the sweep gives the network
        return rng.standard_normal((n, channels, size, size)).astype(np.float32)

    batches = [drawn(2, side), drawn(1, 3 * multiple)]
    if samples is not None:
        samples = np.asarray(samples, np.float32)
        if samples.ndim != 4 or samples.shape[1] != channels:
            raise InputError(f"sample tiles must have shape (N, {channels}, H, W), got {samples.shape}.",
                             "SAMPLE_RASTER")
        batches.append(np.nan_to_num((samples - mean) / std).astype(np.float32))
    feedback.info(f"Exporting the {kind} model ({meta.architecture}/{meta.encoder}, {channels} band(s)) to ONNX "
                  f"opset {int(opset)} with dynamic batch, height and width (multiples of {multiple} px).")
    buffer = io.BytesIO()
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice and tracer warnings
        try:
            torch.onnx.export(wrapped, (torch.from_numpy(batches[0]),), buffer, dynamo=False,
                              opset_version=int(opset), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic}, do_constant_folding=True)
        except Exception as exc:  # torch.onnx.errors.* and tracing errors of unusual encoders
            raise InputError(f"'{os.path.abspath(model_path)}' ({meta.architecture}/{meta.encoder}) cannot be "
                             f"exported to ONNX opset {int(opset)}: {str(exc).splitlines()[0][:300]}. Try a newer "
                             "OPSET or another encoder.", "MODEL") from exc
    feedback.set_progress(50.0)
    model = onnx.load_model_from_string(buffer.getvalue())
    with torch.no_grad():
        output_channels = int(wrapped(torch.from_numpy(batches[0][:1])).shape[1])
    metadata = onnx_metadata(meta, kind, multiple, output_channels)
    for key, value in metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    model.producer_name, model.producer_version = "SatSeg", __version__
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    worst = _compare(session, wrapped, batches)
    feedback.set_progress(90.0)
    shapes = [tuple(b.shape) for b in batches]
    if not worst <= tolerance:
        raise OutputError(f"the ONNX model's outputs differ from the SatSeg model's by up to {worst:.3g} on "
                          f"tiles {shapes}, more than the tolerance {tolerance:g}; nothing was written. Try another "
                          "OPSET, or report the model's architecture and encoder.", "OUTPUT")
    feedback.info(f"onnxruntime matches torch on tiles {shapes}: largest difference {worst:.2e} "
                  f"(tolerance {tolerance:g}).")
    staged = StagedFile(output_path, parameter="OUTPUT", suffix=ONNX_SUFFIX)
    with staged as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
        staged.commit()
    feedback.set_progress(100.0)
    return OnnxExportResult(os.path.abspath(output_path), kind, int(opset), worst, shapes, metadata)
