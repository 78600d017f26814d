"""Seeded synthetic aerial scene: an RGB GeoTIFF and the exact building footprints as a GeoPackage.

The scene imitates a 0.5 m orthophoto of a rural settlement: textured grass, bare soil and ploughed
fields, a river or lake, a road network with driveways and cars, tree clusters with cast shadows, and
buildings (rectangles and L-shapes, axis-aligned or following the roads) with gabled roofs and cast
shadows. Every random choice comes from one ``numpy.random.default_rng(seed)``, so a seed always gives
the same pixels and the same footprints.

The roof pixels of the raster are, by construction, exactly the rasterisation of the footprints
(pixel-centre rule, ``rasterio.features.rasterize(all_touched=False)`` on the scene grid): the roof mask
is drawn by rasterising the very polygons that are written to the GeoPackage, and nothing is drawn over
the roofs except per-pixel sensor noise. :func:`building_mask` reproduces that mask from the files.

Command line::

    python -m sample_data.generate [--out DIR] [--size N] [--seed S] [--pixel-size M] [--mosaic] [--force]

``--mosaic`` writes :func:`generate_mosaic` instead: one scene of urban, rural and uninhabited regions
(2048 px by default, into ``sample_data/generated/mosaic``) with the regions as ``regions.gpkg``, the
truth for scene classification.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import rasterio
import shapely
import shapely.affinity
import shapely.ops
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.features import rasterize
from scipy import ndimage
from shapely.geometry import LineString, MultiPoint, Point, Polygon, box
from shapely.geometry.polygon import orient

__all__ = [
    "BUILDINGS_NAME",
    "CLASS_NAMES",
    "DEFAULT_MOSAIC_DIR",
    "DEFAULT_OUT_DIR",
    "GENERATOR_VERSION",
    "LAYER_NAME",
    "MOSAIC_DENSITY",
    "MOSAIC_PARAMS_NAME",
    "MOSAIC_VERSION",
    "PARAMS_NAME",
    "REGIONS_LAYER",
    "REGIONS_NAME",
    "REGION_CLASSES",
    "ROOF_COLOURS",
    "SCENE_NAME",
    "Building",
    "Mosaic",
    "Scene",
    "building_mask",
    "generate_mosaic",
    "generate_scene",
    "is_mosaic_up_to_date",
    "is_up_to_date",
    "main",
    "mosaic_params",
    "read_buildings",
    "read_regions",
    "render_mosaic",
    "render_scene",
    "scene_params",
]

#: Bump whenever the output for a given set of parameters changes; the CLI then regenerates.
GENERATOR_VERSION = 1

SCENE_NAME = "scene.tif"
BUILDINGS_NAME = "buildings.gpkg"
PARAMS_NAME = "scene.json"
LAYER_NAME = "buildings"
DEFAULT_OUT_DIR = os.path.join("sample_data", "generated")

#: Land-cover classes of :attr:`Scene.landcover` (index = class value).
CLASS_NAMES: Tuple[str, ...] = ("grass", "soil", "water", "road", "tree", "building")
_GRASS, _SOIL, _WATER, _ROAD, _TREE, _BUILDING = range(6)

#: Roof colour names (the ``roof`` field of the GeoPackage) and their mean RGB.
ROOF_COLOURS: Dict[str, Tuple[int, int, int]] = {
    "terracotta": (176, 94, 64),
    "red": (146, 60, 50),
    "brown": (120, 92, 72),
    "grey": (150, 150, 148),
    "dark_grey": (78, 80, 86),
    "light": (214, 210, 200),
}
_ROOF_WEIGHTS_HOUSE = (0.30, 0.14, 0.14, 0.18, 0.14, 0.10)
_ROOF_WEIGHTS_LARGE = (0.08, 0.04, 0.08, 0.36, 0.18, 0.26)

#: Direction *towards* the sun in image coordinates (x = column, y = row, north up): north-west, so
#: shadows fall to the south-east.
_SUN = np.array([-1.0, -1.0]) / math.sqrt(2.0)
#: Shadow offset per axis, in metres per metre of object height (sun about 67 degrees high).
_SHADOW_PER_M = 0.3

_PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Building:
    """One building footprint.

    Attributes:
        id: 1-based id, also the GeoPackage FID and the value in :attr:`Scene.roof_labels`.
        roof: Roof colour name, a key of :data:`ROOF_COLOURS`.
        polygon: Footprint in map coordinates of the scene CRS.
        height_m: Eave height used for the cast shadow.
    """

    id: int
    roof: str
    polygon: Polygon
    height_m: float

    @property
    def area_m2(self) -> float:
        """Footprint area in square metres."""
        return float(self.polygon.area)


@dataclass
class Scene:
    """An in-memory scene, as written by :func:`generate_scene`.

    Attributes:
        rgb: ``(3, H, W)`` uint8 image.
        roof_labels: ``(H, W)`` int32, 0 where there is no building, else the building id.
        landcover: ``(H, W)`` uint8 class index into :data:`CLASS_NAMES`.
        buildings: Footprints, ordered by id.
        transform: Affine transform of the grid (north up).
        epsg: EPSG code of the CRS.
        params: The generation parameters (as stored in ``scene.json``).
    """

    rgb: np.ndarray
    roof_labels: np.ndarray
    landcover: np.ndarray
    buildings: List[Building]
    transform: Affine
    epsg: int
    params: Dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------


def _check_args(size: Any, pixel_size: Any, seed: Any, epsg: Any, origin: Any) -> Tuple[int, float, int, int,
                                                                                      Tuple[float, float]]:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size must be an integer, got {size!r}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    try:
        pixel_size = float(pixel_size)
    except (TypeError, ValueError):
        raise ValueError(f"pixel_size must be a number, got {pixel_size!r}") from None
    if not math.isfinite(pixel_size) or pixel_size <= 0:
        raise ValueError(f"pixel_size must be a positive number of metres, got {pixel_size}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(epsg, bool) or not isinstance(epsg, (int, np.integer)):
        raise ValueError(f"epsg must be an integer EPSG code, got {epsg!r}")
    try:
        crs = CRS.from_epsg(int(epsg))
    except Exception:  # rasterio raises CRSError; any failure means the code is unusable
        raise ValueError(f"unknown EPSG code {epsg}") from None
    if not crs.is_projected:
        raise ValueError(f"EPSG:{epsg} is not a projected CRS; the scene needs metric map units")
    try:
        ox, oy = (float(v) for v in origin)
    except (TypeError, ValueError):
        raise ValueError(f"origin must be a pair of numbers (x, y), got {origin!r}") from None
    if not (math.isfinite(ox) and math.isfinite(oy)):
        raise ValueError(f"origin must be finite, got {origin!r}")
    return int(size), pixel_size, int(seed), int(epsg), (ox, oy)


def scene_params(size: int = 1024, pixel_size: float = 0.5, seed: int = 0, epsg: int = 32633,
                 origin: Sequence[float] = (500000.0, 5000000.0)) -> Dict[str, Any]:
    """The validated parameters of a scene, as stored in ``scene.json``.

    Args:
        size: Width and height in pixels.
        pixel_size: Pixel size in metres.
        seed: Random seed.
        epsg: EPSG code of a projected CRS.
        origin: Map coordinates ``(x, y)`` of the top-left corner.

    Returns:
        A JSON-serialisable dict including the generator version.

    Raises:
        ValueError: If a parameter is invalid.
    """
    size, pixel_size, seed, epsg, origin = _check_args(size, pixel_size, seed, epsg, origin)
    return {"version": GENERATOR_VERSION, "size": size, "pixel_size": pixel_size, "seed": seed, "epsg": epsg,
            "origin": [origin[0], origin[1]]}


# --------------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------------


def _bspline_matrix(n: int, scale: float) -> np.ndarray:
    """``(n, m)`` matrix that upsamples ``m`` random coefficients to ``n`` samples with a cubic B-spline.

    Rows are normalised so that unit-variance white coefficients give unit-variance output everywhere.
    """
    m = int(math.ceil(n / scale)) + 4
    t = (np.arange(n) + 0.5) / scale + 1.5
    x = np.abs(t[:, None] - np.arange(m)[None, :])
    w = np.where(x < 1.0, 2.0 / 3.0 - x ** 2 + 0.5 * x ** 3, np.where(x < 2.0, (2.0 - x) ** 3 / 6.0, 0.0))
    w /= np.sqrt((w ** 2).sum(axis=1, keepdims=True))
    return w


def _smooth_noise(rng: np.random.Generator, shape: Tuple[int, int], scale: float) -> np.ndarray:
    """Unit-variance smooth noise with features about ``scale`` pixels across (float32)."""
    h, w = shape
    if scale <= 1.0:
        return rng.standard_normal(shape, dtype=np.float32)
    if scale < 6.0:
        # Fine grain: a small Gaussian filter of white noise is cheaper than dense spline matrices.
        sigma = 0.5 * scale
        out = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
        kernel = np.exp(-0.5 * (np.arange(-int(4 * sigma + 0.5), int(4 * sigma + 0.5) + 1) / sigma) ** 2)
        kernel /= kernel.sum()
        return out / np.float32((kernel ** 2).sum())  # 2-D variance = (sum of squared 1-D weights) ** 2
    my = _bspline_matrix(h, scale)
    mx = _bspline_matrix(w, scale)
    coeff = rng.standard_normal((my.shape[1], mx.shape[1]))
    # float64 products: BLAS summation order then cannot move a value across a threshold in practice.
    return (my @ coeff @ mx.T).astype(np.float32)


def _fbm(rng: np.random.Generator, shape: Tuple[int, int], scales: Sequence[float],
         weights: Sequence[float]) -> np.ndarray:
    """Unit-variance sum of smooth noise octaves."""
    out = np.zeros(shape, dtype=np.float32)
    for s, wt in zip(scales, weights):
        out += np.float32(wt) * _smooth_noise(rng, shape, s)
    return out / np.float32(math.sqrt(sum(wt * wt for wt in weights)))


# --------------------------------------------------------------------------------------------------
# Geometry helpers (pixel coordinates: x = column, y = row, pixel (c, r) covers [c, c+1) x [r, r+1))
# --------------------------------------------------------------------------------------------------


def _raster(shapes: Sequence[Any], shape: Tuple[int, int], dtype: str = "uint8",
            transform: Affine = Affine.identity()) -> np.ndarray:
    """Rasterise (pixel-centre rule); an empty list gives zeros."""
    shapes = [s for s in shapes if s is not None and not (getattr(s, "is_empty", False))]
    if not shapes:
        return np.zeros(shape, dtype=dtype)
    return rasterize(shapes, out_shape=shape, transform=transform, fill=0, all_touched=False, dtype=dtype)


def _window_mask(geom: Any, shape: Tuple[int, int], pad: int = 1
                 ) -> Optional[Tuple[Tuple[int, int, int, int], np.ndarray]]:
    """Rasterise ``geom`` into the smallest window of the grid that holds it."""
    h, w = shape
    minx, miny, maxx, maxy = geom.bounds
    c0, r0 = max(int(math.floor(minx)) - pad, 0), max(int(math.floor(miny)) - pad, 0)
    c1, r1 = min(int(math.ceil(maxx)) + pad, w), min(int(math.ceil(maxy)) + pad, h)
    if c1 <= c0 or r1 <= r0:
        return None
    m = rasterize([geom], out_shape=(r1 - r0, c1 - c0), transform=Affine.translation(c0, r0), fill=0,
                  all_touched=False, dtype="uint8").astype(bool)
    return (r0, r1, c0, c1), m


def _curve(rng: np.random.Generator, size: int, centre: Tuple[float, float], angle: float, amp: float,
           wavelength: float, half_len: Optional[float] = None, n: int = 160) -> Optional[LineString]:
    """A gently meandering line through ``centre``, clipped to the scene (plus a margin)."""
    half = 1.6 * size if half_len is None else half_len
    s = np.linspace(-half if half_len is None else 0.0, half, n)
    phase1, phase2 = rng.uniform(0, 2 * math.pi, 2)
    off = amp * np.sin(2 * math.pi * s / wavelength + phase1) \
        + 0.25 * amp * np.sin(2 * math.pi * s / (0.37 * wavelength) + phase2)
    if half_len is not None:
        off = off - off[0]  # start exactly at ``centre``
    ux, uy = math.cos(angle), math.sin(angle)
    xs = centre[0] + s * ux - off * uy
    ys = centre[1] + s * uy + off * ux
    margin = 0.05 * size + 8
    clipped = LineString(np.column_stack([xs, ys])).intersection(
        box(-margin, -margin, size + margin, size + margin))
    if clipped.is_empty:
        return None
    if clipped.geom_type != "LineString":
        parts = [g for g in getattr(clipped, "geoms", []) if g.geom_type == "LineString"]
        if not parts:
            return None
        clipped = max(parts, key=lambda g: g.length)
    return clipped if clipped.length > 0 else None


def _to_map(geom: Any, transform: Affine) -> Any:
    """Pixel-space geometry to map coordinates (x = x0 + col * a, y = y0 + row * e)."""
    a, e, x0, y0 = transform.a, transform.e, transform.c, transform.f
    return shapely.transform(geom, lambda xy: np.column_stack([x0 + xy[:, 0] * a, y0 + xy[:, 1] * e]))


def _place(local: Polygon, cx: float, cy: float, cos_a: float, sin_a: float) -> Polygon:
    """Rotate a local polygon by (cos_a, sin_a) and move it to (cx, cy)."""
    return shapely.transform(local, lambda uv: np.column_stack([cx + uv[:, 0] * cos_a - uv[:, 1] * sin_a,
                                                                cy + uv[:, 0] * sin_a + uv[:, 1] * cos_a]))


def _cast_shadow(poly: Polygon, dx: float, dy: float) -> Any:
    """The shadow of a vertical prism over ``poly`` offset by (dx, dy), without the footprint itself."""
    moved = shapely.affinity.translate(poly, dx, dy)
    coords = np.asarray(poly.exterior.coords)
    sweeps = [MultiPoint([tuple(p), tuple(q), (p[0] + dx, p[1] + dy), (q[0] + dx, q[1] + dy)]).convex_hull
              for p, q in zip(coords[:-1], coords[1:])]
    return shapely.union_all([moved] + sweeps).difference(poly)


# --------------------------------------------------------------------------------------------------
# Scene layers
# --------------------------------------------------------------------------------------------------


@dataclass
class _Road:
    line: LineString
    width: float  # px
    main: bool
    polygon: Polygon


@dataclass
class _Part:
    """An axis of a building for roof shading: a rectangle in pixel coordinates."""

    cx: float
    cy: float
    hw: float
    hh: float


@dataclass
class _Placed:
    poly: Polygon  # pixel coordinates
    cos_a: float
    sin_a: float
    parts: List[_Part]
    roof: str
    height_m: float
    driveway: Optional[Any]


def _make_water(rng: np.random.Generator, size: int, ps: float) -> np.ndarray:
    """Boolean water mask: a meandering river or a lake, or nothing for small scenes."""
    shape = (size, size)
    if size * ps < 150:
        return np.zeros(shape, dtype=bool)
    edge = _smooth_noise(rng, shape, 30.0 / ps)
    if rng.random() < 0.6:
        angle = rng.uniform(0, math.pi)
        # Keep the river off the centre so the settlement has room.
        side = rng.choice([-1.0, 1.0])
        offset = side * rng.uniform(0.18, 0.34) * size
        cx = size / 2 - math.sin(angle) * offset
        cy = size / 2 + math.cos(angle) * offset
        line = _curve(rng, size, (cx, cy), angle, amp=rng.uniform(0.04, 0.09) * size,
                      wavelength=rng.uniform(0.8, 1.6) * size)
        width = rng.uniform(14.0, 26.0) / ps
        if line is None:
            return np.zeros(shape, dtype=bool)
        centre = rasterize([line], out_shape=shape, fill=0, all_touched=True, dtype="uint8").astype(bool)
        dist = ndimage.distance_transform_edt(~centre)
        return dist < (width / 2) * (1.0 + 0.22 * edge)
    corner = rng.integers(0, 4)
    cx = size * (0.12 if corner in (0, 3) else 0.88) + rng.uniform(-0.06, 0.06) * size
    cy = size * (0.12 if corner in (0, 1) else 0.88) + rng.uniform(-0.06, 0.06) * size
    radius = rng.uniform(0.14, 0.22) * size
    lobes = _smooth_noise(rng, shape, radius * 0.7)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    return r < radius * (1.0 + 0.25 * lobes + 0.06 * edge)


def _water_length(line: LineString, water: np.ndarray, step: float = 2.0) -> float:
    """Approximate length (px) of ``line`` over water."""
    n = max(int(line.length / step), 2)
    pts = shapely.line_interpolate_point(line, np.linspace(0, line.length, n))
    xy = shapely.get_coordinates(pts)
    c = np.clip(xy[:, 0].astype(int), 0, water.shape[1] - 1)
    r = np.clip(xy[:, 1].astype(int), 0, water.shape[0] - 1)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < water.shape[1]) & (xy[:, 1] >= 0) & (xy[:, 1] < water.shape[0])
    return float((water[r, c] & inside).sum()) * line.length / n


def _make_roads(rng: np.random.Generator, size: int, ps: float, water: np.ndarray) -> List[_Road]:
    """Main roads across the scene and side streets branching off them."""
    size_m = size * ps
    if size_m < 80:
        return []
    max_wet = 45.0 / ps  # a bridge, not a causeway
    roads: List[_Road] = []

    def main_road(base_angle: float) -> Optional[_Road]:
        best = None
        for _ in range(8):
            angle = base_angle + rng.uniform(-0.35, 0.35)
            centre = (size * rng.uniform(0.3, 0.7), size * rng.uniform(0.3, 0.7))
            line = _curve(rng, size, centre, angle, amp=rng.uniform(0.0, 0.05) * size,
                          wavelength=rng.uniform(1.5, 3.0) * size)
            if line is None:
                continue
            width = rng.uniform(7.0, 9.0) / ps
            best = _Road(line, width, True, line.buffer(width / 2, cap_style="flat"))
            if _water_length(line, water) <= max_wet:
                break
        return best

    first = main_road(0.0)
    if first is not None:
        roads.append(first)
    if size_m >= 200:
        second = main_road(math.pi / 2)
        if second is not None:
            roads.append(second)
    mains = list(roads)
    if not mains:
        return roads
    area_factor = (size_m / 512.0) ** 2
    n_side = int(round(area_factor * rng.uniform(1.5, 3.0))) if size_m >= 200 else 0
    for _ in range(n_side):
        for _attempt in range(8):
            parent = mains[int(rng.integers(0, len(mains)))]
            t = rng.uniform(0.15, 0.85) * parent.line.length
            p = parent.line.interpolate(t)
            q = parent.line.interpolate(min(t + 2.0, parent.line.length))
            tx, ty = q.x - p.x, q.y - p.y
            norm = math.hypot(tx, ty) or 1.0
            base = math.atan2(ty / norm, tx / norm) + rng.choice([-1.0, 1.0]) * math.pi / 2
            angle = base + rng.uniform(-0.25, 0.25)
            length = rng.uniform(0.25, 0.5) * size
            line = _curve(rng, size, (p.x, p.y), angle, amp=rng.uniform(0.0, 0.04) * size,
                          wavelength=rng.uniform(0.8, 1.5) * size, half_len=length, n=60)
            if line is None or _water_length(line, water, step=1.0) > 0:
                continue  # side streets stop short of the water
            tail = shapely.ops.substring(line, 30.0 / ps, line.length)
            if tail.is_empty or min(tail.distance(o.line) for o in roads) < 30.0 / ps:
                continue  # keep clear of the other roads beyond the junction
            width = rng.uniform(5.0, 6.0) / ps
            poly = line.buffer(width / 2)
            end = Point(line.coords[-1])
            if 0 < end.x < size and 0 < end.y < size and rng.random() < 0.6:
                poly = poly.union(end.buffer(width * 0.9))  # cul-de-sac
            roads.append(_Road(line, width, False, poly))
            break
    return roads


def _make_fields(rng: np.random.Generator, size: int, ps: float, blocked: np.ndarray
                 ) -> List[Tuple[Polygon, float, float]]:
    """Ploughed fields: (polygon, stripe angle, stripe period px) clear of roads and water."""
    size_m = size * ps
    if size_m < 200:
        return []
    area_factor = (size_m / 512.0) ** 2
    fields = []
    for _ in range(int(round(area_factor * rng.uniform(0.5, 2.0)))):
        for _attempt in range(10):
            w, h = rng.uniform(50.0, 110.0, 2) / ps
            angle = rng.uniform(0, math.pi)
            cx, cy = rng.uniform(0, size, 2)
            local = box(-w / 2, -h / 2, w / 2, h / 2)
            poly = _place(local, cx, cy, math.cos(angle), math.sin(angle)).intersection(box(0, 0, size, size))
            if poly.is_empty or poly.area < 0.5 * w * h:
                continue
            win = _window_mask(poly.buffer(4.0 / ps), blocked.shape)
            if win is None:
                continue
            (r0, r1, c0, c1), m = win
            if blocked[r0:r1, c0:c1][m].any():
                continue
            fields.append((poly, angle, rng.uniform(2.0, 3.5) / ps))
            blocked[r0:r1, c0:c1] |= m
            break
    return fields


def _building_local(rng: np.random.Generator, w: float, d: float, l_shape: bool, snap: bool
                    ) -> Tuple[Polygon, List[Tuple[float, float, float, float]]]:
    """Footprint in local coordinates (u along the front, v away from the road) and its roof parts."""
    parts = [(0.0, 0.0, w / 2, d / 2)]
    local = box(-w / 2, -d / 2, w / 2, d / 2)
    if l_shape:
        wb = w * rng.uniform(0.35, 0.55)
        db = d * rng.uniform(0.5, 1.0)
        if snap:
            wb, db = float(max(round(wb), 3)), float(max(round(db), 3))
        end = rng.choice([-1.0, 1.0])
        u0, u1 = (w / 2 - wb, w / 2) if end > 0 else (-w / 2, -w / 2 + wb)
        wing = box(u0, d / 2, u1, d / 2 + db)
        local = shapely.union(local, wing).simplify(0)
        # The wing's ridge runs along its long side; its part covers only the wing itself.
        parts.append(((u0 + u1) / 2, d / 2 + db / 2, wb / 2, db / 2))
    return orient(local, 1.0), parts


def _place_buildings(rng: np.random.Generator, size: int, ps: float, roads: List[_Road],
                     occupied: np.ndarray) -> List[_Placed]:
    """Place non-overlapping buildings, most of them along roads; ``occupied`` is updated in place."""
    shape = occupied.shape
    size_m = size * ps
    area_factor = (size_m / 512.0) ** 2
    target = max(2, int(round(rng.uniform(85.0, 125.0) * area_factor)))
    road_weights = np.array([r.line.length for r in roads], dtype=float)
    if len(roads):
        road_weights /= road_weights.sum()
    placed: List[_Placed] = []
    scale = 1.0
    for _round in range(4):  # shrink buildings if a tiny scene cannot hold two
        max_side = min(30.0, size_m / 3.0) * scale / ps
        min_side = max(min(6.0 / ps, 0.6 * max_side), 3.0)
        attempts = 40 * target + 200
        for _ in range(attempts):
            if len(placed) >= target:
                break
            large = rng.random() < 0.15
            if large:
                w, d = rng.uniform(18.0, 30.0) / ps, rng.uniform(12.0, 22.0) / ps
            else:
                w, d = rng.uniform(8.0, 16.0) / ps, rng.uniform(6.5, 11.0) / ps
            w, d = float(np.clip(w, min_side, max_side)), float(np.clip(d, min_side, max_side))
            l_shape = rng.random() < 0.3
            along_road = len(roads) > 0 and rng.random() < 0.8
            snap = False
            anchor = None
            if along_road:
                road = roads[int(rng.choice(len(roads), p=road_weights))]
                t = rng.uniform(0.0, road.line.length)
                p = road.line.interpolate(t)
                q = road.line.interpolate(min(t + 2.0, road.line.length))
                if q.distance(p) < 1e-6:
                    q, p = p, road.line.interpolate(max(t - 2.0, 0.0))
                tx, ty = q.x - p.x, q.y - p.y
                norm = math.hypot(tx, ty) or 1.0
                tx, ty = tx / norm, ty / norm
                side = rng.choice([-1.0, 1.0])
                nx, ny = -ty * side, tx * side  # away from the road
                cos_a, sin_a = tx * side, ty * side  # local v axis == (nx, ny)
                jitter = rng.normal(0.0, 0.04)
                cos_a, sin_a = (cos_a * math.cos(jitter) - sin_a * math.sin(jitter),
                                sin_a * math.cos(jitter) + cos_a * math.sin(jitter))
                setback = road.width / 2 + rng.uniform(3.0, 9.0) / ps
                if rng.random() < 0.25:
                    setback += rng.uniform(16.0, 30.0) / ps  # second row
                dist = setback + d / 2
                cx, cy = p.x + nx * dist, p.y + ny * dist
                anchor = (p.x, p.y, nx, ny, setback, road.width)
            else:
                if rng.random() < 0.5:
                    snap = True
                    w, d = float(max(round(w), 3)), float(max(round(d), 3))
                    k = int(rng.integers(0, 4))
                    cos_a, sin_a = ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[k]
                    cx = float(rng.integers(2, size - 2))
                    cy = float(rng.integers(2, size - 2))
                else:
                    angle = rng.uniform(0.0, math.pi)
                    cos_a, sin_a = math.cos(angle), math.sin(angle)
                    cx, cy = rng.uniform(0.0, size, 2)
            local, parts_local = _building_local(rng, w, d, l_shape, snap)
            if snap:
                # Corners on pixel edges: centre on a half pixel when the matching side is odd.
                half_u, half_v = (w / 2) % 1.0, (d / 2) % 1.0
                if abs(cos_a) < 0.5:  # rotated by 90 degrees: u runs along y
                    half_u, half_v = half_v, half_u
                cx, cy = math.floor(cx) + half_u, math.floor(cy) + half_v
            roof_weights = _ROOF_WEIGHTS_LARGE if large else _ROOF_WEIGHTS_HOUSE
            roof = list(ROOF_COLOURS)[int(rng.choice(len(ROOF_COLOURS), p=roof_weights))]
            height_m = rng.uniform(7.0, 11.0) if large else rng.uniform(4.0, 8.0)
            gap = rng.uniform(2.0, 4.0) / ps
            if not (0 <= int(cx) < size and 0 <= int(cy) < size) or occupied[int(cy), int(cx)]:
                continue
            poly = _place(local, cx, cy, cos_a, sin_a)
            minx, miny, maxx, maxy = poly.bounds
            if minx < 1 or miny < 1 or maxx > size - 1 or maxy > size - 1:
                continue
            win = _window_mask(poly, shape)
            if win is None:
                continue
            (r0, r1, c0, c1), m = win
            if not m.any() or occupied[r0:r1, c0:c1][m].any():
                continue
            grow = _window_mask(poly.buffer(gap, join_style="mitre"), shape)
            if grow is not None:
                (g0, g1, h0, h1), gm = grow
                occupied[g0:g1, h0:h1] |= gm
            parts = []
            for (pu, pv, hw, hh) in parts_local:
                parts.append(_Part(cx + pu * cos_a - pv * sin_a, cy + pu * sin_a + pv * cos_a, hw, hh))
            driveway = None
            if anchor is not None and anchor[4] < anchor[5] / 2 + 10.0 / ps and rng.random() < 0.6:
                px, py, nx, ny, sb, _ = anchor
                drive_w = rng.uniform(2.5, 3.5) / ps
                off = rng.uniform(-0.3, 0.3) * w
                sx, sy = px + off * (-ny), py + off * nx
                driveway = LineString([(sx, sy), (sx + nx * (sb + 1.0), sy + ny * (sb + 1.0))]).buffer(
                    drive_w / 2, cap_style="flat")
            placed.append(_Placed(poly, cos_a, sin_a, parts, roof, float(height_m), driveway))
        if len(placed) >= 2:
            break
        scale *= 0.7
    return placed


def _make_trees(rng: np.random.Generator, size: int, ps: float, free_dist: np.ndarray
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tree crowns: a height field (px), a crown-id map and per-crown tints (index 0 unused)."""
    shape = free_dist.shape
    size_m = size * ps
    area_factor = (size_m / 512.0) ** 2
    crowns: List[Tuple[float, float, float]] = []
    candidates = []
    # Woods (few, large and dense) and copses (more, small).
    n_woods = int(rng.poisson(2.0 * area_factor)) if size_m >= 200 else 0
    n_copses = max(1, int(round(rng.uniform(8.0, 14.0) * area_factor)))
    for k in range(n_woods + n_copses):
        ccx, ccy = rng.uniform(0, size, 2)
        if k < n_woods:
            spread, n = rng.uniform(18.0, 30.0) / ps, int(rng.integers(150, 300))
        else:
            spread, n = rng.uniform(5.0, 14.0) / ps, int(rng.integers(10, 50))
        xy = rng.normal(0.0, spread, (n, 2)) + (ccx, ccy)
        radii = rng.uniform(2.0, 4.8, n) / ps
        candidates.extend(zip(xy[:, 0], xy[:, 1], radii))
    n_single = int(round(rng.uniform(30.0, 50.0) * area_factor))
    xy = rng.uniform(0, size, (n_single, 2))
    radii = rng.uniform(1.5, 3.5, n_single) / ps
    candidates.extend(zip(xy[:, 0], xy[:, 1], radii))
    for x, y, r in candidates:
        ix, iy = int(x), int(y)
        if 0 <= ix < shape[1] and 0 <= iy < shape[0] and free_dist[iy, ix] > r + 1.5:
            crowns.append((float(x), float(y), float(r)))
    height = np.zeros(shape, dtype=np.float32)
    ids = np.zeros(shape, dtype=np.int32)
    for k, (x, y, r) in enumerate(crowns, start=1):
        r0, r1 = max(int(y - r) - 1, 0), min(int(y + r) + 2, shape[0])
        c0, c1 = max(int(x - r) - 1, 0), min(int(x + r) + 2, shape[1])
        yy = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5 - y
        xx = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5 - x
        dome = r * np.sqrt(np.clip(1.0 - (xx * xx + yy * yy) / (r * r), 0.0, None))
        win_h = height[r0:r1, c0:c1]
        higher = dome > win_h
        win_h[higher] = dome[higher]
        ids[r0:r1, c0:c1][higher] = k
    tints = np.zeros((len(crowns) + 1, 3), dtype=np.float32)
    if crowns:
        base = np.array([(36, 66, 32), (48, 80, 38), (30, 56, 34), (56, 84, 44)], dtype=np.float32)
        pick = rng.integers(0, len(base), len(crowns))
        tints[1:] = base[pick] * rng.uniform(0.9, 1.1, (len(crowns), 1)).astype(np.float32)
    return height, ids, tints


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift a 2-D array by (dy, dx) >= 0 without wrapping."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    if dy < h and dx < w:
        out[dy:, dx:] = mask[:h - dy, :w - dx]
    return out


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _blend(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """In place: ``img = img * (1 - alpha) + colour * alpha`` (alpha (H, W), colour (3,) or (H, W, 3))."""
    a = alpha[..., None]
    img *= 1.0 - a
    img += a * colour


def render_scene(size: int = 1024, pixel_size: float = 0.5, seed: int = 0, epsg: int = 32633,
                 origin: Sequence[float] = (500000.0, 5000000.0)) -> Scene:
    """Render a scene in memory (what :func:`generate_scene` writes).

    Args:
        size: Width and height in pixels (at least 32).
        pixel_size: Pixel size in metres (positive).
        seed: Random seed; the same arguments always give the same scene.
        epsg: EPSG code of a projected CRS.
        origin: Map coordinates ``(x, y)`` of the top-left corner.

    Returns:
        The rendered :class:`Scene`.

    Raises:
        ValueError: If a parameter is invalid.
    """
    params = scene_params(size, pixel_size, seed, epsg, origin)
    size, ps, seed, epsg = params["size"], params["pixel_size"], params["seed"], params["epsg"]
    ox, oy = params["origin"]
    transform = Affine(ps, 0.0, ox, 0.0, -ps, oy)
    rng = np.random.default_rng(seed)
    shape = (size, size)
    f32 = np.float32

    # --- layout -------------------------------------------------------------------------------
    water = _make_water(rng, size, ps)
    roads = _make_roads(rng, size, ps, water)
    road_mask = _raster([r.polygon for r in roads], shape).astype(bool)
    water_dist_out = ndimage.distance_transform_edt(~water) if water.any() else np.full(shape, np.inf)
    blocked = road_mask | water | (water_dist_out <= 3.0 / ps)
    fields = _make_fields(rng, size, ps, blocked.copy())
    field_mask = _raster([f[0] for f in fields], shape).astype(bool)
    occupied = blocked | field_mask | _raster([r.polygon.buffer(1.5 / ps) for r in roads], shape).astype(bool)
    placed = _place_buildings(rng, size, ps, roads, occupied)
    driveways = [p.driveway for p in placed if p.driveway is not None]
    drive_mask = _raster(driveways, shape).astype(bool) & ~road_mask & ~water

    # Footprints in map coordinates; the roof mask is their rasterisation on the scene grid.
    buildings = []
    for i, p in enumerate(placed, start=1):
        poly_map = orient(_to_map(p.poly, transform), 1.0)
        buildings.append(Building(i, p.roof, poly_map, p.height_m))
    roof_labels = _raster([(b.polygon, b.id) for b in buildings], shape, dtype="int32", transform=transform)
    roofs = roof_labels > 0
    roof_grow = ndimage.binary_dilation(roofs, iterations=max(int(round(1.5 / ps)), 1))
    tree_blocked = roof_grow | road_mask | drive_mask | water | field_mask
    free_dist = ndimage.distance_transform_edt(~tree_blocked)
    tree_h, tree_ids, tree_tints = _make_trees(rng, size, ps, free_dist)
    trees = tree_h > 0

    # --- ground -------------------------------------------------------------------------------
    lush = np.array([74, 104, 50], dtype=f32)
    dry = np.array([122, 126, 78], dtype=f32)
    mix = 1.0 / (1.0 + np.exp(-1.6 * _fbm(rng, shape, (160.0 / ps, 60.0 / ps), (1.0, 0.5)) - 0.6))
    img = lush * (1.0 - mix[..., None]) + dry * mix[..., None]
    bright = _fbm(rng, shape, (20.0 / ps, 6.0 / ps, 1.6 / ps), (1.0, 0.8, 0.6))
    img *= (1.0 + 0.07 * bright)[..., None]
    img += rng.standard_normal((size, size, 3), dtype=f32) * f32(2.5) \
        + rng.standard_normal(shape, dtype=f32)[..., None] * f32(3.0)

    # Meadow parcels: large rotated rectangles mown or grazed to a slightly different tone.
    if size * ps >= 150:
        parcels = []
        for k in range(int(round(rng.uniform(3.0, 6.0) * (size * ps / 512.0) ** 2))):
            w, h = rng.uniform(70.0, 200.0, 2) / ps
            angle = rng.uniform(0, math.pi)
            cx, cy = rng.uniform(0, size, 2)
            parcels.append((_place(box(-w / 2, -h / 2, w / 2, h / 2), cx, cy, math.cos(angle), math.sin(angle)),
                            k + 1))
        tones = np.ones((len(parcels) + 1, 3), dtype=f32)
        if parcels:
            tones[1:] = rng.uniform(0.88, 1.12, (len(parcels), 1)) * rng.uniform(0.95, 1.05, (len(parcels), 3))
        parcel_ids = _raster(parcels, shape)
        for b in range(3):
            img[..., b] *= ndimage.gaussian_filter(tones[parcel_ids, b], 1.5 / ps)

    # Bare soil patches.
    soil_field = _fbm(rng, shape, (90.0 / ps, 30.0 / ps), (1.0, 0.45))
    soil_alpha = np.clip((soil_field - 1.35) / 0.35, 0.0, 1.0).astype(f32)
    soil_tex = _fbm(rng, shape, (8.0 / ps, 1.5 / ps), (1.0, 0.7))
    soil = np.array([152, 126, 96], dtype=f32) * (1.0 + 0.06 * soil_tex)[..., None]
    _blend(img, soil_alpha, soil)

    # Ploughed fields.
    if fields:
        for poly, angle, period in fields:
            win = _window_mask(poly, shape, pad=0)
            if win is None:
                continue
            (r0, r1, c0, c1), m = win
            yy, xx = np.mgrid[r0:r1, c0:c1].astype(f32) + f32(0.5)
            u = xx * math.cos(angle) + yy * math.sin(angle)
            stripes = 0.5 + 0.5 * np.sin(2 * math.pi * u / period)
            tone = np.array([140, 116, 86], dtype=f32) if rng.random() < 0.6 else np.array([118, 112, 74], dtype=f32)
            col = tone * (0.9 + 0.16 * stripes)[..., None] * (1.0 + 0.05 * soil_tex[r0:r1, c0:c1])[..., None]
            sub = img[r0:r1, c0:c1]
            sub[m] = col[m]

    # Water: darker and bluer away from the shore, a muddy bank.
    if water.any():
        depth = ndimage.distance_transform_edt(water)
        d = np.clip(depth / (6.0 / ps), 0.0, 1.0).astype(f32)
        shallow = np.array([62, 88, 76], dtype=f32)
        deep = np.array([30, 54, 62], dtype=f32)
        ripple = _smooth_noise(rng, shape, 4.0 / ps)
        wcol = (shallow * (1 - d[..., None]) + deep * d[..., None]) * (1.0 + 0.03 * ripple)[..., None]
        img[water] = wcol[water]
        bank = (~water) & (water_dist_out <= 1.5 / ps)
        bank_alpha = np.where(bank, 0.75 * (1.0 - water_dist_out / (1.5 / ps + 1.0)), 0.0).astype(f32)
        _blend(img, bank_alpha, np.array([108, 102, 80], dtype=f32))

    # Roads: asphalt with lighter edges, dashed centre lines on main roads.
    if roads:
        asphalt_tex = _fbm(rng, shape, (12.0 / ps, 1.0), (1.0, 0.6))
        asphalt = np.array([100, 100, 102], dtype=f32) * (1.0 + 0.04 * asphalt_tex)[..., None]
        img[road_mask] = asphalt[road_mask]
        edge = road_mask & ~ndimage.binary_erosion(road_mask, iterations=max(int(round(1.0 / ps)), 1))
        img[edge] = (np.array([150, 148, 142], dtype=f32) * (1.0 + 0.03 * asphalt_tex[edge])[:, None])
        dashes = []
        for r in roads:
            if not r.main:
                continue
            others = shapely.union_all([o.polygon.buffer(2.0 / ps) for o in roads if o is not r])
            length = r.line.length
            starts = np.arange(0.0, length, 6.0 / ps)
            for s0 in starts:
                seg = shapely.ops.substring(r.line, s0, min(s0 + 3.0 / ps, length))
                if seg.length > 0:
                    dashes.append(seg.buffer(0.4 / ps, cap_style="flat").difference(others))
        dash_mask = _raster(dashes, shape).astype(bool) & road_mask
        img[dash_mask] = np.array([205, 205, 198], dtype=f32)
    if drive_mask.any():
        img[drive_mask] = np.array([168, 164, 154], dtype=f32) * (1.0 + 0.04 * soil_tex[drive_mask])[:, None]

    # Cars on the roads (not on bridges).
    car_polys: List[Tuple[Polygon, np.ndarray]] = []
    car_palette = np.array([(225, 225, 222), (30, 30, 34), (165, 168, 172), (150, 30, 30), (40, 60, 120),
                            (90, 92, 96)], dtype=f32)
    for r in roads:
        n_cars = int(rng.poisson(r.line.length * ps / 60.0))
        for _ in range(n_cars):
            t = rng.uniform(0.0, r.line.length)
            p = r.line.interpolate(t)
            q = r.line.interpolate(min(t + 1.0, r.line.length))
            if q.distance(p) < 1e-6:
                continue
            tx, ty = (q.x - p.x) / q.distance(p), (q.y - p.y) / q.distance(p)
            lane = rng.choice([-1.0, 1.0]) * r.width / 4
            cx, cy = p.x - ty * lane, p.y + tx * lane
            if not (0 <= cx < size and 0 <= cy < size) or water[int(cy), int(cx)]:
                continue
            car = _place(box(-2.2 / ps, -0.9 / ps, 2.2 / ps, 0.9 / ps), cx, cy, tx, ty)
            car_polys.append((car, car_palette[int(rng.integers(0, len(car_palette)))]))
    if car_polys:
        car_shadow = _raster([_cast_shadow(c, 0.5 / ps, 0.5 / ps) for c, _ in car_polys], shape).astype(bool)
        img[car_shadow & road_mask] *= f32(0.6)
        for car, colour in car_polys:
            win = _window_mask(car, shape, pad=0)
            if win is None:
                continue
            (r0, r1, c0, c1), m = win
            m &= road_mask[r0:r1, c0:c1]
            img[r0:r1, c0:c1][m] = colour

    # --- trees --------------------------------------------------------------------------------
    if trees.any():
        off = int(round(_SHADOW_PER_M * 9.0 / ps))
        tshadow = np.zeros(shape, dtype=bool)
        for k in range(1, off + 1):
            tshadow |= _shift(trees, k, k)
        tshadow &= ~trees
        img[tshadow] *= np.array([0.52, 0.55, 0.62], dtype=f32)
        hn = tree_h + np.where(trees, 0.35 / ps * _smooth_noise(rng, shape, 0.6 / ps), 0.0).astype(f32)
        gy, gx = np.gradient(hn)
        light = np.array([-1.0, -1.0, 1.3]) / math.sqrt(1 + 1 + 1.3 ** 2)
        shade = (-gx * light[0] - gy * light[1] + light[2]) / np.sqrt(gx * gx + gy * gy + 1.0)
        shade = np.clip(shade, 0.0, 1.0).astype(f32)
        leaf = _smooth_noise(rng, shape, 0.8 / ps)
        tcol = tree_tints[tree_ids] * (0.35 + 1.0 * shade)[..., None] * (1.0 + 0.08 * leaf)[..., None]
        img[trees] = tcol[trees]

    # --- building shadows ---------------------------------------------------------------------
    if placed:
        shadows = []
        for p in placed:
            off = _SHADOW_PER_M * p.height_m / ps
            shadows.append(_cast_shadow(p.poly, off, off))
        smask = _raster(shadows, shape).astype(f32)
        salpha = np.clip(ndimage.gaussian_filter(smask, 0.5), 0.0, 1.0) * f32(0.55)
        img *= (1.0 - salpha[..., None] * np.array([1.0, 0.96, 0.85], dtype=f32))

    # Slight optical blur of everything under the roofs.
    for b in range(3):
        img[..., b] = ndimage.gaussian_filter(img[..., b], 0.5)

    # --- roofs --------------------------------------------------------------------------------
    if roofs.any():
        rr, cc = np.nonzero(roofs)
        lab = roof_labels[rr, cc]
        n = len(placed) + 1
        cos_a = np.zeros(n)
        sin_a = np.zeros(n)
        pa = np.zeros((n, 4))
        pb = np.zeros((n, 4))
        colours = np.zeros((n, 3), dtype=f32)
        for i, p in enumerate(placed, start=1):
            cos_a[i], sin_a[i] = p.cos_a, p.sin_a
            a = p.parts[0]
            b = p.parts[-1]
            pa[i] = (a.cx, a.cy, a.hw, a.hh)
            pb[i] = (b.cx, b.cy, b.hw, b.hh)
            colours[i] = np.array(ROOF_COLOURS[p.roof], dtype=f32) * rng.uniform(0.9, 1.08) \
                + rng.normal(0.0, 2.5, 3).astype(f32)
        x = cc + 0.5
        y = rr + 0.5
        c, s = cos_a[lab], sin_a[lab]
        ua = (x - pa[lab, 0]) * c + (y - pa[lab, 1]) * s
        va = -(x - pa[lab, 0]) * s + (y - pa[lab, 1]) * c
        in_a = (np.abs(ua) <= pa[lab, 2] + 1e-6) & (np.abs(va) <= pa[lab, 3] + 1e-6)
        part = np.where(in_a[:, None], pa[lab], pb[lab])
        u = (x - part[:, 0]) * c + (y - part[:, 1]) * s
        v = -(x - part[:, 0]) * s + (y - part[:, 1]) * c
        ridge_along_u = part[:, 2] >= part[:, 3]
        across = np.where(ridge_along_u, v, u)
        ax = np.where(ridge_along_u, -s, c)
        ay = np.where(ridge_along_u, c, s)
        sign = np.where(across >= 0, 1.0, -1.0)
        dot = sign * (ax * _SUN[0] + ay * _SUN[1])
        factor = 1.0 + 0.1 * np.sign(dot + 1e-9) * np.maximum(np.abs(dot), 0.5)
        factor = np.where(np.abs(across) < 0.6, 1.05, factor)  # ridge line
        eroded = ndimage.binary_erosion(roofs)
        factor = np.where(eroded[rr, cc], factor, factor * 0.88)  # eaves
        tex = _smooth_noise(rng, shape, 0.8 / ps)[rr, cc]
        roof_col = colours[lab] * (factor * (1.0 + 0.03 * tex))[:, None]
        img[rr, cc] = roof_col.astype(f32)

    # --- sensor -------------------------------------------------------------------------------
    img += rng.standard_normal((size, size, 3), dtype=f32) * f32(1.8)
    rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8).transpose(2, 0, 1).copy()

    landcover = np.full(shape, _GRASS, dtype=np.uint8)
    landcover[(soil_alpha > 0.5) | field_mask] = _SOIL
    landcover[water] = _WATER
    landcover[road_mask | drive_mask] = _ROAD
    landcover[trees] = _TREE
    landcover[roofs] = _BUILDING
    return Scene(rgb=rgb, roof_labels=roof_labels, landcover=landcover, buildings=buildings,
                 transform=transform, epsg=epsg, params=params)


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _ogr_exceptions() -> Iterator[Any]:
    """OGR/OSR with exceptions on, restoring the caller's setting afterwards."""
    from osgeo import ogr, osr

    prev_ogr, prev_osr = ogr.GetUseExceptions(), osr.GetUseExceptions()
    ogr.UseExceptions()
    osr.UseExceptions()
    try:
        yield ogr
    finally:
        # GDAL keeps a stack of error handlers: pop in the reverse order of the pushes.
        if not prev_osr:
            osr.DontUseExceptions()
        if not prev_ogr:
            ogr.DontUseExceptions()


