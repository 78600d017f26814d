"""ONNX segmentation models: SatSeg's own exports and Deepness-style models, run with onnxruntime.

An ONNX file carries its settings as string metadata (``metadata_props``), each value JSON text, the way the
Deepness QGIS plugin reads them (its "creators_add_metadata_to_model" page):

* Deepness's keys: ``model_type`` (``"Segmentor"``), ``class_names`` (``{0: "background", 1: "building"}``),
  ``resolution`` (cm per pixel), ``tiles_size``, ``tiles_overlap`` (percent), ``seg_thresh``,
  ``standardization_mean`` / ``standardization_std`` (applied to values scaled to 0..1 by dividing by 255);
* SatSeg's own keys (:data:`SATSEG_KEYS`, written by :mod:`.onnx_export`): ``satseg_kind``, ``bands``,
  ``classes``, ``mean``/``std`` in raw band units, ``threshold``, ``min_object_pixels``, ``input_multiple``,
  ``pixel_size``. When present they win, so SatSeg's own exports run exactly as the ``.satseg`` file did.

Deepness's preprocessing ``(raw / 255 - m) / s`` is SatSeg's ``(raw - mean) / std`` with ``mean = 255 m`` and
``std = 255 s``, so both kinds of file become one :class:`~.checkpoint.ModelMetadata` (raw units) and share
SatSeg's normalisation. Deepness's output convention is SatSeg's: one channel is a sigmoid probability of the one
class named in ``class_names``; K > 1 channels are softmax probabilities, channel 0 the background.

An ONNX file is untrusted input. It is protobuf (nothing is unpickled); :func:`read_onnx` refuses files over
:data:`MAX_ONNX_BYTES`, tensors stored outside the file (an external-data path could point anywhere),
models ``onnx.checker`` rejects, more than one input or output, an input that is not a float32
``(N, C, H, W)`` tensor, and metadata that is missing or out of bounds, each with an :class:`InputError`
naming the parameter, the file and the key.
"""

from __future__ import annotations

import ast
import json
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from ..core.deps import require
from ..core.errors import InputError
from .checkpoint import ModelMetadata
from .schema import MAX_BANDS, MAX_CLASSES

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["MIN_OPSET", "MAX_OPSET", "ONNX_SUFFIX", "MAX_ONNX_BYTES", "DEEPNESS_SCALE", "DEFAULT_MULTIPLE", "SATSEG_KEYS", "OnnxInfo",
           "is_onnx", "read_onnx", "OnnxSegmenter", "execution_providers"]

#: Oldest ONNX opset SatSeg writes (Deepness's onnxruntime runs it) and the newest torch's TorchScript exporter
#: writes. (Here, not in :mod:`.onnx_export`, so the Processing dialog reads them without importing numpy.)
MIN_OPSET, MAX_OPSET = 17, 20
#: Extension of ONNX model files.
ONNX_SUFFIX = ".onnx"
#: Largest ONNX file read: protobuf cannot hold more than 2 GiB in one message.
MAX_ONNX_BYTES = 2 ** 31
#: Deepness divides raw 8-bit values by this before applying ``standardization_mean``/``std``.
DEEPNESS_SCALE = 255.0
#: Input multiple of a dynamic-size model that does not state one (``input_multiple``): a U-Net's 32.
DEFAULT_MULTIPLE = 32
#: Metadata keys SatSeg writes besides Deepness's (all JSON values).
SATSEG_KEYS = ("satseg_kind", "satseg_version", "bands", "classes", "mean", "std", "threshold",
               "min_object_pixels", "input_multiple", "pixel_size", "crs_units", "architecture", "encoder")
#: ``crs_units`` values that are metres (Deepness's ``resolution`` is in centimetres per pixel).
METRE_UNITS = ("metre", "meter", "metres", "meters", "m")


def is_onnx(path: str) -> bool:
    """Whether ``path`` names an ONNX model file (by its extension)."""
    return os.path.splitext(str(path))[1].lower() == ONNX_SUFFIX


