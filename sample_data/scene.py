"""Seeded synthetic aerial scene: an RGB GeoTIFF and the exact building footprints as a GeoPackage.

The scene imitates a 0.5 m orthophoto of a rural settlement: textured grass, bare soil and ploughed
fields, a river or lake, a road network with driveways and cars, tree clusters with cast shadows, and
buildings (rectangles and L-shapes, axis-aligned or following the roads) with gabled roofs and cast
shadows. Every random choice comes from one ``numpy.random.default_rng(seed)``, so a seed always gives
the same pixels and the same footprints.

The roof pixels of the raster are, by construction, exactly the rasterisation of the footprints
(pixel-centre rule, ``rasterio.features.rasterize(all_touched=False)`` on the scene grid): the roof mask
is drawn by rasterising the very polygons that are written to the GeoPackage, and nothing is drawn over
the roofs except per-pixel sensor noise. :func:`~sample_data.common.building_mask` reproduces that mask
from the files.

:mod:`sample_data.scene_layout` decides where things go; this module paints them. The painting stages
(``paint_*``) are public because the mosaic (:mod:`sample_data.mosaic`) paints with the same ones; each
stage draws from the generator in a fixed order, which is part of the seed.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import shapely
import shapely.ops
from affine import Affine
from scipy import ndimage
from shapely.geometry import LineString, Polygon, box
from shapely.geometry.polygon import orient

from sample_data.common import (
    BUILDING,
    GRASS,
    ROAD,
    ROOF_COLOURS,
    SHADOW_PER_M,
    SOIL,
    SUN,
    TREE,
    WATER,
    Building,
    Placed,
    Scene,
    blend,
    cast_shadow,
    check_args,
    fbm,
    grid_transform,
    params_match,
    place,
    raster,
    scene_paths,
    shift_mask,
    smooth_noise,
    to_map,
    window_mask,
    write_buildings_gpkg,
    write_params,
    write_tif,
)
from sample_data.scene_layout import make_fields, make_roads, make_trees, make_water, place_buildings

#: Bump whenever the output for a given set of parameters changes; the CLI then regenerates.
GENERATOR_VERSION = 1

PARAMS_NAME = "scene.json"
DEFAULT_OUT_DIR = os.path.join("sample_data", "generated")

_F32 = np.float32
#: Field colours: two ploughed soils (the scene uses these), green crop and ripe crop.
FIELD_TONES = np.array([(140, 116, 86), (118, 112, 74), (96, 128, 58), (176, 160, 102)], dtype=_F32)
#: Car colours.
CAR_PALETTE = np.array([(225, 225, 222), (30, 30, 34), (165, 168, 172), (150, 30, 30), (40, 60, 120),
                        (90, 92, 96)], dtype=_F32)


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
    size, pixel_size, seed, epsg, origin = check_args(size, pixel_size, seed, epsg, origin)
    return {"version": GENERATOR_VERSION, "size": size, "pixel_size": pixel_size, "seed": seed, "epsg": epsg,
            "origin": [origin[0], origin[1]]}


# --------------------------------------------------------------------------------------------------
# Painting stages (img: (H, W, 3) float32, painted in place)
# --------------------------------------------------------------------------------------------------


def ground(rng: np.random.Generator, shape: Tuple[int, int], ps: float,
           heath_alpha: Optional[np.ndarray] = None) -> np.ndarray:
    """Grass from lush to dry with brightness texture and grain; ``heath_alpha`` blends in heath first."""
    lush = np.array([74, 104, 50], dtype=_F32)
    dry = np.array([122, 126, 78], dtype=_F32)
    mix = 1.0 / (1.0 + np.exp(-1.6 * fbm(rng, shape, (160.0 / ps, 60.0 / ps), (1.0, 0.5)) - 0.6))
    img = lush * (1.0 - mix[..., None]) + dry * mix[..., None]
    if heath_alpha is not None:
        blend(img, heath_alpha, np.array([92, 98, 60], dtype=_F32))
    bright = fbm(rng, shape, (20.0 / ps, 6.0 / ps, 1.6 / ps), (1.0, 0.8, 0.6))
    img *= (1.0 + 0.07 * bright)[..., None]
    img += rng.standard_normal(shape + (3,), dtype=_F32) * _F32(2.5) \
        + rng.standard_normal(shape, dtype=_F32)[..., None] * _F32(3.0)
    return img


def meadow_parcels(rng: np.random.Generator, size: int, ps: float) -> List[Tuple[Polygon, int]]:
    """Large rotated rectangles (pixel coordinates) with ids 1.. for :func:`paint_parcels`."""
    parcels = []
    for k in range(int(round(rng.uniform(3.0, 6.0) * (size * ps / 512.0) ** 2))):
        w, h = rng.uniform(70.0, 200.0, 2) / ps
        angle = rng.uniform(0, math.pi)
        cx, cy = rng.uniform(0, size, 2)
        parcels.append((place(box(-w / 2, -h / 2, w / 2, h / 2), cx, cy, math.cos(angle), math.sin(angle)), k + 1))
    return parcels


def paint_parcels(rng: np.random.Generator, img: np.ndarray, parcels: List[Tuple[Polygon, int]], ps: float,
                  exclude: Optional[np.ndarray] = None) -> None:
    """Meadow parcels mown or grazed to a slightly different tone (not where ``exclude`` is set)."""
    tones = np.ones((len(parcels) + 1, 3), dtype=_F32)
    if parcels:
        tones[1:] = rng.uniform(0.88, 1.12, (len(parcels), 1)) * rng.uniform(0.95, 1.05, (len(parcels), 3))
    parcel_ids = raster(parcels, img.shape[:2])
    if exclude is not None:
        parcel_ids[exclude] = 0
    for b in range(3):
        img[..., b] *= ndimage.gaussian_filter(tones[parcel_ids, b], 1.5 / ps)


def soil_noise(rng: np.random.Generator, shape: Tuple[int, int], ps: float) -> np.ndarray:
    """The large-scale field whose high values become bare soil."""
    return fbm(rng, shape, (90.0 / ps, 30.0 / ps), (1.0, 0.45))


def ground_texture(rng: np.random.Generator, shape: Tuple[int, int], ps: float) -> np.ndarray:
    """Fine texture for soil, fields, paving and driveways."""
    return fbm(rng, shape, (8.0 / ps, 1.5 / ps), (1.0, 0.7))


def paint_soil(img: np.ndarray, alpha: np.ndarray, tex: np.ndarray) -> None:
    """Bare soil blended in with ``alpha``."""
    blend(img, alpha, np.array([152, 126, 96], dtype=_F32) * (1.0 + 0.06 * tex)[..., None])


def paint_stripes(img: np.ndarray, win: Tuple[Tuple[int, int, int, int], np.ndarray], angle: float,
                  period: float, tone: np.ndarray, tex: np.ndarray) -> None:
    """A striped field of colour ``tone`` over the window ``win`` of :func:`~sample_data.common.window_mask`."""
    (r0, r1, c0, c1), m = win
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(_F32) + _F32(0.5)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    stripes = 0.5 + 0.5 * np.sin(2 * math.pi * u / period)
    col = tone * (0.9 + 0.16 * stripes)[..., None] * (1.0 + 0.05 * tex[r0:r1, c0:c1])[..., None]
    img[r0:r1, c0:c1][m] = col[m]


def paint_water(rng: np.random.Generator, img: np.ndarray, water: np.ndarray, ps: float, crop: bool) -> None:
    """Water darker and bluer away from the shore, with a muddy bank.

    ``crop`` draws the ripple noise over the water's bounding box (plus the bank) only; the settlement
    scene draws it over the whole image, which its seeds depend on.
    """
    if not water.any():
        return
    if crop:
        wr, wc = np.nonzero(water)
        pad = int(math.ceil(1.5 / ps)) + 2
        r0, r1 = max(int(wr.min()) - pad, 0), min(int(wr.max()) + pad + 1, water.shape[0])
        c0, c1 = max(int(wc.min()) - pad, 0), min(int(wc.max()) + pad + 1, water.shape[1])
    else:
        r0, r1, c0, c1 = 0, water.shape[0], 0, water.shape[1]
    wwin, sub = water[r0:r1, c0:c1], img[r0:r1, c0:c1]
    water_dist_out = ndimage.distance_transform_edt(~wwin)
    depth = ndimage.distance_transform_edt(wwin)
    d = np.clip(depth / (6.0 / ps), 0.0, 1.0).astype(_F32)
    shallow = np.array([62, 88, 76], dtype=_F32)
    deep = np.array([30, 54, 62], dtype=_F32)
    ripple = smooth_noise(rng, (r1 - r0, c1 - c0), 4.0 / ps)
    wcol = (shallow * (1 - d[..., None]) + deep * d[..., None]) * (1.0 + 0.03 * ripple)[..., None]
    sub[wwin] = wcol[wwin]
    bank = (~wwin) & (water_dist_out <= 1.5 / ps)
    bank_alpha = np.where(bank, 0.75 * (1.0 - water_dist_out / (1.5 / ps + 1.0)), 0.0).astype(_F32)
    blend(sub, bank_alpha, np.array([108, 102, 80], dtype=_F32))


def paint_asphalt(img: np.ndarray, road_mask: np.ndarray, tex: np.ndarray, ps: float) -> None:
    """Asphalt with lighter edges."""
    img[road_mask] = np.array([100, 100, 102], dtype=_F32) * (1.0 + 0.04 * tex[road_mask])[:, None]
    edge = road_mask & ~ndimage.binary_erosion(road_mask, iterations=max(int(round(1.0 / ps)), 1))
    img[edge] = (np.array([150, 148, 142], dtype=_F32) * (1.0 + 0.03 * tex[edge])[:, None])


def centre_dashes(line: LineString, ps: float) -> List[Any]:
    """The dashes (3 m every 6 m) of a main road's centre line, as polygons."""
    dashes = []
    for s0 in np.arange(0.0, line.length, 6.0 / ps):
        seg = shapely.ops.substring(line, s0, min(s0 + 3.0 / ps, line.length))
        if seg.length > 0:
            dashes.append(seg.buffer(0.4 / ps, cap_style="flat"))
    return dashes


