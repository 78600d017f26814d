"""Train a segmentation model from a raster and annotation polygons.

Crops are read window by window from the raster and their labels rasterised on demand, so memory
depends on the batch, not on the raster. Validation is held out spatially: whole blocks of the raster,
never random pixels, so the score measures how the model does on ground it has not seen.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from ...core.cache import weights_dir
from ...core.deps import require
from ...core.errors import InputError
from ...core.fit import BestModel, FittedSchedule, OomBackoff, choose_precision, run_epochs, seed_everything, write_log
from ...core.labels import IGNORE, LabelSet
from ...core.normalization import band_statistics, normalize
from ...core.plots import plot_training_curves
from ...core.progress import Feedback, NullFeedback, check_canceled
from ...core.raster import (
    check_georeferencing,
    crs_units,
    model_bands,
    nodata_flags,
    open_raster,
    raster_env,
    window_footprint,
)
from ...core.staging import Transaction, stages_outputs
from ...core.vectorize import sieve_array
from .augment import AugmentConfig, augment_batch
from .config import TrainConfig
from .report import BlockScore, ValidationReport, build_report, score_block

__all__ = ["TrainConfig", "TrainResult", "Block", "MIN_LABELLED_BLOCKS", "split_blocks", "train_segmentation"]

#: Automatic blocks (``block_size`` 0) are twice the patch size unless labelled objects then lie in fewer blocks
#: than this: then they are one patch, so a small labelled area still gives several validation blocks.
MIN_LABELLED_BLOCKS = 6
#: When the labelled area (or the raster) is too small for two blocks of the asked patch size, training tries
#: smaller crops, multiples of the model's input size, down to this many pixels, rather than refusing: a user
#: who labelled one small image gets a model (the log says the patch size was lowered) instead of an error.
MIN_AUTO_PATCH = 64
#: Fewer labelled objects (overlapping polygons count as one) in the validation blocks and the validation Dice is
#: too noisy to pick an epoch by: the weights at the end of the (annealed, time-fitted) schedule are kept and early
#: stopping is off. Measured (bench/RESULTS.md, "few labels" section): two 600 px Yellowstone AOIs with 28-30
#: crowns (8 and 15 validation objects) scored test Dice 0.57 / 0.50 with the last weights against 0.54 / 0.40 with
#: the best smoothed epoch; the held-out tile's run kept epoch 2 of its validation set of 8 buildings (Dice 0.06).
#: With the whole Yellowstone training part (many validation objects) the best epoch was the last one anyway.
MIN_SELECTION_OBJECTS = 20
#: The smallest object a model's masks keep (``extra["min_object_pixels"]``, applied by segmentation and by the
#: report after training) is this share of the area of the smallest labelled objects (their 5th percentile):
#: specks far smaller than anything drawn are noise, and small holes inside objects fill.
MIN_OBJECT_SHARE, MIN_OBJECT_PERCENTILE = 0.25, 5


@dataclass
class TrainResult:
    """What :func:`train_segmentation` wrote and how training went."""

    model_path: str
    log_path: Optional[str]
    plot_path: Optional[str]
    best_epoch: int
    best_dice: float
    best_iou: float
    epochs_run: int
    canceled: bool
    history: List[Dict[str, float]] = field(default_factory=list)
    report: Optional[ValidationReport] = None


@dataclass(frozen=True)
class Block:
    """A rectangle of raster pixels that is wholly training or wholly validation ground."""

    x_off: int
    y_off: int
    width: int
    height: int


def _count_objects(geometries: Sequence) -> int:
    """Objects as evaluation counts them: polygons that overlap or touch are one object."""
    from shapely.ops import unary_union

    if not geometries:
        return 0
    union = unary_union(list(geometries))
    return len(getattr(union, "geoms", [union]))


def split_blocks(positive: Sequence[bool], val_fraction: float, rng: np.random.Generator,
                 block: int) -> Tuple[List[int], List[int]]:
    """Choose validation blocks.

    Validation blocks are drawn among blocks that hold labelled objects (so the validation Dice means
    something), at least one, leaving at least one labelled block for training.

    Args:
        positive: per block, whether it holds labelled objects.
        val_fraction: share of all blocks to hold out.
        rng: random generator.
        block: block side in pixels (for messages).

    Returns:
        ``(train indices, validation indices)`` into ``positive``.
    """
    total = len(positive)
    candidates = [i for i in range(total) if positive[i]]
    if len(candidates) < 2:
        raise InputError(f"labelled objects lie in {len(candidates)} block(s) of {block} px; at least two are "
                         "needed to hold one out for validation. Label objects in more places (a larger area), or "
                         f"lower PATCH_SIZE (blocks are one or two patches wide; crops of {MIN_AUTO_PATCH} px are "
                         "tried before this error).", "LABELS")
    n_val = min(max(1, int(round(val_fraction * total))), len(candidates) - 1)
    val = sorted(int(i) for i in rng.choice(candidates, size=n_val, replace=False))
    train = [i for i in range(total) if i not in set(val)]
    return train, val


def _make_blocks(width: int, height: int, size: int) -> List[Block]:
    """Blocks of ``size`` px; the last row/column absorbs the remainder, so every block is >= size."""
    def edges(n: int) -> List[Tuple[int, int]]:
        count = max(1, n // size)
        starts = [i * size for i in range(count)]
        return [(s, (starts[i + 1] if i + 1 < count else n) - s) for i, s in enumerate(starts)]

    return [Block(x, y, w, h) for y, h in edges(height) for x, w in edges(width)]


class _CropReader:
    """Reads normalised image crops and their label masks from an open raster."""

    def __init__(self, src: rasterio.DatasetReader, bands: Tuple[int, ...], labels: LabelSet,
                 mean: np.ndarray, std: np.ndarray) -> None:
        self.src, self.bands, self.labels, self.mean, self.std = src, bands, labels, mean, std

    def read(self, x: int, y: int, size: int) -> Tuple[np.ndarray, np.ndarray]:
        window = Window(x, y, size, size)
        data = self.src.read(list(self.bands), window=window)
        label = self.labels.rasterize(self.src.window_transform(window), (size, size))
        label[nodata_flags(self.src, self.bands, window, data)] = IGNORE
        return normalize(data, self.mean, self.std), label


def _block_polygon(block: Block, transform: Affine):
    """The block's footprint in map coordinates."""
    from shapely.geometry import Polygon

    return Polygon(window_footprint(transform, block.x_off, block.y_off, block.width, block.height))