@dataclass
class OnnxInfo:
    """What SatSeg needs to know about an ONNX segmentation model.

    Attributes:
        metadata: bands, classes, normalisation (raw units), pixel size, threshold, as a ``.satseg`` has them.
        fixed_size: the tile side the model's input is fixed to, or None for dynamic height and width.
        batch: the input's fixed batch size, or None when dynamic.
        multiple: the multiple a dynamic input's side must have (the fixed size when fixed).
        output_channels: probability channels of the output, or None when the file leaves it dynamic.
        input_name: the graph's input name.
        source: ``"satseg"`` (SatSeg's keys present) or ``"deepness"``.
    """

    metadata: ModelMetadata
    fixed_size: Optional[int]
    batch: Optional[int]
    multiple: int
    output_channels: Optional[int]
    input_name: str
    source: str


def _bad(path: str, what: str, parameter: str) -> InputError:
    return InputError(f"'{os.path.abspath(path)}' {what}", parameter)


def _dims(value_info: Any) -> List[Any]:
    """The dimensions of a graph input/output: ints where fixed, names (or None) where dynamic."""
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]


def _metadata_map(model: Any) -> Dict[str, Any]:
    """``metadata_props`` with each value parsed: JSON, else a Python literal (Deepness accepts both), else text."""
    values: Dict[str, Any] = {}
    for prop in model.metadata_props:
        text = prop.value
        try:
            values[prop.key] = json.loads(text)
        except ValueError:
            try:  # literals only: ast.literal_eval never calls or imports anything
                values[prop.key] = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                values[prop.key] = text
    return values


def _number_list(values: Mapping[str, Any], key: str, count: int, path: str, parameter: str,
                 positive: bool = False) -> List[float]:
    value = values[key]
    if not isinstance(value, (list, tuple)) or len(value) != count or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
            for v in value):
        need = "positive finite numbers" if positive else "finite numbers"
        raise _bad(path, f"has metadata '{key}' = {str(value)[:80]}; it must list {count} {need}, one per input "
                         "band.", parameter)
    return [float(v) for v in value]


def _class_names(values: Mapping[str, Any], path: str, parameter: str) -> List[str]:
    """Deepness's ``class_names``: ``{0: "a", 1: "b"}`` (or a one-element list of such a dict), in id order."""
    names = values["class_names"]
    if isinstance(names, list) and len(names) == 1 and isinstance(names[0], dict):
        names = names[0]
    if not isinstance(names, dict) or not names or len(names) > MAX_CLASSES + 1:
        raise _bad(path, f"has metadata 'class_names' = {str(names)[:80]}; it must map class ids to names, e.g. "
                         "{\"0\": \"background\", \"1\": \"building\"}. (A model with several output heads is "
                         "not supported.)", parameter)
    try:
        ordered = sorted((int(k), str(v)) for k, v in names.items())
    except (TypeError, ValueError):
        ordered = []
    if [k for k, _ in ordered] != list(range(len(names))):
        raise _bad(path, f"has metadata 'class_names' with ids {sorted(map(str, names))[:10]}; the ids must run "
                         "0, 1, 2, ... without gaps.", parameter)
    return [name for _, name in ordered]


def _require_key(values: Mapping[str, Any], key: str, path: str, parameter: str, example: str) -> Any:
    if key not in values:
        raise _bad(path, f"has no '{key}' metadata, which SatSeg needs to run it. Add it with the onnx package "
                         f"(model.metadata_props.add(), key '{key}', value {example} as JSON; see docs/onnx.md).",
                   parameter)
    return values[key]