def paint_dashes(img: np.ndarray, dash_mask: np.ndarray) -> None:
    """White centre-line paint."""
    img[dash_mask] = np.array([205, 205, 198], dtype=_F32)


def paint_driveways(img: np.ndarray, drive_mask: np.ndarray, tex: np.ndarray) -> None:
    """Light paving of driveways."""
    if drive_mask.any():
        img[drive_mask] = np.array([168, 164, 154], dtype=_F32) * (1.0 + 0.04 * tex[drive_mask])[:, None]


def car_polygon(cx: float, cy: float, tx: float, ty: float, ps: float) -> Polygon:
    """A 4.4 m x 1.8 m car centred on (cx, cy) heading along (tx, ty)."""
    return place(box(-2.2 / ps, -0.9 / ps, 2.2 / ps, 0.9 / ps), cx, cy, tx, ty)


def shade_cars(img: np.ndarray, cars: Sequence[Tuple[Polygon, np.ndarray]], road_mask: np.ndarray,
               ps: float) -> None:
    """The cars' cast shadows on the road."""
    car_shadow = raster([cast_shadow(c, 0.5 / ps, 0.5 / ps) for c, _ in cars], road_mask.shape).astype(bool)
    img[car_shadow & road_mask] *= _F32(0.6)


def paint_trees(rng: np.random.Generator, img: np.ndarray, tree_h: np.ndarray, tree_ids: np.ndarray,
                tree_tints: np.ndarray, ps: float) -> None:
    """Crowns lit from the north-west with leaf texture, and their shadows to the south-east."""
    trees = tree_h > 0
    if not trees.any():
        return
    off = int(round(SHADOW_PER_M * 9.0 / ps))
    tshadow = np.zeros(trees.shape, dtype=bool)
    for k in range(1, off + 1):
        tshadow |= shift_mask(trees, k, k)
    tshadow &= ~trees
    img[tshadow] *= np.array([0.52, 0.55, 0.62], dtype=_F32)
    hn = tree_h + np.where(trees, 0.35 / ps * smooth_noise(rng, trees.shape, 0.6 / ps), 0.0).astype(_F32)
    gy, gx = np.gradient(hn)
    light = np.array([-1.0, -1.0, 1.3]) / math.sqrt(1 + 1 + 1.3 ** 2)
    shade = (-gx * light[0] - gy * light[1] + light[2]) / np.sqrt(gx * gx + gy * gy + 1.0)
    shade = np.clip(shade, 0.0, 1.0).astype(_F32)
    leaf = smooth_noise(rng, trees.shape, 0.8 / ps)
    img[trees] = tree_tints[tree_ids[trees]] * (0.35 + 1.0 * shade[trees])[:, None] \
        * (1.0 + 0.08 * leaf[trees])[:, None]


