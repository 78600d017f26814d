"""Segmentation architectures SatSeg builds, by name: a registry plus a factory over segmentation-models-pytorch.

Every model is built randomly initialised (``encoder_weights=None``): smp and timm never download anything
here. Pretrained encoder weights (ImageNet, a weights file, another SatSeg model's encoder) are loaded afterwards
by :mod:`.pretrained`, through SatSeg's own cache and checks. Models take ``(N, C, H, W)`` float tensors of
normalised bands and return ``(N, classes, H, W)`` logits; H and W must be multiples of
:func:`input_multiple`.

This module is the one list of architectures and encoders: the Processing enums and the dock's drop-downs are
built from :data:`ARCHITECTURES` and :data:`ENCODER_CHOICES`, so an index means the same architecture in every
tool. The names are plain constants so a dialog can list them without importing torch;
segmentation-models-pytorch is imported only when a model is built (with ``smp.create_model``).
"""

from __future__ import annotations

import difflib
import functools
import numbers
import re
import reprlib
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from ..core.deps import require
from ..core.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "ARCHITECTURES",
    "ARCHITECTURE_NAMES",
    "ENCODER_CHOICES",
    "MAX_DECODER_CHANNELS",
    "MODEL_KWARGS",
    "UnknownNameError",
    "architecture_names",
    "architecture_labels",
    "encoder_names",
    "resolve_architecture",
    "resolve_encoder",
    "build_model",
    "model_kwargs_problem",
    "input_multiple",
]

#: The architectures SatSeg trains, in the order every dialog offers them: the name (smp's ``create_model`` arch)
#: -> the label shown. Processing enums list the labels, so enum index i is the i-th architecture in every tool.
ARCHITECTURES: Dict[str, str] = {"unet": "U-Net", "pspnet": "PSPNet", "deeplabv3plus": "DeepLabV3+"}

#: The canonical architecture names, in :data:`ARCHITECTURES`' order.
ARCHITECTURE_NAMES: Tuple[str, ...] = tuple(ARCHITECTURES)

#: The encoders a drop-down offers, small to large (all smp encoders; any name of :func:`encoder_names` or
#: ``tu-<timm name>`` is accepted too). Plain names, so a dialog lists them without importing torch.
ENCODER_CHOICES: Tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "efficientnet-b0", "mobilenet_v2")

#: Most channels a decoder layer (or a ClusterNet feature map) may have: smp's defaults are at most 256; a U-Net
#: with 1024 in every decoder stage already needs about 0.5 GB of weights.
MAX_DECODER_CHANNELS = 1024


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and low <= value <= high


def _channels(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return 1 <= len(value) <= 5 and all(_int_in(v, 1, MAX_DECODER_CHANNELS) for v in value)
    return _int_in(value, 1, MAX_DECODER_CHANNELS)


#: The keyword arguments SatSeg passes to ``smp.create_model`` besides encoder, bands and classes: name ->
#: (what it must be, check). Nothing else reaches smp, neither from a caller nor from a model file's
#: ``model_kwargs``: smp forwards unknown keywords to timm, which would e.g. ``torch.load`` a
#: ``checkpoint_path`` of the file's choosing, and unbounded channels let a 2 KB file claim gigabytes.
MODEL_KWARGS: Dict[str, Tuple[str, Callable[[Any], bool]]] = {
    "encoder_depth": ("an integer from 1 to 5 (encoder stages)", lambda v: _int_in(v, 1, 5)),
    "decoder_channels": (f"an integer from 1 to {MAX_DECODER_CHANNELS}, or a list of 1 to 5 of them (U-Net: one "
                         "per decoder stage)", _channels),
    "encoder_output_stride": ("8 or 16 (DeepLabV3+)", lambda v: _int_in(v, 8, 16) and v in (8, 16)),
}

#: Other spellings, keyed by their normalised form (see :func:`_normalise`).
_ALIASES: Dict[str, str] = {"psp": "pspnet", "deeplab": "deeplabv3plus", "deeplabplus": "deeplabv3plus"}

#: Prefix smp uses for any timm model as an encoder (``tu-mobilenetv3_large_100``).
TIMM_PREFIX = "tu-"


class UnknownNameError(InputError, KeyError):
    """An architecture or encoder name SatSeg does not know.

    A :class:`KeyError` (as smp raises) that is also an :class:`~satseg_plugin.core.errors.InputError`,
    so the Processing layer shows its message to the user unchanged. The message lists the valid names.
    """

    def __init__(self, parameter: str, message: str) -> None:
        InputError.__init__(self, message, parameter)

    def __str__(self) -> str:  # KeyError would quote the message and escape its newlines
        return str(self.args[0]) if self.args else ""


def architecture_names() -> List[str]:
    """The canonical architecture names: ``["unet", "pspnet", "deeplabv3plus"]`` (no torch import)."""
    return list(ARCHITECTURE_NAMES)


def architecture_labels() -> List[str]:
    """The labels of :data:`ARCHITECTURES` in order (``["U-Net", "PSPNet", "DeepLabV3+"]``): enum options."""
    return list(ARCHITECTURES.values())


def encoder_names() -> List[str]:
    """The encoder names segmentation-models-pytorch registers, sorted.

    Any timm model can be used too as ``"tu-<timm name>"`` (e.g. ``"tu-mobilenetv3_large_100"``); those are
    not listed (there are more than a thousand).
    """
    smp = require("segmentation_models_pytorch")
    return sorted(smp.encoders.get_encoder_names())


def _normalise(name: str) -> str:
    """Lower-case, ``+`` -> ``plus``, drop separators: ``"DeepLab_V3+"`` -> ``"deeplabv3plus"``."""
    return re.sub(r"[\s_\-.]", "", name.strip().lower().replace("+", "plus"))


def _suggest(name: str, candidates: Iterable[str], n: int = 3) -> List[str]:
    pool = list(candidates)
    lowered = {c.lower(): c for c in pool}
    return [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)]


