"""Raster access shared by every pipeline: opening with clear errors, georeferencing checks,
nodata masks and GeoTIFF creation options.

rasterio does the IO; this module only adds the checks and defaults SatSeg applies everywhere.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import rasterio
from affine import Affine, TransformNotInvertibleError
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.windows import Window

from .errors import InputError
from .progress import Feedback

__all__ = [
    "crs_units",
    "check_geotiff_name",
    "overview_factors",
    "bounds_region",
    "check_model_fits",
    "open_raster",
    "check_georeferencing",
    "resolve_bands",
    "model_bands",
    "nodata_pixels",
    "nodata_flags",
    "geotiff_profile",
    "copy_band_metadata",
    "window_footprint",
    "pixel_bounds",
    "pixel_window",
    "raster_env",
    "CACHE_BYTES",
    "THREADED_GTIFF_GDAL",
    "GRID_TOLERANCE",
    "crs_text",
    "Grid",
    "grid_offset",
    "same_grid",
    "require_same_grid",
]

# GDAL's block cache defaults to 5 % of RAM; cap it so streaming keeps a small, size-independent footprint.
# GDAL_NUM_THREADS stays 1: SatSeg parallelises with its own threads and torch, and GDAL 3.6.2's
# multi-threaded GTiff decoding was seen to deadlock (CPLJobQueue::WaitCompletion) inside a QGIS process.
# GDAL_CACHEMAX is given in bytes: rasterio hands an int to GDALSetCacheMax, so "256" meant 256 bytes, which
# disabled the cache and made reader threads flush other threads' dirty blocks (a deadlock in patching).
CACHE_BYTES = 256 * 2**20
_GDAL_ENV = {"GDAL_CACHEMAX": CACHE_BYTES, "GDAL_NUM_THREADS": 1, "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}


def raster_env(**options: Any) -> rasterio.Env:
    """A ``rasterio.Env`` with SatSeg's GDAL settings (bounded block cache) plus ``options``."""
    return rasterio.Env(**{**_GDAL_ENV, **options})


def open_raster(path: str, parameter: str = "INPUT") -> rasterio.DatasetReader:
    """Open a raster for reading, or raise an :class:`InputError` that names the parameter.

    Args:
        path: a file path or GDAL dataset name.
        parameter: the Processing parameter that gave ``path``.
    """
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"cannot read raster '{path}' ({exc}). Check that the file exists, is a raster "
                         "GDAL can open, and is readable.", parameter) from exc


def check_georeferencing(src: rasterio.DatasetReader, feedback: Feedback, parameter: str = "INPUT") -> None:
    """Refuse rasters whose pixels cannot be placed by an affine transform; warn when the CRS is missing.

    Any affine geotransform is supported (north-up, south-up, rotated): outputs compose it exactly.
    """
    has_transform = src.transform != Affine.identity()
    if not has_transform and src.gcps[0]:
        raise InputError("the raster is georeferenced by ground control points only, which SatSeg cannot "
                         "carry onto its outputs exactly. Warp it first (Raster > Projections > Warp, or "
                         "gdalwarp) and use the warped raster.", parameter)
    if src.crs is None:
        feedback.warning("The input raster has no CRS: outputs will carry its geotransform but no CRS. "
                         "Assign one (Raster > Projections > Assign Projection) to place them on a map.")
    if not has_transform:
        feedback.warning("The input raster has no geotransform: outputs are placed in pixel coordinates.")
    if abs(src.transform.determinant) == 0:
        raise InputError("the raster's geotransform is degenerate (zero pixel size).", parameter)


def resolve_bands(src: rasterio.DatasetReader, bands: Optional[Sequence[int]], parameter: str = "BANDS") -> Tuple[int, ...]:
    """Validate a 1-based band subset (order kept); ``None`` or empty means all bands."""
    if not bands:
        return tuple(range(1, src.count + 1))
    out = tuple(int(b) for b in bands)
    bad = [b for b in out if not 1 <= b <= src.count]
    if bad:
        raise InputError(f"band(s) {bad} do not exist; the raster has bands 1..{src.count}.", parameter)
    if len(set(out)) != len(out):
        raise InputError(f"band list {list(out)} repeats a band; list each band once.", parameter)
    return out