def _satseg_metadata(values: Mapping[str, Any], channels: int, path: str, parameter: str) -> ModelMetadata:
    """The metadata of one of SatSeg's own exports (raw-unit normalisation, exact bands and classes)."""
    for key in ("bands", "classes", "mean", "std"):
        _require_key(values, key, path, parameter, "as SatSeg's export writes it")
    bands, classes = values["bands"], values["classes"]
    if not isinstance(bands, list) or len(bands) != channels or not all(
            isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 100000 for b in bands):
        raise _bad(path, f"has metadata 'bands' = {str(bands)[:80]}; it must list {channels} band numbers "
                         "(1-based), one per input channel.", parameter)
    if not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES or not all(
            isinstance(c, str) for c in classes):
        raise _bad(path, f"has metadata 'classes' = {str(classes)[:80]}; it must list the foreground class "
                         "names.", parameter)
    pixel = values.get("pixel_size") or []
    pixel_size = tuple(float(v) for v in pixel) if isinstance(pixel, list) and len(pixel) == 2 and all(
        isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in pixel) else ()
    return ModelMetadata(
        kind="segmentation", architecture=str(values.get("architecture", "onnx")),
        encoder=str(values.get("encoder", "")), in_channels=channels, classes=list(classes), bands=list(bands),
        mean=_number_list(values, "mean", channels, path, parameter),
        std=_number_list(values, "std", channels, path, parameter, positive=True), patch_size=0,
        pixel_size=pixel_size, crs_units=str(values.get("crs_units", "unknown")),
        threshold=_threshold(values, "threshold", path, parameter),
        satseg_version=str(values.get("satseg_version", "?")),
        extra={"min_object_pixels": _count(values, "min_object_pixels", path, parameter)})


def _deepness_metadata(values: Mapping[str, Any], channels: int, outputs: Optional[int], path: str,
                       parameter: str) -> ModelMetadata:
    """The metadata of a Deepness-style model: bands 1..C, Deepness's 0..1 standardisation in raw units."""
    kind = _require_key(values, "model_type", path, parameter, "\"Segmentor\"")
    if str(kind).capitalize() != "Segmentor":
        raise _bad(path, f"is a Deepness '{kind}' model; Segment raster runs 'Segmentor' models only.", parameter)
    names = _class_names({"class_names": _require_key(values, "class_names", path, parameter,
                                                      "{\"0\": \"background\", \"1\": \"building\"}")},
                         path, parameter)
    if outputs == 1 or (outputs is None and len(names) == 1):
        classes = names[-1:]  # one sigmoid channel: {0: "building"} (or a background name before it)
    else:
        if outputs is not None and outputs != len(names):
            raise _bad(path, f"has {outputs} output channels but metadata 'class_names' names {len(names)} classes; "
                             "give one name per output channel, background first.", parameter)
        classes = names[1:]
    mean = [0.0] * channels
    std = [1.0] * channels
    if "standardization_mean" in values:
        mean = _number_list(values, "standardization_mean", channels, path, parameter)
    if "standardization_std" in values:
        std = _number_list(values, "standardization_std", channels, path, parameter, positive=True)
    resolution = values.get("resolution")
    pixel_size = ()
    if isinstance(resolution, (int, float)) and not isinstance(resolution, bool) and math.isfinite(resolution) \
            and resolution > 0:
        pixel_size = (resolution / 100.0, resolution / 100.0)
    return ModelMetadata(
        kind="segmentation", architecture="onnx", encoder="", in_channels=channels, classes=classes,
        bands=list(range(1, channels + 1)), mean=[DEEPNESS_SCALE * m for m in mean],
        std=[DEEPNESS_SCALE * s for s in std], patch_size=0, pixel_size=pixel_size,
        crs_units="metre" if pixel_size else "unknown", threshold=_threshold(values, "seg_thresh", path, parameter),
        extra={"min_object_pixels": 0})


def _threshold(values: Mapping[str, Any], key: str, path: str, parameter: str) -> float:
    value = values.get(key, 0.5)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1:
        raise _bad(path, f"has metadata '{key}' = {str(value)[:40]}; it must be a number between 0 and 1.",
                   parameter)
    return float(value)


def _count(values: Mapping[str, Any], key: str, path: str, parameter: str) -> int:
    value = values.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 2 ** 31:
        raise _bad(path, f"has metadata '{key}' = {str(value)[:40]}; it must be a whole number >= 0.", parameter)
    return value


