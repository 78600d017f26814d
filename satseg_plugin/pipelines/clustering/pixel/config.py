"""Settings of pixel clustering: ClusterNet training and the cluster raster.

Only the standard library and light core modules are imported here, so the Processing provider and the dock
read the defaults without importing numpy, rasterio or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from ....core.errors import check_settings

__all__ = ["ClusterNetConfig", "ClusterMapConfig"]


@dataclass(frozen=True)
class ClusterNetConfig:
    """ClusterNet training settings.

    Attributes:
        architecture: backbone architecture (``unet``, ``deeplabv3plus``, ...; must keep the input size).
        encoder: smp encoder name (random initialisation).
        bands: 1-based band subset (None: all bands of the first raster but alpha).
        feature_dim: per-pixel feature channels D.
        num_clusters: k of the k-means and the head's outputs.
        rounds: DeepCluster rounds (k-means + training).
        steps_per_round: training batches per round.
        batch_size: crops per batch.
        patch_size: crop side in pixels (a multiple of 32 for U-Net).
        crops_per_round: crops whose pixels are clustered and trained on in a round.
        sample_pixels: pixels sampled from those crops for k-means.
        whiten: PCA-whiten the features before k-means.
        normalize: L2-normalise the features (after whitening) before k-means.
        kmeans_iterations: faiss k-means iterations.
        learning_rate: Adam learning rate.
        balance: weight the cross-entropy by inverse cluster size, so one huge cluster cannot dominate.
        band_share: share of the feature variance carried by the pixel's own normalised bands.
        bootstrap: take the first round's pseudo-labels from k-means on the normalised bands themselves
            instead of the random network's features (which mostly cluster noise; see the README).
        seed: seed of every random draw.
    """

    architecture: str = "unet"
    encoder: str = "resnet18"
    bands: Optional[Tuple[int, ...]] = None
    feature_dim: int = 32
    num_clusters: int = 20
    rounds: int = 10
    steps_per_round: int = 20
    batch_size: int = 8
    patch_size: int = 128
    crops_per_round: int = 48
    sample_pixels: int = 100_000
    whiten: bool = False
    normalize: bool = True
    kmeans_iterations: int = 20
    learning_rate: float = 1e-4
    balance: bool = True
    band_share: float = 0.8
    bootstrap: bool = True
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first bad setting."""
        checks = (("FEATURE_DIM", self.feature_dim >= 2, "at least 2", self.feature_dim),
                  ("NUM_CLUSTERS", self.num_clusters >= 2, "at least 2", self.num_clusters),
                  ("ROUNDS", self.rounds >= 1, "at least 1", self.rounds),
                  ("STEPS_PER_ROUND", self.steps_per_round >= 1, "at least 1", self.steps_per_round),
                  ("BATCH_SIZE", self.batch_size >= 1, "at least 1", self.batch_size),
                  ("PATCH_SIZE", self.patch_size >= 32, "at least 32", self.patch_size),
                  ("CROPS_PER_ROUND", self.crops_per_round >= 1, "at least 1", self.crops_per_round),
                  ("SAMPLE_PIXELS", self.sample_pixels >= self.num_clusters, "at least NUM_CLUSTERS",
                   self.sample_pixels),
                  ("KMEANS_ITERATIONS", self.kmeans_iterations >= 1, "at least 1", self.kmeans_iterations),
                  ("LEARNING_RATE", self.learning_rate > 0, "positive", self.learning_rate),
                  ("BAND_SHARE", 0 <= self.band_share < 1, "at least 0 and less than 1", self.band_share))
        check_settings(checks)


@dataclass(frozen=True)
class ClusterMapConfig:
    """Cluster-raster settings.

    Attributes:
        tile_size: tile side in pixels (rounded up to what the network needs).
        overlap: overlap of neighbouring tiles (None: a quarter of the tile); each side keeps half of it.
        batch_size: tiles per forward pass (halved on CUDA out-of-memory).
        bounds: ``(xmin, ymin, xmax, ymax)`` in the raster's CRS: only this area.
        mask: shapely geometry in the raster's CRS: pixels outside become nodata.
        amp: mixed precision on CUDA.
    """

    tile_size: int = 512
    overlap: Optional[int] = None
    batch_size: int = 4
    bounds: Optional[Tuple[float, float, float, float]] = None
    mask: object = None
    amp: bool = True

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first bad setting."""
        checks = (("TILE_SIZE", self.tile_size >= 0, "0 (512 px) or a positive number of pixels", self.tile_size),
                  ("OVERLAP", self.overlap is None or self.overlap >= 0, "0 or more pixels", self.overlap),
                  ("BATCH_SIZE", self.batch_size >= 1, "at least 1", self.batch_size))
        check_settings(checks)