def model_bands(src: rasterio.DatasetReader, bands: Optional[Sequence[int]], parameter: str = "BANDS",
                feedback: Optional[Feedback] = None) -> Tuple[int, ...]:
    """The bands a model reads: :func:`resolve_bands`, except that an empty choice leaves out alpha bands.

    An alpha band is transparency, not imagery: a drone orthophoto saved as RGBA would otherwise feed its
    alpha to the network as a fourth colour (and get a 4-band first convolution instead of ImageNet's RGB
    one). Its transparency still counts, as the mask of the other bands (:func:`nodata_flags`). A band list
    given explicitly is used as given.
    """
    if bands:
        return resolve_bands(src, bands, parameter)
    alpha = [b for b in range(1, src.count + 1) if src.colorinterp[b - 1] == ColorInterp.alpha]
    if not alpha or len(alpha) == src.count:
        return resolve_bands(src, None, parameter)
    if feedback is not None:
        feedback.info(f"Band(s) {', '.join(map(str, alpha))} (alpha) left out: transparency is not imagery; "
                      f"transparent pixels count as nodata. Set {parameter} to use them.")
    return tuple(b for b in range(1, src.count + 1) if b not in alpha)


def nodata_pixels(data: np.ndarray, nodata: Optional[float]) -> np.ndarray:
    """Boolean ``(H, W)`` mask of pixels that hold no data in any band.

    With a nodata value, a pixel is nodata when every band equals it (NaN-aware). Without one, NaN in
    every band counts, and, for integer rasters, 0 in every band (ClusterNet's dark-region filter).

    Args:
        data: ``(C, H, W)`` pixel values.
        nodata: the raster's nodata value, or None.
    """
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        return np.all(data == nodata, axis=0)
    if np.issubdtype(data.dtype, np.floating):
        empty = np.isnan(data)
        if nodata is None:
            empty |= data == 0
        return np.all(empty, axis=0)
    return np.all(data == 0, axis=0)


def _uses_mask_band(src: rasterio.DatasetReader, bands: Sequence[int]) -> bool:
    """Whether GDAL masks the bands with a mask or alpha band (not by a nodata value, not all valid)."""
    flags = src.mask_flag_enums
    return src.nodata is None and any(
        MaskFlags.per_dataset in flags[b - 1] or MaskFlags.alpha in flags[b - 1] for b in bands)


def nodata_flags(src: rasterio.DatasetReader, bands: Sequence[int], window: Optional[Window], data: np.ndarray
                 ) -> np.ndarray:
    """Pixels of ``data`` (``bands`` read at ``window``; None: the whole raster) that hold no data: a boolean
    ``(H, W)`` mask.

    A pixel is nodata when

    * it is NaN or infinite in any band (a network cannot take it), or
    * the raster has a nodata value and every band holds it, or
    * the raster has no nodata value but a mask or alpha band (what QGIS draws as transparent) masks it
      in every band.

    Every reader of model input uses it: tiles of a sweep, training and pretraining crops, band statistics,
    ClusterNet crops and scene patches (patching keeps its own documented rule: 0 in every band is nodata when
    the raster has no nodata value, so black collars are skipped).

    Why this rule: it is what the raster itself declares, which is what a GIS user sees in QGIS. Pixel
    values are never guessed: 0 is real data in many products (dark water in 8-bit imagery, dB backscatter,
    indices), and QGIS shows zero pixels as data when no nodata value is set. To make zeros nodata, give the
    raster a nodata value (``gdal_edit -a_nodata 0``, or Raster > Conversion > Translate with "Assign a
    specified nodata value").
    """
    if np.issubdtype(data.dtype, np.floating):
        empty = ~np.all(np.isfinite(data), axis=0)
    else:
        empty = np.zeros(data.shape[1:], bool)
    if src.nodata is not None:
        empty |= nodata_pixels(data, src.nodata)
    elif _uses_mask_band(src, bands):
        empty |= ~np.any(src.read_masks(list(bands), window=window), axis=0)
    return empty