def _compact(names: Iterable[str]) -> str:
    """List names grouped by family in brace form: ``resnet{18,34,50}, vgg{11,11_bn}, xception``."""
    families: Dict[str, List[str]] = {}
    for name in names:
        match = re.match(r"^(.*?[a-z_-])(\d.*)$", name)
        stem, variant = (match.group(1), match.group(2)) if match else (name, "")
        families.setdefault(stem, []).append(variant)

    def natural(text: str) -> Tuple[int, str]:
        digits = re.match(r"\d+", text)
        return (int(digits.group()) if digits else -1, text)

    parts = []
    for stem in sorted(families):
        variants = sorted(families[stem], key=natural)
        parts.append(stem + variants[0] if len(variants) == 1 else stem + "{" + ",".join(variants) + "}")
    return ", ".join(parts)


def resolve_architecture(name: str) -> str:
    """Return the canonical name of an architecture, accepting case and spelling variants.

    Args:
        name: e.g. ``"U-Net"``, ``"unet"``, ``"PSPNet"``, ``"deeplabv3+"``, ``"deeplab_v3_plus"``.

    Returns:
        One of :data:`ARCHITECTURE_NAMES`.

    Raises:
        UnknownNameError: (a ``KeyError``) for an unknown name; the message lists the valid ones.
    """
    key = _normalise(str(name))
    key = _ALIASES.get(key, key)
    if key in ARCHITECTURE_NAMES:
        return key
    close = _suggest(str(name), ARCHITECTURE_NAMES)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UnknownNameError("ARCHITECTURE", f"unknown architecture '{name}'.{hint} Choose one of: {', '.join(ARCHITECTURE_NAMES)} "
                           "(also written u-net, deeplabv3+).")


def resolve_encoder(name: str) -> str:
    """Return the exact smp encoder name for ``name``, accepting a different letter case.

    ``"tu-<timm name>"`` is accepted when timm knows the model.

    Args:
        name: an encoder name (``"resnet34"``, ``"ResNet18"``, ``"tu-mobilenetv3_large_100"``).

    Returns:
        The name to pass to smp.

    Raises:
        UnknownNameError: (a ``KeyError``) for an unknown encoder; the message suggests close matches and
            lists the valid names compactly.
    """
    name = str(name).strip()
    known = encoder_names()
    if name in known:
        return name
    by_lower = {n.lower(): n for n in known}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    timm = require("timm")
    if name.lower().startswith(TIMM_PREFIX):
        model = name[len(TIMM_PREFIX):]
        if timm.is_model(model):
            return TIMM_PREFIX + model
        if timm.is_model(model.lower()):
            return TIMM_PREFIX + model.lower()
        close = [TIMM_PREFIX + m for m in _suggest(model, timm.list_models())]
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError("ENCODER", f"unknown encoder '{name}': timm has no model '{model}'.{hint}")
    close = _suggest(name, known)
    bare = re.sub(r"^(timm-|tu-)", "", name)
    if timm.is_model(bare) and TIMM_PREFIX + bare not in close:
        close.insert(0, TIMM_PREFIX + bare)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownNameError("ENCODER", f"unknown encoder '{name}'.{hint} Choose one of: {_compact(known)}; or any timm model "
                           f"as '{TIMM_PREFIX}<timm name>' (e.g. '{TIMM_PREFIX}mobilenetv3_large_100').")


def model_kwargs_problem(kwargs: Mapping[str, Any]) -> Optional[Tuple[str, str]]:
    """The first keyword argument :func:`build_model` does not take, or takes with another value.

    Args:
        kwargs: smp keyword arguments, e.g. a model file's ``model_kwargs``.

    Returns:
        None when every entry is in :data:`MODEL_KWARGS` and within its limits, else ``(name, what is wrong)``.
    """
    for key, value in kwargs.items():
        if key not in MODEL_KWARGS:
            name = reprlib.repr(key).strip("'")  # reprlib: a hostile file's names and values are cut short
            return name, f"is not taken: SatSeg builds models only with {', '.join(MODEL_KWARGS)}"
        requirement, check = MODEL_KWARGS[key]
        if not check(value):
            return key, f"must be {requirement}, got {reprlib.repr(value)}"
    return None


