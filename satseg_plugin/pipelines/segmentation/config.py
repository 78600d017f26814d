"""Settings of building segmentation: training and tiled inference.

Only the standard library and light core modules are imported here, so the Processing provider and the dock
read the defaults without importing numpy, rasterio or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from ...core.errors import check_settings

__all__ = ["TrainConfig", "InferenceConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; defaults follow the building-segmentation competition work.

    Attributes:
        architecture: ``unet``, ``pspnet`` or ``deeplabv3plus``.
        encoder: any segmentation-models-pytorch encoder name.
        bands: 1-based band subset (None: all bands).
        patch_size: training crop size in pixels.
        batch_size: crops per batch (lowered automatically on CUDA out-of-memory).
        epochs: maximum number of epochs.
        batches_per_epoch: training batches per epoch (0: about two passes over the training area).
        learning_rate, weight_decay: Adam settings.
        step_size, gamma: StepLR schedule.
        patience: stop after this many epochs without a better validation Dice.
        val_fraction: share of the blocks held out for validation.
        block_size: side of the validation/training blocks in pixels (0: 2 x patch_size).
        positive_prob: probability that a crop is drawn around a labelled object.
        augment: apply flips, rotation, brightness/contrast jitter and to-grey.
        seed: seed of every random draw (runs are reproducible on the CPU).
        threshold: probability threshold stored with the model (binary models). None: the threshold of
            :data:`THRESHOLD_GRID` with the best Dice on the validation blocks, at the best epoch (tuned on the
            held-out blocks inside the training area, never on data the user predicts later).
        encoder_weights: initial encoder weights when ``init_weights`` is not set: ``none`` (random),
            ``imagenet`` (the encoder's published weights, cached, downloaded once), ``auto`` (``imagenet`` when
            cached or reachable, else ``none``) or the path of a ``.safetensors``/``.pth`` encoder state dict.
        init_weights: optional SatSeg model file to start from: a segmentation model (same architecture, encoder
            and bands: every weight), or a ClusterNet / scene classifier with the same encoder and bands (the
            encoder's weights).
        max_val_tiles: cap on validation tiles (evenly spread) so validation stays fast.
    """

    architecture: str = "unet"
    encoder: str = "resnet34"
    bands: Optional[Tuple[int, ...]] = None
    patch_size: int = 224
    batch_size: int = 32
    epochs: int = 100
    batches_per_epoch: int = 0
    learning_rate: float = 1e-3
    weight_decay: float = 1e-3
    step_size: int = 10
    gamma: float = 0.1
    patience: int = 5
    val_fraction: float = 0.2
    block_size: int = 0
    positive_prob: float = 0.7
    augment: bool = True
    seed: int = 0
    threshold: Optional[float] = None
    encoder_weights: str = "auto"
    init_weights: Optional[str] = None
    max_val_tiles: int = 64

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
            ("THRESHOLD", self.threshold is None or 0 < self.threshold < 1, "must lie strictly between 0 and 1",
             self.threshold),
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

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first bad setting (the ensemble checks WEIGHTS per model)."""
        checks = [
            ("TILE_SIZE", self.tile_size >= 0, "must be 0 (512 px) or a positive number of pixels", self.tile_size),
            ("OVERLAP", self.overlap is None or self.overlap >= 0, "must be 0 or more pixels", self.overlap),
            ("BATCH_SIZE", self.batch_size >= 1, "must be at least 1", self.batch_size),
            ("THRESHOLD", self.threshold is None or 0 < self.threshold < 1, "must lie strictly between 0 and 1",
             self.threshold),
        ]
        check_settings(checks, prefix="")
