"""The schema of a SatSeg model file's metadata: every key it may hold, with its type and limits.

A model file is untrusted input: it may come from a colleague, a forum or an attacker. Its metadata decides which
network is built and how big, how bands are normalised and how large tiles are padded, so
:func:`check_metadata` checks every value before anything is built or allocated: known keys only, each with its
type and size limits; finite means and positive finite standard deviations, one per band; ``model_kwargs`` only
as :data:`~satseg_plugin.models.registry.MODEL_KWARGS` allows (smp hands unknown keywords to timm, which would
``torch.load`` a ``checkpoint_path`` of the file's choosing). ``extra`` keeps free-form notes, size-limited and
never passed to a constructor, except the few entries SatSeg reads (:data:`EXTRA_ENTRIES`), which are checked
like the rest.

The checks run on the JSON form of the metadata, both when a file is read and before one is written, so SatSeg
never writes a file it would refuse. Adding a key means adding it to :data:`FIELDS` and raising
:data:`FORMAT_VERSION`, since older SatSeg versions refuse keys they do not know.

Hand-written rather than with a JSON Schema library: ``jsonschema`` is not among SatSeg's dependencies (QGIS's
Python often lacks it) and cannot express "finite" or "as many as ``in_channels``"; the checks are a table of
small predicates.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import reprlib
from typing import Any, Callable, Dict, NamedTuple, Sequence, Tuple

from .registry import MAX_DECODER_CHANNELS, model_kwargs_problem

__all__ = [
    "KINDS",
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_BANDS",
    "MAX_CLASSES",
    "HeaderError",
    "Field",
    "FIELDS",
    "EXTRA_ENTRIES",
    "check_metadata",
    "check_entries",
]

#: What a model file holds: a segmentation network, a ClusterNet-style clustering model, a scene model, or the
#: encoder of a segmentation network pretrained without labels (``satseg:pretrainencoder``; it has no classes).
KINDS: Tuple[str, ...] = ("segmentation", "clusternet", "scene", "encoder")

#: Version of the file layout this SatSeg writes and the newest it reads.
FORMAT_VERSION = 1

#: Most bytes of a whole safetensors header (tensor table plus metadata): a U-Net on tu-efficientnet_b7 (1254
#: tensors) lists its tensors in about 150 kB, plus at most :data:`MAX_METADATA_BYTES` of metadata.
MAX_HEADER_BYTES = 8 * 2 ** 20
#: Most bytes of the metadata JSON (the ``"satseg"`` header entry).
MAX_METADATA_BYTES = 2 ** 20
#: Most input bands (``in_channels``) a model may read.
MAX_BANDS = 1024
#: Most classes (or clusters) a model may have.
MAX_CLASSES = 1024
MAX_NAME_CHARS = 200
MAX_PATCH_SIZE = 16384
MAX_WKT_CHARS = 64 * 1024
MAX_METRICS_BYTES = 64 * 1024
MAX_EXTRA_BYTES = 256 * 1024
#: Most bytes of ``extra.init``, the origin of a model's initial weights (mode, file name, SHA-256, counts).
MAX_INIT_BYTES = 4096
#: Deepest nesting of lists and objects inside ``metrics`` and ``extra``.
MAX_DEPTH = 16

Check = Callable[[Any], bool]


class HeaderError(ValueError):
    """A metadata value breaks the schema.

    Args:
        key: the key at fault, dotted below the top level (``model_kwargs.decoder_channels``).
        what: what is wrong, e.g. ``must be a list of positive finite numbers, got [1.0, 0.0]``.
    """

    def __init__(self, key: str, what: str) -> None:
        self.key, self.what = key, what
        super().__init__(f"{key} {what}")


def _integer(low: int, high: int) -> Check:
    return lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and low <= v <= high


def _real(low: float = -math.inf, high: float = math.inf, above: bool = False, below: bool = False) -> Check:
    """Finite numbers in ``[low, high]``; ``above``/``below`` exclude ``low``/``high``."""
    def check(v: Any) -> bool:
        if not isinstance(v, numbers.Real) or isinstance(v, bool):
            return False
        try:
            v = float(v)
        except OverflowError:  # an integer with hundreds of digits
            return False
        return math.isfinite(v) and (v > low if above else v >= low) and (v < high if below else v <= high)
    return check


def _text(max_chars: int, min_chars: int = 1) -> Check:
    return lambda v: isinstance(v, str) and min_chars <= len(v) <= max_chars


def _name(max_chars: int) -> Check:
    pattern = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]*")
    return lambda v: isinstance(v, str) and len(v) <= max_chars and pattern.fullmatch(v) is not None


def _list(item: Check, min_len: int, max_len: int) -> Check:
    return lambda v: isinstance(v, (list, tuple)) and min_len <= len(v) <= max_len and all(item(i) for i in v)


def _depth_ok(value: Any, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return False
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return all(_depth_ok(child, depth + 1) for child in children)


def _notes(max_bytes: int) -> Check:
    """A JSON object of at most ``max_bytes`` bytes and :data:`MAX_DEPTH` levels."""
    def check(v: Any) -> bool:
        return isinstance(v, dict) and _depth_ok(v) and len(json.dumps(v)) <= max_bytes
    return check


class Field(NamedTuple):
    """One metadata key: whether a file must have it, what it must be (for messages), and the check."""

    required: bool
    requirement: str
    check: Check


_NAME = "a name of 1 to 128 letters, digits, '_', '.', '+' or '-'"

#: Every key of a model's metadata (the fields of :class:`~satseg_plugin.models.checkpoint.ModelMetadata`).
FIELDS: Dict[str, Field] = {
    "kind": Field(True, f"one of {', '.join(KINDS)}", lambda v: isinstance(v, str) and v in KINDS),
    "architecture": Field(True, _NAME, _name(128)),
    "encoder": Field(True, _NAME, _name(128)),
    "in_channels": Field(True, f"an integer from 1 to {MAX_BANDS} (input bands)", _integer(1, MAX_BANDS)),
    "classes": Field(True, f"a list of 1 to {MAX_CLASSES} class names of at most {MAX_NAME_CHARS} characters "
                     "(empty for an encoder)", _list(_text(MAX_NAME_CHARS, 0), 0, MAX_CLASSES)),
    "bands": Field(True, "a list of 1-based band indices (integers from 1 to 65535)",
                   _list(_integer(1, 65535), 1, MAX_BANDS)),
    "mean": Field(True, "a list of finite numbers, one per band", _list(_real(), 1, MAX_BANDS)),
    "std": Field(True, "a list of positive finite numbers, one per band", _list(_real(0.0, above=True), 1, MAX_BANDS)),
    "patch_size": Field(True, f"an integer from 1 to {MAX_PATCH_SIZE} (pixels)", _integer(1, MAX_PATCH_SIZE)),
    "pixel_size": Field(True, "two positive finite numbers (x, y)", _list(_real(0.0, above=True), 2, 2)),
    "crs_wkt": Field(False, f"a WKT text of at most {MAX_WKT_CHARS} characters, or null",
                     lambda v: v is None or _text(MAX_WKT_CHARS, 0)(v)),
    "crs_units": Field(False, "a text of 1 to 64 characters", _text(64)),
    "threshold": Field(False, "a number from 0 to 1", _real(0.0, 1.0)),
    "metrics": Field(False, f"a JSON object of at most {MAX_METRICS_BYTES} bytes and {MAX_DEPTH} levels",
                     _notes(MAX_METRICS_BYTES)),
    "satseg_version": Field(False, "a text of 1 to 64 characters", _text(64)),
    "format_version": Field(True, f"an integer from 1 to {FORMAT_VERSION}", _integer(1, FORMAT_VERSION)),
    "created": Field(False, "a text of 1 to 64 characters (ISO 8601 time)", _text(64)),
    "extra": Field(False, f"a JSON object of at most {MAX_EXTRA_BYTES} bytes and {MAX_DEPTH} levels",
                   _notes(MAX_EXTRA_BYTES)),
    "model_kwargs": Field(False, "a JSON object of smp keyword arguments", lambda v: isinstance(v, dict)),
}

#: The entries of ``extra`` that SatSeg reads (ClusterNet's construction and tiling): name -> rule. Other
#: entries are notes for people (training configuration, sources) and are never read by code.
EXTRA_ENTRIES: Dict[str, Field] = {
    "feature_dim": Field(False, f"an integer from 1 to {MAX_DECODER_CHANNELS} (ClusterNet feature channels)",
                         _integer(1, MAX_DECODER_CHANNELS)),
    "band_share": Field(False, "a number from 0 to less than 1", _real(0.0, 1.0, below=True)),
    "normalize": Field(False, "true or false", lambda v: isinstance(v, bool)),
    "whiten": Field(False, "true or false", lambda v: isinstance(v, bool)),
    "input_multiple": Field(False, "an integer from 1 to 256 (pixels)", _integer(1, 256)),
    "init": Field(False, f"a JSON object of at most {MAX_INIT_BYTES} bytes (where the initial weights came from)",
                  _notes(MAX_INIT_BYTES)),
    "min_object_pixels": Field(False, "an integer from 0 to 1000000 (smallest object kept in a mask, in pixels)",
                               _integer(0, 1_000_000)),
}


def _check_fields(data: Dict[str, Any], fields: Dict[str, Field], prefix: str = "") -> None:
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise HeaderError(prefix + reprlib.repr(unknown[0]).strip("'"), "is an unknown key: this SatSeg reads "
                          "only the keys it writes")
    missing = [key for key, spec in fields.items() if spec.required and key not in data]
    if missing:
        raise HeaderError(prefix + missing[0], "is missing, which every SatSeg model has")
    for key, value in data.items():
        if not fields[key].check(value):
            raise HeaderError(prefix + key, f"must be {fields[key].requirement}, got {reprlib.repr(value)}")


def check_metadata(data: Any) -> Dict[str, Any]:
    """Check a model's metadata, as read from JSON, against the schema.

    Args:
        data: the parsed ``"satseg"`` header entry.

    Returns:
        The keyword arguments of ``ModelMetadata``: the same values, with numbers as ``float`` where the
        dataclass holds floats and ``pixel_size`` as a tuple.

    Raises:
        HeaderError: (a ``ValueError``) naming the first key at fault and what it must be.
    """
    if not isinstance(data, dict):
        raise HeaderError("satseg", f"must be a JSON object, got {type(data).__name__}")
    _check_fields(data, FIELDS)
    if not data["classes"] and data["kind"] != "encoder":
        raise HeaderError("classes", f"must be {FIELDS['classes'].requirement}, got []")
    n = data["in_channels"]
    for key in ("bands", "mean", "std"):
        if len(data[key]) != n:
            raise HeaderError(key, f"must list {n} {'1-based band indices' if key == 'bands' else 'numbers'}, one "
                              f"per input channel (in_channels), got {len(data[key])}")
    extra = data.get("extra", {})
    _check_fields({k: v for k, v in extra.items() if k in EXTRA_ENTRIES}, EXTRA_ENTRIES, "extra.")
    kwargs = data.get("model_kwargs", {})
    problem = model_kwargs_problem(kwargs)
    if problem:
        raise HeaderError("model_kwargs." + problem[0], problem[1])
    if kwargs and data["kind"] == "scene":
        raise HeaderError("model_kwargs", "must be empty for a scene model (a fixed torchvision ResNet-18)")
    clean = dict(data)
    for key in ("mean", "std"):
        clean[key] = [float(v) for v in data[key]]
    clean["classes"], clean["bands"] = list(data["classes"]), list(data["bands"])
    clean["pixel_size"] = (float(data["pixel_size"][0]), float(data["pixel_size"][1]))
    if "threshold" in data:
        clean["threshold"] = float(data["threshold"])
    return clean


def check_entries(entries: Sequence[str], allowed: Sequence[str]) -> None:
    """Refuse safetensors header entries other than ``allowed`` (SatSeg writes only the marker and metadata)."""
    for key in entries:
        if key not in allowed:
            raise HeaderError(reprlib.repr(key).strip("'"), f"is an unknown header entry: SatSeg writes only "
                              f"{' and '.join(allowed)}")
