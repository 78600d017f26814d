"""The SatSeg model file: safetensors weights plus the metadata needed to use them on a new raster.

A model file (``.satseg``) is a plain `safetensors <https://huggingface.co/docs/safetensors>`_ file, so loading one
never unpickles anything (unlike ``torch.load``): a model file found on the internet cannot run code.

Layout:
    - tensors ``model.<state_dict key>``: the network weights (:func:`model_tensors` adds the prefix);
    - tensors ``extra.<name>``: other arrays a model needs (e.g. ``extra.centroids`` of a clustering model);
    - header metadata (string -> string): ``"format": "satseg-model"`` marks a SatSeg file and
      ``"satseg"`` holds :class:`ModelMetadata` as JSON.

:data:`FORMAT_VERSION` grows when a change would make older SatSeg versions misread a file; an older
SatSeg refuses a newer file with a message saying to update the plugin.

A model file is untrusted input: its header is checked against :mod:`.schema` (known keys only, each with its
type and limits; ``model_kwargs`` only as the registry allows) before any network is built, and a file
refused there gets a :class:`~satseg_plugin.core.errors.CheckpointError` "not a valid SatSeg model" naming
the file and the key.

Reading the metadata (:func:`read_metadata`) needs only ``safetensors`` and numpy; loading the weights
needs torch, which is imported on first use.
"""

from __future__ import annotations

import dataclasses
import json
import os
import reprlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from ..core.deps import require
from ..core.errors import CheckpointError, OutputError, SatSegError
from ..core.staging import StagedFile
from ..core.version import __version__
from .schema import (
    FORMAT_VERSION,
    KINDS,
    MAX_HEADER_BYTES,
    MAX_METADATA_BYTES,
    HeaderError,
    check_entries,
    check_metadata,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "KINDS",
    "FORMAT_VERSION",
    "FORMAT_MARKER",
    "MODEL_SUFFIX",
    "ModelMetadata",
    "Checkpoint",
    "model_tensors",
    "save_checkpoint",
    "read_metadata",
    "load_checkpoint",
    "build_from_checkpoint",
    "load_weights",
]

#: Value of the :data:`MARKER_KEY` header entry in every SatSeg model file.
FORMAT_MARKER = "satseg-model"

#: Extension of SatSeg model files, as the Processing dialogs offer them (not enforced when reading).
MODEL_SUFFIX = ".satseg"

MARKER_KEY = "format"
METADATA_KEY = "satseg"
MODEL_PREFIX = "model."
EXTRA_PREFIX = "extra."


