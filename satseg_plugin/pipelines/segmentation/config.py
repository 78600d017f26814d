"""Settings of building segmentation: training, self-supervised encoder pretraining and tiled inference.

Only the standard library and light core modules are imported here, so the Processing provider and the dock
read the defaults without importing numpy, rasterio or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from ...core.errors import check_settings

__all__ = ["SCHEDULES", "TrainConfig", "PretrainConfig", "InferenceConfig"]

#: Learning-rate schedules of training, in the order of the Processing enum (index 0 is the default).
SCHEDULES: Tuple[str, ...] = ("cosine", "step")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the defaults are a recipe for one raster and a few dozen to a few hundred polygons.

    The competition recipe this started from (batches of 32, StepLR, patience 5) assumed thousands of labelled
    images; with one raster an epoch was 4-10 batches and training stopped after ~50 steps. Here an epoch is sized
    from the labelled area, the learning rate follows one warm-up + cosine schedule over the whole run (fitted to
    ``max_minutes``), and early stopping looks at a smoothed validation Dice only after ``min_schedule`` of the
    schedule has passed.

    Attributes:
        architecture: ``unet``, ``pspnet`` or ``deeplabv3plus``.
        encoder: any segmentation-models-pytorch encoder name.
        bands: 1-based band subset (None: all bands but alpha, :func:`~...core.raster.model_bands`).
        patch_size: training crop size in pixels; lowered automatically (down to ``train.MIN_AUTO_PATCH``) when
            the raster or the labelled area is too small for two blocks of it.
        batch_size: crops per batch (lowered automatically on CUDA out-of-memory). Small batches and more steps
            learn more from few labels than a few large batches, and cost the same per crop.
        epochs: maximum number of epochs (the schedule's length: ``epochs x batches_per_epoch`` steps).
        batches_per_epoch: training batches between validations (0: about one pass over the training blocks,
            at least 20 and at most 50: a validation pass costs about 4 training batches).
        learning_rate, weight_decay: AdamW settings (peak learning rate of the schedule).
        schedule: ``cosine`` (linear warm-up over the first 5 % of the steps, then cosine decay to zero at the
            schedule's end) or ``step`` (the learning rate times ``gamma`` every ``step_size`` epochs).
        step_size, gamma: the ``step`` schedule.
        patience: stop after this many validations without a better smoothed validation Dice (never before
            ``min_schedule`` of the schedule).
        min_schedule: share of the schedule always trained before early stopping may end the run.
        smoothing: weight of the newest epoch in the smoothed validation Dice (an exponential moving average; 1:
            no smoothing). The best epoch is the one with the best smoothed score, so one lucky validation on a
            small validation set does not pick the model.
        max_minutes: wall-time limit of training in minutes (0: none). After the first epochs the time per step
            is measured and the schedule is shortened so that it ends (learning rate annealed) within the limit.
        val_fraction: share of the blocks held out for validation.
        block_size: side of the validation/training blocks in pixels (0: twice the patch size, or the patch size
            when labelled objects lie in fewer than ``MIN_LABELLED_BLOCKS`` of the larger blocks).
        positive_prob: probability that a crop is drawn around a labelled object (the class first drawn evenly,
            then one of its objects: rare classes are seen as often as common ones).
        augment: apply the overhead-imagery augmentations of :mod:`.augment`.
        seed: seed of every random draw (runs are reproducible on the CPU).
        threshold: probability threshold stored with the model (binary models). None: the threshold of
            :data:`THRESHOLD_GRID` with the best Dice on the validation blocks, at the best epoch (tuned on the
            held-out blocks inside the training area, never on data the user predicts later).
        encoder_weights: initial encoder weights when ``init_weights`` is not set: ``none`` (random),
            ``imagenet`` (the encoder's published weights, cached, downloaded once), ``auto`` (``imagenet`` when
            cached or reachable, else ``none``) or the path of a ``.safetensors``/``.pth`` encoder state dict.
        init_weights: optional SatSeg model file to start from: a segmentation model (same architecture, encoder
            and bands: every weight), or a ClusterNet / scene classifier / pretrained encoder with the same encoder
            and bands (the encoder's weights).
        max_val_tiles: cap on validation tiles (evenly spread) so validation stays fast.
    """

    architecture: str = "unet"
    encoder: str = "resnet34"
    bands: Optional[Tuple[int, ...]] = None
    patch_size: int = 224
    batch_size: int = 8
    epochs: int = 60
    batches_per_epoch: int = 0
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = SCHEDULES[0]
    step_size: int = 10
    gamma: float = 0.1
    patience: int = 10
    min_schedule: float = 0.5
    smoothing: float = 0.5
    max_minutes: float = 10.0
    val_fraction: float = 0.25
    block_size: int = 0
    positive_prob: float = 0.7
    augment: bool = True
    seed: int = 0
    threshold: Optional[float] = None
    encoder_weights: str = "auto"
    init_weights: Optional[str] = None
    max_val_tiles: int = 96

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first bad setting."""
        checks = [
            ("PATCH_SIZE", self.patch_size >= 32, "must be at least 32 pixels", self.patch_size),
            ("BATCH_SIZE", self.batch_size >= 1, "must be at least 1", self.batch_size),
            ("EPOCHS", self.epochs >= 1, "must be at least 1", self.epochs),
            ("BATCHES_PER_EPOCH", self.batches_per_epoch >= 0, "must be 0 (automatic) or more",
             self.batches_per_epoch),
            ("LEARNING_RATE", self.learning_rate > 0, "must be positive", self.learning_rate),
            ("WEIGHT_DECAY", self.weight_decay >= 0, "must be 0 or more", self.weight_decay),
            ("STEP_SIZE", self.step_size >= 1, "must be at least 1 epoch", self.step_size),
            ("GAMMA", 0 < self.gamma <= 1, "must lie in (0, 1]", self.gamma),
            ("VAL_FRACTION", 0 < self.val_fraction < 1, "must lie strictly between 0 and 1", self.val_fraction),
            ("POSITIVE_PROB", 0 <= self.positive_prob <= 1, "must lie between 0 and 1", self.positive_prob),
            ("PATIENCE", self.patience >= 1, "must be at least 1", self.patience),
            ("SCHEDULE", self.schedule in SCHEDULES, f"must be one of {', '.join(SCHEDULES)}", self.schedule),
            ("MIN_SCHEDULE", 0 <= self.min_schedule <= 1, "must lie between 0 and 1", self.min_schedule),
            ("SMOOTHING", 0 < self.smoothing <= 1, "must lie in (0, 1]", self.smoothing),
            ("MAX_MINUTES", self.max_minutes >= 0, "must be 0 (no limit) or more minutes", self.max_minutes),
            ("THRESHOLD", self.threshold is None or 0 < self.threshold < 1, "must lie strictly between 0 and 1",
             self.threshold),
            ("ENCODER_WEIGHTS", isinstance(self.encoder_weights, str) and bool(self.encoder_weights.strip()),
             "must be auto, none, imagenet or the path of a weights file", self.encoder_weights),
        ]
        check_settings(checks, prefix="")


#: The smallest pretraining crop (PATCH_SIZE), in pixels; a raster narrower than this cannot be pretrained on.
MIN_PRETRAIN_CROP = 32


@dataclass(frozen=True)
class PretrainConfig:
    """Contrastive (SimCLR) pretraining of a segmentation encoder on random crops of one raster, without labels.

    The defaults take about five minutes on two CPU cores, whatever the raster's size: 250 batches (10 epochs of
    25) of 32 crops of 96 px, two 64 px views each, through a ResNet-34 (about 1.1 s a batch).

    Attributes:
        architecture: the segmentation architecture the encoder is built for (as ``satseg:trainsegmentation``
            builds it). The encoder's weights fit every architecture, so the Processing tool does not ask.
        encoder: the encoder; the same default as training, so the file fits Train segmentation's INIT_WEIGHTS.
        bands: 1-based band subset (None: all bands but alpha, :func:`~...core.raster.model_bands`).
        patch_size: side in pixels of the crop read from the raster; both views are cut from it. A raster
            smaller than this is read in crops of its shorter side (at least :data:`MIN_PRETRAIN_CROP`).
        view_size: side in pixels of each view the encoder sees (a random sub-crop of the crop, resized).
        min_scale: least share of the crop's area a view covers (at 0.4 or more, the two views always overlap).
        batch_size: crops per batch (two views each; at least 2: the other crops are the negatives).
        epochs: epochs; the weights of the last one are written.
        batches_per_epoch: batches per epoch.
        learning_rate, weight_decay: AdamW settings; the learning rate warms up over the first 5% of the
            steps, then follows a cosine down to zero.
        temperature: NT-Xent temperature (lower: harder negatives).
        projection_dim: output size of the projection head (dropped after pretraining).
        encoder_weights: initial encoder weights, as in training: ``auto`` (ImageNet when cached or reachable,
            else random), ``none``, ``imagenet`` or the path of an encoder weights file.
        seed: seed of every random draw (runs are reproducible on the CPU).
    """

    architecture: str = TrainConfig.architecture
    encoder: str = TrainConfig.encoder
    bands: Optional[Tuple[int, ...]] = None
    patch_size: int = 96
    view_size: int = 64
    min_scale: float = 0.4
    batch_size: int = 32
    epochs: int = 10
    batches_per_epoch: int = 25
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.2
    projection_dim: int = 128
    encoder_weights: str = TrainConfig.encoder_weights
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first bad setting."""
        checks = [
            ("PATCH_SIZE", self.patch_size >= MIN_PRETRAIN_CROP, f"must be at least {MIN_PRETRAIN_CROP} pixels",
             self.patch_size),
            ("VIEW_SIZE", 32 <= self.view_size <= 4 * self.patch_size,
             f"must be 32 to 4 x PATCH_SIZE ({4 * self.patch_size}) pixels", self.view_size),
            ("MIN_SCALE", 0 < self.min_scale <= 1, "must lie in (0, 1]", self.min_scale),
            ("BATCH_SIZE", self.batch_size >= 2, "must be at least 2 (the other crops of a batch are the "
             "negatives)", self.batch_size),
            ("EPOCHS", self.epochs >= 1, "must be at least 1", self.epochs),
            ("BATCHES_PER_EPOCH", self.batches_per_epoch >= 1, "must be at least 1", self.batches_per_epoch),
            ("LEARNING_RATE", self.learning_rate > 0, "must be positive", self.learning_rate),
            ("WEIGHT_DECAY", self.weight_decay >= 0, "must be 0 or more", self.weight_decay),
            ("TEMPERATURE", 0 < self.temperature <= 10, "must lie in (0, 10]", self.temperature),
            ("PROJECTION_DIM", 1 <= self.projection_dim <= 4096, "must be 1 to 4096", self.projection_dim),
            ("ENCODER_WEIGHTS", isinstance(self.encoder_weights, str) and bool(self.encoder_weights.strip()),
             "must be auto, none, imagenet or the path of a weights file", self.encoder_weights),
        ]
        check_settings(checks, prefix="")


