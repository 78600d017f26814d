"""Initial encoder weights of a segmentation model: published ImageNet weights, a weights file, or the encoder
of another SatSeg model (a ClusterNet or an encoder pretrained without labels on the user's own raster, or a
scene classifier).

ImageNet weights are found where smp and timm find them: smp's encoder table gives a Hugging Face repository and
revision for the encoder's ``"imagenet"`` entry, timm's pretrained config a Hugging Face id (``tu-`` encoders).
They are fetched once into SatSeg's cache folder (:mod:`satseg_plugin.core.cache`) and read from there without
any network access afterwards. Weights files are read without unpickling code: safetensors, or
``torch.load(..., weights_only=True)`` for ``.pth``/``.pt``.

A raster with other than three bands gets the RGB kernel of the first convolution repeated or cut and rescaled
(timm's ``adapt_input_conv``, the same rule as smp's ``patch_first_conv``).

Each entry point returns the *origin* that the model file records in ``extra["init"]`` (see
:data:`~satseg_plugin.models.schema.EXTRA_ENTRIES`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

from ..core.cache import DownloadError, download, file_sha256, reachable
from ..core.deps import require
from ..core.errors import CheckpointError, InputError
from ..core.progress import Feedback, NullFeedback
from .checkpoint import load_checkpoint, mismatch_summary
from .registry import TIMM_PREFIX, resolve_encoder

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["PARAMETER", "FILE_PARAMETER", "MODES", "WEIGHT_SUFFIXES", "ENCODER_SOURCES", "WeightsSource",
           "imagenet_source",
           "read_weights_file", "load_encoder_state", "apply_encoder_weights", "init_from_model_file"]

#: The Processing parameter of the mode, and of a weights file.
PARAMETER = "ENCODER_WEIGHTS"
FILE_PARAMETER = "ENCODER_WEIGHTS_FILE"
#: The modes, in the order of the Processing enum (index 0 is the default).
MODES: Tuple[str, ...] = ("auto", "none", "imagenet")
#: Extensions of the weights files SatSeg reads.
WEIGHT_SUFFIXES: Tuple[str, ...] = (".safetensors", ".pth", ".pt")
#: Where a Hugging Face repository serves a file.
HF_URL = "https://huggingface.co/{repo}/resolve/{revision}/{filename}"

Origin = Dict[str, Any]


@dataclass(frozen=True)
class WeightsSource:
    """Where an encoder's published ImageNet weights come from.

    Attributes:
        url: the file to download.
        filename: its name in SatSeg's cache folder (unique per encoder and revision).
        sha256: the expected SHA-256 (or a prefix) when the source publishes one.
        from_timm: a timm classification checkpoint: its classifier head is left out when loading.
    """

    url: str
    filename: str
    sha256: Optional[str] = None
    from_timm: bool = False


def imagenet_source(encoder: str) -> WeightsSource:
    """The published ImageNet weights of ``encoder`` (smp's encoder table, or timm's pretrained config).

    Raises:
        InputError: (ENCODER_WEIGHTS) the encoder has no published ImageNet weights.
    """
    name = resolve_encoder(encoder)
    if name.startswith(TIMM_PREFIX):
        timm = require("timm")
        model = name[len(TIMM_PREFIX):]
        cfg = timm.models.get_pretrained_cfg(model) if timm.models.is_model_pretrained(model) else None
        if cfg is not None and cfg.hf_hub_id:
            filename = cfg.hf_hub_filename or "model.safetensors"
            return WeightsSource(HF_URL.format(repo=cfg.hf_hub_id, revision="main", filename=filename),
                                 cfg.hf_hub_id.replace("/", "--") + os.path.splitext(filename)[1], None, True)
        if cfg is not None and cfg.url:
            base = os.path.basename(cfg.url)
            digits = base.rsplit("-", 1)[-1].split(".")[0] if "-" in base else ""  # torch hub: name-<sha256 prefix>.pth
            return WeightsSource(cfg.url, base, digits if len(digits) >= 8 else None, True)
    else:
        smp = require("segmentation_models_pytorch")
        settings = smp.encoders.encoders[name]["pretrained_settings"].get("imagenet")
        if settings:
            return WeightsSource(HF_URL.format(repo=settings["repo_id"], revision=settings["revision"],
                                               filename="model.safetensors"),
                                 f"{name}-imagenet-{settings['revision'][:8]}.safetensors")
    raise InputError(f"encoder '{name}' has no published ImageNet weights. Choose 'none', a weights file, or an "
                     "encoder that has them (e.g. resnet34).", PARAMETER)


def read_weights_file(path: str, parameter: str = FILE_PARAMETER) -> Dict[str, "torch.Tensor"]:
    """Read a state dict from ``.safetensors``, or ``.pth``/``.pt`` with ``torch.load(weights_only=True)``.

    A ``.pth`` holding ``{"state_dict": ...}`` or ``{"model": ...}`` (common training checkpoints) is unwrapped.

    Raises:
        InputError: (``parameter``) a missing file, another extension, a damaged file, or a pickle that holds
            more than tensors (refused: it could run code).
    """
    torch = require("torch")
    label = os.path.basename(path)
    if not os.path.isfile(path):
        raise InputError(f"weights file '{path}' does not exist. Choose an existing .safetensors or .pth file.",
                         parameter)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise InputError(f"'{label}' is not a weights file: SatSeg reads {', '.join(WEIGHT_SUFFIXES)} (a SatSeg "
                         "model file goes to INIT_WEIGHTS).", parameter)
    try:
        if suffix == ".safetensors":
            safetensors_torch = require("safetensors.torch")
            state: Any = safetensors_torch.load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader error means the same thing to the user
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc).lower() or "unpickl" in str(exc).lower():
            raise InputError(f"'{label}' holds Python objects besides tensors, which SatSeg never unpickles (they "
                             f"could run code): {text}. Save only the state dict (torch.save(model.state_dict())) "
                             "or use safetensors.", parameter) from exc
        raise InputError(f"cannot read '{label}': it is damaged or not a weights file ({text}). Download or "
                         "save it again.", parameter) from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError(f"'{label}' does not hold a state dict (names -> tensors). Save one with "
                         "torch.save(model.encoder.state_dict(), path).", parameter)
    return dict(state)


def _encoder_keys(state: Mapping[str, Any], expected: Mapping[str, Any]) -> Dict[str, Any]:
    """``state`` with keys as the encoder names them: without an ``encoder.`` prefix, with timm's ``model.``."""
    for prefix in ("encoder.", "backbone.encoder."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    if expected and all(k.startswith("model.") for k in expected) and not any(k in expected for k in state):
        state = {"model." + k: v for k, v in state.items()}  # a timm checkpoint for a tu- encoder
    return dict(state)


def load_encoder_state(model: "torch.nn.Module", state: Mapping[str, "torch.Tensor"], label: str, parameter: str,
                       feedback: Optional[Feedback] = None, ignore_unexpected: bool = False) -> Tuple[int, bool]:
    """Copy an encoder state dict into ``model.encoder``, adapting the first convolution to the band count.

    Args:
        model: an smp model (its ``encoder`` is filled).
        state: encoder weights, keys with or without an ``encoder.`` prefix.
        label: what the weights are, for messages (a file name).
        parameter: the parameter named in errors.
        feedback: where the adaptation of the first convolution is logged.
        ignore_unexpected: leave out tensors the encoder has no place for (a classifier head, deeper stages)
            instead of refusing them.

    Returns:
        ``(tensors loaded, whether the first convolution was adapted)``.

    Raises:
        InputError: names missing, unexpected and reshaped tensors (a few, and counts).
    """
    timm = require("timm")
    feedback = feedback or NullFeedback()
    expected = model.encoder.state_dict()
    state = _encoder_keys(state, expected)
    if ignore_unexpected:
        state = {k: v for k, v in state.items() if k in expected}
    adapted = False
    for key, want in expected.items():
        have = state.get(key)
        if (have is not None and have.ndim == 4 and want.ndim == 4 and have.shape[1] == 3 and want.shape[1] != 3
                and have.shape[0] == want.shape[0] and have.shape[2:] == want.shape[2:]):
            state[key] = timm.models.adapt_input_conv(int(want.shape[1]), have)
            feedback.info(f"First convolution '{key}' adapted from 3 (RGB) to {want.shape[1]} bands: the RGB kernel "
                          "repeated or cut and rescaled, as smp does.")
            adapted = True
    summary = mismatch_summary(expected, state)
    if summary:
        raise InputError(f"the weights in '{label}' do not fit the {len(expected)}-tensor encoder of this model: "
                         f"{summary}. Choose weights of the same encoder (ENCODER).", parameter)
    model.encoder.load_state_dict(state, strict=True)
    return len(state), adapted


def _fetch(source: WeightsSource, folder: str, feedback: Feedback) -> str:
    path = os.path.join(folder, source.filename)
    try:
        return download(source.url, path, feedback, source.sha256)
    except DownloadError as exc:
        raise InputError(f"cannot download the ImageNet weights ({exc}). Without network, download "
                         f"'{source.filename}' from {source.url} and put it into the folder '{folder}' (or set "
                         "SATSEG_WEIGHTS_DIR to the folder that holds it); or choose 'none'.", PARAMETER) from exc


def _from_file(model: "torch.nn.Module", path: str, init: str, feedback: Feedback, parameter: str,
               ignore_unexpected: bool = False) -> Origin:
    state = read_weights_file(path, parameter)
    count, adapted = load_encoder_state(model, state, os.path.basename(path), parameter, feedback, ignore_unexpected)
    feedback.info(f"Encoder initialised from {init} weights '{path}' ({count} tensors).")
    return {"init": init, "file": os.path.basename(path), "sha256": file_sha256(path), "tensors": count,
            "first_conv_adapted": adapted}


def apply_encoder_weights(model: "torch.nn.Module", choice: str, encoder: str, folder: str,
                          feedback: Optional[Feedback] = None) -> Origin:
    """Initialise ``model.encoder`` as ENCODER_WEIGHTS says.

    Args:
        model: a freshly built smp model (random weights).
        choice: ``none`` (random, as before), ``imagenet`` (cached, else downloaded), ``auto`` (``imagenet``
            when cached or reachable, else ``none``) or the path of a weights file.
        encoder: the model's encoder name.
        folder: the weights cache folder (:func:`~satseg_plugin.core.cache.weights_dir`).
        feedback: log, and the download's progress and cancel.

    Returns:
        The origin recorded in the model file (``{"init": ..., "file": ..., "sha256": ...}``).

    Raises:
        InputError: naming ENCODER_WEIGHTS (or ENCODER_WEIGHTS_FILE) with what to do.
    """
    feedback = feedback or NullFeedback()
    mode = (choice or "auto").strip()
    if mode.lower() not in MODES:
        return _from_file(model, mode, "file", feedback, FILE_PARAMETER)
    mode = mode.lower()
    if mode == "none":
        feedback.info("Encoder weights: random (ENCODER_WEIGHTS none).")
        return {"init": "none"}
    try:
        source = imagenet_source(encoder)
    except InputError:
        if mode == "imagenet":
            raise
        feedback.info(f"Encoder weights: random (auto: {encoder} has no published ImageNet weights).")
        return {"init": "none", "reason": "no published ImageNet weights"}
    path = os.path.join(folder, source.filename)
    if os.path.isfile(path):
        feedback.info(f"Encoder weights: ImageNet, from the cache ({path}).")
    elif mode == "imagenet":
        path = _fetch(source, folder, feedback)
    elif reachable(source.url):
        feedback.info(f"Encoder weights: ImageNet (auto: {source.url} is reachable; downloading it once).")
        path = _fetch(source, folder, feedback)
    else:
        feedback.info(f"Encoder weights: random (auto: no cached '{source.filename}' in {folder} and "
                      f"{source.url} is not reachable). Put that file there to start from ImageNet weights.")
        return {"init": "none", "reason": "offline, not cached"}
    return _from_file(model, path, "imagenet", feedback, PARAMETER, ignore_unexpected=source.from_timm)


#: The kinds of model file whose encoder INIT_WEIGHTS takes: kind -> (how messages name it, the prefix of the
#: encoder's tensors in the file).
ENCODER_SOURCES: Dict[str, Tuple[str, str]] = {
    "clusternet": ("a ClusterNet", "backbone.encoder."),
    "encoder": ("an encoder pretrained without labels (satseg:pretrainencoder)", ""),
}


def _encoder_state_of(ckpt: Any, encoder: str, in_channels: int, label: str) -> Tuple[str, Dict[str, Any]]:
    """The encoder tensors of a ClusterNet, pretrained encoder or scene checkpoint, checked to fit ``encoder``
    and the bands."""
    meta = ckpt.metadata
    if meta.kind in ENCODER_SOURCES:
        name, prefix = ENCODER_SOURCES[meta.kind]
        if resolve_encoder(meta.encoder) != resolve_encoder(encoder):
            raise InputError(f"'{label}' is {name} with encoder {meta.encoder}, but this model uses {encoder}: "
                             f"set ENCODER to {meta.encoder} to start from it.", "INIT_WEIGHTS")
        state = {k[len(prefix):]: v for k, v in ckpt.model_state.items() if k.startswith(prefix)}
    else:
        if resolve_encoder(encoder) != "resnet18":
            raise InputError(f"'{label}' is a scene classifier (a ResNet-18); set ENCODER to resnet18 to start "
                             "from it.", "INIT_WEIGHTS")
        state = {k: v for k, v in ckpt.model_state.items() if not k.startswith("fc.")}
    if meta.in_channels != in_channels:
        raise InputError(f"'{label}' reads {meta.in_channels} band(s), this model {in_channels}: choose the same "
                         f"BANDS (the model file was trained on bands {meta.bands}).", "INIT_WEIGHTS")
    return meta.kind, state


def init_from_model_file(model: "torch.nn.Module", path: str, encoder: str, in_channels: int, what: str,
                         feedback: Optional[Feedback] = None) -> Origin:
    """Start from a SatSeg model file (INIT_WEIGHTS): all weights of a segmentation model, or the encoder of a
    ClusterNet, of a pretrained encoder (``satseg:pretrainencoder``) or of a scene classifier.

    Args:
        model: the freshly built segmentation model.
        path: the ``.satseg`` file.
        encoder: the model's encoder name.
        in_channels: the model's bands.
        what: the model, described for messages (``unet/resnet34 with 3 bands and 1 output``).
        feedback: log.

    Returns:
        The origin recorded in the model file.

    Raises:
        InputError: (INIT_WEIGHTS) the file's kind, encoder, bands or weights do not fit.
    """
    feedback = feedback or NullFeedback()
    label = os.path.basename(path)
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        raise InputError(str(exc), "INIT_WEIGHTS") from exc
    kind = ckpt.metadata.kind
    origin = {"file": label, "sha256": file_sha256(path)}
    if kind == "segmentation":
        try:
            model.load_state_dict(ckpt.model_state, strict=True)
        except RuntimeError as exc:
            summary = mismatch_summary(model.state_dict(), ckpt.model_state) or str(exc).splitlines()[0]
            raise InputError(f"'{path}' does not fit a {what}: {summary}", "INIT_WEIGHTS") from exc
        feedback.info(f"Started from the weights in {path}.")
        return {"init": "segmentation", **origin, "tensors": len(ckpt.model_state)}
    if kind not in (*ENCODER_SOURCES, "scene"):
        raise InputError(f"'{label}' is a {kind} model; INIT_WEIGHTS takes a segmentation model, a ClusterNet "
                         "(satseg:trainclusternet), a pretrained encoder (satseg:pretrainencoder) or a scene "
                         "classifier.", "INIT_WEIGHTS")
    kind, state = _encoder_state_of(ckpt, encoder, in_channels, label)
    # a pretrained encoder file holds exactly the encoder: every tensor must fit
    count, _ = load_encoder_state(model, state, label, "INIT_WEIGHTS", feedback, ignore_unexpected=kind != "encoder")
    feedback.info(f"Encoder initialised from the {kind} model {path}: {count} tensors taken, the decoder starts "
                  "random.")
    return {"init": kind, **origin, "tensors": count}
