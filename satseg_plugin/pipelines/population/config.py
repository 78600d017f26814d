"""Settings of population tracking: optical flow and communities.

Only the standard library and light core modules are imported here, so the Processing provider and the dock
read the defaults without importing numpy, rasterio or torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

from ...core.errors import InputError, check_settings

__all__ = ["SOLVERS", "FlowConfig", "CommunityConfig"]


#: Values of :attr:`FlowConfig.solver`.
SOLVERS: Tuple[str, ...] = ("cg", "jacobi")


@dataclass(frozen=True)
class FlowConfig:
    """Settings of :func:`horn_schunck`.

    Attributes:
        alpha: smoothness weight (ALPHA), in 8-bit grey levels of the jointly scaled frames; larger values
            give smoother flow.
        iterations: most Jacobi iterations per pyramid level (ITERATIONS).
        tolerance: stop when the mean absolute change of ``(u, v)`` in one iteration is below this many
            pixels (TOLERANCE).
        pyramid_levels: 1 = plain Horn–Schunck; ``n > 1`` = coarse-to-fine over ``n`` levels halving the
            resolution, for motions of more than a few pixels per frame.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        solver: ``cg`` (default): preconditioned conjugate gradients on the Horn–Schunck equations;
            ``jacobi``: Horn & Schunck's own Jacobi update. Both converge to the same flow; Jacobi needs
            tens of times more iterations, and its per-iteration change falls below TOLERANCE long before
            it has converged (see ``_ConjugateGradientStep``).
    """

    alpha: float = 10.0
    iterations: int = 500
    tolerance: float = 1e-3
    pyramid_levels: int = 1
    device: str = "auto"
    solver: str = "cg"

    def validate(self) -> None:
        """Raise :class:`InputError` naming the Processing parameter of an unusable value."""
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise InputError(f"must be a positive number, got {self.alpha}.", "ALPHA")
        if int(self.iterations) < 1:
            raise InputError(f"must be at least 1, got {self.iterations}.", "ITERATIONS")
        if not self.tolerance >= 0:
            raise InputError(f"must be zero or positive, got {self.tolerance}.", "TOLERANCE")
        if not 1 <= int(self.pyramid_levels) <= 10:
            raise InputError(f"must be between 1 and 10, got {self.pyramid_levels}.", "PYRAMID_LEVELS")
        if self.solver not in SOLVERS:
            raise InputError(f"unknown solver '{self.solver}'; use one of: {', '.join(SOLVERS)}.", "SOLVER")


@dataclass(frozen=True)
class CommunityConfig:
    """Settings of :func:`frame_communities`.

    Attributes:
        window: side of the autoencoder's window in pixels (odd, >= 3).
        latent: size of the per-pixel code.
        hidden: widths of the autoencoder's hidden layers (the decoder mirrors them).
        epochs: training epochs; each draws ``centres_per_epoch`` fresh random window centres.
        centres_per_epoch: window centres per epoch.
        batch_size: windows per optimiser step.
        learning_rate: Adam learning rate (constant). 3e-3 rather than the original's 1e-3: on a synthetic
            256 x 192 frame (200 epochs, batch 100, two seeds) the held-out MSE fell from 1.7e-3 to 1.2e-3 at
            the same cost; cosine decay and batches of 200-250 were worse, batches of 32-50 better but 2-3x
            slower.
        holdout: centres kept out of training to measure the reconstruction MSE (at most a fifth of the
            populated pixels).
        clip_quantile: population, u and v are clipped to their ``[1 - q, q]`` quantiles on the frame's valid
            pixels before min-max scaling, so a few extreme cities or flow spikes do not squeeze every other
            pixel into a sliver of ``[0, 1]`` (1.0: plain min-max). 0.999 clips the top 0.1 %.
        pop_min: only pixels with population strictly above this are clustered.
        k: k-means clusters.
        k_min, k_max: range of the optional k report (inertia and silhouette per k).
        silhouette_sample: codes scored by the silhouette of the k report (the exact silhouette is O(n^2):
            0.8 s per k for 10,000 codes on 2 CPU cores, 2-3 s for 20,000).
        eps: DBSCAN radius in pixels (Euclidean, inclusive: a pixel at exactly ``eps`` is a neighbour).
        min_samples: DBSCAN core threshold: pixels of the same k-means label within ``eps``, itself included.
        tile_pixels: pixels encoded per strip (memory: ``5 * window^2 * 4`` bytes each, 64 MB at the default).
        seed: seed of every random draw (centres, weights, k-means).
        device: torch device of the autoencoder: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
    """

    window: int = 7
    latent: int = 16
    hidden: Tuple[int, ...] = (128, 64)
    epochs: int = 200
    centres_per_epoch: int = 1000
    batch_size: int = 100
    learning_rate: float = 3e-3
    holdout: int = 1000
    clip_quantile: float = 0.999
    pop_min: float = 0.0
    k: int = 10
    k_min: int = 2
    k_max: int = 15
    silhouette_sample: int = 10000
    eps: float = 10.0
    min_samples: int = 50
    tile_pixels: int = 65536
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first bad setting."""
        checks = (("WINDOW", self.window >= 3 and self.window % 2 == 1, "an odd number of pixels, at least 3"),
                  ("LATENT", self.latent >= 1, "at least 1"),
                  ("HIDDEN", len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden),
                   "one or more positive layer widths"),
                  ("EPOCHS", self.epochs >= 1, "at least 1"),
                  ("CENTRES_PER_EPOCH", self.centres_per_epoch >= 1, "at least 1"),
                  ("BATCH_SIZE", self.batch_size >= 1, "at least 1"),
                  ("LEARNING_RATE", math.isfinite(self.learning_rate) and self.learning_rate > 0, "positive"),
                  ("HOLDOUT", self.holdout >= 1, "at least 1"),
                  ("CLIP_QUANTILE", 0.5 < self.clip_quantile <= 1.0, "above 0.5 and at most 1 (1: no clipping)"),
                  ("POP_MIN", math.isfinite(self.pop_min) and self.pop_min >= 0, "zero or positive"),
                  ("K", self.k >= 2, "at least 2"),
                  ("K_MIN", self.k_min >= 2, "at least 2"),
                  ("K_MAX", self.k_max >= self.k_min, "at least K_MIN"),
                  ("SILHOUETTE_SAMPLE", self.silhouette_sample >= 3, "at least 3"),
                  ("EPS", math.isfinite(self.eps) and self.eps > 0, "a positive number of pixels"),
                  ("MIN_SAMPLES", self.min_samples >= 1, "at least 1"),
                  ("TILE_PIXELS", self.tile_pixels >= 1, "at least 1"))
        check_settings(checks)