@dataclass(frozen=True)
class InferenceConfig:
    """Inference settings.

    Attributes:
        tile_size: tile side in pixels (0: 512, rounded up to what the models need).
        overlap: overlap between neighbouring tiles in pixels (None: a quarter of the tile).
        batch_size: tiles per forward pass (halved automatically on CUDA out-of-memory).
        weights: ensemble weight per model (None: equal); normalised to sum to 1.
        threshold: probability threshold of the mask (None: the models' own, weighted).
        tta: average the predictions of the tile and its horizontal, vertical and double flips.
        bounds: ``(xmin, ymin, xmax, ymax)`` in the raster's CRS: only predict this area.
        mask: shapely polygons in the raster's CRS: pixels outside are nodata.
        amp: mixed precision on CUDA.
        min_object_pixels: regions of the mask smaller than this many pixels take the value of their largest
            neighbour (specks vanish, small holes fill). None: the models' own (the smallest of the ensemble's;
            training stores a quarter of the smallest labelled objects' area); 0: keep every pixel as predicted.
    """

    tile_size: int = 0
    overlap: Optional[int] = None
    batch_size: int = 8
    weights: Optional[Tuple[float, ...]] = None
    threshold: Optional[float] = None
    tta: bool = False
    bounds: Optional[Tuple[float, float, float, float]] = None
    mask: object = None
    amp: bool = True
    min_object_pixels: Optional[int] = None

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first bad setting (the ensemble checks WEIGHTS per model)."""
        checks = [
            ("MIN_OBJECT_PIXELS", self.min_object_pixels is None or self.min_object_pixels >= 0,
             "must be 0 (keep every pixel) or more pixels", self.min_object_pixels),
            ("TILE_SIZE", self.tile_size >= 0, "must be 0 (512 px) or a positive number of pixels", self.tile_size),
            ("OVERLAP", self.overlap is None or self.overlap >= 0, "must be 0 or more pixels", self.overlap),
            ("BATCH_SIZE", self.batch_size >= 1, "must be at least 1", self.batch_size),
            ("THRESHOLD", self.threshold is None or 0 < self.threshold < 1, "must lie strictly between 0 and 1",
             self.threshold),
        ]
        check_settings(checks, prefix="")
