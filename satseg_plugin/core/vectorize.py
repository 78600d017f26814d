"""Mask rasters to polygons, streamed by row strips.

``rasterio.features.shapes`` traces each strip; polygons that touch a strip border are held back and
merged with their neighbours across the border (shapely ``union_all``) once every strip is traced, so a
building cut by a strip border comes out whole. Holes are kept.

Cost note (as rasterio warns for ``shapes``): a noisy mask yields up to one polygon per pixel; filter
with ``min_area`` and clean the mask first when that matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import rasterio
from rasterio.features import rasterize, shapes
from rasterio.windows import Window

from .deps import require
from .errors import InputError, OutputError
from .progress import Feedback, NullFeedback, track
from .raster import open_raster, raster_env

__all__ = ["PolygonRecord", "polygonize_mask", "area_factor", "sieve_file", "sieve_array"]


@dataclass
class PolygonRecord:
    """One polygon of one class, with its area in m² and the mean probability inside it."""

    geometry: object
    class_id: int
    area_m2: float
    mean_prob: Optional[float]


def area_factor(crs) -> float:
    """Square metres per square CRS unit (1 for metre CRSs). Raises for geographic CRSs."""
    if crs is None:
        return 1.0
    if crs.is_geographic:
        raise InputError("the raster is in a geographic CRS (degrees), so polygon areas in m² cannot be measured "
                         "on it. Reproject it to a projected CRS (e.g. UTM) first.", "INPUT")
    factor = crs.linear_units_factor[1] if crs.is_projected else 1.0
    return float(factor) ** 2


def sieve_file(path: str, min_pixels: int, connectivity: int = 4) -> None:
    """Remove the regions of fewer than ``min_pixels`` pixels from band 1 of a class raster, in place.

    Each small region takes the value of its largest neighbour: isolated specks vanish and small holes inside
    objects fill. Nodata pixels are left alone and never merged into.

    GDAL's sieve filter reads and writes the band row by row (its memory grows with the number of regions, not
    with the raster); rasterio's ``features.sieve`` returns a whole array, so GDAL's own binding is used here.

    Args:
        path: a GeoTIFF opened for update (e.g. the staged mask, before its overviews are built).
        min_pixels: the smallest region kept (0 or 1: nothing changes).
        connectivity: 4 or 8.
    """
    if min_pixels <= 1:
        return
    gdal = require("osgeo.gdal")
    dataset = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_UPDATE)
    if dataset is None:
        raise OutputError(f"cannot open '{path}' to remove small objects: {gdal.GetLastErrorMsg()}")
    band = dataset.GetRasterBand(1)
    if gdal.SieveFilter(band, band.GetMaskBand(), band, int(min_pixels), connectivity) != 0:
        raise OutputError(f"removing small objects from '{path}' failed: {gdal.GetLastErrorMsg()}")
    dataset.FlushCache()
    del band, dataset  # closes the file


def sieve_array(classes: np.ndarray, min_pixels: int, valid: Optional[np.ndarray] = None,
                connectivity: int = 4) -> np.ndarray:
    """:func:`sieve_file` for a class array held in memory (the same GDAL algorithm, through rasterio).

    Args:
        classes: ``(H, W)`` uint8 class ids.
        min_pixels: the smallest region kept (0 or 1: a copy of ``classes``).
        valid: pixels that take part (others are left alone and never merged into); None: all.
        connectivity: 4 or 8.
    """
    if min_pixels <= 1:
        return classes.copy()
    from rasterio.features import sieve

    mask = None if valid is None else valid.astype(np.uint8)
    return sieve(classes.astype(np.uint8), int(min_pixels), mask=mask, connectivity=connectivity)


def polygonize_mask(mask_path: str, probability_path: Optional[str] = None, min_area: float = 0.0,
                    simplify: float = 0.0, strip_rows: int = 1024, classes: Optional[Sequence[int]] = None,
                    feedback: Optional[Feedback] = None) -> List[PolygonRecord]:
    """Trace the polygons of a class mask.

    Args:
        mask_path: uint8 mask (0 = background; 1..K = classes; its nodata value is ignored).
        probability_path: optional probability raster on the same grid (band k = class k) for ``mean_prob``.
        min_area: drop polygons smaller than this many m².
        simplify: Douglas-Peucker tolerance in CRS units (0: none); topology is preserved.
        strip_rows: rows traced at a time.
        classes: the class values to trace (None: every value > 0).
        feedback: progress and cancel.

    Returns:
        Polygons in the mask's CRS.
    """
    import shapely
    from affine import Affine
    from shapely.affinity import affine_transform
    from shapely.geometry import shape

    feedback = feedback or NullFeedback()
    with raster_env(), open_raster(mask_path, "OUTPUT_MASK") as src:
        factor = area_factor(src.crs)
        t = src.transform
        to_map = [t.a, t.b, t.d, t.e, t.c, t.f]
        nodata = src.nodata
        final: Dict[int, List] = {}
        pending: Dict[int, List] = {}
        for y in track(list(range(0, src.height, strip_rows)), feedback, span=(0, 80)):
            rows = min(strip_rows, src.height - y)
            data = src.read(1, window=Window(0, y, src.width, rows))
            valid = data > 0
            if nodata is not None:
                valid &= data != nodata
            if classes is not None:
                valid &= np.isin(data, list(classes))
            if not valid.any():
                continue
            # trace in whole-raster pixel coordinates: strip borders are then the exact lines y and y + rows
            borders = {float(y)} if y > 0 else set()
            if y + rows < src.height:
                borders.add(float(y + rows))
            for geom, value in shapes(data, mask=valid, transform=Affine.translation(0, y), connectivity=4):
                poly = shape(geom)
                touches = bool(borders) and any(c[1] in borders for ring in geom["coordinates"] for c in ring)
                (pending if touches else final).setdefault(int(value), []).append(poly)
        for value, polys in pending.items():
            merged = shapely.union_all(polys)
            parts = list(merged.geoms) if hasattr(merged, "geoms") else [merged]
            final.setdefault(value, []).extend(p for p in parts if p.geom_type == "Polygon")
    records: List[PolygonRecord] = []
    pixel_area = abs(t.determinant) * factor
    for value in sorted(final):
        for poly in final[value]:
            area = poly.area * pixel_area
            if area < min_area:
                continue
            geom = affine_transform(poly, to_map)
            if simplify > 0:
                geom = geom.simplify(simplify, preserve_topology=True)
            records.append(PolygonRecord(geom, value, float(area), None))
    if probability_path:
        _mean_probabilities(records, probability_path)
    feedback.set_progress(100.0)
    return records


def _mean_probabilities(records: List[PolygonRecord], probability_path: str) -> None:
    """Fill ``mean_prob`` by reading each polygon's bounding window of the probability raster."""
    with raster_env(), rasterio.open(probability_path) as prob:
        inverse = ~prob.transform
        for rec in records:
            xmin, ymin, xmax, ymax = rec.geometry.bounds
            pts = [inverse * (x, yy) for x in (xmin, xmax) for yy in (ymin, ymax)]
            c0 = max(0, int(np.floor(min(p[0] for p in pts))))
            r0 = max(0, int(np.floor(min(p[1] for p in pts))))
            c1 = min(prob.width, int(np.ceil(max(p[0] for p in pts))))
            r1 = min(prob.height, int(np.ceil(max(p[1] for p in pts))))
            if c1 <= c0 or r1 <= r0:
                continue
            window = Window(c0, r0, c1 - c0, r1 - r0)
            band = min(rec.class_id, prob.count)
            values = prob.read(band, window=window)
            inside = rasterize([(rec.geometry, 1)], out_shape=values.shape, transform=prob.window_transform(window),
                               fill=0, dtype=np.uint8).astype(bool)
            if prob.nodata is not None:
                inside &= values != prob.nodata
            if inside.any():
                rec.mean_prob = float(values[inside].mean())