def paint_building_shadows(img: np.ndarray, placed: Sequence[Placed], ps: float) -> None:
    """Soft cast shadows of the buildings (offset by height), then the slight optical blur of everything."""
    if placed:
        shadows = [cast_shadow(p.poly, SHADOW_PER_M * p.height_m / ps, SHADOW_PER_M * p.height_m / ps)
                   for p in placed]
        smask = raster(shadows, img.shape[:2]).astype(_F32)
        salpha = np.clip(ndimage.gaussian_filter(smask, 0.5), 0.0, 1.0) * _F32(0.55)
        img *= (1.0 - salpha[..., None] * np.array([1.0, 0.96, 0.85], dtype=_F32))
    for b in range(3):
        img[..., b] = ndimage.gaussian_filter(img[..., b], 0.5)


def footprints(placed: Sequence[Placed], transform: Affine, shape: Tuple[int, int]
               ) -> Tuple[List[Building], np.ndarray]:
    """The buildings in map coordinates (ids 1..) and their rasterisation on the grid (the roof labels)."""
    buildings = [Building(i, p.roof, orient(to_map(p.poly, transform), 1.0), p.height_m)
                 for i, p in enumerate(placed, start=1)]
    roof_labels = raster([(b.polygon, b.id) for b in buildings], shape, dtype="int32", transform=transform)
    return buildings, roof_labels