def _write_tif(path: str, scene: Scene) -> None:
    _, h, w = scene.rgb.shape
    profile = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs=CRS.from_epsg(scene.epsg),
                   transform=scene.transform, nodata=None, tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate", photometric="RGB", interleave="pixel")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(scene.rgb)
        for i, name in enumerate(("red", "green", "blue"), start=1):
            dst.set_band_description(i, name)
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]


def _write_polygon_gpkg(path: str, layer_name: str, epsg: int, fields: Sequence[Tuple[str, str]],
                        rows: Sequence[Tuple[int, Polygon, Sequence[Any]]]) -> None:
    """Write polygons to a fresh GeoPackage layer.

    Args:
        path: the GeoPackage (replaced when it exists).
        layer_name: the layer.
        epsg: its CRS.
        fields: ``(name, kind)`` with kind ``int``, ``str`` or ``float``.
        rows: ``(fid, polygon, values in fields order)``.
    """
    with _ogr_exceptions() as ogr:
        from osgeo import osr

        kinds = {"int": ogr.OFTInteger, "str": ogr.OFTString, "float": ogr.OFTReal}
        driver = ogr.GetDriverByName("GPKG")
        if os.path.exists(path):
            driver.DeleteDataSource(path)
        ds = driver.CreateDataSource(path)
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        layer = ds.CreateLayer(layer_name, srs, ogr.wkbPolygon, options=["FID=fid", "GEOMETRY_NAME=geom"])
        for name, kind in fields:
            layer.CreateField(ogr.FieldDefn(name, kinds[kind]))
        defn = layer.GetLayerDefn()
        layer.StartTransaction()
        for fid, polygon, values in rows:
            feat = ogr.Feature(defn)
            feat.SetFID(fid)
            for (name, _kind), value in zip(fields, values):
                feat.SetField(name, value)
            feat.SetGeometry(ogr.CreateGeometryFromWkb(shapely.to_wkb(polygon)))
            layer.CreateFeature(feat)
            feat = None
        layer.CommitTransaction()
        layer = None
        ds = None


