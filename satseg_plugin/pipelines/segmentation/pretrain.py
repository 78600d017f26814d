"""Self-supervised pretraining of a segmentation encoder on the user's own raster: no labels, no download.

SimCLR (Chen et al. 2020): random crops are read window by window from the raster (never the whole raster);
each crop gives two views (overlapping random sub-crops resized to one size, flips and 90° rotations,
brightness/contrast jitter, to-grey, blur); the encoder's deepest feature map, averaged over space, goes through
a two-layer projection head, and the NT-Xent loss pulls the two views of a crop together and pushes the other
crops of the batch away. The encoder is built exactly as ``satseg:trainsegmentation`` builds it, and the written
model file (kind ``encoder``) holds its weights only: Train segmentation's INIT_WEIGHTS starts from it.

SimCLR rather than BYOL or SimSiam: with negatives, collapse (every crop mapped to one point) cannot lower the
loss, so a short run on the CPU either learns or shows it in its loss and pair accuracy; BYOL and SimSiam avoid
collapse only through their predictor and EMA dynamics, which need long schedules to settle. A batch of 32
crops gives 62 negatives per view, enough at this scale (SimCLR's loss degrades gracefully with batch size).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.windows import Window

from ...core.cache import weights_dir
from ...core.deps import require
from ...core.errors import InputError
from ...core.fit import BestModel, FittedSchedule, OomBackoff, choose_precision, run_epochs, seed_everything, write_log
from ...core.normalization import band_statistics, normalize
from ...core.progress import Feedback, NullFeedback, check_canceled
from ...core.raster import check_georeferencing, crs_units, model_bands, nodata_flags, open_raster, raster_env
from ...core.staging import Transaction, stages_outputs
from .config import MIN_PRETRAIN_CROP, PretrainConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["PretrainConfig", "PretrainResult", "ViewAugment", "CropSampler", "make_views", "nt_xent",
           "pretrain_encoder"]

#: Least share of valid (not nodata) pixels in a crop; crops with fewer are drawn again.
MIN_VALID = 0.5
#: Draws of a crop before the raster is declared (nearly) all nodata.
MAX_DRAWS = 100


@dataclass
class PretrainResult:
    """What :func:`pretrain_encoder` wrote and how pretraining went."""

    model_path: str
    log_path: Optional[str]
    epochs_run: int
    steps: int
    final_loss: float
    final_accuracy: float
    canceled: bool
    history: List[Dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class ViewAugment:
    """How a view is drawn from a crop (SimCLR's recipe, in the normalised space so any band count works).

    Attributes:
        max_ratio: views' aspect ratios lie in ``[1 / max_ratio, max_ratio]`` before resizing.
        jitter_p, brightness, contrast: probability and ranges of the brightness/contrast change.
        grey_p: probability of replacing the first three bands by their mean (rasters of 3 bands or more).
        blur_p, blur_sigma: probability and sigma range of the Gaussian blur.
    """

    max_ratio: float = 4 / 3
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    grey_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: Tuple[float, float] = (0.1, 2.0)


class CropSampler:
    """Random normalised crops of one open raster, read window by window; nodata pixels become 0 (the mean).

    Args:
        src: the open raster.
        bands: 1-based bands to read.
        mean, std: per-band normalisation (:func:`~satseg_plugin.core.normalization.band_statistics`).
        size: crop side in pixels (at most the raster's width and height).
        rng: where the crop origins are drawn.
    """

    def __init__(self, src: rasterio.DatasetReader, bands: Sequence[int], mean: np.ndarray, std: np.ndarray,
                 size: int, rng: np.random.Generator) -> None:
        self.src, self.bands, self.mean, self.std, self.size, self.rng = src, list(bands), mean, std, size, rng

    def read(self) -> np.ndarray:
        """A ``(C, size, size)`` float32 crop with at least :data:`MIN_VALID` valid pixels.

        Raises:
            InputError: (INPUT) :data:`MAX_DRAWS` crops in a row were mostly nodata.
        """
        size = self.size
        for _ in range(MAX_DRAWS):
            x = int(self.rng.integers(0, self.src.width - size + 1))
            y = int(self.rng.integers(0, self.src.height - size + 1))
            window = Window(x, y, size, size)
            data = self.src.read(self.bands, window=window)
            valid = ~nodata_flags(self.src, self.bands, window, data)
            if valid.mean() >= MIN_VALID:
                return np.where(valid, normalize(data, self.mean, self.std), np.float32(0.0))
        raise InputError(f"{MAX_DRAWS} random {size} px crops in a row were mostly nodata. Give a raster with more "
                         "valid pixels, or lower PATCH_SIZE.", "INPUT")


def _view(crop: "torch.Tensor", size: int, min_scale: float, augment: ViewAugment,
          generator: "torch.Generator") -> "torch.Tensor":
    """One augmented ``(C, size, size)`` view of a ``(C, S, S)`` crop."""
    torch = require("torch")
    tf = require("torchvision.transforms.v2.functional")

    def draw(low: float = 0.0, high: float = 1.0) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    side = crop.shape[-1]
    area = side * side * draw(min_scale, 1.0)
    ratio = math.exp(draw(-math.log(augment.max_ratio), math.log(augment.max_ratio)))
    w = min(side, max(1, round(math.sqrt(area * ratio))))
    h = min(side, max(1, round(math.sqrt(area / ratio))))
    x, y = int(draw() * (side - w + 1)), int(draw() * (side - h + 1))
    view = tf.resized_crop(crop, y, x, h, w, [size, size], antialias=True)
    if draw() < 0.5:
        view = view.flip(-1)
    view = torch.rot90(view, int(draw() * 4) % 4, dims=(-2, -1))
    if draw() < augment.jitter_p:
        view = view * (1 + draw(-augment.contrast, augment.contrast)) + draw(-augment.brightness, augment.brightness)
    if view.shape[0] >= 3 and draw() < augment.grey_p:
        view = torch.cat([view[:3].mean(dim=0, keepdim=True).expand(3, -1, -1), view[3:]])
    if draw() < augment.blur_p:
        sigma = draw(*augment.blur_sigma)
        kernel = 2 * math.ceil(2 * sigma) + 1
        view = tf.gaussian_blur(view, [kernel, kernel], [sigma, sigma])
    return view


def make_views(crops: "torch.Tensor", size: int, min_scale: float, generator: "torch.Generator",
               augment: ViewAugment = ViewAugment()) -> Tuple["torch.Tensor", "torch.Tensor"]:
    """Two augmented views of every crop.

    Args:
        crops: ``(N, C, S, S)`` normalised crops.
        size: side of the views in pixels.
        min_scale: least share of a crop's area that a view covers.
        generator: the CPU generator every random draw comes from (reproducible runs).
        augment: the augmentation ranges.

    Returns:
        ``(first views, second views)``, each ``(N, C, size, size)``; view ``i`` of both comes from crop ``i``.
    """
    torch = require("torch")
    pairs = [(_view(c, size, min_scale, augment, generator), _view(c, size, min_scale, augment, generator))
             for c in crops]
    return torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])


def nt_xent(first: "torch.Tensor", second: "torch.Tensor", temperature: float) -> Tuple["torch.Tensor",
                                                                                         "torch.Tensor"]:
    """SimCLR's NT-Xent loss of two batches of embeddings, and its pair accuracy.

    Hand-written: torch has no NT-Xent, and it is one ``F.cross_entropy`` over the cosine similarities of every
    view with every other (the packages that ship it, lightly or pytorch-metric-learning, are no SatSeg
    dependency for these few lines).

    Args:
        first, second: ``(N, D)`` embeddings; row ``i`` of both comes from the same crop.
        temperature: the softmax temperature.

    Returns:
        ``(loss, accuracy)``: the mean loss over the ``2N`` views, and the share of views whose most similar
        other view is their partner.
    """
    torch = require("torch")
    functional = require("torch.nn.functional")
    z = functional.normalize(torch.cat([first, second]).float(), dim=1)
    n = first.shape[0]
    similarity = (z @ z.T / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device),
                                                     float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    loss = functional.cross_entropy(similarity, partner)
    return loss, (similarity.argmax(1) == partner).float().mean()


def _crop_size(width: int, height: int, config: PretrainConfig, feedback: Feedback) -> int:
    """The crop side for a ``width`` x ``height`` raster: PATCH_SIZE, or the raster's shorter side when that is
    smaller (views are resized from the crop, so a smaller crop still gives views of VIEW_SIZE), never below
    :data:`MIN_PRETRAIN_CROP`.

    Raises:
        InputError: (INPUT) the raster is narrower than :data:`MIN_PRETRAIN_CROP`.
    """
    side = min(int(width), int(height))
    if side >= config.patch_size:
        return config.patch_size
    if side < MIN_PRETRAIN_CROP:
        raise InputError(f"the raster ({width}x{height} px) is too small to pretrain on: crops need at least "
                         f"{MIN_PRETRAIN_CROP} px on each side. Give a larger raster.", "INPUT")
    feedback.warning(f"The raster ({width}x{height} px) is smaller than one {config.patch_size} px crop (PATCH_SIZE): "
                     f"crops of {side} px are used, resized to {config.view_size} px views.")
    return side


@stages_outputs
def pretrain_encoder(source: str, model_path: str, config: PretrainConfig = PretrainConfig(), device: str = "auto",
                     feedback: Optional[Feedback] = None, log_path: Optional[str] = None,
                     transaction: Optional[Transaction] = None, profile_dir: Optional[str] = None) -> PretrainResult:
    """Pretrain a segmentation encoder on random crops of ``source`` (SimCLR) and write it as a model file.

    Args:
        source: raster path.
        model_path: the model file to write (``.satseg``, kind ``encoder``).
        config: pretraining settings.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        feedback: progress per batch, cancel, log.
        log_path: CSV of per-epoch loss and pair accuracy (None: not written).
        transaction: stage the outputs into this run's transaction and leave the commit to its owner
            (default: the current run's, else they are moved into place together when this returns).
        profile_dir: the QGIS profile folder, for the ImageNet weights cache (as in training).

    Returns:
        The written paths and the last epoch's loss. A cancel after at least one epoch writes the weights of the
        last finished epoch (``canceled`` is True); a cancel before that raises :class:`CanceledError`.
    """
    torch = require("torch")
    from ...core.device import describe_device, resolve_device
    from ...core.version import __version__
    from ...models.checkpoint import ModelMetadata, model_tensors, save_checkpoint
    from ...models.pretrained import apply_encoder_weights
    from ...models.registry import build_model, input_multiple

    feedback = feedback or NullFeedback()
    config.validate()
    torch_device = resolve_device(device)
    feedback.info(f"Device: {describe_device(torch_device)}")
    rng, generator = seed_everything(config.seed)
    multiple = input_multiple(config.architecture, config.encoder)
    if config.view_size % multiple:
        raise InputError(f"{config.encoder} needs views that are a multiple of {multiple} px; {config.view_size} is "
                         f"not. Use {config.view_size // multiple * multiple or multiple}.", "VIEW_SIZE")

    with raster_env(), open_raster(source) as src:
        check_georeferencing(src, feedback)
        bands = model_bands(src, config.bands, feedback=feedback)
        crop = _crop_size(src.width, src.height, config, feedback)
        mean, std = band_statistics(src, bands)
        sampler = CropSampler(src, bands, mean, std, crop, rng)

        encoder = build_model(config.architecture, config.encoder, in_channels=len(bands), classes=1)
        origin = apply_encoder_weights(encoder, config.encoder_weights, config.encoder, weights_dir(profile_dir),
                                       feedback)
        encoder = encoder.encoder  # the decoder takes no part; the encoder keeps its smp construction
        width = int(encoder.out_channels[-1])
        head = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(inplace=True),
                                   torch.nn.Linear(width, config.projection_dim))
        net = torch.nn.ModuleDict({"encoder": encoder, "head": head}).to(torch_device)
        optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        steps = config.epochs * config.batches_per_epoch
        scheduler = FittedSchedule(optimizer, steps, "cosine")  # warm-up over 5 % of the steps, then cosine
        backoff = OomBackoff(config.batch_size, feedback, "crop", "Lower BATCH_SIZE or VIEW_SIZE, choose a smaller "
                             "ENCODER, or use DEVICE=cpu.", minimum=2)
        precision = choose_precision(torch_device, feedback=feedback)
        feedback.info(f"Pretraining {config.encoder} on {len(bands)} band(s) (SimCLR): {config.epochs} epochs of "
                      f"{config.batches_per_epoch} batches of {config.batch_size} crops of {crop} px, "
                      f"two {config.view_size} px views each.")

        def embed(views: "torch.Tensor") -> "torch.Tensor":
            with precision.autocast():
                return head(encoder(views.to(torch_device))[-1].mean(dim=(2, 3)))

        def train_step(batch_size: int) -> Tuple["torch.Tensor", "torch.Tensor"]:
            crops = torch.from_numpy(np.stack([sampler.read() for _ in range(batch_size)]))
            first, second = make_views(crops, config.view_size, config.min_scale, generator)
            embedded = embed(torch.cat([first, second]))  # one pass: batch norm sees both views together
            loss, accuracy = nt_xent(embedded[:batch_size], embedded[batch_size:], config.temperature)
            precision.step(loss, optimizer)
            return loss.detach(), accuracy

        history: List[Dict[str, float]] = []
        # the newest epoch is kept: a contrastive loss on fresh random crops is no model-selection score, and the
        # cosine schedule ends at the last step
        last = BestModel()

        def epoch_step(epoch: int) -> None:
            started = time.time()
            net.train()
            losses, accuracies = [], []  # on the device: read back once per epoch
            for b in range(config.batches_per_epoch):
                check_canceled(feedback)
                loss, accuracy = backoff.run(train_step)
                scheduler.step()
                losses.append(loss)
                accuracies.append(accuracy)
                feedback.set_progress(100.0 * ((epoch - 1) * config.batches_per_epoch + b + 1) / steps)
            row = {"epoch": epoch, "loss": float(torch.stack(losses).double().mean()),
                   "pair_accuracy": float(torch.stack(accuracies).double().mean()),
                   "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.time() - started, 2)}
            history.append(row)
            feedback.info(f"Epoch {epoch}: contrastive loss {row['loss']:.4f}, pair accuracy "
                          f"{row['pair_accuracy']:.3f} ({row['seconds']:.0f} s)")
            last.offer(epoch, net, epoch)

        outcome = run_epochs(config.epochs, epoch_step, feedback, last, None, "newest epoch", keep_best_on_cancel=True)
        last.restore(net)
        final = history[last.epoch - 1]
        crs = src.crs
        metadata = ModelMetadata(
            kind="encoder", architecture=config.architecture, encoder=config.encoder, in_channels=len(bands),
            classes=[], bands=list(bands), mean=[float(v) for v in mean], std=[float(v) for v in std],
            patch_size=config.view_size, pixel_size=(abs(src.res[0]), abs(src.res[1])),
            crs_wkt=crs.to_wkt() if crs else None,
            crs_units=crs_units(crs),
            metrics={"loss": final["loss"], "pair_accuracy": final["pair_accuracy"], "epochs_run": len(history),
                     "steps": last.epoch * config.batches_per_epoch},
            extra={"pretrain_config": asdict(config), "input_multiple": multiple, "init": origin,
                   "source": os.path.abspath(source), "satseg_version": __version__})
    save_checkpoint(model_path, model_tensors(encoder), metadata, parameter="OUTPUT_MODEL")
    written_log = write_log(log_path, history)
    feedback.set_progress(100.0)
    feedback.info(f"Encoder written to {model_path} (contrastive loss {final['loss']:.4f}, pair accuracy "
                  f"{final['pair_accuracy']:.3f}). Give it to Train segmentation's INIT_WEIGHTS with ENCODER "
                  f"{config.encoder} and the same bands.")
    return PretrainResult(os.path.abspath(model_path), written_log, len(history),
                          last.epoch * config.batches_per_epoch, final["loss"], final["pair_accuracy"],
                          outcome.canceled, history)
