"""Settings of scene clustering: the mean-teacher classifier and DeepCluster.

Only the standard library and light core modules are imported here, so the Processing provider and the dock
read the defaults without importing numpy, rasterio or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from ....core.errors import check_settings

__all__ = ["SceneTrainConfig", "DeepClusterConfig"]


@dataclass(frozen=True)
class SceneTrainConfig:
    """Scene-classifier training settings (defaults follow siCluster's mean-teacher pretraining).

    Attributes:
        epochs: passes over the training patches.
        batch_size: patches per batch (at least 2: batch normalisation needs two samples).
        learning_rate: RAdam learning rate.
        ema_decay: teacher = ``ema_decay * teacher + (1 - ema_decay) * student`` after each step (the decay
            is warmed up as ``min(ema_decay, 1 - 1 / (step + 1))``, so early teachers are plain averages).
        consistency_weight: weight of the student-teacher consistency loss after the ramp-up.
        rampup_epochs: epochs over which that weight rises as ``exp(-5 (1 - t)^2)`` (0: full weight at once).
        val_fraction: share of the labelled patches of each class held out for validation (0: none; the last
            teacher is kept).
        lookahead: wrap RAdam in Lookahead (k = 5, alpha = 0.5), the "Ranger" optimiser of the original.
        augment: random flips, 90-degree rotations, brightness/contrast jitter and to-grey.
        seed: seed of the split, the initial weights and every random draw.
        init_weights: a SatSeg scene model file to start from (loaded strictly; its head is kept when it has
            as many classes, otherwise only its backbone is used).
        bands: 1-based band subset of the patch files (None: all bands but alpha).
    """

    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    ema_decay: float = 0.999
    consistency_weight: float = 12.5
    rampup_epochs: int = 20
    val_fraction: float = 0.2
    lookahead: bool = True
    augment: bool = True
    seed: int = 0
    init_weights: Optional[str] = None
    bands: Optional[Tuple[int, ...]] = None

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first bad setting."""
        checks = (("EPOCHS", self.epochs >= 1, "at least 1", self.epochs),
                  ("BATCH_SIZE", self.batch_size >= 2, "at least 2", self.batch_size),
                  ("LEARNING_RATE", self.learning_rate > 0, "positive", self.learning_rate),
                  ("EMA_DECAY", 0 <= self.ema_decay < 1, "in [0, 1)", self.ema_decay),
                  ("CONSISTENCY_WEIGHT", self.consistency_weight >= 0, "0 or more", self.consistency_weight),
                  ("RAMPUP_EPOCHS", self.rampup_epochs >= 0, "0 or more", self.rampup_epochs),
                  ("VAL_FRACTION", 0 <= self.val_fraction < 1, "in [0, 1)", self.val_fraction))
        check_settings(checks)


@dataclass(frozen=True)
class DeepClusterConfig:
    """DeepCluster settings.

    Attributes:
        k: pseudo-classes of the k-means that trains the network (capped by the group's patch count).
        epochs: DeepCluster epochs per group (0: no training, the pretrained features are clustered).
        pca_dim: whitened dimension before k-means (capped by the group's patch count - 1 and 512). Keep it
            well below the number of patches of a group: whitening n patches in n - 1 dimensions makes them
            all equally far apart, and the clusters vanish.
        k_min: smallest number of clusters scored by the silhouette.
        k_max: largest number of clusters scored (below the patch count of every group).
        sample: score the silhouette on a seeded subset of this many patches per group (None: all; exact).
        batch_size: patches per training batch (at least 2).
        learning_rate: RAdam learning rate.
        kmeans_iterations: faiss k-means iterations.
        seed: seed of every random draw.
    """

    k: int = 50
    epochs: int = 5
    pca_dim: int = 256
    k_min: int = 2
    k_max: int = 20
    sample: Optional[int] = None
    batch_size: int = 32
    learning_rate: float = 1e-3
    kmeans_iterations: int = 20
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first bad setting."""
        checks = (("K", self.k >= 2, "at least 2", self.k),
                  ("EPOCHS", self.epochs >= 0, "0 or more", self.epochs),
                  ("PCA_DIM", self.pca_dim >= 1, "at least 1", self.pca_dim),
                  ("K_MIN", self.k_min >= 2, "at least 2 (the silhouette needs two clusters)", self.k_min),
                  ("K_MAX", self.k_max >= self.k_min, f"at least K_MIN ({self.k_min})", self.k_max),
                  ("SAMPLE", self.sample is None or self.sample > self.k_max, f"more than K_MAX ({self.k_max})",
                   self.sample),
                  ("BATCH_SIZE", self.batch_size >= 2, "at least 2", self.batch_size),
                  ("LEARNING_RATE", self.learning_rate > 0, "positive", self.learning_rate),
                  ("KMEANS_ITERATIONS", self.kmeans_iterations >= 1, "at least 1", self.kmeans_iterations))
        check_settings(checks)
