"""Settings of population tracking: optical flow and communities.

Only the standard library and light core modules are imported here, so the Processing provider and the dock
read the defaults without importing numpy, rasterio or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from ...core.errors import check_settings

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
        checks = (("ALPHA", self.alpha > 0, "a positive number", self.alpha),
                  ("ITERATIONS", self.iterations >= 1, "at least 1", self.iterations),
                  ("TOLERANCE", self.tolerance >= 0, "zero or positive", self.tolerance),
                  ("PYRAMID_LEVELS", 1 <= self.pyramid_levels <= 10, "between 1 and 10", self.pyramid_levels),
                  ("SOLVER", self.solver in SOLVERS, f"one of: {', '.join(SOLVERS)}", repr(self.solver)))
        check_settings(checks)


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
        checks = (("WINDOW", self.window >= 3 and self.window % 2 == 1, "an odd number of pixels, at least 3",
                   self.window),
                  ("LATENT", self.latent >= 1, "at least 1", self.latent),
                  ("HIDDEN", len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden),
                   "one or more positive layer widths", tuple(self.hidden)),
                  ("EPOCHS", self.epochs >= 1, "at least 1", self.epochs),
                  ("CENTRES_PER_EPOCH", self.centres_per_epoch >= 1, "at least 1", self.centres_per_epoch),
                  ("BATCH_SIZE", self.batch_size >= 1, "at least 1", self.batch_size),
                  ("LEARNING_RATE", self.learning_rate > 0, "positive", self.learning_rate),
                  ("HOLDOUT", self.holdout >= 1, "at least 1", self.holdout),
                  ("CLIP_QUANTILE", 0.5 < self.clip_quantile <= 1.0, "above 0.5 and at most 1 (1: no clipping)",
                   self.clip_quantile),
                  ("POP_MIN", self.pop_min >= 0, "zero or positive", self.pop_min),
                  ("K", self.k >= 2, "at least 2", self.k),
                  ("K_MIN", self.k_min >= 2, "at least 2", self.k_min),
                  ("K_MAX", self.k_max >= self.k_min, "at least K_MIN", self.k_max),
                  ("SILHOUETTE_SAMPLE", self.silhouette_sample >= 3, "at least 3", self.silhouette_sample),
                  ("EPS", self.eps > 0, "a positive number of pixels", self.eps),
                  ("MIN_SAMPLES", self.min_samples >= 1, "at least 1", self.min_samples),
                  ("TILE_PIXELS", self.tile_pixels >= 1, "at least 1", self.tile_pixels))
        check_settings(checks)
