"""Settings of patching.

Only the standard library and light core modules are imported here, so the Processing provider and the dock
read the defaults without importing numpy, rasterio or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

from ...core.errors import InputError
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
        for name, value in (("PATCH_WIDTH", self.patch_width), ("PATCH_HEIGHT", self.patch_height)):
            if int(value) <= 0:
                raise InputError(f"patch size must be at least 1 pixel, got {value}.", name)
        for name, value in (("STRIDE_X", self.stride_x), ("STRIDE_Y", self.stride_y)):
            if value is not None and int(value) <= 0:
                raise InputError(f"stride must be a positive number of pixels, got {value}. Use the patch "
                                 "size for touching patches, less for overlapping ones.", name)
        if self.edge not in EDGE_MODES:
            raise InputError(f"unknown edge mode '{self.edge}'; choose one of {', '.join(EDGE_MODES)}.", "EDGE")
        if not 0.0 <= self.max_nodata_fraction <= 1.0:
            raise InputError(f"must lie between 0 and 1, got {self.max_nodata_fraction}.", "MAX_NODATA_FRACTION")
        if self.sample_count < 0:
            raise InputError(f"must be 0 (all patches) or a positive count, got {self.sample_count}.", "SAMPLE_COUNT")
        if self.workers < 1:
            raise InputError(f"need at least one worker thread, got {self.workers}.")