def _positive_blocks(blocks: List[Block], transform: Affine, labels: LabelSet) -> List[List[int]]:
    """For each block, the label geometries that intersect it (inside the AOI, when there is one)."""
    out = []
    for b in blocks:
        poly = _block_polygon(b, transform)
        if labels.aoi is not None:  # only labels inside the area where they are complete count
            poly = poly.intersection(labels.aoi)
            if poly.is_empty:
                out.append([])
                continue
        # an object counts for a block when at least one pixel's worth of it lies inside (not a grazing edge)
        out.append([i for i in labels.query(poly.bounds)
                    if labels.geometries[i].intersection(poly).area >= abs(transform.determinant)])
    return out


def _patch_sizes(asked: int, multiple: int) -> List[int]:
    """The asked patch size, then the smaller multiples of ``multiple`` down to :data:`MIN_AUTO_PATCH`, largest
    first (each about three quarters of the one before, so a few tries span the range)."""
    sizes = [asked]
    while True:
        smaller = int(sizes[-1] * 0.75) // multiple * multiple
        if smaller < max(MIN_AUTO_PATCH, multiple) or smaller >= sizes[-1]:
            return sizes
        sizes.append(smaller)


def _plan_blocks(src: rasterio.DatasetReader, labels: LabelSet, size: int, block_size: int
                 ) -> Tuple[List[Block], List[List[int]], int]:
    """Blocks for crops of ``size`` px (those with any part inside the AOI), the labels that hit each, and the
    block side: ``block_size`` when set, else twice the patch unless that leaves fewer than
    :data:`MIN_LABELLED_BLOCKS` labelled blocks (then one patch)."""
    for block_px in ([max(block_size, size)] if block_size else [2 * size, size]):
        blocks = _make_blocks(src.width, src.height, block_px)
        if labels.aoi is not None:  # crops outside the area of complete labels would only hold ignored pixels
            pixel = abs(src.transform.determinant)
            blocks = [b for b in blocks if _block_polygon(b, src.transform).intersection(labels.aoi).area >= pixel]
        hits = _positive_blocks(blocks, src.transform, labels)
        if sum(map(bool, hits)) >= MIN_LABELLED_BLOCKS:
            break
    return blocks, hits, block_px


