"""A time series of population-count rasters on one pixel grid: loading, checks and alignment.

Population frames (GPWv4-like counts per ~1 km cell) are coarse grids of a few million pixels, so each
frame is held in memory as a float32 array in which NaN marks nodata: the raster's nodata value, NaN
"sea" pixels and non-finite values all become NaN. :func:`load_frames` refuses what the population
pipeline cannot use (fewer than two frames, frames in different CRSs, an all-nodata frame, negative
counts, frames too large to hold) with a message naming the FRAMES parameter, and brings frames on a
different grid of the same CRS onto the first frame's grid.

Resampling keeps population totals: a frame on another grid is turned into population *density*
(count / pixel area), resampled with GDAL's area-weighted ``average`` (nodata ignored), and turned back
into counts with the first frame's pixel area. Totals are therefore kept up to what falls outside the first
frame's extent (a count-preserving ``sum`` resampling would double-count when upsampling).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject

from ...core.errors import InputError
from ...core.progress import Feedback, NullFeedback, track
from ...core.raster import Grid, check_georeferencing, crs_text, open_raster, pixel_window, raster_env, same_grid

__all__ = ["MAX_FRAME_PIXELS", "FrameSeries", "load_frames", "frame_on_grid"]

#: Largest frame (width x height) held in memory; a GPWv4 frame of a country is a few million pixels.
MAX_FRAME_PIXELS = 50_000_000


@dataclass
class FrameSeries:
    """Population frames on one grid, in time order.

    Attributes:
        arrays: one ``(height, width)`` float32 array per frame; NaN = nodata.
        names: one name per frame (the file name without extension, made unique).
        crs: the common CRS (a ``rasterio.crs.CRS``, or None when the frames have none).
        transform: the common affine geotransform (the first frame's).
        width: columns of every frame.
        height: rows of every frame.
    """

    arrays: List[np.ndarray]
    names: List[str]
    crs: Any
    transform: Affine
    width: int
    height: int

    def __len__(self) -> int:
        return len(self.arrays)

    @property
    def grid(self) -> Grid:
        """The frames' pixel grid (CRS, transform, size)."""
        return Grid(self.crs, self.transform, self.width, self.height)

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in squared map units (the absolute determinant of the transform)."""
        return abs(self.transform.determinant)

    def nodata_mask(self, *indices: int) -> np.ndarray:
        """Boolean ``(height, width)`` mask of pixels that are nodata in any of the frames ``indices``
        (all frames when none are given)."""
        chosen = indices or tuple(range(len(self.arrays)))
        mask = np.zeros((self.height, self.width), bool)
        for i in chosen:
            mask |= np.isnan(self.arrays[i])
        return mask


def _unique_names(paths: Sequence[str]) -> List[str]:
    names: List[str] = []
    for path in paths:
        stem = os.path.splitext(os.path.basename(str(path).rstrip("/\\")))[0] or "frame"
        name, n = stem, 2
        while name in names:
            name, n = f"{stem}_{n}", n + 1
        names.append(name)
    return names


def _read_band(src: rasterio.DatasetReader, band: int) -> np.ndarray:
    """Band ``band`` as float32 with every masked (nodata / mask band) and non-finite pixel set to NaN."""
    data = src.read(band, masked=True)
    values = np.asarray(data.data, dtype=np.float32)
    mask = np.ma.getmaskarray(data) | ~np.isfinite(values)
    values[mask] = np.nan
    return values


def _resample(values: np.ndarray, src: rasterio.DatasetReader, transform: Affine, width: int,
              height: int) -> np.ndarray:
    """Resample counts onto another grid of the same CRS, keeping totals (see the module docstring)."""
    density = values / np.float32(abs(src.transform.determinant))
    out = np.full((height, width), np.nan, np.float32)
    reproject(density, out, src_transform=src.transform, src_crs=src.crs, src_nodata=np.nan,
              dst_transform=transform, dst_crs=src.crs, dst_nodata=np.nan, resampling=Resampling.average)
    out *= np.float32(abs(transform.determinant))
    return out


def _check_size(name: str, width: int, height: int, parameter: str) -> None:
    if width * height > MAX_FRAME_PIXELS:
        raise InputError(f"frame '{name}' has {width} x {height} = {width * height:,} pixels, more than the "
                         f"{MAX_FRAME_PIXELS:,} SatSeg holds in memory per frame. Clip the frames to the study area "
                         "or resample them to coarser pixels first.", parameter)


def load_frames(paths: Sequence[str], feedback: Optional[Feedback] = None, parameter: str = "FRAMES",
                band: int = 1, band_parameter: str = "BAND") -> FrameSeries:
    """Read population-count rasters into one :class:`FrameSeries` on the first frame's grid.

    Args:
        paths: the rasters, in time order (at least two).
        feedback: progress, cancel and warnings (a warning when a frame is resampled or has several bands).
        parameter: the Processing parameter that listed ``paths``, named in error messages.
        band: the 1-based band read from every frame.
        band_parameter: the Processing parameter that gave ``band``.

    Returns:
        The frames as float32 arrays with NaN for nodata, on the first frame's grid and CRS.

    Raises:
        InputError: for fewer than two frames, a missing band, frames in different CRSs or that do not
            overlap the first frame, a frame larger than :data:`MAX_FRAME_PIXELS`, an all-nodata frame, or
            negative population counts (values equal to the nodata value are nodata, not negative).
        CanceledError: when the user cancels between frames.
    """
    feedback = feedback or NullFeedback()
    paths = [str(p) for p in paths]
    if len(paths) < 2:
        raise InputError(f"{len(paths)} frame(s) given; tracking population needs at least two rasters of the "
                         "same area at different times (e.g. GPWv4 2000, 2005, ..., 2020), listed in time order.",
                         parameter)
    names = _unique_names(paths)
    arrays: List[np.ndarray] = []
    crs: Any = None
    transform = Affine.identity()
    width = height = 0
    with raster_env():
        for i in track(range(len(paths)), feedback):
            path, name = paths[i], names[i]
            with open_raster(path, parameter) as src:
                check_georeferencing(src, feedback if i == 0 else NullFeedback(), parameter)
                _check_size(name, src.width, src.height, parameter)
                if not 1 <= band <= src.count:
                    raise InputError(f"band {band} does not exist in frame '{name}', which has {src.count} "
                                     "band(s).", band_parameter)
                if src.count > 1:
                    feedback.warning(f"Frame '{name}' has {src.count} bands; band {band} is read as the "
                                     "population count.")
                if i == 0:
                    crs, transform, width, height = src.crs, src.transform, src.width, src.height
                elif src.crs != crs:
                    raise InputError(f"frame '{name}' is in {crs_text(src.crs)} but the first frame "
                                     f"'{names[0]}' is in {crs_text(crs)}. Reproject the frames to one CRS "
                                     "(Raster > Projections > Warp) and run again.", parameter)
                values = _read_band(src, band)
                _check_values(values, name, parameter)
                if i > 0 and not same_grid(Grid.of(src), Grid(crs, transform, width, height)):
                    values = _align(values, src, transform, width, height, name, names[0], parameter, feedback)
            arrays.append(values)
    return FrameSeries(arrays, names, crs, transform, width, height)


def frame_on_grid(paths: Sequence[str], index: int, band: int = 1, parameter: str = "FRAMES") -> np.ndarray:
    """Frame ``index`` of ``paths`` exactly as :func:`load_frames` gives it (on the first frame's grid), reading
    only that frame and the first frame's grid: what a distributed work unit of the population tools reads.

    The checks and warnings are :func:`load_frames`', which the run's client has made on the whole series.
    """
    with raster_env():
        with open_raster(paths[0], parameter) as first:
            grid = Grid.of(first)
        with open_raster(paths[index], parameter) as src:
            values = _read_band(src, band)
            if index > 0 and not same_grid(Grid.of(src), grid):
                values = _resample(values, src, grid.transform, grid.width, grid.height)
    return values


def _check_values(values: np.ndarray, name: str, parameter: str) -> None:
    valid = ~np.isnan(values)
    if not valid.any():
        raise InputError(f"frame '{name}' holds only nodata pixels. Check the frame, its nodata value and the "
                         "band, or leave the frame out.", parameter)
    negative = int(np.count_nonzero(values[valid] < 0))
    if negative:
        low = float(np.nanmin(values))
        raise InputError(f"frame '{name}' has {negative:,} pixel(s) with a negative population (lowest {low:g}). "
                         "Population counts cannot be negative: if such values mark missing data, set the "
                         "raster's nodata value to that value (Raster > Conversion > Translate, 'Assign a "
                         "specified nodata value'); otherwise correct the frame.", parameter)


def _align(values: np.ndarray, src: rasterio.DatasetReader, transform: Affine, width: int, height: int,
           name: str, first: str, parameter: str, feedback: Feedback) -> np.ndarray:
    """Resample a frame of another grid onto the first frame's grid, or refuse one that does not overlap it."""
    if pixel_window(transform, tuple(src.bounds), width, height) is None:
        raise InputError(f"frame '{name}' does not overlap the first frame '{first}'. Give frames of the same "
                         "area.", parameter)
    before = float(np.nansum(values, dtype=np.float64))
    out = _resample(values, src, transform, width, height)
    if np.isnan(out).all():
        raise InputError(f"frame '{name}' has no data inside the first frame '{first}'. Give frames of the "
                         "same area.", parameter)
    after = float(np.nansum(out, dtype=np.float64))
    res = (math.hypot(src.transform.a, src.transform.d), math.hypot(src.transform.b, src.transform.e))
    feedback.warning(f"Frame '{name}' ({src.width} x {src.height} px of {res[0]:g} x {res[1]:g}) is not on the "
                     f"grid of the first frame '{first}' ({width} x {height} px); it was resampled onto that grid "
                     f"as population density with area-weighted averaging (total population {before:,.0f} "
                     f"before, {after:,.0f} after, inside the first frame). Give frames on one grid to avoid "
                     "resampling.")
    return out