def _write_gpkg(path: str, buildings: Sequence[Building], epsg: int) -> None:
    _write_polygon_gpkg(path, LAYER_NAME, epsg, (("id", "int"), ("roof", "str"), ("area_m2", "float")),
                        [(b.id, b.polygon, (b.id, b.roof, b.area_m2)) for b in buildings])


def _paths(out_dir: _PathLike) -> Dict[str, str]:
    out_dir = os.fspath(out_dir)
    return {"scene": os.path.join(out_dir, SCENE_NAME), "buildings": os.path.join(out_dir, BUILDINGS_NAME)}


def generate_scene(out_dir: str, size: int = 1024, pixel_size: float = 0.5, seed: int = 0, epsg: int = 32633,
                   origin: Sequence[float] = (500000.0, 5000000.0)) -> Dict[str, str]:
    """Render a scene and write ``scene.tif``, ``buildings.gpkg`` and ``scene.json`` into ``out_dir``.

    Existing files are overwritten. ``scene.json`` is written last, so an interrupted run is redone by
    :func:`is_up_to_date`-based callers such as the command line.

    Args:
        out_dir: Output folder (created if missing).
        size: Width and height in pixels (at least 32).
        pixel_size: Pixel size in metres (positive).
        seed: Random seed; the same arguments always give the same pixels and footprints.
        epsg: EPSG code of a projected CRS, e.g. a UTM zone.
        origin: Map coordinates ``(x, y)`` of the top-left corner.

    Returns:
        ``{"scene": <GeoTIFF path>, "buildings": <GeoPackage path>}``.

    Raises:
        ValueError: If a parameter is invalid.
    """
    scene = render_scene(size, pixel_size, seed, epsg, origin)
    os.makedirs(os.fspath(out_dir), exist_ok=True)
    paths = _paths(out_dir)
    params_path = os.path.join(os.fspath(out_dir), PARAMS_NAME)
    if os.path.exists(params_path):
        os.remove(params_path)
    _write_tif(paths["scene"], scene)
    _write_gpkg(paths["buildings"], scene.buildings, scene.epsg)
    with open(params_path, "w", encoding="utf-8") as fh:
        json.dump(scene.params, fh, indent=2, sort_keys=True)
        fh.write("\n")
    return paths