def _block(size: int) -> int:
    """Tile edge for a GeoTIFF side: 256, or the side rounded up to GDAL's multiple of 16."""
    return min(256, max(16, -(-size // 16) * 16))


#: GTiff compresses blocks on several threads (creation option NUM_THREADS) only from this GDAL on: 3.6.0 to
#: 3.7.2 could deadlock or write corrupt blocks when threaded compression and decompression met in one file
#: (OSGeo/gdal#8470, fixed by #8561 in 3.7.3). Debian 12's GDAL 3.6.2 (QGIS there) stays single-threaded.
THREADED_GTIFF_GDAL = (3, 7, 3)


def _gdal_version() -> Tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", rasterio.__gdal_version__)[:3])


def geotiff_profile(width: int, height: int, count: int, dtype: str, crs: Any, transform: Affine,
                    nodata: Optional[float], compress: str = "DEFLATE", level: Optional[int] = None,
                    compress_threads: bool = False) -> Dict[str, Any]:
    """Creation profile for a tiled, compressed GeoTIFF (predictor chosen by data type).

    ``level`` sets the DEFLATE/ZSTD level (None: GDAL's default, 6 for DEFLATE); 1 encodes several times
    faster for a few percent more bytes. ``compress_threads`` lets GDAL compress blocks on every CPU
    (``NUM_THREADS=ALL_CPUS``) where its version does so safely (:data:`THREADED_GTIFF_GDAL`); the pixels
    written are the same either way.
    """
    profile: Dict[str, Any] = {
        "driver": "GTiff", "width": width, "height": height, "count": count, "dtype": dtype,
        "crs": crs, "transform": transform, "nodata": nodata,
        "tiled": True, "blockxsize": _block(width), "blockysize": _block(height),
        "compress": compress, "interleave": "pixel" if count <= 4 else "band",
    }
    if compress.upper() in ("DEFLATE", "LZW", "ZSTD"):
        profile["predictor"] = 3 if np.issubdtype(np.dtype(dtype), np.floating) else 2
    if level is not None and compress.upper() in ("DEFLATE", "ZSTD"):
        profile["zlevel" if compress.upper() == "DEFLATE" else "zstd_level"] = int(level)
    if compress_threads and compress.upper() != "NONE" and _gdal_version() >= THREADED_GTIFF_GDAL:
        profile["num_threads"] = "ALL_CPUS"
    if width * height * count * np.dtype(dtype).itemsize > 3.5 * 2**30:
        profile["BIGTIFF"] = "YES"
    return profile


def copy_band_metadata(src: rasterio.DatasetReader, dst: rasterio.io.DatasetWriter, bands: Sequence[int]) -> None:
    """Carry band descriptions, colour interpretation, palette, scale/offset and units to ``dst``."""
    for i, band in enumerate(bands, start=1):
        desc = src.descriptions[band - 1]
        if desc:
            dst.set_band_description(i, desc)
        unit = src.units[band - 1]
        if unit:
            dst.set_band_unit(i, unit)
    scales = [src.scales[b - 1] for b in bands]
    offsets = [src.offsets[b - 1] for b in bands]
    if any(s != 1.0 for s in scales) or any(o != 0.0 for o in offsets):
        dst.scales, dst.offsets = scales, offsets
    interp = [src.colorinterp[b - 1] for b in bands]
    if interp != [ColorInterp.undefined] * len(interp):
        try:
            dst.colorinterp = interp
        except (ValueError, rasterio.errors.RasterioError):
            pass  # an order GeoTIFF cannot express (e.g. B,G,R); the pixels are still right
    if len(bands) == 1:
        try:
            dst.write_colormap(1, src.colormap(bands[0]))
        except ValueError:
            pass  # no palette on that band
    tags = src.tags()
    if tags:
        dst.update_tags(**tags)


def window_footprint(transform: Affine, x_off: int, y_off: int, width: int, height: int) -> Tuple[Tuple[float, float], ...]:
    """Closed ring of a pixel window's four corners in map coordinates (any affine transform)."""
    corners = ((x_off, y_off), (x_off + width, y_off), (x_off + width, y_off + height), (x_off, y_off + height))
    ring = tuple(transform * c for c in corners)
    return ring + (ring[0],)


def pixel_bounds(transform: Affine, bounds: Tuple[float, float, float, float]) -> Tuple[float, float, float, float]:
    """Pixel-space bounding box ``(col0, row0, col1, row1)`` of map ``bounds`` (any affine transform)."""
    xmin, ymin, xmax, ymax = bounds
    inverse = ~transform
    pts = [inverse * (x, y) for x in (xmin, xmax) for y in (ymin, ymax)]
    return (min(p[0] for p in pts), min(p[1] for p in pts), max(p[0] for p in pts), max(p[1] for p in pts))


def pixel_window(transform: Affine, bounds: Tuple[float, float, float, float], width: int,
                 height: int) -> Optional[Tuple[int, int, int, int]]:
    """``(x_off, y_off, width, height)`` of the pixels that map ``bounds`` touch, clipped to a
    ``width`` x ``height`` raster (rounded outward; float noise on pixel edges tolerated). None if disjoint."""
    c0, r0, c1, r1 = pixel_bounds(transform, bounds)
    eps = 1e-6
    c0, r0 = max(0, math.floor(c0 + eps)), max(0, math.floor(r0 + eps))
    c1, r1 = min(width, math.ceil(c1 - eps)), min(height, math.ceil(r1 - eps))
    return (c0, r0, c1 - c0, r1 - r0) if c1 > c0 and r1 > r0 else None


def crs_units(crs: Any) -> str:
    """The units of a raster's map coordinates, as model files record them: the projected CRS's linear unit
    (``"unknown"`` when it names none), ``"degrees"`` for a geographic CRS, ``"pixels"`` without a CRS."""
    if not crs:
        return "pixels"
    return (crs.linear_units or "unknown") if crs.is_projected else "degrees"


def check_geotiff_name(path: str, parameter: str) -> None:
    """Refuse an output name that is not a GeoTIFF (``.tif``/``.tiff``), naming ``parameter``."""
    import os

    from .errors import OutputError

    if os.path.splitext(path)[1].lower() not in (".tif", ".tiff"):
        raise OutputError(f"SatSeg writes GeoTIFF rasters; give a file name ending in .tif, not '{path}'.", parameter)


def overview_factors(width: int, height: int) -> list:
    """Overview levels SatSeg builds for an output of this size: none under 1024 px, else 2..32 down to 256 px."""
    if min(width, height) < 1024:
        return []
    return [f for f in (2, 4, 8, 16, 32) if min(width, height) // f >= 256]


def bounds_region(src: rasterio.DatasetReader, bounds) -> Tuple[int, int, int, int]:
    """``(x_off, y_off, width, height)`` of the pixels ``bounds`` touch (the whole raster for None).

    Raises:
        InputError: naming EXTENT when the bounds miss the raster.
    """
    if bounds is None:
        return 0, 0, src.width, src.height
    window = pixel_window(src.transform, bounds, src.width, src.height)
    if window is None:
        raise InputError("the extent does not overlap the raster (it is compared in the raster's CRS).", "EXTENT")
    return window


def check_model_fits(src: rasterio.DatasetReader, bands: Sequence[int], pixel_size: Sequence[float],
                     feedback: Feedback) -> None:
    """Refuse a raster without the model's bands; warn when its pixels differ from the model's by > 25 %."""
    bands = list(bands)
    if max(bands) > src.count:
        raise InputError(f"the model reads bands {bands}, but the raster has {src.count} band(s). Use a raster "
                         "with the bands the model was trained on.", "INPUT")
    res = (abs(src.res[0]), abs(src.res[1]))
    model_res = tuple(pixel_size or ())
    if len(model_res) == 2 and all(model_res) and any(abs(r / m - 1) > 0.25 for r, m in zip(res, model_res)):
        feedback.warning(f"The raster's pixels ({res[0]:g} x {res[1]:g}) differ from those the model was trained "
                         f"on ({model_res[0]:g} x {model_res[1]:g}) by more than 25 %: objects look a different "
                         "size to the model and results may be poor. Resample the raster to the model's pixel "
                         "size (Raster > Projections > Warp) for best results.")


#: Two rasters share a pixel grid when no corner of the first lies farther than this many pixels from where the
#: second grid puts it: far beyond float noise and coordinates rounded when written as text, far below anything
#: visible. A pixel-size difference counts by how far it moves the far corner, so it grows with the raster.
GRID_TOLERANCE = 1e-4


class Grid(NamedTuple):
    """The pixel grid of a raster: CRS (None when it has none), affine transform and size in pixels."""

    crs: Any
    transform: Affine
    width: int
    height: int

    @classmethod
    def of(cls, src: Any) -> "Grid":
        """The grid of an open rasterio dataset (or anything with ``crs``, ``transform``, ``width``, ``height``)."""
        return cls(src.crs, src.transform, int(src.width), int(src.height))


def grid_offset(a: Grid, b: Grid) -> float:
    """How far, in pixels of ``b``, grid ``b`` puts the corners of raster ``a`` from where ``a`` puts them.

    Returns:
        The largest corner displacement (``inf`` when ``b``'s transform cannot be inverted). The CRS and the
        sizes are not compared.
    """
    try:
        inverse = ~b.transform
    except TransformNotInvertibleError:
        return math.inf
    corners = ((0, 0), (a.width, 0), (0, a.height), (a.width, a.height))
    return max(math.hypot(*(c - p for c, p in zip(inverse * (a.transform * corner), corner))) for corner in corners)


def same_grid(a: Grid, b: Grid, tolerance: float = GRID_TOLERANCE) -> bool:
    """Whether two rasters share CRS, size and pixel grid (corners within ``tolerance`` pixels, see
    :data:`GRID_TOLERANCE`)."""
    return (a.crs == b.crs and (a.width, a.height) == (b.width, b.height)
            and grid_offset(a, b) <= tolerance)


def crs_text(crs: Any) -> str:
    """A rasterio CRS for messages: ``EPSG:3035``, its WKT/PROJ string, or ``no CRS``."""
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string() or "an unnamed CRS"


def require_same_grid(grid: Grid, reference: Grid, parameter: str, what: str = "the raster",
                      reference_what: str = "the reference", advice: str = "") -> None:
    """Refuse ``grid`` unless it is :func:`same_grid` as ``reference``, saying what differs.

    Args:
        grid: the grid of the input being checked.
        reference: the grid it must share.
        parameter: the Processing parameter that gave the input (named by the error).
        what: how the message calls the input (``"the reference mask"``).
        reference_what: how the message calls the reference (``"the prediction"``).
        advice: appended to the message: how to fix the input.

    Raises:
        InputError: naming ``parameter``: the sizes, the corner offset in pixels, or the CRSs differ (checked in
            that order).
    """
    tail = f" {advice}" if advice else ""
    if (grid.width, grid.height) != (reference.width, reference.height):
        raise InputError(f"{what} is {grid.width}x{grid.height} px but {reference_what} is "
                         f"{reference.width}x{reference.height} px: they must share one pixel grid.{tail}", parameter)
    offset = grid_offset(grid, reference)
    if offset > GRID_TOLERANCE:
        raise InputError(f"{what} lies {offset:.3g} px away from {reference_what}'s pixel grid: they must share "
                         f"one grid (same extent and resolution).{tail}", parameter)
    if grid.crs != reference.crs:
        raise InputError(f"{what}'s CRS ({crs_text(grid.crs)}) differs from {reference_what}'s "
                         f"({crs_text(reference.crs)}).{tail}", parameter)