def _sample_origin(block: Block, size: int, rng: np.random.Generator, point: Optional[Tuple[float, float]] = None
                   ) -> Tuple[int, int]:
    """Top-left of a ``size`` crop inside ``block``, containing pixel ``point`` when given."""
    lo_x, hi_x = block.x_off, block.x_off + block.width - size
    lo_y, hi_y = block.y_off, block.y_off + block.height - size
    if point is not None:
        px, py = point
        lo_x, hi_x = max(lo_x, int(px) - size + 1), min(hi_x, int(px))
        lo_y, hi_y = max(lo_y, int(py) - size + 1), min(hi_y, int(py))
    return int(rng.integers(lo_x, hi_x + 1)), int(rng.integers(lo_y, hi_y + 1))


def _point_in(geometry, block_poly, rng: np.random.Generator, tries: int = 50):
    """A random point of ``geometry`` inside ``block_poly`` (falls back to a representative point)."""
    region = geometry.intersection(block_poly)
    if region.is_empty:
        return None
    from shapely.geometry import Point

    xmin, ymin, xmax, ymax = region.bounds
    for _ in range(tries):
        p = Point(rng.uniform(xmin, xmax), rng.uniform(ymin, ymax))
        if region.contains(p):
            return p.x, p.y
    p = region.representative_point()
    return p.x, p.y


def _block_tiles(block: Block, size: int) -> List[Tuple[int, int]]:
    """Top-left corners of ``size`` tiles covering ``block`` (the last row and column flush with its edge)."""
    return [(block.x_off + x, block.y_off + y)
            for y in sorted({*range(0, block.height - size + 1, size), block.height - size})
            for x in sorted({*range(0, block.width - size + 1, size), block.width - size})]


def _validation_report(reader: _CropReader, blocks: Sequence[Block], size: int, transform: Affine,
                       predict: Callable[[np.ndarray], np.ndarray], batch_size: int, min_object: int,
                       train_objects: int, pretrained: bool, units: str, feedback: Feedback,
                       max_blocks: int = 32) -> ValidationReport:
    """Predict each validation block whole (its tiles assembled, objects under ``min_object`` pixels removed as
    segmentation removes them) and score it like the evaluation tool does.

    At most ``max_blocks`` blocks (evenly spread) are predicted, so the report costs about one validation pass.
    """
    if len(blocks) > max_blocks:
        blocks = [blocks[int(i)] for i in np.linspace(0, len(blocks) - 1, max_blocks)]
    scored: List[BlockScore] = []
    for block in blocks:
        check_canceled(feedback)
        pred = np.zeros((block.height, block.width), np.uint8)
        truth = np.full((block.height, block.width), IGNORE, np.uint8)
        tiles = _block_tiles(block, size)
        for start in range(0, len(tiles), batch_size):
            chunk = tiles[start:start + batch_size]
            crops = [reader.read(x, y, size) for x, y in chunk]
            for (x, y), p, (_, t) in zip(chunk, predict(np.stack([c[0] for c in crops])), crops):
                rows, cols = slice(y - block.y_off, y - block.y_off + size), slice(x - block.x_off, x - block.x_off + size)
                pred[rows, cols], truth[rows, cols] = p, t
        centre = transform * (block.x_off + block.width / 2, block.y_off + block.height / 2)
        scored.append(score_block(sieve_array(pred, min_object), truth, (float(centre[0]), float(centre[1]))))
    return build_report(scored, train_objects, pretrained, units)


#: Thresholds tried on the validation blocks when the threshold is tuned.
THRESHOLD_GRID = np.round(np.arange(0.2, 0.81, 0.05), 2)


def _dice_iou(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> Tuple[float, float]:
    """Mean Dice and IoU over classes from per-class counts (a class absent from both counts as 1)."""
    dice = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 1.0)
    iou = np.where(tp + fp + fn > 0, tp / np.maximum(tp + fp + fn, 1), 1.0)
    return float(dice.mean()), float(iou.mean())