def is_up_to_date(out_dir: str, size: int = 1024, pixel_size: float = 0.5, seed: int = 0, epsg: int = 32633,
                  origin: Sequence[float] = (500000.0, 5000000.0)) -> bool:
    """Whether ``out_dir`` already holds a complete scene made with these parameters and this version.

    Args:
        out_dir: Folder written by :func:`generate_scene`.
        size: Width and height in pixels.
        pixel_size: Pixel size in metres.
        seed: Random seed.
        epsg: EPSG code.
        origin: Map coordinates of the top-left corner.

    Returns:
        True if ``scene.json`` matches and both data files exist.

    Raises:
        ValueError: If a parameter is invalid.
    """
    wanted = scene_params(size, pixel_size, seed, epsg, origin)
    paths = _paths(out_dir)
    if not all(os.path.isfile(p) for p in paths.values()):
        return False
    try:
        with open(os.path.join(os.fspath(out_dir), PARAMS_NAME), encoding="utf-8") as fh:
            stored = json.load(fh)
    except (OSError, ValueError):
        return False
    return stored == wanted


def _resolve_paths(out_dir_or_paths: Union[_PathLike, Mapping[str, str]]) -> Dict[str, str]:
    if isinstance(out_dir_or_paths, Mapping):
        try:
            return {"scene": os.fspath(out_dir_or_paths["scene"]),
                    "buildings": os.fspath(out_dir_or_paths["buildings"])}
        except KeyError as exc:
            raise ValueError(f"expected a mapping with 'scene' and 'buildings' paths, missing {exc}") from None
    return _paths(out_dir_or_paths)


def read_buildings(path: str) -> List[Building]:
    """Read the footprints of a ``buildings.gpkg`` written by :func:`generate_scene`, ordered by id.

    Args:
        path: GeoPackage path.

    Returns:
        The buildings (``height_m`` is not stored and reads as NaN).

    Raises:
        ValueError: If the file or its ``buildings`` layer cannot be opened.
    """
    with _ogr_exceptions() as ogr:
        try:
            ds = ogr.Open(os.fspath(path))
        except RuntimeError as exc:
            raise ValueError(f"cannot open {path}: {exc}") from None
        layer = ds.GetLayerByName(LAYER_NAME) if ds is not None else None
        if layer is None:
            raise ValueError(f"{path} has no layer {LAYER_NAME!r}")
        out = []
        for feat in layer:
            geom = shapely.from_wkb(bytes(feat.GetGeometryRef().ExportToWkb()))
            out.append(Building(int(feat.GetField("id")), str(feat.GetField("roof")), geom, float("nan")))
        layer = None
        ds = None
    out.sort(key=lambda b: b.id)
    return out


def building_mask(out_dir_or_paths: Union[_PathLike, Mapping[str, str]]) -> np.ndarray:
    """Rasterise the building footprints onto the scene grid (pixel-centre rule).

    Args:
        out_dir_or_paths: The folder given to :func:`generate_scene`, or the dict it returned.

    Returns:
        ``(H, W)`` bool array, True on building pixels; equal to the roofs drawn in ``scene.tif``.

    Raises:
        ValueError: If the files cannot be read.
    """
    paths = _resolve_paths(out_dir_or_paths)
    with rasterio.open(paths["scene"]) as src:
        shape, transform = (src.height, src.width), src.transform
    polys = [b.polygon for b in read_buildings(paths["buildings"])]
    return _raster(polys, shape, transform=transform).astype(bool)


# --------------------------------------------------------------------------------------------------
# Mosaic: one scene with urban, rural and uninhabited regions (truth for scene classification)
# --------------------------------------------------------------------------------------------------

#: Bump whenever the mosaic for a given set of parameters changes; the CLI then regenerates.
MOSAIC_VERSION = 1
MOSAIC_PARAMS_NAME = "mosaic.json"
REGIONS_NAME = "regions.gpkg"
REGIONS_LAYER = "regions"
DEFAULT_MOSAIC_DIR = os.path.join(DEFAULT_OUT_DIR, "mosaic")
#: Region classes of :func:`generate_mosaic` (index = value of :attr:`Mosaic.region_map`).
REGION_CLASSES: Tuple[str, ...] = ("urban", "rural", "uninhabited")
_URBAN, _RURAL, _WILD = range(3)
#: Smallest mosaic side in metres: every region type must have room for its content.
_MOSAIC_MIN_SIDE_M = 100.0

#: Layout densities of the region types (lengths in metres, counts per square kilometre).
MOSAIC_DENSITY: Dict[str, Dict[str, Any]] = {
    "urban": {"street_spacing": (45.0, 70.0), "street_width": (5.5, 7.5), "setback": (2.0, 6.0),
              "building_gap": (2.5, 6.0), "large_share": 0.22, "back_row": 0.45, "garden_trees_per_km2": 500.0,
              "street_tree_share": 0.35, "cars_per_km_street": 20.0},
    "rural": {"farms_per_km2": (18.0, 30.0), "roads_per_km2": (3.0, 6.0), "road_width": (4.0, 5.5),
              "field_fill": 0.8, "houses_per_km_road": 3.0, "pond_probability": 0.3,
              "copses_per_km2": (20.0, 35.0), "single_trees_per_km2": 80.0, "cars_per_km_street": 5.0},
    "uninhabited": {"lake_probability": 0.65, "forest_threshold": -0.5, "tree_spacing": 4.2,
                    "soil_threshold": 0.7},
}
_SOIL_THRESHOLD = {_URBAN: 1.9, _RURAL: 1.3, _WILD: MOSAIC_DENSITY["uninhabited"]["soil_threshold"]}


@dataclass
class Mosaic:
    """An in-memory mosaic, as written by :func:`generate_mosaic`.

    Attributes:
        scene: The image, roof labels, land cover, buildings and georeferencing (``scene.params`` holds the
            mosaic parameters).
        regions: ``(polygon, class)`` in map coordinates, one per zone, covering the scene exactly once;
            ``class`` is one of :data:`REGION_CLASSES`.
        region_map: ``(H, W)`` uint8 index into :data:`REGION_CLASSES` of the region holding each pixel
            centre.
    """

    scene: Scene
    regions: List[Tuple[Polygon, str]]
    region_map: np.ndarray