def _utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _json_default(value: Any) -> Any:
    """Let numpy scalars and arrays (and tuples inside them) pass into the JSON metadata."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


@dataclass
class ModelMetadata:
    """Everything besides the weights that is needed to apply a model to a new raster.

    Attributes:
        kind: one of :data:`KINDS`.
        architecture: registry name (``unet``, ``pspnet``, ``deeplabv3plus``) or a model-specific name.
        encoder: smp encoder name (``resnet34``, ``tu-mobilenetv3_large_100``).
        in_channels: number of input bands C.
        classes: the foreground class names, e.g. ``["building"]``. For segmentation, one class means one
            sigmoid output channel; K > 1 classes mean K + 1 softmax channels, background first
            (:attr:`output_channels`).
        bands: the 1-based raster band indices the model reads, in input-channel order.
        mean: per-band mean subtracted before the model (raw raster units), one per band.
        std: per-band standard deviation divided by, one per band.
        patch_size: training crop size in pixels.
        pixel_size: ``(x, y)`` pixel size of the training raster in :attr:`crs_units`.
        crs_wkt: WKT of the training raster's CRS (None if it had none).
        crs_units: units of the CRS (``metre``, ``degrees``, ``pixels``).
        threshold: probability above which a pixel is foreground (binary models).
        metrics: validation scores (``val_dice``, ...).
        satseg_version: the SatSeg version that wrote the file.
        format_version: the file layout version (:data:`FORMAT_VERSION`).
        created: ISO 8601 UTC time of writing.
        extra: any other JSON-able information (training configuration, source raster).
        model_kwargs: extra keyword arguments the architecture was built with (``encoder_depth``), JSON-able.
    """

    kind: str
    architecture: str
    encoder: str
    in_channels: int
    classes: List[str]
    bands: List[int]
    mean: List[float]
    std: List[float]
    patch_size: int
    pixel_size: Tuple[float, float]
    crs_wkt: Optional[str] = None
    crs_units: str = "unknown"
    threshold: float = 0.5
    metrics: Dict[str, Any] = field(default_factory=dict)
    satseg_version: str = __version__
    format_version: int = FORMAT_VERSION
    created: str = field(default_factory=_utc_now)
    extra: Dict[str, Any] = field(default_factory=dict)
    model_kwargs: Dict[str, Any] = field(default_factory=dict)

    @property
    def output_channels(self) -> int:
        """Output channels of the network: 1 for one segmentation class, else classes + background.

        For other kinds, one channel per entry of :attr:`classes`.
        """
        if self.kind == "segmentation":
            return 1 if len(self.classes) == 1 else len(self.classes) + 1
        return len(self.classes)

    def validate(self) -> None:
        """Check the metadata against the schema (:func:`.schema.check_metadata`) as it would be written.

        The check runs on the JSON text a file would hold, so SatSeg never writes a file it would refuse.

        Raises:
            ValueError: naming the field at fault (a :class:`.schema.HeaderError`), or when a field holds
                something JSON cannot represent.
        """
        check_metadata(json.loads(self.to_json()))

    def to_dict(self) -> Dict[str, Any]:
        """A plain dict of the fields (lists for tuples), as stored in the file."""
        data = dataclasses.asdict(self)
        data["pixel_size"] = list(self.pixel_size)
        return data

    def to_json(self) -> str:
        """The JSON text stored under the ``"satseg"`` header key.

        Raises:
            ValueError: when a field holds something JSON cannot represent.
        """
        try:
            return json.dumps(self.to_dict(), default=_json_default, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model metadata cannot be written as JSON ({exc}); keep metrics, extra and "
                             "model_kwargs to numbers, strings, lists and dicts.") from exc

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelMetadata":
        """Build from a dict read from a file, checked against the schema (:func:`.schema.check_metadata`).

        Raises:
            ValueError: (a :class:`.schema.HeaderError`) naming the key at fault: unknown, missing, of the
                wrong type or beyond its limits.
        """
        return cls(**check_metadata(dict(data)))

    @classmethod
    def from_json(cls, text: str) -> "ModelMetadata":
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


@dataclass
class Checkpoint:
    """A loaded model file.

    Attributes:
        metadata: the file's :class:`ModelMetadata`.
        model_state: the network's ``state_dict`` (keys without the ``model.`` prefix), CPU tensors.
        extras: the other named tensors (keys without the ``extra.`` prefix), CPU tensors.
        path: the file it was read from.
    """

    metadata: ModelMetadata
    model_state: Dict[str, "torch.Tensor"]
    extras: Dict[str, "torch.Tensor"] = field(default_factory=dict)
    path: str = ""


def model_tensors(model: "torch.nn.Module",
                  extras: Optional[Mapping[str, "torch.Tensor"]] = None) -> Dict[str, "torch.Tensor"]:
    """Name a model's ``state_dict`` (and optional extra tensors) for :func:`save_checkpoint`.

    Args:
        model: the network; its ``state_dict()`` keys get the ``model.`` prefix.
        extras: other tensors to store (``{"centroids": tensor}``); their keys get the ``extra.`` prefix.

    Returns:
        ``{"model.<key>": tensor, ..., "extra.<name>": tensor, ...}``.
    """
    tensors = {MODEL_PREFIX + key: value for key, value in model.state_dict().items()}
    for name, value in (extras or {}).items():
        if not name:
            raise ValueError("extra tensors need a non-empty name.")
        tensors[EXTRA_PREFIX + name] = value
    return tensors


def _prepare(tensors: Mapping[str, "torch.Tensor"]) -> Dict[str, "torch.Tensor"]:
    """Detached, contiguous CPU tensors, copying any that share storage (safetensors refuses those)."""
    torch = require("torch")
    out: Dict[str, "torch.Tensor"] = {}
    seen = set()
    for key, value in tensors.items():
        if not isinstance(key, str) or not (key.startswith(MODEL_PREFIX) or key.startswith(EXTRA_PREFIX)) \
                or key in (MODEL_PREFIX, EXTRA_PREFIX):
            raise ValueError(f"tensor name {key!r} must start with '{MODEL_PREFIX}' (network weights, see "
                             f"model_tensors) or '{EXTRA_PREFIX}' (other arrays).")
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{key!r} is a {type(value).__name__}, not a torch.Tensor.")
        tensor = value.detach().to("cpu").contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer and pointer in seen:
            tensor = tensor.clone()
            pointer = tensor.untyped_storage().data_ptr()
        seen.add(pointer)
        out[key] = tensor
    return out


def save_checkpoint(path: str, tensors: Mapping[str, "torch.Tensor"], metadata: ModelMetadata,
                    parameter: Optional[str] = None) -> None:
    """Write a SatSeg model file atomically.

    The file is written under a hidden temporary name beside ``path`` and renamed over it only when
    complete, so an error leaves nothing behind and an existing file at ``path`` untouched; even a killed
    process never leaves a half-written file at ``path`` (at most a ``.satseg-tmp-*`` file beside it).

    Args:
        path: the model file to write (``.satseg`` by convention); its folder is created if needed.
        tensors: named tensors, ``model.*`` and ``extra.*`` (see :func:`model_tensors`); any device/dtype,
            stored as contiguous CPU copies.
        metadata: the model's metadata; validated before anything is written.
        parameter: the Processing parameter named in output errors.

    Raises:
        ValueError: bad tensor names or metadata (nothing is written).
        OutputError: the file cannot be written there (folder not writable, disk full).
    """
    safetensors_torch = require("safetensors.torch")
    metadata.validate()
    header = {MARKER_KEY: FORMAT_MARKER, METADATA_KEY: metadata.to_json()}
    prepared = _prepare(tensors)
    staged = StagedFile(path, overwrite=True, parameter=parameter, suffix=MODEL_SUFFIX)
    with staged as tmp:
        try:
            safetensors_torch.save_file(prepared, tmp, metadata=header)
        except Exception as exc:  # OSError (disk full), or safetensors' own error type
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise OutputError(f"cannot write model file '{os.path.abspath(path)}' ({reason}). Free disk space or "
                              "choose another folder.", parameter) from exc
        staged.commit()


def model_label(path: Optional[str]) -> str:
    """How messages name a model file: its absolute path, or "the model file" when it has none."""
    return os.path.abspath(path) if path else "the model file"


def _read_header(path: str) -> Tuple[Dict[str, str], List[str]]:
    """The header metadata and tensor names of a safetensors file, with actionable errors."""
    safetensors = require("safetensors")
    name = model_label(path)
    if not os.path.exists(path):
        raise CheckpointError(f"model file '{name}' does not exist. Check the path, or train a model first.", path)
    if os.path.isdir(path):
        raise CheckpointError(f"'{name}' is a folder, not a model file. Choose the model file ({MODEL_SUFFIX}).", path)
    try:
        with open(path, "rb") as handle:
            # safetensors starts with the header's length (u64, little-endian); refuse a huge header before
            # anything parses it. A length beyond the file is left to safetensors (not a safetensors file).
            size = int.from_bytes(handle.read(8), "little")
    except OSError as exc:
        raise CheckpointError(f"cannot read model file '{name}' ({exc.strerror}). Check that the file is "
                              "readable by you.", path) from exc
    if MAX_HEADER_BYTES < size <= os.path.getsize(path) - 8:
        raise _invalid(path, HeaderError("header", f"holds {size} bytes, more than the {MAX_HEADER_BYTES} bytes a "
                                                   "SatSeg model's header may have"))
    try:
        with safetensors.safe_open(path, framework="numpy") as handle:
            header = dict(handle.metadata() or {})
            keys = list(handle.keys())
    except Exception as exc:  # safetensors raises its own SafetensorError (not exported everywhere)
        raise CheckpointError(f"'{name}' is not a SatSeg model file: it is not a safetensors file, or it is "
                              f"damaged or truncated ({exc}). Choose a model file written by SatSeg, or copy "
                              "or train it again.", path) from exc
    return header, keys


def _invalid(path: str, error: HeaderError) -> CheckpointError:
    """The error for a header that breaks the schema: names the file, what is wrong and the key."""
    return CheckpointError(f"'{model_label(path)}' is not a valid SatSeg model: {error} ({error.key}). It has "
                           "damaged metadata or was not written by SatSeg: copy or train the model again.", path)


def _parse_metadata(path: str, header: Mapping[str, str], kind: Optional[str]) -> ModelMetadata:
    name = model_label(path)
    if header.get(MARKER_KEY) != FORMAT_MARKER:
        raise CheckpointError(f"'{name}' is a safetensors file but not a SatSeg model (its header has no "
                              f"'{MARKER_KEY}: {FORMAT_MARKER}' marker). Choose a model file trained with "
                              "SatSeg.", path)
    text = header.get(METADATA_KEY, "")
    try:
        if len(text) > MAX_METADATA_BYTES:
            raise HeaderError(METADATA_KEY, f"holds {len(text)} bytes of metadata, more than the "
                                            f"{MAX_METADATA_BYTES} a SatSeg model may have")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            detail = "nested too deeply" if isinstance(exc, RecursionError) else exc
            raise HeaderError(METADATA_KEY, f"must hold the metadata as a JSON object ({detail})") from exc
        if not isinstance(data, dict):
            raise HeaderError(METADATA_KEY, f"must hold the metadata as a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise HeaderError("format_version", f"must be a positive integer, got {reprlib.repr(version)}")
        if version > FORMAT_VERSION:
            written_by = reprlib.repr(data.get("satseg_version", "?")).strip("'")
            raise CheckpointError(f"'{name}' was written by SatSeg {written_by} (format {reprlib.repr(version)}), "
                                  f"newer than this SatSeg {__version__} (format "
                                  f"{FORMAT_VERSION}): update the plugin.", path)
        check_entries(list(header), (MARKER_KEY, METADATA_KEY))
        meta = ModelMetadata.from_dict(data)
    except HeaderError as exc:
        raise _invalid(path, exc) from exc
    if kind is not None and meta.kind != kind:
        raise CheckpointError(f"'{name}' is a {meta.kind} model, expected a {kind} model. Choose a {kind} "
                              "model file.", path)
    return meta


def _check_kind_argument(kind: Optional[str]) -> None:
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)} or None, got {kind!r}.")


def read_metadata(path: str, kind: Optional[str] = None) -> ModelMetadata:
    """Read only the metadata of a SatSeg model file (fast, no torch needed).

    Args:
        path: the model file.
        kind: the kind the caller needs (one of :data:`KINDS`), or None for any.

    Returns:
        The file's :class:`ModelMetadata`.

    Raises:
        CheckpointError: see :func:`load_checkpoint`.
    """
    _check_kind_argument(kind)
    header, _keys = _read_header(path)
    return _parse_metadata(path, header, kind)


def load_checkpoint(path: str, kind: Optional[str] = None) -> Checkpoint:
    """Load a SatSeg model file (weights on the CPU) without unpickling anything.

    Args:
        path: the model file.
        kind: the kind the caller needs (one of :data:`KINDS`), or None for any.

    Returns:
        The :class:`Checkpoint`.

    Raises:
        CheckpointError: the file is missing or unreadable; not a safetensors file, or damaged/truncated;
            a safetensors file without the SatSeg marker; written in a newer format than this SatSeg
            reads; or of another kind than ``kind``. The message names the file and what to do.
    """
    _check_kind_argument(kind)
    header, keys = _read_header(path)
    meta = _parse_metadata(path, header, kind)
    stray = [k for k in keys if not (k.startswith(MODEL_PREFIX) or k.startswith(EXTRA_PREFIX))]
    if stray:
        raise CheckpointError(f"'{model_label(path)}' holds tensors SatSeg does not know ({', '.join(stray[:3])}); "
                              "it is damaged or was edited. Copy or train the model again.", path)
    safetensors = require("safetensors")
    require("torch")
    state: Dict[str, "torch.Tensor"] = {}
    extras: Dict[str, "torch.Tensor"] = {}
    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as handle:
            for key in keys:
                if key.startswith(MODEL_PREFIX):
                    state[key[len(MODEL_PREFIX):]] = handle.get_tensor(key)
                else:
                    extras[key[len(EXTRA_PREFIX):]] = handle.get_tensor(key)
    except Exception as exc:  # the file changed or broke since the header was read
        raise CheckpointError(f"cannot read the weights in '{model_label(path)}' ({exc}). Copy or train the model "
                              "again.", path) from exc
    return Checkpoint(metadata=meta, model_state=state, extras=extras, path=path)


def mismatch_summary(expected: Mapping[str, "torch.Tensor"], given: Mapping[str, "torch.Tensor"]) -> str:
    """Missing, unexpected and reshaped tensor names of a state dict against a model's, for error messages."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k}: file {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)):
        if items:
            parts.append(f"{len(items)} {label} (e.g. {'; '.join(items[:2])})")
    return ", ".join(parts)