def tree_room(roofs: np.ndarray, blocked: np.ndarray, ps: float) -> np.ndarray:
    """Distance (px) to the nearest roof (grown by 1.5 m) or blocked pixel: how large a crown may be."""
    roof_grow = ndimage.binary_dilation(roofs, iterations=max(int(round(1.5 / ps)), 1))
    return ndimage.distance_transform_edt(~(roof_grow | blocked))


def paint_roofs(rng: np.random.Generator, img: np.ndarray, roof_labels: np.ndarray, placed: Sequence[Placed],
                ps: float) -> None:
    """Gabled roofs: a colour per building, the sunny and the shaded slope, a ridge line and darker eaves."""
    roofs = roof_labels > 0
    if not roofs.any():
        return
    rr, cc = np.nonzero(roofs)
    lab = roof_labels[rr, cc]
    n = len(placed) + 1
    cos_a, sin_a = np.zeros(n), np.zeros(n)
    pa, pb = np.zeros((n, 4)), np.zeros((n, 4))
    colours = np.zeros((n, 3), dtype=_F32)
    for i, p in enumerate(placed, start=1):
        cos_a[i], sin_a[i] = p.cos_a, p.sin_a
        a, b = p.parts[0], p.parts[-1]
        pa[i] = (a.cx, a.cy, a.hw, a.hh)
        pb[i] = (b.cx, b.cy, b.hw, b.hh)
        colours[i] = np.array(ROOF_COLOURS[p.roof], dtype=_F32) * rng.uniform(0.9, 1.08) \
            + rng.normal(0.0, 2.5, 3).astype(_F32)
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
    dot = sign * (ax * SUN[0] + ay * SUN[1])
    factor = 1.0 + 0.1 * np.sign(dot + 1e-9) * np.maximum(np.abs(dot), 0.5)
    factor = np.where(np.abs(across) < 0.6, 1.05, factor)  # ridge line
    eroded = ndimage.binary_erosion(roofs)
    factor = np.where(eroded[rr, cc], factor, factor * 0.88)  # eaves
    tex = smooth_noise(rng, roofs.shape, 0.8 / ps)[rr, cc]
    img[rr, cc] = (colours[lab] * (factor * (1.0 + 0.03 * tex))[:, None]).astype(_F32)


