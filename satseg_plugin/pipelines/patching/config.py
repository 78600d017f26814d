"""Settings of patching.

Only the standard library and light core modules are imported here, so the Processing provider and the dock
read the defaults without importing numpy, rasterio or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

from ...core.errors import check_settings
from ...core.grid import EDGE_MODES

__all__ = ["PatchConfig"]


@dataclass(frozen=True)
class PatchConfig:
    """What :func:`write_patches` does. Sizes are in pixels; ``bounds`` and ``mask`` in the raster's CRS.

    Attributes:
        patch_width: patch width.
        patch_height: patch height.
        stride_x: step between patch columns (None: ``patch_width``, touching patches).
        stride_y: step between patch rows (None: ``patch_height``).
        edge: ``shift`` (last patch moved inward), ``pad`` (padded with nodata) or ``drop``.
        bands: 1-based band subset in output order (None: all).
        max_nodata_fraction: skip patches whose in-raster pixels hold more nodata than this (0..1).
        sample_count: keep only this many patches, drawn at random among the valid ones (0: all).
        seed: seed of that random draw.
        bounds: ``(xmin, ymin, xmax, ymax)``: only patch this area.
        mask: a shapely (multi)polygon: only patches that intersect it.
        overwrite: replace an earlier SatSeg patch folder.
        compress: GeoTIFF compression.
        prefix: file name prefix (None: the source file's stem).
        workers: threads reading and compressing patches.
    """

    patch_width: int = 512
    patch_height: int = 512
    stride_x: Optional[int] = None
    stride_y: Optional[int] = None
    edge: str = "shift"
    bands: Optional[Tuple[int, ...]] = None
    max_nodata_fraction: float = 0.01
    sample_count: int = 0
    seed: int = 0
    bounds: Optional[Tuple[float, float, float, float]] = None
    mask: Any = None
    overwrite: bool = False
    compress: str = "DEFLATE"
    prefix: Optional[str] = None
    workers: int = 2

    @property
    def stride(self) -> Tuple[int, int]:
        """``(stride_x, stride_y)`` with the defaults filled in."""
        return (self.stride_x or self.patch_width, self.stride_y or self.patch_height)

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first bad parameter."""
        stride = "stride must be a positive number of pixels. Use the patch size for touching patches, less for "\
            "overlapping ones"
        checks = (("PATCH_WIDTH", self.patch_width >= 1, "patch size must be at least 1 pixel", self.patch_width),
                  ("PATCH_HEIGHT", self.patch_height >= 1, "patch size must be at least 1 pixel", self.patch_height),
                  ("STRIDE_X", self.stride_x is None or self.stride_x >= 1, stride, self.stride_x),
                  ("STRIDE_Y", self.stride_y is None or self.stride_y >= 1, stride, self.stride_y),
                  ("EDGE", self.edge in EDGE_MODES, f"must be one of {', '.join(EDGE_MODES)}", repr(self.edge)),
                  ("MAX_NODATA_FRACTION", 0.0 <= self.max_nodata_fraction <= 1.0, "must lie between 0 and 1",
                   self.max_nodata_fraction),
                  ("SAMPLE_COUNT", self.sample_count >= 0, "must be 0 (all patches) or a positive count",
                   self.sample_count),
                  ("WORKERS", self.workers >= 1, "needs at least one worker thread", self.workers))
        check_settings(checks, prefix="")