def build_from_checkpoint(ckpt: Checkpoint) -> "torch.nn.Module":
    """Build the network a checkpoint describes and load its weights (``strict=True``).

    Args:
        ckpt: a loaded :class:`Checkpoint` whose architecture is in the registry.

    Returns:
        The model on the CPU in eval mode (call ``.train()`` to fine-tune), mapping ``(N, C, H, W)`` inputs
        (C = ``in_channels``, normalised with the stored mean/std) to ``(N, K, H, W)`` logits
        (K = :attr:`ModelMetadata.output_channels`).

    Raises:
        CheckpointError: the architecture or encoder cannot be built here, or the weights do not fit it.
    """
    from .registry import build_model

    meta = ckpt.metadata
    name = model_label(ckpt.path)
    what = f"a {meta.architecture}/{meta.encoder} model with {meta.in_channels} band(s) and " \
           f"{meta.output_channels} output(s)"
    try:
        model = build_model(meta.architecture, meta.encoder, in_channels=meta.in_channels,
                            classes=meta.output_channels, **meta.model_kwargs)
    except (SatSegError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"'{name}' needs {what}, which this installation cannot build ({exc}). Update the "
                              "SatSeg plugin and segmentation-models-pytorch.", ckpt.path or None) from exc
    return load_weights(model, ckpt, what)


def load_weights(model: "torch.nn.Module", ckpt: Checkpoint, what: str) -> "torch.nn.Module":
    """Load a checkpoint's weights into ``model`` (``strict=True``) and return it in eval mode.

    Raises:
        CheckpointError: the weights do not fit; ``what`` describes the expected network in the message.
    """
    name = model_label(ckpt.path)
    try:
        # a copy: smp's load_state_dict renames keys in place for some timm encoders
        model.load_state_dict(dict(ckpt.model_state), strict=True)
    except RuntimeError as exc:
        summary = mismatch_summary(model.state_dict(), ckpt.model_state) or str(exc).splitlines()[0]
        raise CheckpointError(f"the weights in '{name}' do not fit {what}: {summary}. The file is damaged or "
                              "was edited; train the model again.", ckpt.path or None) from exc
    return model.eval()