def sensor(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Per-pixel sensor noise, then rounding to the ``(3, H, W)`` uint8 image."""
    img += rng.standard_normal(img.shape, dtype=_F32) * _F32(1.8)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8).transpose(2, 0, 1).copy()


def landcover_map(soil: np.ndarray, water: np.ndarray, road: np.ndarray, trees: np.ndarray,
                  roofs: np.ndarray) -> np.ndarray:
    """Class index per pixel (:data:`~sample_data.common.CLASS_NAMES`); later classes win."""
    landcover = np.full(soil.shape, GRASS, dtype=np.uint8)
    landcover[soil] = SOIL
    landcover[water] = WATER
    landcover[road] = ROAD
    landcover[trees] = TREE
    landcover[roofs] = BUILDING
    return landcover


# --------------------------------------------------------------------------------------------------
# The scene
# --------------------------------------------------------------------------------------------------


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
        The rendered :class:`~sample_data.common.Scene`.

    Raises:
        ValueError: If a parameter is invalid.
    """
    params = scene_params(size, pixel_size, seed, epsg, origin)
    size, ps, seed, epsg = params["size"], params["pixel_size"], params["seed"], params["epsg"]
    transform = grid_transform(params)
    rng = np.random.default_rng(seed)
    shape = (size, size)

    # --- layout -------------------------------------------------------------------------------
    water = make_water(rng, size, ps)
    roads = make_roads(rng, size, ps, water)
    road_mask = raster([r.polygon for r in roads], shape).astype(bool)
    water_dist_out = ndimage.distance_transform_edt(~water) if water.any() else np.full(shape, np.inf)
    blocked = road_mask | water | (water_dist_out <= 3.0 / ps)
    fields = make_fields(rng, size, ps, blocked.copy())
    field_mask = raster([f[0] for f in fields], shape).astype(bool)
    occupied = blocked | field_mask | raster([r.polygon.buffer(1.5 / ps) for r in roads], shape).astype(bool)
    placed = place_buildings(rng, size, ps, roads, occupied)
    driveways = [p.driveway for p in placed if p.driveway is not None]
    drive_mask = raster(driveways, shape).astype(bool) & ~road_mask & ~water

    # Footprints in map coordinates; the roof mask is their rasterisation on the scene grid.
    buildings, roof_labels = footprints(placed, transform, shape)
    roofs = roof_labels > 0
    free_dist = tree_room(roofs, road_mask | drive_mask | water | field_mask, ps)
    tree_h, tree_ids, tree_tints = make_trees(rng, size, ps, free_dist)

    # --- ground -------------------------------------------------------------------------------
    img = ground(rng, shape, ps)
    if size * ps >= 150:
        paint_parcels(rng, img, meadow_parcels(rng, size, ps), ps)
    soil_alpha = np.clip((soil_noise(rng, shape, ps) - 1.35) / 0.35, 0.0, 1.0).astype(_F32)
    soil_tex = ground_texture(rng, shape, ps)
    paint_soil(img, soil_alpha, soil_tex)
    for poly, angle, period in fields:  # ploughed fields
        win = window_mask(poly, shape, pad=0)
        if win is not None:
            paint_stripes(img, win, angle, period, FIELD_TONES[0] if rng.random() < 0.6 else FIELD_TONES[1],
                          soil_tex)
    paint_water(rng, img, water, ps, crop=False)

    # Roads: asphalt with lighter edges, dashed centre lines on main roads.
    if roads:
        paint_asphalt(img, road_mask, fbm(rng, shape, (12.0 / ps, 1.0), (1.0, 0.6)), ps)
        dashes = []
        for r in roads:
            if r.main:
                others = shapely.union_all([o.polygon.buffer(2.0 / ps) for o in roads if o is not r])
                dashes += [dash.difference(others) for dash in centre_dashes(r.line, ps)]
        paint_dashes(img, raster(dashes, shape).astype(bool) & road_mask)
    paint_driveways(img, drive_mask, soil_tex)
    _paint_cars(rng, img, roads, water, road_mask, ps)

    paint_trees(rng, img, tree_h, tree_ids, tree_tints, ps)
    paint_building_shadows(img, placed, ps)
    paint_roofs(rng, img, roof_labels, placed, ps)
    rgb = sensor(rng, img)
    landcover = landcover_map((soil_alpha > 0.5) | field_mask, water, road_mask | drive_mask, tree_h > 0, roofs)
    return Scene(rgb=rgb, roof_labels=roof_labels, landcover=landcover, buildings=buildings,
                 transform=transform, epsg=epsg, params=params)


def _paint_cars(rng: np.random.Generator, img: np.ndarray, roads: Sequence[Any], water: np.ndarray,
                road_mask: np.ndarray, ps: float) -> None:
    """Cars on the roads (not on bridges), about one per 60 m of road, each drawn in its own window."""
    size = road_mask.shape[0]
    cars: List[Tuple[Polygon, np.ndarray]] = []
    for r in roads:
        for _ in range(int(rng.poisson(r.line.length * ps / 60.0))):
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
            cars.append((car_polygon(cx, cy, tx, ty, ps), CAR_PALETTE[int(rng.integers(0, len(CAR_PALETTE)))]))
    if cars:
        shade_cars(img, cars, road_mask, ps)
        for car, colour in cars:
            win = window_mask(car, road_mask.shape, pad=0)
            if win is None:
                continue
            (r0, r1, c0, c1), m = win
            m &= road_mask[r0:r1, c0:c1]
            img[r0:r1, c0:c1][m] = colour


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
    paths = scene_paths(out_dir)
    params_path = os.path.join(os.fspath(out_dir), PARAMS_NAME)
    if os.path.exists(params_path):
        os.remove(params_path)
    write_tif(paths["scene"], scene)
    write_buildings_gpkg(paths["buildings"], scene.buildings, scene.epsg)
    write_params(params_path, scene.params)
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
    if not all(os.path.isfile(p) for p in scene_paths(out_dir).values()):
        return False
    return params_match(os.path.join(os.fspath(out_dir), PARAMS_NAME), wanted)