def read_onnx(path: str, parameter: str = "MODELS") -> Tuple[Any, OnnxInfo]:
    """Load and check an ONNX segmentation model file (untrusted input).

    Args:
        path: the ``.onnx`` file.
        parameter: the Processing parameter named in errors.

    Returns:
        The ``onnx.ModelProto`` and its :class:`OnnxInfo`.

    Raises:
        InputError: naming ``parameter``, the file and what to change: missing, too large, truncated or not
            ONNX, rejected by ``onnx.checker``, external data, not one float32 ``(N, C, H, W)`` input and one
            ``(N, K, H, W)`` output, a non-square fixed input, or missing/invalid metadata (naming the key).
    """
    onnx = require("onnx")
    name = os.path.abspath(path)
    if not os.path.isfile(path):
        raise InputError(f"model file '{name}' does not exist. Check the path.", parameter)
    size = os.path.getsize(path)
    if size > MAX_ONNX_BYTES:
        raise _bad(path, f"holds {size} bytes, more than the {MAX_ONNX_BYTES} an ONNX model file can.", parameter)
    try:
        with open(path, "rb") as handle:
            model = onnx.load_model_from_string(handle.read())
    except Exception as exc:  # protobuf's DecodeError and friends: truncated or not ONNX
        raise _bad(path, f"is not an ONNX model: it is damaged or truncated ({str(exc)[:200]}). Export or copy "
                         "it again.", parameter) from exc
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise _bad(path, f"keeps tensors in external data files ({', '.join(external[:3])}); SatSeg reads only "
                         "self-contained models. Save it as one file (onnx.save with save_as_external_data=False).",
                   parameter)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError
        raise _bad(path, f"is not a valid ONNX model ({str(exc).splitlines()[0][:200]}). Export it again.",
                   parameter) from exc
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise _bad(path, f"has {len(inputs)} input(s) and {len(model.graph.output)} output(s); a segmentation "
                         "model has one image input and one probability output.", parameter)
    dims, out_dims = _dims(inputs[0]), _dims(model.graph.output[0])
    if len(dims) != 4 or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise _bad(path, f"takes a {len(dims)}-dimensional input of ONNX type "
                         f"{inputs[0].type.tensor_type.elem_type}; SatSeg feeds float32 tiles of shape (batch, "
                         "bands, height, width), so the input must be a 4-dimensional float tensor.", parameter)
    if len(out_dims) != 4:
        raise _bad(path, f"gives a {len(out_dims)}-dimensional output; a segmentation model gives (batch, classes, "
                         "height, width) probabilities.", parameter)
    batch, channels, height, width = dims
    if not isinstance(channels, int) or not 1 <= channels <= MAX_BANDS:
        raise _bad(path, f"has {channels} input channels; it must state a fixed number of bands (1 to "
                         f"{MAX_BANDS}).", parameter)
    fixed = [d for d in (height, width) if isinstance(d, int) and d > 0]
    if fixed and (len(fixed) != 2 or height != width or not 16 <= height <= 16384):
        raise _bad(path, f"takes tiles of {height} x {width} px; SatSeg tiles are square, so the input must be "
                         "square (16 to 16384 px) or have dynamic height and width.", parameter)
    outputs = out_dims[1] if isinstance(out_dims[1], int) and out_dims[1] > 0 else None
    values = _metadata_map(model)
    if "satseg_kind" in values:
        if values["satseg_kind"] != "segmentation":
            raise _bad(path, f"is a SatSeg '{values['satseg_kind']}' export (features, not class probabilities); "
                             "Segment raster needs a segmentation model.", parameter)
        meta, source = _satseg_metadata(values, channels, path, parameter), "satseg"
        expected = 1 if len(meta.classes) == 1 else len(meta.classes) + 1
        if outputs is not None and outputs != expected:
            raise _bad(path, f"has {outputs} output channels but {len(meta.classes)} classes in its metadata "
                             f"(expected {expected} channels).", parameter)
    else:
        meta, source = _deepness_metadata(values, channels, outputs, path, parameter), "deepness"
    multiple = values.get("input_multiple", DEFAULT_MULTIPLE)
    if not isinstance(multiple, int) or isinstance(multiple, bool) or not 1 <= multiple <= 1024:
        raise _bad(path, f"has metadata 'input_multiple' = {str(multiple)[:40]}; it must be a whole number from 1 "
                         "to 1024.", parameter)
    fixed_size = int(height) if fixed else None
    meta.patch_size = fixed_size or int(values.get("tiles_size", values.get("tile_size", 512)) or 512)
    info = OnnxInfo(meta, fixed_size, batch if isinstance(batch, int) and batch > 0 else None,
                    fixed_size or int(multiple), outputs, inputs[0].name, source)
    return model, info