@stages_outputs
def train_segmentation(source: str, labels: LabelSet, model_path: str, config: TrainConfig = TrainConfig(),
                       device: str = "auto", feedback: Optional[Feedback] = None,
                       log_path: Optional[str] = None, plot_path: Optional[str] = None,
                       transaction: Optional[Transaction] = None, profile_dir: Optional[str] = None) -> TrainResult:
    """Train a segmentation model and write it as a SatSeg model file.

    Args:
        source: raster path.
        labels: annotation polygons (and AOI) in the raster's CRS.
        model_path: the model file to write (``.satseg``).
        config: training settings.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        feedback: progress per batch, cancel, log.
        log_path: CSV of per-epoch metrics (None: not written).
        plot_path: PNG of the loss / Dice curves (None: not written).
        transaction: stage the outputs into this run's transaction and leave the commit to its owner
            (default: the current run's, else they are moved into place together when this returns).
        profile_dir: the QGIS profile folder: ImageNet weights are cached in ``<profile_dir>/python/satseg_weights``
            (default ``~/.cache/satseg/weights``; ``$SATSEG_WEIGHTS_DIR`` overrides both).

    Returns:
        The written paths and the best validation scores. A cancel after at least one epoch keeps the
        best model so far (``canceled`` is True); a cancel before that raises :class:`CanceledError`.
    """
    torch = require("torch")
    from ...core.device import describe_device, resolve_device
    from ...core.version import __version__
    from ...models.checkpoint import ModelMetadata, model_tensors, save_checkpoint
    from ...models.losses import FocalDiceLoss
    from ...models.pretrained import apply_encoder_weights, init_from_model_file
    from ...models.registry import build_model, input_multiple

    feedback = feedback or NullFeedback()
    config.validate()
    torch_device = resolve_device(device)
    feedback.info(f"Device: {describe_device(torch_device)}")
    rng, generator = seed_everything(config.seed)

    with raster_env(), open_raster(source) as src:
        check_georeferencing(src, feedback)
        bands = model_bands(src, config.bands, feedback=feedback)
        multiple = input_multiple(config.architecture, config.encoder)
        if config.patch_size % multiple:
            raise InputError(f"{config.architecture} with {config.encoder} needs crops that are a multiple of "
                             f"{multiple} px; {config.patch_size} is not. Use "
                             f"{config.patch_size // multiple * multiple or multiple}.", "PATCH_SIZE")
        sizes = _patch_sizes(config.patch_size, multiple)
        fitting = [s for s in sizes if s <= min(src.width, src.height)]
        if not fitting:
            raise InputError(f"the raster ({src.width}x{src.height}) is smaller than one {sizes[-1]} px training "
                             "crop. Use a larger raster.", "INPUT")
        first = None
        for size in fitting:  # the asked size unless the labelled area is too small for it
            blocks, hits, block_px = _plan_blocks(src, labels, size, config.block_size)
            first = first or (size, blocks, hits, block_px)
            if sum(map(bool, hits)) >= 2:
                break
        else:  # too few labelled places at any size: the asked (or largest fitting) size, and split_blocks says so
            size, blocks, hits, block_px = first
        if size != config.patch_size:
            why = ("the raster is smaller than one crop" if fitting[0] != config.patch_size else
                   "labelled objects lie in fewer than two blocks (one is held out for validation)")
            feedback.warning(f"PATCH_SIZE lowered from {config.patch_size} to {size} px: with {config.patch_size} px "
                             f"crops {why}. Label a larger area to train on larger crops.")
        if not any(hits):
            if labels.aoi is not None:
                raise InputError("no label polygon lies inside the area where labels are complete (on the raster). "
                                 "Draw the AOI around labelled objects, or leave AOI empty.", "AOI")
            raise InputError("no label polygon overlaps the raster. Check that the labels cover the raster and "
                             "that their CRS is right.", "LABELS")
        labelled = len({g for h in hits for g in h})
        if labelled < 2:
            raise InputError(f"only {labelled} labelled object lies on the raster (inside the AOI); at least two are "
                             "needed, one of them held out for validation. Label more objects, in more places.",
                             "LABELS")
        train_idx, val_idx = split_blocks([bool(h) for h in hits], config.val_fraction, rng, block_px)
        feedback.info(f"Spatial split: {len(train_idx)} training and {len(val_idx)} validation blocks of "
                      f"~{block_px} px.")
        mean, std = band_statistics(src, bands)
        feedback.info("Band statistics (mean / std): " + ", ".join(
            f"b{b}: {m:.2f} / {s:.2f}" for b, m, s in zip(bands, mean, std)))
        reader = _CropReader(src, bands, labels, mean, std)

        # validation tiles: a fixed grid over the validation blocks
        val_tiles = [xy for i in val_idx for xy in _block_tiles(blocks[i], size)]
        if len(val_tiles) > config.max_val_tiles:
            val_tiles = [val_tiles[int(i)] for i in np.linspace(0, len(val_tiles) - 1, config.max_val_tiles)]
        val_data = [reader.read(x, y, size) for x, y in val_tiles]
        positive_val = sum(int(((lab > 0) & (lab != IGNORE)).sum()) for _, lab in val_data)
        if positive_val == 0:
            raise InputError("the validation blocks hold no labelled pixels. Label more objects or change SEED.",
                             "LABELS")
        val_objects = _count_objects([labels.geometries[g] for g in {g for i in val_idx for g in hits[i]}])
        keep_last = val_objects < MIN_SELECTION_OBJECTS
        if keep_last:
            feedback.info(f"The validation blocks hold {val_objects} labelled object(s), fewer than "
                          f"{MIN_SELECTION_OBJECTS}: too few to pick an epoch by, so the weights at the end of the "
                          "schedule are kept and early stopping is off.")
        train_blocks = [blocks[i] for i in train_idx]
        train_area = np.array([b.width * b.height for b in train_blocks], float)
        positives: Dict[int, List[Tuple[int, int]]] = {}  # class -> (training block, geometry) pairs
        for j, i in enumerate(train_idx):
            for g in hits[i]:
                positives.setdefault(labels.classes[g], []).append((j, g))
        if not positives:
            raise InputError("no labelled object lies in the training blocks. Label objects in more places.",
                             "LABELS")
        train_geoms = sorted({g for pairs in positives.values() for _, g in pairs})
        train_objects = len(train_geoms)
        pixel_area = abs(src.transform.determinant)
        min_object = int(MIN_OBJECT_SHARE * np.percentile([labels.geometries[g].area / pixel_area for g in train_geoms],
                                                          MIN_OBJECT_PERCENTILE))
        classes_seen = sorted(positives)
        inverse = ~src.transform

        def sample_crop() -> Tuple[np.ndarray, np.ndarray]:
            if rng.random() < config.positive_prob:  # a class drawn evenly, then one of its objects
                pairs = positives[classes_seen[int(rng.integers(len(classes_seen)))]]
                j, g = pairs[int(rng.integers(len(pairs)))]
                point = _point_in(labels.geometries[g], _block_polygon(train_blocks[j], src.transform), rng)
                if point is not None:
                    x, y = _sample_origin(train_blocks[j], size, rng, inverse * point)
                    return reader.read(x, y, size)
            j = int(rng.choice(len(train_blocks), p=train_area / train_area.sum()))
            x, y = _sample_origin(train_blocks[j], size, rng)
            return reader.read(x, y, size)

        binary = labels.num_classes == 1
        out_classes = 1 if binary else labels.num_classes + 1
        model = build_model(config.architecture, config.encoder, in_channels=len(bands), classes=out_classes)
        if config.init_weights:  # a SatSeg model file: all weights, or another model's encoder
            origin = init_from_model_file(model, config.init_weights, config.encoder, len(bands),
                                          f"{config.architecture}/{config.encoder} model with {len(bands)} bands "
                                          f"and {out_classes} outputs", feedback)
            if config.encoder_weights.strip().lower() not in ("auto", "none"):
                feedback.warning("ENCODER_WEIGHTS is ignored: the weights come from INIT_WEIGHTS.")
        else:
            origin = apply_encoder_weights(model, config.encoder_weights, config.encoder, weights_dir(profile_dir),
                                           feedback)
        model.to(torch_device)
        loss_fn = FocalDiceLoss(gamma=2.0, mode="binary" if binary else "multiclass", ignore_index=IGNORE)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        backoff = OomBackoff(config.batch_size, feedback, "crop", "Lower PATCH_SIZE, choose a smaller ENCODER, "
                             "or use DEVICE=cpu.")
        total_area = float(train_area.sum())
        batches = config.batches_per_epoch or min(50, max(20, math.ceil(total_area / (size * size) / config.batch_size)))
        schedule = FittedSchedule(optimizer, config.epochs * batches, config.schedule, step_every=config.step_size
                                  * batches, gamma=config.gamma, max_seconds=60.0 * config.max_minutes)
        precision = choose_precision(torch_device, feedback=feedback)
        feedback.info(f"Training {config.architecture}/{config.encoder} on {len(bands)} band(s) from {train_objects} "
                      f"labelled objects: {batches} batches of {config.batch_size} x {size} px per epoch, up to "
                      f"{config.epochs} epochs ({schedule.total} steps, {config.schedule} learning rate"
                      f"{f', at most {config.max_minutes:g} minutes' if config.max_minutes else ''}).")

        def to_target(lab: "torch.Tensor") -> "torch.Tensor":
            return lab.float()[:, None] if binary else lab.long()

        def forward(images: "torch.Tensor", labs: "torch.Tensor") -> Tuple["torch.Tensor", "torch.Tensor"]:
            images, labs = images.to(torch_device), labs.to(torch_device)
            with precision.autocast():
                logits = model(images)
            return loss_fn(logits.float(), to_target(labs)), logits

        def train_step(batch_size: int) -> "torch.Tensor":
            crops = [sample_crop() for _ in range(batch_size)]
            images = torch.from_numpy(np.stack([c[0] for c in crops]))
            labs = torch.from_numpy(np.stack([c[1] for c in crops]))
            if config.augment:
                images, labs = augment_batch(images, labs, generator, AugmentConfig())
            loss, _ = forward(images, labs)
            precision.step(loss, optimizer)
            schedule.step()
            return loss.detach()

        k = 1 if binary else labels.num_classes
        thresholds = (THRESHOLD_GRID if config.threshold is None else np.array([config.threshold])) \
            if binary else np.array([0.0])
        history: List[Dict[str, float]] = []
        best = BestModel()
        smoothed: List[float] = []
        run_started = time.time()

        def epoch_step(epoch: int) -> None:
            started = time.time()
            model.train()
            losses = []  # on the device: read back once per epoch, not once per batch
            lr = optimizer.param_groups[0]["lr"]
            for _ in range(batches):
                if schedule.finished:
                    break
                check_canceled(feedback)
                losses.append(backoff.run(train_step))
                feedback.set_progress(95.0 * schedule.steps / schedule.total)
            model.eval()
            val_losses = []
            tp, fp, fn = (np.zeros((len(thresholds), k)) for _ in range(3))
            with torch.no_grad():
                for start in range(0, len(val_data), backoff.batch_size):
                    check_canceled(feedback)
                    chunk = val_data[start:start + backoff.batch_size]
                    images = torch.from_numpy(np.stack([c[0] for c in chunk]))
                    labs = torch.from_numpy(np.stack([c[1] for c in chunk]))
                    loss, logits = forward(images, labs)
                    val_losses.append(loss)
                    truth = labs.numpy()
                    valid = truth != IGNORE
                    if binary:
                        prob = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
                        preds = [(prob > t).astype(np.uint8) for t in thresholds]
                    else:
                        preds = [logits.argmax(1).cpu().numpy().astype(np.uint8)]
                    for i, pred in enumerate(preds):
                        for c in range(k):
                            cls = c + 1
                            p, t = (pred == cls) & valid, (truth == cls) & valid
                            tp[i, c] += (p & t).sum()
                            fp[i, c] += (p & ~t).sum()
                            fn[i, c] += (~p & t).sum()
            scores = [_dice_iou(tp[i], fp[i], fn[i]) for i in range(len(thresholds))]
            pick = int(np.argmax([d for d, _ in scores]))
            (dice, iou), threshold = scores[pick], float(thresholds[pick])
            smoothed.append(dice if not smoothed else config.smoothing * dice + (1 - config.smoothing) * smoothed[-1])
            row = {"epoch": epoch, "steps": schedule.steps, "train_loss": float(torch.stack(losses).double().mean()),
                   "val_loss": float(torch.stack(val_losses).double().mean()),
                   "val_dice": dice, "val_dice_smoothed": smoothed[-1], "val_iou": iou, "val_threshold": threshold,
                   "lr": lr, "seconds": round(time.time() - started, 2)}
            history.append(row)
            feedback.info(f"Epoch {epoch} (step {schedule.steps}/{schedule.total}): train loss {row['train_loss']:.4f},"
                          f" validation loss {row['val_loss']:.4f}, Dice {dice:.4f} (smoothed {smoothed[-1]:.4f}), IoU "
                          f"{iou:.4f}{f' at threshold {threshold:.2f}' if binary else ''} ({row['seconds']:.0f} s)")
            # with few validation objects every epoch replaces the kept weights: the last one is kept
            best.offer(epoch if keep_last else smoothed[-1], model, epoch, dice=dice, iou=iou, threshold=threshold)

        def stop(epoch: int) -> Optional[str]:
            """End of the schedule, the time limit, or no better smoothed Dice for ``patience`` epochs."""
            shortened = schedule.fit_time(time.time() - run_started)
            if shortened:
                feedback.info(f"Time limit {config.max_minutes:g} min: the schedule now ends after {shortened} steps.")
            if schedule.finished:
                return f"Schedule finished after {schedule.steps} steps."
            if config.max_minutes and time.time() - run_started > 60.0 * config.max_minutes:
                return f"Time limit of {config.max_minutes:g} minutes reached."
            if not keep_last and schedule.steps >= config.min_schedule * schedule.total and \
                    epoch - best.epoch >= config.patience:
                return f"Early stop: no better smoothed validation Dice for {config.patience} epochs."
            return None

        outcome = run_epochs(config.epochs, epoch_step, feedback, best, None,
                             "latest weights" if keep_last else "smoothed validation Dice",
                             keep_best_on_cancel=True, stop=stop)

        best.restore(model)
        best_dice, best_iou = float(best.info["dice"]), float(best.info["iou"])
        threshold = best.info["threshold"] if binary else (0.5 if config.threshold is None else config.threshold)
        feedback.set_progress(96.0)
        units = crs_units(src.crs)

        def predict(images: np.ndarray) -> np.ndarray:
            """Class ids (0 background) of normalised crops, with the kept model and threshold."""
            with torch.no_grad(), precision.autocast():
                logits = model(torch.from_numpy(images).to(torch_device)).float()
            if binary:
                return (torch.sigmoid(logits[:, 0]) > threshold).cpu().numpy().astype(np.uint8)
            return logits.argmax(1).cpu().numpy().astype(np.uint8)

        report = None
        if not outcome.canceled:
            report = _validation_report(reader, [blocks[i] for i in val_idx], size, src.transform,
                                        predict, backoff.batch_size, min_object, train_objects,
                                        origin.get("init") != "none", units, feedback)
        metadata = ModelMetadata(
            kind="segmentation", architecture=config.architecture, encoder=config.encoder, in_channels=len(bands),
            classes=list(labels.class_names), bands=list(bands), mean=[float(v) for v in mean],
            std=[float(v) for v in std], patch_size=size, pixel_size=(abs(src.res[0]), abs(src.res[1])),
            crs_wkt=src.crs.to_wkt() if src.crs else None, crs_units=units,
            threshold=threshold,
            metrics={"val_dice": best_dice, "val_iou": best_iou, "best_epoch": best.epoch,
                     "kept_epoch": "last" if keep_last else "best smoothed validation Dice",
                     "epochs_run": len(history), "steps": schedule.steps, **(report.metrics() if report else {})},
            extra={"train_config": {k_: v for k_, v in asdict(config).items()}, "input_multiple": multiple,
                   "min_object_pixels": min_object,
                   "init": origin, "source": os.path.abspath(source), "satseg_version": __version__})
    save_checkpoint(model_path, model_tensors(model), metadata, parameter="OUTPUT_MODEL")
    written_log = write_log(log_path, history)
    written_plot = None
    if plot_path and history:
        written_plot = plot_training_curves(
            plot_path, history, [("train_loss", "train loss", "tab:blue"), ("val_loss", "validation loss", "tab:orange")],
            "loss (focal + Dice)", [("val_dice", "validation Dice", "tab:green")], "Dice", (0, 1))
    feedback.set_progress(100.0)
    feedback.info(f"{'Validation Dice' if keep_last else 'Best validation Dice'} {best_dice:.4f} (IoU {best_iou:.4f}) "
                  f"at epoch {best.epoch}{' (the last: kept)' if keep_last else ''}; model written to {model_path}.")
    if report is not None:
        feedback.info(report.summary())
        for warning in report.warnings:
            feedback.warning(warning)
    return TrainResult(os.path.abspath(model_path), written_log, written_plot, best.epoch, best_dice, best_iou,
                       len(history), outcome.canceled, history, report)