def mosaic_params(size: int = 2048, pixel_size: float = 0.5, seed: int = 0, epsg: int = 32633,
                  origin: Sequence[float] = (500000.0, 5000000.0)) -> Dict[str, Any]:
    """The validated parameters of a mosaic, as stored in ``mosaic.json``.

    Raises:
        ValueError: If a parameter is invalid or the scene is smaller than 100 m across.
    """
    size, pixel_size, seed, epsg, origin = _check_args(size, pixel_size, seed, epsg, origin)
    if size * pixel_size < _MOSAIC_MIN_SIDE_M:
        raise ValueError(f"a mosaic must be at least {_MOSAIC_MIN_SIDE_M:g} m across, got {size} px of "
                         f"{pixel_size:g} m")
    return {"kind": "mosaic", "version": MOSAIC_VERSION, "size": size, "pixel_size": pixel_size, "seed": seed,
            "epsg": epsg, "origin": [origin[0], origin[1]]}


def _rect_window(cx: float, cy: float, cos_a: float, sin_a: float, hw: float, hh: float,
                 shape: Tuple[int, int]) -> Optional[Tuple[Tuple[int, int, int, int], np.ndarray]]:
    """Pixels whose centres lie in a rotated rectangle (half sizes ``hw`` along (cos_a, sin_a), ``hh`` across)."""
    h, w = shape
    ex, ey = abs(cos_a) * hw + abs(sin_a) * hh, abs(sin_a) * hw + abs(cos_a) * hh
    c0, c1 = max(int(math.floor(cx - ex)), 0), min(int(math.ceil(cx + ex)) + 1, w)
    r0, r1 = max(int(math.floor(cy - ey)), 0), min(int(math.ceil(cy + ey)) + 1, h)
    if c1 <= c0 or r1 <= r0:
        return None
    dx = np.arange(c0, c1, dtype=np.float64)[None, :] + 0.5 - cx
    dy = np.arange(r0, r1, dtype=np.float64)[:, None] + 0.5 - cy
    u = dx * cos_a + dy * sin_a
    v = dy * cos_a - dx * sin_a
    return (r0, r1, c0, c1), (np.abs(u) <= hw) & (np.abs(v) <= hh)


def _rects_hit(rects: Sequence[Tuple[float, float, float, float, float, float]], grow: float,
               mask: np.ndarray) -> bool:
    """Whether any pixel of the rectangles ``(cx, cy, cos, sin, hw, hh)`` grown by ``grow`` is set in ``mask``."""
    for cx, cy, c, s, hw, hh in rects:
        win = _rect_window(cx, cy, c, s, hw + grow, hh + grow, mask.shape)
        if win is not None:
            (r0, r1, c0, c1), m = win
            if mask[r0:r1, c0:c1][m].any():
                return True
    return False


def _rects_mark(rects: Sequence[Tuple[float, float, float, float, float, float]], grow: float,
                mask: np.ndarray) -> None:
    for cx, cy, c, s, hw, hh in rects:
        win = _rect_window(cx, cy, c, s, hw + grow, hh + grow, mask.shape)
        if win is not None:
            (r0, r1, c0, c1), m = win
            mask[r0:r1, c0:c1] |= m


def _mosaic_zones(rng: np.random.Generator, size: int, ps: float
                  ) -> Tuple[List[Polygon], np.ndarray, np.ndarray, Tuple[float, float]]:
    """Voronoi zones (pixel coordinates) of relaxed seeded points, their classes, generators and the town centre.

    About one zone per (300 m)^2 (at least 6); classes by seeded distance from a town centre: the nearest
    quarter urban, the farthest 30 % uninhabited, rural in between (each class at least once).
    """
    size_m = size * ps
    n = max(6, int(round(size_m * size_m / 300.0 ** 2)))
    frame = box(0.0, 0.0, float(size), float(size))
    pts = rng.uniform(0.05, 0.95, (n, 2)) * size

    def cells_of(points: np.ndarray) -> List[Polygon]:
        parts = shapely.get_parts(shapely.voronoi_polygons(MultiPoint([tuple(p) for p in points]),
                                                           extend_to=frame))
        parts = shapely.intersection(parts, frame)
        out = []
        for x, y in points:
            hit = np.nonzero(shapely.contains_xy(parts, x, y))[0]
            out.append(parts[int(hit[0])])
        return out

    for _ in range(2):  # Lloyd relaxation: more even zone sizes
        cells = cells_of(pts)
        pts = np.array([(c.centroid.x, c.centroid.y) for c in cells])
    cells = [orient(c, 1.0) for c in cells_of(pts)]
    town = (float(rng.uniform(0.3, 0.7) * size), float(rng.uniform(0.3, 0.7) * size))
    score = np.hypot(pts[:, 0] - town[0], pts[:, 1] - town[1]) / size + rng.normal(0.0, 0.12, n)
    order = np.argsort(score, kind="stable")
    n_urban, n_wild = max(1, int(round(0.25 * n))), max(1, int(round(0.3 * n)))
    classes = np.full(n, _RURAL, dtype=np.uint8)
    classes[order[:n_urban]] = _URBAN
    classes[order[n - n_wild:]] = _WILD
    return cells, classes, pts, town


def _zone_map(cells: List[Polygon], pts: np.ndarray, size: int) -> np.ndarray:
    """Index of the zone holding every pixel centre (rasterised cells; the nearest generator where no cell
    claims a pixel, which only a centre on a shared vertex can cause)."""
    out = _raster([(c, z + 1) for z, c in enumerate(cells)], (size, size), dtype="int32") - 1
    rr, cc = np.nonzero(out < 0)
    if rr.size:
        d = (cc[:, None] + 0.5 - pts[None, :, 0]) ** 2 + (rr[:, None] + 0.5 - pts[None, :, 1]) ** 2
        out[rr, cc] = d.argmin(axis=1)
    return out


def _line_parts(geom: Any, min_len: float) -> List[LineString]:
    if geom.is_empty:
        return []
    parts = [geom] if geom.geom_type == "LineString" else [g for g in getattr(geom, "geoms", [])
                                                           if g.geom_type == "LineString"]
    return [p for p in parts if p.length >= min_len]


def _mosaic_roads(rng: np.random.Generator, size: int, ps: float, cells: List[Polygon], classes: np.ndarray,
                  town: Tuple[float, float]) -> Tuple[List[_Road], List[int]]:
    """Main roads through the town, street grids in urban zones, a few country roads in rural zones.

    Returns the roads and, per road, its zone class (main roads: -1).
    """
    size_m = size * ps
    roads: List[_Road] = []
    kinds: List[int] = []
    n_main = 1 if size_m < 400 else 2
    base = rng.uniform(0, math.pi)
    for m in range(n_main):
        angle = base + m * math.pi / 2 + rng.uniform(-0.3, 0.3)
        centre = (town[0] + rng.uniform(-0.05, 0.05) * size, town[1] + rng.uniform(-0.05, 0.05) * size)
        line = _curve(rng, size, centre, angle, amp=rng.uniform(0.0, 0.04) * size,
                      wavelength=rng.uniform(1.5, 3.0) * size)
        if line is None:
            continue
        width = rng.uniform(7.0, 9.0) / ps
        roads.append(_Road(line, width, True, line.buffer(width / 2, cap_style="flat")))
        kinds.append(-1)
    mains = [r.line for r in roads]
    main_union = shapely.union_all(mains) if mains else None
    urban = MOSAIC_DENSITY["urban"]
    rural = MOSAIC_DENSITY["rural"]
    for cell, cls in zip(cells, classes):
        if cls == _URBAN:
            angle = base + rng.uniform(-0.08, 0.08)
            ca, sa = math.cos(angle), math.sin(angle)
            cx, cy = cell.centroid.x, cell.centroid.y
            reach = max(math.hypot(x - cx, y - cy) for x, y in cell.exterior.coords) + 1.0
            for axis in range(2):
                spacing = rng.uniform(*urban["street_spacing"]) / ps
                ux, uy = (ca, sa) if axis == 0 else (-sa, ca)  # street direction
                nx, ny = -uy, ux  # across the streets
                for off in np.arange(-reach + rng.uniform(0, spacing), reach, spacing):
                    px, py = cx + nx * off, cy + ny * off
                    line = LineString([(px - ux * reach, py - uy * reach), (px + ux * reach, py + uy * reach)])
                    for part in _line_parts(line.intersection(cell), 25.0 / ps):
                        if main_union is not None and \
                                part.buffer(14.0 / ps).intersection(main_union).length > 0.5 * part.length:
                            continue  # runs along a main road
                        width = rng.uniform(*urban["street_width"]) / ps
                        roads.append(_Road(part, width, False, part.buffer(width / 2, cap_style="flat")))
                        kinds.append(_URBAN)
        elif cls == _RURAL:
            area_km2 = cell.area * ps * ps / 1e6
            n_roads = max(1, int(round(area_km2 * rng.uniform(*rural["roads_per_km2"]))))
            inner = cell.representative_point()
            for _ in range(n_roads):
                target = Point(inner.x + rng.normal(0, 0.25) * math.sqrt(cell.area),
                               inner.y + rng.normal(0, 0.25) * math.sqrt(cell.area))
                start = None
                if main_union is not None:
                    near = shapely.ops.nearest_points(main_union, target)[0]
                    if cell.contains(near):
                        start = near
                if start is None:
                    start = shapely.ops.nearest_points(cell.exterior, Point(town))[0]
                length = max(start.distance(target), 0.4 * math.sqrt(cell.area)) * 1.3
                angle = math.atan2(target.y - start.y, target.x - start.x) + rng.uniform(-0.3, 0.3)
                line = _curve(rng, size, (start.x, start.y), angle, amp=rng.uniform(0.0, 0.04) * size,
                              wavelength=rng.uniform(0.8, 1.5) * size, half_len=length, n=60)
                if line is None:
                    continue
                for part in _line_parts(line.intersection(cell), 30.0 / ps):
                    width = rng.uniform(*rural["road_width"]) / ps
                    roads.append(_Road(part, width, False, part.buffer(width / 2, cap_style="flat")))
                    kinds.append(_RURAL)
    return roads, kinds


def _mosaic_water(rng: np.random.Generator, size: int, ps: float, cells: List[Polygon], classes: np.ndarray,
                  zone_map: np.ndarray, roads: List[_Road]) -> np.ndarray:
    """Lakes in uninhabited zones and ponds in rural ones, clear of the roads and inside their zone."""
    shape = (size, size)
    water = np.zeros(shape, dtype=bool)
    lobes = _smooth_noise(rng, shape, 40.0 / ps)
    road_union = shapely.union_all([r.polygon for r in roads]) if roads else None
    for z, (cell, cls) in enumerate(zip(cells, classes)):
        if cls == _WILD and rng.random() < MOSAIC_DENSITY["uninhabited"]["lake_probability"]:
            lo, hi, cap = 0.35, 0.6, 150.0 / ps
        elif cls == _RURAL and rng.random() < MOSAIC_DENSITY["rural"]["pond_probability"]:
            lo, hi, cap = 0.1, 0.2, 15.0 / ps
        else:
            continue
        centre = shapely.ops.polylabel(cell, tolerance=2.0)
        inner = centre.distance(cell.exterior)
        ang = rng.uniform(0, 2 * math.pi)
        shift = rng.uniform(0.0, 0.3) * inner
        centre = Point(centre.x + shift * math.cos(ang), centre.y + shift * math.sin(ang))
        radius = min(rng.uniform(lo, hi) * inner, cap)
        if road_union is not None:
            radius = min(radius, (centre.distance(road_union) - 6.0 / ps) / 1.3)
        if radius < 6.0 / ps:
            continue
        reach = radius * 1.3 + 1
        r0, r1 = max(int(centre.y - reach), 0), min(int(centre.y + reach) + 1, size)
        c0, c1 = max(int(centre.x - reach), 0), min(int(centre.x + reach) + 1, size)
        if r1 <= r0 or c1 <= c0:
            continue
        yy = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5 - centre.y
        xx = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5 - centre.x
        factor = np.clip(1.0 + 0.25 * lobes[r0:r1, c0:c1], 0.55, 1.3)
        lake = np.sqrt(xx * xx + yy * yy) < radius * factor
        water[r0:r1, c0:c1] |= lake & (zone_map[r0:r1, c0:c1] == z)
    return water


def _make_building(rng: np.random.Generator, ps: float, large: bool, l_share: float,
                   large_size: Tuple[Tuple[float, float], Tuple[float, float]] = ((18.0, 34.0), (12.0, 22.0))
                   ) -> Tuple[float, float, bool, str, float]:
    """Random footprint size (px), L-shape flag, roof colour and height of one building."""
    if large:
        w, d = rng.uniform(*large_size[0]) / ps, rng.uniform(*large_size[1]) / ps
    else:
        w, d = rng.uniform(8.0, 16.0) / ps, rng.uniform(6.5, 11.0) / ps
    l_shape = bool(rng.random() < l_share)
    weights = _ROOF_WEIGHTS_LARGE if large else _ROOF_WEIGHTS_HOUSE
    roof = list(ROOF_COLOURS)[int(rng.choice(len(ROOF_COLOURS), p=weights))]
    height = float(rng.uniform(7.0, 14.0) if large else rng.uniform(4.0, 8.0))
    return float(w), float(d), l_shape, roof, height


def _building_parts(rng: np.random.Generator, w: float, d: float, l_shape: bool
                    ) -> List[Tuple[float, float, float, float]]:
    """Roof parts ``(u, v, half_u, half_v)`` in local coordinates: the main block and an optional rear wing
    (the shapes of :func:`_building_local`, without building the polygon)."""
    parts = [(0.0, 0.0, w / 2, d / 2)]
    if l_shape:
        wb = w * rng.uniform(0.35, 0.55)
        db = d * rng.uniform(0.5, 1.0)
        u0, u1 = (w / 2 - wb, w / 2) if rng.random() < 0.5 else (-w / 2, -w / 2 + wb)
        parts.append(((u0 + u1) / 2, d / 2 + db / 2, wb / 2, db / 2))
    return parts


def _parts_polygon(parts: Sequence[Tuple[float, float, float, float]]) -> Polygon:
    """The footprint (local coordinates) of :func:`_building_parts`: the wing shares the main block's rear edge."""
    _, _, hw, hh = parts[0]
    local = box(-hw, -hh, hw, hh)
    if len(parts) > 1:
        pu, pv, whw, whh = parts[1]
        local = shapely.union(local, box(pu - whw, hh, pu + whw, hh + 2 * whh)).simplify(0)
    return orient(local, 1.0)