def execution_providers(device: Any) -> List[Any]:
    """onnxruntime providers for a torch device: CUDA (that GPU) when asked for and available, else the CPU."""
    ort = require("onnxruntime")
    if getattr(device, "type", str(device)) == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": int(getattr(device, "index", None) or 0)}),
                "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxSegmenter:
    """An ONNX segmentation model in an onnxruntime session: normalised tiles in, foreground probabilities out.

    Args:
        path: the ``.onnx`` file (checked by :func:`read_onnx`).
        device: the torch device the run uses (``cuda`` picks onnxruntime's CUDA provider when installed).
        parameter: the Processing parameter named in errors.
    """

    def __init__(self, path: str, device: Any, parameter: str = "MODELS") -> None:
        ort = require("onnxruntime")
        model, self.info = read_onnx(path, parameter)
        self.path, self.parameter = path, parameter
        self.providers = execution_providers(device)
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), providers=self.providers)
        except Exception as exc:  # onnxruntime's Fail / InvalidGraph / NotImplemented
            raise _bad(path, f"cannot be run by onnxruntime ({str(exc).splitlines()[0][:200]}). Export it with "
                             "opset 17 or newer and standard operators.", parameter) from exc
        self.providers = self.session.get_providers()

    @property
    def metadata(self) -> ModelMetadata:
        """Bands, classes, normalisation in raw units, pixel size, threshold."""
        return self.info.metadata

    @property
    def binary(self) -> bool:
        """One class: the output is one sigmoid channel."""
        return len(self.info.metadata.classes) == 1

    def run(self, x: np.ndarray) -> np.ndarray:
        """Foreground probabilities ``(N, K, H, W)`` float32 in [0, 1] for normalised tiles ``(N, C, H, W)``.

        A model with a fixed batch size gets the tiles in chunks of it (the last one padded with zeros).
        """
        import numpy as np

        x = np.ascontiguousarray(x, np.float32)
        step = self.info.batch or len(x)
        parts = []
        for start in range(0, len(x), step):
            chunk = x[start:start + step]
            if len(chunk) < step:
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk),) + chunk.shape[1:], np.float32)])
            try:
                out = self.session.run(None, {self.info.input_name: chunk})[0]
            except Exception as exc:  # onnxruntime's RuntimeException: shapes the graph cannot take
                raise _bad(self.path, f"failed on a batch of shape {tuple(chunk.shape)} ({str(exc)[:300]}).",
                           self.parameter) from exc
            parts.append(np.asarray(out, np.float32)[:min(step, len(x) - start)])
        out = np.concatenate(parts)
        if out.ndim != 4 or out.shape[0] != len(x) or out.shape[2:] != x.shape[2:]:
            raise _bad(self.path, f"gave an output of shape {out.shape} for tiles of shape {x.shape}; a segmentation "
                                  "model keeps the tile's height and width.", self.parameter)
        k = len(self.info.metadata.classes)
        if out.shape[1] == k + 1:
            out = out[:, 1:]  # channel 0 is the background
        elif out.shape[1] != k:
            raise _bad(self.path, f"gave {out.shape[1]} output channels for {k} foreground classes.",
                       self.parameter)
        return np.clip(out, 0.0, 1.0)