def build_model(architecture: str, encoder: str = "resnet34", in_channels: int = 3, classes: int = 1,
                **kwargs: Any) -> "torch.nn.Module":
    """Build a randomly initialised segmentation model.

    Args:
        architecture: ``unet``, ``pspnet`` or ``deeplabv3plus`` (case and spelling variants accepted, see
            :func:`resolve_architecture`).
        encoder: an smp encoder name (:func:`encoder_names`) or ``tu-<timm name>``.
        in_channels: number of input bands C.
        classes: number of output channels K (1 for binary segmentation with a sigmoid; background + classes
            for multiclass with a softmax).
        **kwargs: passed to ``smp.create_model``: only the names of :data:`MODEL_KWARGS` (``encoder_depth``,
            ``decoder_channels``, ``encoder_output_stride``) within their limits. ``encoder_weights`` other than
            None is refused: pretrained weights are loaded by :func:`.pretrained.apply_encoder_weights`.

    Returns:
        A ``torch.nn.Module`` in training mode mapping ``(N, C, H, W)`` float inputs to ``(N, K, H, W)``
        logits; H and W must be multiples of :func:`input_multiple`.

    Raises:
        UnknownNameError: (a ``KeyError``) for an unknown architecture or encoder.
        InputError: for a non-positive ``in_channels`` / ``classes``, ``encoder_weights`` set, or another keyword
            argument than those of :data:`MODEL_KWARGS` (or one beyond its limits).
    """
    arch = resolve_architecture(architecture)
    if isinstance(in_channels, bool) or not isinstance(in_channels, numbers.Integral) or in_channels < 1:
        raise InputError(f"in_channels must be a positive integer (the number of bands), got {in_channels!r}.")
    if isinstance(classes, bool) or not isinstance(classes, numbers.Integral) or classes < 1:
        raise InputError(f"classes must be a positive integer (the number of output channels), got {classes!r}.")
    if kwargs.pop("encoder_weights", None) is not None:
        raise InputError("build_model never downloads weights: it builds random ones; pretrained encoder weights "
                         "are loaded afterwards (ENCODER_WEIGHTS, models.pretrained.apply_encoder_weights).")
    problem = model_kwargs_problem(kwargs)
    if problem:
        raise InputError(f"keyword argument {problem[0]} {problem[1]}.")
    name = resolve_encoder(encoder)
    smp = require("segmentation_models_pytorch")
    return smp.create_model(arch, encoder_name=name, encoder_weights=None, in_channels=int(in_channels),
                            classes=int(classes), **kwargs)


def _multiple_of(model: Any) -> int:
    encoder = getattr(model, "encoder", None)
    stride = getattr(encoder, "output_stride", None)
    if stride is None:
        raise InputError(f"cannot tell the input multiple of a {type(model).__name__}: it has no smp encoder "
                         "with an output_stride.")
    return int(stride)


@functools.lru_cache(maxsize=64)
def _multiple_for(arch: str, encoder: str, frozen_kwargs: Tuple[Tuple[str, Any], ...]) -> int:
    torch = require("torch")
    kwargs = dict(frozen_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # smp's deprecation notes for timm- encoders
        try:
            # On the meta device nothing is allocated or initialised: milliseconds even for big encoders.
            with torch.device("meta"):
                model = build_model(arch, encoder, **kwargs)
        except (RuntimeError, NotImplementedError):  # a few encoders (mit_b*) call .item() while building
            model = build_model(arch, encoder, **kwargs)
    return _multiple_of(model)


def input_multiple(model_or_arch: Union["torch.nn.Module", str], encoder: str = "resnet34", **kwargs: Any) -> int:
    """The multiple that the input height and width must be padded to.

    This is the output stride of the encoder as smp builds it for the architecture, i.e. what smp's
    ``check_input_shape`` demands: with the default settings 32 for U-Net (5 stages), 8 for PSPNet (3
    stages) and 16 for DeepLabV3+ (dilated to output stride 16), for resnet and timm encoders alike.

    PSPNet and DeepLabV3+ raise ``RuntimeError`` on other sizes. Recent smp (0.6 here) lets U-Net run on any
    size by resampling in its decoder, but then the upsampled features no longer line up with the skip
    connections by an exact factor of two; pad U-Net inputs to the multiple anyway so inference sees the
    geometry training saw.

    Args:
        model_or_arch: a built smp model, or an architecture name.
        encoder: the encoder name (ignored when a model is given).
        **kwargs: the smp keyword arguments the model is built with (``encoder_depth``,
            ``encoder_output_stride``), which change the multiple.

    Returns:
        The multiple in pixels (a power of two).

    Raises:
        UnknownNameError: for an unknown architecture or encoder name.
    """
    if not isinstance(model_or_arch, str):
        return _multiple_of(model_or_arch)
    try:
        frozen = tuple(sorted(kwargs.items()))
        hash(frozen)
    except TypeError:  # unhashable kwargs (lists): no caching
        return _multiple_for.__wrapped__(resolve_architecture(model_or_arch), resolve_encoder(encoder),
                                         tuple(kwargs.items()))
    return _multiple_for(resolve_architecture(model_or_arch), resolve_encoder(encoder), frozen)