def _try_place(rng: np.random.Generator, size: int, w: float, d: float, l_shape: bool, roof: str, height: float,
               cx: float, cy: float, cos_a: float, sin_a: float, gap: float, occupied: np.ndarray,
               placed: List[_Placed], driveway: Optional[Any] = None) -> bool:
    """Place one building if it stays inside the image and off ``occupied``; mark it (grown by ``gap``)."""
    parts_local = _building_parts(rng, w, d, l_shape)
    rects = [(cx + pu * cos_a - pv * sin_a, cy + pu * sin_a + pv * cos_a, cos_a, sin_a, hw, hh)
             for (pu, pv, hw, hh) in parts_local]
    ex = max(abs(x - cx) + abs(cos_a) * hw + abs(sin_a) * hh for x, _, _, _, hw, hh in rects)
    ey = max(abs(y - cy) + abs(sin_a) * hw + abs(cos_a) * hh for _, y, _, _, hw, hh in rects)
    if cx - ex < 1 or cy - ey < 1 or cx + ex > size - 1 or cy + ey > size - 1:
        return False
    if _rects_hit(rects, 0.75, occupied):
        return False
    poly = _place(_parts_polygon(parts_local), cx, cy, cos_a, sin_a)
    minx, miny, maxx, maxy = poly.bounds
    if minx < 1 or miny < 1 or maxx > size - 1 or maxy > size - 1:
        return False
    _rects_mark(rects, gap, occupied)
    parts = [_Part(x, y, hw, hh) for (x, y, _, _, hw, hh) in rects]
    placed.append(_Placed(poly, cos_a, sin_a, parts, roof, height, driveway))
    return True


def _tangent(line: LineString, t: float) -> Tuple[Point, float, float]:
    p = line.interpolate(t)
    q = line.interpolate(min(t + 2.0, line.length))
    if q.distance(p) < 1e-6:
        q, p = p, line.interpolate(max(t - 2.0, 0.0))
    norm = math.hypot(q.x - p.x, q.y - p.y) or 1.0
    return line.interpolate(t), (q.x - p.x) / norm, (q.y - p.y) / norm


def _urban_buildings(rng: np.random.Generator, size: int, ps: float, roads: List[_Road], occupied: np.ndarray,
                     placed: List[_Placed]) -> None:
    """Rows of buildings along both sides of every road (only where ``occupied`` leaves room)."""
    urban = MOSAIC_DENSITY["urban"]
    for road in roads:
        length = road.line.length
        for side in (-1.0, 1.0):
            t = rng.uniform(0.0, 6.0 / ps)
            while t < length:
                large = rng.random() < urban["large_share"]
                w, d, l_shape, roof, height = _make_building(rng, ps, large, 0.25)
                tc = t + w / 2
                if tc > length:
                    break
                p, tx, ty = _tangent(road.line, tc)
                nx, ny = -ty * side, tx * side
                cos_a, sin_a = tx * side, ty * side
                setback = road.width / 2 + rng.uniform(*urban["setback"]) / ps
                gap = rng.uniform(1.5, 3.0) / ps
                dist = setback + d / 2
                driveway = None
                if not large and rng.random() < 0.4:
                    off = rng.uniform(-0.3, 0.3) * w
                    sx, sy = p.x + off * (-ny), p.y + off * nx
                    driveway = LineString([(sx, sy), (sx + nx * (setback + 1.0), sy + ny * (setback + 1.0))]
                                          ).buffer(rng.uniform(2.5, 3.5) / ps / 2, cap_style="flat")
                ok = _try_place(rng, size, w, d, l_shape, roof, height, p.x + nx * dist, p.y + ny * dist,
                                cos_a, sin_a, gap, occupied, placed, driveway)
                if ok and rng.random() < urban["back_row"]:
                    w2, d2, l2, roof2, h2 = _make_building(rng, ps, rng.random() < 0.3, 0.2)
                    dist2 = setback + d + rng.uniform(4.0, 10.0) / ps + d2 / 2
                    _try_place(rng, size, min(w2, w * 1.3), d2, l2, roof2, h2, p.x + nx * dist2,
                               p.y + ny * dist2, cos_a, sin_a, gap, occupied, placed)
                t += (w + rng.uniform(*urban["building_gap"]) / ps) if ok else 3.0 / ps


def _rural_buildings(rng: np.random.Generator, size: int, ps: float, cells: List[Polygon], classes: np.ndarray,
                     zone_map: np.ndarray, roads: List[_Road], kinds: List[int], occupied: np.ndarray,
                     placed: List[_Placed]) -> List[Any]:
    """Farmsteads (a house and barns around a yard) and a few houses along country roads; returns the yards."""
    rural = MOSAIC_DENSITY["rural"]
    yards = []
    for z, (cell, cls) in enumerate(zip(cells, classes)):
        if cls != _RURAL:
            continue
        area_km2 = cell.area * ps * ps / 1e6
        n_farms = max(1, int(round(area_km2 * rng.uniform(*rural["farms_per_km2"]))))
        cell_roads = [r for r, k in zip(roads, kinds) if k == _RURAL and r.line.intersects(cell)] or \
            [r for r in roads if r.line.intersects(cell)]
        minx, miny, maxx, maxy = cell.bounds
        for _ in range(n_farms):
            for _attempt in range(20):
                if cell_roads and rng.random() < 0.75:
                    road = cell_roads[int(rng.integers(0, len(cell_roads)))]
                    p, tx, ty = _tangent(road.line, rng.uniform(0.0, road.line.length))
                    side = rng.choice([-1.0, 1.0])
                    off = road.width / 2 + rng.uniform(12.0, 30.0) / ps
                    ax, ay = p.x - ty * side * off, p.y + tx * side * off
                    cos_a, sin_a = tx, ty
                else:
                    ax, ay = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
                    angle = rng.uniform(0, math.pi)
                    cos_a, sin_a = math.cos(angle), math.sin(angle)
                if not (0 <= ax < size and 0 <= ay < size) or zone_map[int(ay), int(ax)] != z \
                        or occupied[int(ay), int(ax)]:
                    continue
                before = len(placed)
                n_build = int(rng.integers(2, 6))
                for b in range(n_build):
                    large = b > 0 and rng.random() < 0.7
                    w, d, l_shape, roof, height = _make_building(rng, ps, large, 0.3,
                                                                 ((18.0, 40.0), (10.0, 20.0)))
                    for _try in range(6):
                        u, v = rng.uniform(-25.0, 25.0, 2) / ps
                        swap = rng.random() < 0.5  # barns at right angles to the house
                        c, s = (-sin_a, cos_a) if swap else (cos_a, sin_a)
                        if _try_place(rng, size, w, d, l_shape, roof, height, ax + u * cos_a - v * sin_a,
                                      ay + u * sin_a + v * cos_a, c, s, rng.uniform(3.0, 6.0) / ps, occupied,
                                      placed):
                            break
                if len(placed) > before:
                    hull = shapely.union_all([p.poly for p in placed[before:]]).convex_hull
                    yards.append(hull.buffer(rng.uniform(4.0, 8.0) / ps, join_style="mitre").intersection(cell))
                    break
        # Single houses along the country roads.
        for road in [r for r, k in zip(roads, kinds) if k == _RURAL and r.line.intersects(cell)]:
            for _ in range(int(rng.poisson(road.line.length * ps / 1000.0 * rural["houses_per_km_road"]))):
                p, tx, ty = _tangent(road.line, rng.uniform(0.0, road.line.length))
                side = rng.choice([-1.0, 1.0])
                w, d, l_shape, roof, height = _make_building(rng, ps, False, 0.3)
                dist = road.width / 2 + rng.uniform(4.0, 12.0) / ps + d / 2
                cx, cy = p.x - ty * side * dist, p.y + tx * side * dist
                if 0 <= cx < size and 0 <= cy < size and zone_map[int(cy), int(cx)] == z:
                    _try_place(rng, size, w, d, l_shape, roof, height, cx, cy, tx * side, ty * side,
                               rng.uniform(2.0, 4.0) / ps, occupied, placed)
    return yards


def _mosaic_fields(rng: np.random.Generator, size: int, ps: float, cells: List[Polygon], classes: np.ndarray,
                   blocked: np.ndarray) -> List[Tuple[Polygon, float, float, int]]:
    """A patchwork of fields over every rural zone: (polygon px, stripe angle, period px, tone index).

    Each zone gets a rotated grid of parcels 35-100 m by 25-75 m separated by 3-6 m tracks; a parcel becomes
    a field with probability ``field_fill`` if it is clear of ``blocked`` (else its two halves are tried).
    """
    fields: List[Tuple[Polygon, float, float, int]] = []
    fill = MOSAIC_DENSITY["rural"]["field_fill"]
    frame = box(0, 0, size, size)
    for cell, cls in zip(cells, classes):
        if cls != _RURAL:
            continue
        angle = rng.uniform(0, math.pi)
        ca, sa = math.cos(angle), math.sin(angle)
        cx, cy = cell.centroid.x, cell.centroid.y
        reach = max(math.hypot(x - cx, y - cy) for x, y in cell.exterior.coords)
        cuts = []
        for lo, hi in ((35.0, 100.0), (25.0, 75.0)):
            steps = rng.uniform(lo, hi, int(2 * reach / (lo / ps)) + 2) / ps
            cuts.append(-reach + np.concatenate([[0.0], np.cumsum(steps)]))
        us, vs = cuts
        for i in range(len(us) - 1):
            if us[i] > reach:
                break
            for j in range(len(vs) - 1):
                if vs[j] > reach:
                    break
                keep, track = rng.random() < fill, rng.uniform(3.0, 6.0) / ps
                stripe = angle + rng.choice([0.0, math.pi / 2])
                period, tone = rng.uniform(2.0, 3.5) / ps, int(rng.integers(0, 4))
                if not keep:
                    continue
                u0, u1 = us[i] + track / 2, us[i + 1] - track / 2
                v0, v1 = vs[j] + track / 2, vs[j + 1] - track / 2
                um, vm, hu, hv = (u0 + u1) / 2, (v0 + v1) / 2, (u1 - u0) / 2, (v1 - v0) / 2
                candidates = [(um, vm, hu, hv)]
                if hu >= hv:
                    candidates += [(um - hu / 2, vm, hu / 2 - track / 4, hv), (um + hu / 2, vm, hu / 2 - track / 4, hv)]
                else:
                    candidates += [(um, vm - hv / 2, hu, hv / 2 - track / 4), (um, vm + hv / 2, hu, hv / 2 - track / 4)]
                for k, (pu, pv, hw, hh) in enumerate(candidates):
                    px, py = cx + pu * ca - pv * sa, cy + pu * sa + pv * ca
                    rect = [(px, py, ca, sa, hw, hh)]
                    if hw < 12.0 / ps or hh < 12.0 / ps or _rects_hit(rect, 2.0 / ps, blocked):
                        continue
                    poly = _place(box(-hw, -hh, hw, hh), px, py, ca, sa).intersection(frame)
                    if poly.is_empty or poly.area < 0.5 * 4 * hw * hh:
                        continue
                    _rects_mark(rect, 1.0, blocked)
                    fields.append((poly, stripe, period, tone))
                    if k == 0:
                        break  # the whole parcel is a field: no halves
    return fields


def _draw_crowns(rng: np.random.Generator, shape: Tuple[int, int], crowns: Sequence[Tuple[float, float, float]],
                 tint_sets: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crown height field, crown ids and per-crown tints (``tint_sets``: 0 broadleaf, 1 forest mix)."""
    height = np.zeros(shape, dtype=np.float32)
    ids = np.zeros(shape, dtype=np.int32)
    for k, (x, y, r) in enumerate(crowns, start=1):
        r0, r1 = max(int(y - r) - 1, 0), min(int(y + r) + 2, shape[0])
        c0, c1 = max(int(x - r) - 1, 0), min(int(x + r) + 2, shape[1])
        yy = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5 - y
        xx = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5 - x
        dome = r * np.sqrt(np.clip(1.0 - (xx * xx + yy * yy) / (r * r), 0.0, None))
        win_h = height[r0:r1, c0:c1]
        higher = dome > win_h
        win_h[higher] = dome[higher]
        ids[r0:r1, c0:c1][higher] = k
    tints = np.zeros((len(crowns) + 1, 3), dtype=np.float32)
    if crowns:
        palettes = [np.array([(36, 66, 32), (48, 80, 38), (30, 56, 34), (56, 84, 44)], dtype=np.float32),
                    np.array([(26, 50, 30), (34, 60, 32), (22, 44, 30), (44, 70, 38)], dtype=np.float32)]
        pick = rng.integers(0, 4, len(crowns))
        sets = np.asarray(tint_sets, dtype=np.int64)
        base = np.where((sets == 1)[:, None], palettes[1][pick], palettes[0][pick])
        tints[1:] = base * rng.uniform(0.9, 1.1, (len(crowns), 1)).astype(np.float32)
    return height, ids, tints


def _mosaic_trees(rng: np.random.Generator, size: int, ps: float, class_map: np.ndarray, free_dist: np.ndarray,
                  forest_field: np.ndarray, roads: List[_Road], kinds: List[int]
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forest in uninhabited zones, copses and single trees in rural ones, garden and street trees in towns."""
    shape = class_map.shape
    px_km2 = ps * ps / 1e6
    areas = np.bincount(class_map.ravel(), minlength=3) * px_km2
    xs_all, ys_all, rs_all, sets_all = [], [], [], []
    # Forest: a jittered grid, where the forest noise is high (bare soil and heath in the clearings).
    wild = MOSAIC_DENSITY["uninhabited"]
    step = wild["tree_spacing"] / ps
    g = np.arange(step / 2, size, step)
    gx, gy = np.meshgrid(g, g)
    gx = (gx + rng.uniform(-0.45, 0.45, gx.shape) * step).ravel()
    gy = (gy + rng.uniform(-0.45, 0.45, gy.shape) * step).ravel()
    radii = rng.uniform(2.0, 4.2, gx.size) / ps
    ix, iy = np.clip(gx.astype(int), 0, size - 1), np.clip(gy.astype(int), 0, size - 1)
    keep = (class_map[iy, ix] == _WILD) & (forest_field[iy, ix] > wild["forest_threshold"])
    xs_all.append(gx[keep])
    ys_all.append(gy[keep])
    rs_all.append(radii[keep])
    sets_all.append(np.ones(int(keep.sum()), np.int64))
    # Rural copses and single trees; urban garden trees.
    rural = MOSAIC_DENSITY["rural"]
    cands = []
    for _ in range(int(round(areas[_RURAL] * rng.uniform(*rural["copses_per_km2"])))):
        cx, cy = rng.uniform(0, size, 2)
        n = int(rng.integers(8, 40))
        xy = rng.normal(0.0, rng.uniform(5.0, 12.0) / ps, (n, 2)) + (cx, cy)
        cands.append((xy, rng.uniform(2.0, 4.5, n) / ps, _RURAL))
    n_single = int(round(areas[_RURAL] * rural["single_trees_per_km2"]))
    cands.append((rng.uniform(0, size, (n_single, 2)), rng.uniform(1.5, 3.5, n_single) / ps, _RURAL))
    n_garden = int(round(areas[_URBAN] * MOSAIC_DENSITY["urban"]["garden_trees_per_km2"]))
    cands.append((rng.uniform(0, size, (n_garden, 2)), rng.uniform(1.5, 3.2, n_garden) / ps, _URBAN))
    for road, kind in zip(roads, kinds):
        if kind == _URBAN and rng.random() < MOSAIC_DENSITY["urban"]["street_tree_share"]:
            n = max(int(road.line.length / (10.0 / ps)), 1)
            pts = shapely.get_coordinates(shapely.line_interpolate_point(road.line, np.linspace(0, road.line.length,
                                                                                                n)))
            for side in (-1.0, 1.0):
                _, tx, ty = _tangent(road.line, 0.0)
                off = road.width / 2 + 2.5 / ps
                cands.append((pts + (-ty * side * off, tx * side * off), rng.uniform(1.8, 3.0, n) / ps, _URBAN))
    for xy, r, cls in cands:
        ix = np.clip(xy[:, 0].astype(int), 0, size - 1)
        iy = np.clip(xy[:, 1].astype(int), 0, size - 1)
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < size) & (xy[:, 1] >= 0) & (xy[:, 1] < size)
        keep = inside & (class_map[iy, ix] == cls)
        xs_all.append(xy[keep, 0])
        ys_all.append(xy[keep, 1])
        rs_all.append(r[keep])
        sets_all.append(np.zeros(int(keep.sum()), np.int64))
    xs, ys, rs = np.concatenate(xs_all), np.concatenate(ys_all), np.concatenate(rs_all)
    sets = np.concatenate(sets_all)
    ix, iy = np.clip(xs.astype(int), 0, size - 1), np.clip(ys.astype(int), 0, size - 1)
    ok = free_dist[iy, ix] > rs + 1.5
    crowns = list(zip(xs[ok].tolist(), ys[ok].tolist(), rs[ok].tolist()))
    return _draw_crowns(rng, shape, crowns, sets[ok])


def render_mosaic(size: int = 2048, pixel_size: float = 0.5, seed: int = 0, epsg: int = 32633,
                  origin: Sequence[float] = (500000.0, 5000000.0)) -> Mosaic:
    """Render a mosaic in memory (what :func:`generate_mosaic` writes).

    The scene is split into irregular zones (a relaxed, seeded Voronoi partition, about one zone per
    (300 m)^2); each zone is urban, rural or uninhabited, urban ones around a seeded town centre:

    - urban: street grids, rows of houses and large buildings along every street, paved yards, driveways,
      garden and street trees, many cars;
    - rural: a few country roads, ploughed and cropped fields, farmsteads (house and barns around a
      gravel yard), occasional houses along the roads, copses and single trees, sometimes a pond;
    - uninhabited: forest with clearings, bare soil, heath, usually a lake; no buildings. One or two main
      roads cross the whole scene through the town, so they also pass uninhabited zones.

    As in :func:`render_scene`, every random choice comes from one seeded generator, and the roof pixels
    are exactly the rasterisation of the footprints (:func:`building_mask` works on the written files).

    Args:
        size: Width and height in pixels (the scene must be at least 100 m across).
        pixel_size: Pixel size in metres.
        seed: Random seed; the same arguments always give the same mosaic.
        epsg: EPSG code of a projected CRS.
        origin: Map coordinates ``(x, y)`` of the top-left corner.

    Returns:
        The :class:`Mosaic`.

    Raises:
        ValueError: If a parameter is invalid.
    """
    params = mosaic_params(size, pixel_size, seed, epsg, origin)
    size, ps, seed, epsg = params["size"], params["pixel_size"], params["seed"], params["epsg"]
    ox, oy = params["origin"]
    transform = Affine(ps, 0.0, ox, 0.0, -ps, oy)
    rng = np.random.default_rng([seed, 0x6D6F73])  # "mos": another stream than render_scene(seed)
    shape = (size, size)
    f32 = np.float32

    # --- layout -------------------------------------------------------------------------------
    cells, classes, pts, town = _mosaic_zones(rng, size, ps)
    zone_map = _zone_map(cells, pts, size)
    class_map = classes[zone_map]
    roads, kinds = _mosaic_roads(rng, size, ps, cells, classes, town)
    road_mask = _raster([r.polygon for r in roads], shape).astype(bool)
    water = _mosaic_water(rng, size, ps, cells, classes, zone_map, roads)
    margin = max(int(round(2.0 / ps)), 1)
    urban_ok = ndimage.binary_erosion(class_map == _URBAN, iterations=margin)
    rural_ok = ndimage.binary_erosion(class_map == _RURAL, iterations=margin)
    water_near = ndimage.binary_dilation(water, iterations=max(int(round(3.0 / ps)), 1)) if water.any() else water
    road_near = _raster([r.polygon.buffer(1.5 / ps) for r in roads], shape).astype(bool)
    base_block = road_near | water_near
    placed: List[_Placed] = []
    occupied = base_block | ~urban_ok
    town_area = shapely.union_all([c for c, k in zip(cells, classes) if k == _URBAN])
    street_rows = [r for r, k in zip(roads, kinds) if k == _URBAN]
    for r in (r for r, k in zip(roads, kinds) if k == -1):
        street_rows += [_Road(part, r.width, True, r.polygon)
                        for part in _line_parts(r.line.intersection(town_area), 10.0 / ps)]
    _urban_buildings(rng, size, ps, street_rows, occupied, placed)
    occupied = base_block | ~rural_ok
    yards = _rural_buildings(rng, size, ps, cells, classes, zone_map, roads, kinds, occupied, placed)
    yard_mask = _raster(yards, shape).astype(bool) & ~road_mask & ~water
    blocked = base_block | yard_mask | (class_map != _RURAL)
    if placed:
        blocked |= _raster([p.poly.buffer(4.0 / ps) for p in placed], shape).astype(bool)
    fields = _mosaic_fields(rng, size, ps, cells, classes, blocked)
    field_mask = _raster([f[0] for f in fields], shape).astype(bool)
    driveways = [p.driveway for p in placed if p.driveway is not None]
    drive_mask = _raster(driveways, shape).astype(bool) & ~road_mask & ~water

    buildings = []
    for i, p in enumerate(placed, start=1):
        buildings.append(Building(i, p.roof, orient(_to_map(p.poly, transform), 1.0), p.height_m))
    roof_labels = _raster([(b.polygon, b.id) for b in buildings], shape, dtype="int32", transform=transform)
    roofs = roof_labels > 0

    # Per-class weights with soft borders, for the ground tones.
    sigma = 4.0 / ps
    w_urban = ndimage.gaussian_filter((class_map == _URBAN).astype(f32), sigma, truncate=2.5)
    w_wild = ndimage.gaussian_filter((class_map == _WILD).astype(f32), sigma, truncate=2.5)
    w_rural = np.clip(1.0 - w_urban - w_wild, 0.0, 1.0)
    soil_field = _fbm(rng, shape, (90.0 / ps, 30.0 / ps), (1.0, 0.45))
    threshold = (w_urban * _SOIL_THRESHOLD[_URBAN] + w_rural * _SOIL_THRESHOLD[_RURAL]
                 + w_wild * _SOIL_THRESHOLD[_WILD])
    soil_alpha = np.clip((soil_field - threshold) / 0.35, 0.0, 1.0).astype(f32)
    soil_alpha[road_mask | water | field_mask | roofs] = 0.0
    forest_field = _fbm(rng, shape, (70.0 / ps, 25.0 / ps), (1.0, 0.5))

    roof_grow = ndimage.binary_dilation(roofs, iterations=max(int(round(1.5 / ps)), 1))
    tree_blocked = roof_grow | road_mask | drive_mask | water | field_mask | yard_mask
    free_dist = ndimage.distance_transform_edt(~tree_blocked)
    tree_h, tree_ids, tree_tints = _mosaic_trees(rng, size, ps, class_map, free_dist, forest_field, roads, kinds)
    trees = tree_h > 0

    # --- ground -------------------------------------------------------------------------------
    lush = np.array([74, 104, 50], dtype=f32)
    dry = np.array([122, 126, 78], dtype=f32)
    heath = np.array([92, 98, 60], dtype=f32)
    mix = 1.0 / (1.0 + np.exp(-1.6 * _fbm(rng, shape, (160.0 / ps, 60.0 / ps), (1.0, 0.5)) - 0.6))
    img = lush * (1.0 - mix[..., None]) + dry * mix[..., None]
    _blend(img, 0.6 * w_wild, heath)
    bright = _fbm(rng, shape, (20.0 / ps, 6.0 / ps, 1.6 / ps), (1.0, 0.8, 0.6))
    img *= (1.0 + 0.07 * bright)[..., None]
    img += rng.standard_normal((size, size, 3), dtype=f32) * f32(2.5) \
        + rng.standard_normal(shape, dtype=f32)[..., None] * f32(3.0)

    # Meadow parcels (mown or grazed) in the countryside.
    parcels = []
    for k in range(int(round(rng.uniform(3.0, 6.0) * (size * ps / 512.0) ** 2))):
        w, h = rng.uniform(70.0, 200.0, 2) / ps
        angle = rng.uniform(0, math.pi)
        cx, cy = rng.uniform(0, size, 2)
        parcels.append((_place(box(-w / 2, -h / 2, w / 2, h / 2), cx, cy, math.cos(angle), math.sin(angle)), k + 1))
    if parcels:
        tones = np.ones((len(parcels) + 1, 3), dtype=f32)
        tones[1:] = rng.uniform(0.88, 1.12, (len(parcels), 1)) * rng.uniform(0.95, 1.05, (len(parcels), 3))
        parcel_ids = _raster(parcels, shape)
        parcel_ids[class_map == _URBAN] = 0
        for b in range(3):
            img[..., b] *= ndimage.gaussian_filter(tones[parcel_ids, b], 1.5 / ps)

    # Paved yards and lots between the urban buildings.
    tex = _fbm(rng, shape, (8.0 / ps, 1.5 / ps), (1.0, 0.7))
    paved_noise = _smooth_noise(rng, shape, 12.0 / ps)
    paved_alpha = np.clip(w_urban * (0.5 + 0.45 * paved_noise), 0.0, 0.95).astype(f32)
    _blend(img, paved_alpha, np.array([134, 132, 126], dtype=f32) * (1.0 + 0.05 * tex)[..., None])

    # Bare soil.
    soil = np.array([152, 126, 96], dtype=f32) * (1.0 + 0.06 * tex)[..., None]
    _blend(img, soil_alpha, soil)

    # Farm yards (gravel).
    if yard_mask.any():
        img[yard_mask] = np.array([150, 142, 124], dtype=f32) * (1.0 + 0.05 * tex[yard_mask])[:, None]

    # Fields: ploughed (two soils) or cropped (green, ripe).
    field_tones = np.array([(140, 116, 86), (118, 112, 74), (96, 128, 58), (176, 160, 102)], dtype=f32)
    for poly, angle, period, tone in fields:
        win = _window_mask(poly, shape, pad=0)
        if win is None:
            continue
        (r0, r1, c0, c1), m = win
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(f32) + f32(0.5)
        u = xx * math.cos(angle) + yy * math.sin(angle)
        stripes = 0.5 + 0.5 * np.sin(2 * math.pi * u / period)
        col = field_tones[tone] * (0.9 + 0.16 * stripes)[..., None] * (1.0 + 0.05 * tex[r0:r1, c0:c1])[..., None]
        img[r0:r1, c0:c1][m] = col[m]

    # Water.
    if water.any():
        wr, wc = np.nonzero(water)
        pad = int(math.ceil(1.5 / ps)) + 2
        r0, r1 = max(int(wr.min()) - pad, 0), min(int(wr.max()) + pad + 1, size)
        c0, c1 = max(int(wc.min()) - pad, 0), min(int(wc.max()) + pad + 1, size)
        wwin, sub = water[r0:r1, c0:c1], img[r0:r1, c0:c1]
        water_dist_out = ndimage.distance_transform_edt(~wwin)
        depth = ndimage.distance_transform_edt(wwin)
        d = np.clip(depth / (6.0 / ps), 0.0, 1.0).astype(f32)
        shallow = np.array([62, 88, 76], dtype=f32)
        deep = np.array([30, 54, 62], dtype=f32)
        ripple = _smooth_noise(rng, (r1 - r0, c1 - c0), 4.0 / ps)
        wcol = (shallow * (1 - d[..., None]) + deep * d[..., None]) * (1.0 + 0.03 * ripple)[..., None]
        sub[wwin] = wcol[wwin]
        bank = (~wwin) & (water_dist_out <= 1.5 / ps)
        bank_alpha = np.where(bank, 0.75 * (1.0 - water_dist_out / (1.5 / ps + 1.0)), 0.0).astype(f32)
        _blend(sub, bank_alpha, np.array([108, 102, 80], dtype=f32))

    # Roads.
    if roads:
        img[road_mask] = np.array([100, 100, 102], dtype=f32) * (1.0 + 0.04 * tex[road_mask])[:, None]
        edge = road_mask & ~ndimage.binary_erosion(road_mask, iterations=max(int(round(1.0 / ps)), 1))
        img[edge] = (np.array([150, 148, 142], dtype=f32) * (1.0 + 0.03 * tex[edge])[:, None])
        dashes = []
        for r in roads:
            if not r.main:
                continue
            for s0 in np.arange(0.0, r.line.length, 6.0 / ps):
                seg = shapely.ops.substring(r.line, s0, min(s0 + 3.0 / ps, r.line.length))
                if seg.length > 0:
                    dashes.append(seg.buffer(0.4 / ps, cap_style="flat"))
        if dashes:
            others = _raster([r.polygon.buffer(2.0 / ps) for r in roads if not r.main], shape).astype(bool)
            dash_mask = _raster(dashes, shape).astype(bool) & road_mask & ~others
            img[dash_mask] = np.array([205, 205, 198], dtype=f32)
    if drive_mask.any():
        img[drive_mask] = np.array([168, 164, 154], dtype=f32) * (1.0 + 0.04 * tex[drive_mask])[:, None]

    # Cars: many in town, few in the country.
    car_polys: List[Tuple[Polygon, np.ndarray]] = []
    car_palette = np.array([(225, 225, 222), (30, 30, 34), (165, 168, 172), (150, 30, 30), (40, 60, 120),
                            (90, 92, 96)], dtype=f32)
    per_km = {_URBAN: MOSAIC_DENSITY["urban"]["cars_per_km_street"],
              _RURAL: MOSAIC_DENSITY["rural"]["cars_per_km_street"], -1: 1000.0 / 60.0}
    for r, kind in zip(roads, kinds):
        for _ in range(int(rng.poisson(r.line.length * ps / 1000.0 * per_km[kind]))):
            p, tx, ty = _tangent(r.line, rng.uniform(0.0, r.line.length))
            lane = rng.choice([-1.0, 1.0]) * r.width / 4
            cx, cy = p.x - ty * lane, p.y + tx * lane
            if not (0 <= cx < size and 0 <= cy < size) or water[int(cy), int(cx)]:
                continue
            car = _place(box(-2.2 / ps, -0.9 / ps, 2.2 / ps, 0.9 / ps), cx, cy, tx, ty)
            car_polys.append((car, car_palette[int(rng.integers(0, len(car_palette)))]))
    if car_polys:
        car_shadow = _raster([_cast_shadow(c, 0.5 / ps, 0.5 / ps) for c, _ in car_polys], shape).astype(bool)
        img[car_shadow & road_mask] *= f32(0.6)
        car_ids = _raster([(c, i + 1) for i, (c, _) in enumerate(car_polys)], shape, dtype="int32")
        on_road = (car_ids > 0) & road_mask
        colours = np.concatenate([np.zeros((1, 3), f32), np.stack([col for _, col in car_polys])])
        img[on_road] = colours[car_ids[on_road]]

    # Trees.
    if trees.any():
        off = int(round(_SHADOW_PER_M * 9.0 / ps))
        tshadow = np.zeros(shape, dtype=bool)
        for k in range(1, off + 1):
            tshadow |= _shift(trees, k, k)
        tshadow &= ~trees
        img[tshadow] *= np.array([0.52, 0.55, 0.62], dtype=f32)
        hn = tree_h + np.where(trees, 0.35 / ps * _smooth_noise(rng, shape, 0.6 / ps), 0.0).astype(f32)
        gy, gx = np.gradient(hn)
        light = np.array([-1.0, -1.0, 1.3]) / math.sqrt(1 + 1 + 1.3 ** 2)
        shade = (-gx * light[0] - gy * light[1] + light[2]) / np.sqrt(gx * gx + gy * gy + 1.0)
        shade = np.clip(shade, 0.0, 1.0).astype(f32)
        leaf = _smooth_noise(rng, shape, 0.8 / ps)
        tcol = tree_tints[tree_ids[trees]] * (0.35 + 1.0 * shade[trees])[:, None] * (1.0 + 0.08 * leaf[trees])[:, None]
        img[trees] = tcol

    # Building shadows.
    if placed:
        shadows = [_cast_shadow(p.poly, _SHADOW_PER_M * p.height_m / ps, _SHADOW_PER_M * p.height_m / ps)
                   for p in placed]
        smask = _raster(shadows, shape).astype(f32)
        salpha = np.clip(ndimage.gaussian_filter(smask, 0.5), 0.0, 1.0) * f32(0.55)
        img *= (1.0 - salpha[..., None] * np.array([1.0, 0.96, 0.85], dtype=f32))

    for b in range(3):
        img[..., b] = ndimage.gaussian_filter(img[..., b], 0.5)

    # Roofs (the same gabled shading as render_scene).
    if roofs.any():
        rr, cc = np.nonzero(roofs)
        lab = roof_labels[rr, cc]
        n = len(placed) + 1
        cos_a, sin_a = np.zeros(n), np.zeros(n)
        pa, pb = np.zeros((n, 4)), np.zeros((n, 4))
        colours = np.zeros((n, 3), dtype=f32)
        for i, p in enumerate(placed, start=1):
            cos_a[i], sin_a[i] = p.cos_a, p.sin_a
            a, b = p.parts[0], p.parts[-1]
            pa[i] = (a.cx, a.cy, a.hw, a.hh)
            pb[i] = (b.cx, b.cy, b.hw, b.hh)
            colours[i] = np.array(ROOF_COLOURS[p.roof], dtype=f32) * rng.uniform(0.9, 1.08) \
                + rng.normal(0.0, 2.5, 3).astype(f32)
        x, y = cc + 0.5, rr + 0.5
        c, s = cos_a[lab], sin_a[lab]
        ua = (x - pa[lab, 0]) * c + (y - pa[lab, 1]) * s
        va = -(x - pa[lab, 0]) * s + (y - pa[lab, 1]) * c
        in_a = (np.abs(ua) <= pa[lab, 2] + 1e-6) & (np.abs(va) <= pa[lab, 3] + 1e-6)
        part = np.where(in_a[:, None], pa[lab], pb[lab])
        u = (x - part[:, 0]) * c + (y - part[:, 1]) * s
        v = -(x - part[:, 0]) * s + (y - part[:, 1]) * c
        ridge_along_u = part[:, 2] >= part[:, 3]
        across = np.where(ridge_along_u, v, u)
        ax = np.where(ridge_along_u, -s, c)
        ay = np.where(ridge_along_u, c, s)
        sign = np.where(across >= 0, 1.0, -1.0)
        dot = sign * (ax * _SUN[0] + ay * _SUN[1])
        factor = 1.0 + 0.1 * np.sign(dot + 1e-9) * np.maximum(np.abs(dot), 0.5)
        factor = np.where(np.abs(across) < 0.6, 1.05, factor)
        eroded = ndimage.binary_erosion(roofs)
        factor = np.where(eroded[rr, cc], factor, factor * 0.88)
        rtex = _smooth_noise(rng, shape, 0.8 / ps)[rr, cc]
        img[rr, cc] = (colours[lab] * (factor * (1.0 + 0.03 * rtex))[:, None]).astype(f32)

    img += rng.standard_normal((size, size, 3), dtype=f32) * f32(1.8)
    rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8).transpose(2, 0, 1).copy()

    landcover = np.full(shape, _GRASS, dtype=np.uint8)
    landcover[(soil_alpha > 0.5) | field_mask | yard_mask] = _SOIL
    landcover[water] = _WATER
    landcover[road_mask | drive_mask | (paved_alpha > 0.5)] = _ROAD
    landcover[trees] = _TREE
    landcover[roofs] = _BUILDING
    scene = Scene(rgb=rgb, roof_labels=roof_labels, landcover=landcover, buildings=buildings, transform=transform,
                  epsg=epsg, params=params)
    regions = [(orient(_to_map(cell, transform), 1.0), REGION_CLASSES[int(cls)]) for cell, cls in zip(cells, classes)]
    return Mosaic(scene=scene, regions=regions, region_map=class_map.astype(np.uint8))


def _write_regions_gpkg(path: str, regions: Sequence[Tuple[Polygon, str]], epsg: int) -> None:
    _write_polygon_gpkg(path, REGIONS_LAYER, epsg, (("id", "int"), ("class", "str"), ("area_m2", "float")),
                        [(i, poly, (i, cls, float(poly.area))) for i, (poly, cls) in enumerate(regions, start=1)])


def _mosaic_paths(out_dir: _PathLike) -> Dict[str, str]:
    paths = _paths(out_dir)
    paths["regions"] = os.path.join(os.fspath(out_dir), REGIONS_NAME)
    return paths


def generate_mosaic(out_dir: str, size: int = 2048, pixel_size: float = 0.5, seed: int = 0, epsg: int = 32633,
                    origin: Sequence[float] = (500000.0, 5000000.0)) -> Dict[str, str]:
    """Render a mosaic of urban, rural and uninhabited regions (:func:`render_mosaic`) and write it.

    Writes ``scene.tif`` and ``buildings.gpkg`` (the same formats as :func:`generate_scene`),
    ``regions.gpkg`` (layer ``regions``: one polygon per zone with the text field ``class`` in
    :data:`REGION_CLASSES`, covering the raster extent exactly once) and, last, ``mosaic.json``. A
    ``scene.json`` of :func:`generate_scene` in the same folder is removed, since ``scene.tif`` is replaced.

    Args:
        out_dir: Output folder (created if missing).
        size: Width and height in pixels (at least 100 m across).
        pixel_size: Pixel size in metres (positive).
        seed: Random seed; the same arguments always give the same files.
        epsg: EPSG code of a projected CRS, e.g. a UTM zone.
        origin: Map coordinates ``(x, y)`` of the top-left corner.

    Returns:
        ``{"scene": <GeoTIFF path>, "buildings": <GeoPackage path>, "regions": <GeoPackage path>}``.

    Raises:
        ValueError: If a parameter is invalid.
    """
    mosaic = render_mosaic(size, pixel_size, seed, epsg, origin)
    os.makedirs(os.fspath(out_dir), exist_ok=True)
    paths = _mosaic_paths(out_dir)
    for name in (MOSAIC_PARAMS_NAME, PARAMS_NAME):
        stale = os.path.join(os.fspath(out_dir), name)
        if os.path.exists(stale):
            os.remove(stale)
    _write_tif(paths["scene"], mosaic.scene)
    _write_gpkg(paths["buildings"], mosaic.scene.buildings, mosaic.scene.epsg)
    _write_regions_gpkg(paths["regions"], mosaic.regions, mosaic.scene.epsg)
    with open(os.path.join(os.fspath(out_dir), MOSAIC_PARAMS_NAME), "w", encoding="utf-8") as fh:
        json.dump(mosaic.scene.params, fh, indent=2, sort_keys=True)
        fh.write("\n")
    return paths


def is_mosaic_up_to_date(out_dir: str, size: int = 2048, pixel_size: float = 0.5, seed: int = 0,
                         epsg: int = 32633, origin: Sequence[float] = (500000.0, 5000000.0)) -> bool:
    """Whether ``out_dir`` holds a complete mosaic made with these parameters and this version.

    False as well when a ``scene.json`` sits beside it (:func:`generate_scene` then wrote ``scene.tif``).

    Raises:
        ValueError: If a parameter is invalid.
    """
    wanted = mosaic_params(size, pixel_size, seed, epsg, origin)
    paths = _mosaic_paths(out_dir)
    if not all(os.path.isfile(p) for p in paths.values()) or \
            os.path.exists(os.path.join(os.fspath(out_dir), PARAMS_NAME)):
        return False
    try:
        with open(os.path.join(os.fspath(out_dir), MOSAIC_PARAMS_NAME), encoding="utf-8") as fh:
            stored = json.load(fh)
    except (OSError, ValueError):
        return False
    return stored == wanted


def read_regions(path: str) -> List[Tuple[Polygon, str]]:
    """Read the zones of a ``regions.gpkg`` written by :func:`generate_mosaic`, ordered by id.

    Args:
        path: GeoPackage path.

    Returns:
        ``(polygon, class)`` pairs in map coordinates; ``class`` is one of :data:`REGION_CLASSES`.

    Raises:
        ValueError: If the file or its ``regions`` layer cannot be opened.
    """
    with _ogr_exceptions() as ogr:
        try:
            ds = ogr.Open(os.fspath(path))
        except RuntimeError as exc:
            raise ValueError(f"cannot open {path}: {exc}") from None
        layer = ds.GetLayerByName(REGIONS_LAYER) if ds is not None else None
        if layer is None:
            raise ValueError(f"{path} has no layer {REGIONS_LAYER!r}")
        rows = []
        for feat in layer:
            geom = shapely.from_wkb(bytes(feat.GetGeometryRef().ExportToWkb()))
            rows.append((int(feat.GetFID()), geom, str(feat.GetField("class"))))
        layer = None
        ds = None
    rows.sort(key=lambda r: r[0])
    return [(geom, cls) for _, geom, cls in rows]


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 on invalid arguments.
    """
    parser = argparse.ArgumentParser(prog="python -m sample_data.generate",
                                     description="Write a seeded synthetic aerial scene and its building footprints.")
    parser.add_argument("--out", default=None,
                        help=f"output folder (default: {DEFAULT_OUT_DIR}, with --mosaic {DEFAULT_MOSAIC_DIR})")
    parser.add_argument("--size", type=int, default=None,
                        help="width and height in pixels (default: 1024, with --mosaic 2048)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--pixel-size", type=float, default=0.5, help="pixel size in metres (default: %(default)s)")
    parser.add_argument("--mosaic", action="store_true",
                        help="write a mosaic of urban, rural and uninhabited regions with regions.gpkg "
                             "(generate_mosaic) instead of the settlement scene")
    parser.add_argument("--force", action="store_true", help="regenerate even if the files are up to date")
    parser.add_argument("--population", metavar="DIR", help="write the population time series into DIR instead")
    args = parser.parse_args(argv)
    if args.population:  # the population time series: sample_data/population.py
        from sample_data.population import run_cli
        return run_cli(args.population, seed=args.seed, force=args.force)
    out = args.out if args.out is not None else (DEFAULT_MOSAIC_DIR if args.mosaic else DEFAULT_OUT_DIR)
    size = args.size if args.size is not None else (2048 if args.mosaic else 1024)
    kwargs = dict(size=size, pixel_size=args.pixel_size, seed=args.seed)
    up_to_date, generate, names = ((is_mosaic_up_to_date, generate_mosaic, _mosaic_paths) if args.mosaic
                                   else (is_up_to_date, generate_scene, _paths))
    try:
        if not args.force and up_to_date(out, **kwargs):
            paths = names(out)
            print(f"Up to date (use --force to regenerate): {out}")
        else:
            paths = generate(out, **kwargs)
    except ValueError as exc:
        parser.error(str(exc))
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
