"""Seeded mosaic: one scene of urban, rural and uninhabited regions, with the regions as truth.

:mod:`sample_data.mosaic_layout` decides where things go; this module paints them with the settlement
scene's painting stages (:mod:`sample_data.scene`) and writes ``scene.tif`` and ``buildings.gpkg`` (the
scene's formats), ``regions.gpkg`` and ``mosaic.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient

from sample_data.common import (
    PathLike,
    Road,
    Scene,
    blend,
    check_args,
    fbm,
    grid_transform,
    params_match,
    raster,
    read_polygon_layer,
    scene_paths,
    smooth_noise,
    to_map,
    window_mask,
    write_buildings_gpkg,
    write_params,
    write_polygon_gpkg,
    write_tif,
)
from sample_data.mosaic_layout import (
    MOSAIC_DENSITY,
    REGION_CLASSES,
    RURAL,
    SOIL_THRESHOLD,
    URBAN,
    WILD,
    line_parts,
    map_zones,
    mosaic_fields,
    mosaic_roads,
    mosaic_trees,
    mosaic_water,
    mosaic_zones,
    rural_buildings,
    tangent,
    urban_buildings,
)
from sample_data.scene import (
    CAR_PALETTE,
    DEFAULT_OUT_DIR,
    FIELD_TONES,
    PARAMS_NAME,
    car_polygon,
    centre_dashes,
    footprints,
    ground,
    ground_texture,
    landcover_map,
    meadow_parcels,
    paint_asphalt,
    paint_building_shadows,
    paint_dashes,
    paint_driveways,
    paint_parcels,
    paint_roofs,
    paint_soil,
    paint_stripes,
    paint_trees,
    paint_water,
    sensor,
    shade_cars,
    soil_noise,
    tree_room,
)

#: Bump whenever the mosaic for a given set of parameters changes; the CLI then regenerates.
MOSAIC_VERSION = 1
MOSAIC_PARAMS_NAME = "mosaic.json"
REGIONS_NAME = "regions.gpkg"
REGIONS_LAYER = "regions"
DEFAULT_MOSAIC_DIR = os.path.join(DEFAULT_OUT_DIR, "mosaic")
#: Smallest mosaic side in metres: every region type must have room for its content.
_MOSAIC_MIN_SIDE_M = 100.0
_F32 = np.float32



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
    size, pixel_size, seed, epsg, origin = check_args(size, pixel_size, seed, epsg, origin)
    if size * pixel_size < _MOSAIC_MIN_SIDE_M:
        raise ValueError(f"a mosaic must be at least {_MOSAIC_MIN_SIDE_M:g} m across, got {size} px of "
                         f"{pixel_size:g} m")
    return {"kind": "mosaic", "version": MOSAIC_VERSION, "size": size, "pixel_size": pixel_size, "seed": seed,
            "epsg": epsg, "origin": [origin[0], origin[1]]}


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
    transform = grid_transform(params)
    rng = np.random.default_rng([seed, 0x6D6F73])  # "mos": another stream than render_scene(seed)
    shape = (size, size)

    # --- layout -------------------------------------------------------------------------------
    cells, classes, pts, town = mosaic_zones(rng, size, ps)
    zone_map = map_zones(cells, pts, size)
    class_map = classes[zone_map]
    roads, kinds = mosaic_roads(rng, size, ps, cells, classes, town)
    road_mask = raster([r.polygon for r in roads], shape).astype(bool)
    water = mosaic_water(rng, size, ps, cells, classes, zone_map, roads)
    margin = max(int(round(2.0 / ps)), 1)
    urban_ok = ndimage.binary_erosion(class_map == URBAN, iterations=margin)
    rural_ok = ndimage.binary_erosion(class_map == RURAL, iterations=margin)
    water_near = ndimage.binary_dilation(water, iterations=max(int(round(3.0 / ps)), 1)) if water.any() else water
    road_near = raster([r.polygon.buffer(1.5 / ps) for r in roads], shape).astype(bool)
    base_block = road_near | water_near
    placed: List[Any] = []
    occupied = base_block | ~urban_ok
    town_area = shapely.union_all([c for c, k in zip(cells, classes) if k == URBAN])
    street_rows = [r for r, k in zip(roads, kinds) if k == URBAN]
    for r in (r for r, k in zip(roads, kinds) if k == -1):
        street_rows += [Road(part, r.width, True, r.polygon)
                        for part in line_parts(r.line.intersection(town_area), 10.0 / ps)]
    urban_buildings(rng, size, ps, street_rows, occupied, placed)
    occupied = base_block | ~rural_ok
    yards = rural_buildings(rng, size, ps, cells, classes, zone_map, roads, kinds, occupied, placed)
    yard_mask = raster(yards, shape).astype(bool) & ~road_mask & ~water
    blocked = base_block | yard_mask | (class_map != RURAL)
    if placed:
        blocked |= raster([p.poly.buffer(4.0 / ps) for p in placed], shape).astype(bool)
    fields = mosaic_fields(rng, size, ps, cells, classes, blocked)
    field_mask = raster([f[0] for f in fields], shape).astype(bool)
    driveways = [p.driveway for p in placed if p.driveway is not None]
    drive_mask = raster(driveways, shape).astype(bool) & ~road_mask & ~water

    buildings, roof_labels = footprints(placed, transform, shape)
    roofs = roof_labels > 0

    # Per-class weights with soft borders, for the ground tones.
    sigma = 4.0 / ps
    w_urban = ndimage.gaussian_filter((class_map == URBAN).astype(_F32), sigma, truncate=2.5)
    w_wild = ndimage.gaussian_filter((class_map == WILD).astype(_F32), sigma, truncate=2.5)
    w_rural = np.clip(1.0 - w_urban - w_wild, 0.0, 1.0)
    threshold = (w_urban * SOIL_THRESHOLD[URBAN] + w_rural * SOIL_THRESHOLD[RURAL]
                 + w_wild * SOIL_THRESHOLD[WILD])
    soil_alpha = np.clip((soil_noise(rng, shape, ps) - threshold) / 0.35, 0.0, 1.0).astype(_F32)
    soil_alpha[road_mask | water | field_mask | roofs] = 0.0
    forest_field = fbm(rng, shape, (70.0 / ps, 25.0 / ps), (1.0, 0.5))
    free_dist = tree_room(roofs, road_mask | drive_mask | water | field_mask | yard_mask, ps)
    tree_h, tree_ids, tree_tints = mosaic_trees(rng, size, ps, class_map, free_dist, forest_field, roads, kinds)

    # --- ground -------------------------------------------------------------------------------
    img = ground(rng, shape, ps, heath_alpha=0.6 * w_wild)
    parcels = meadow_parcels(rng, size, ps)  # mown or grazed, in the countryside
    if parcels:
        paint_parcels(rng, img, parcels, ps, exclude=class_map == URBAN)
    tex = ground_texture(rng, shape, ps)
    # Paved yards and lots between the urban buildings.
    paved_alpha = np.clip(w_urban * (0.5 + 0.45 * smooth_noise(rng, shape, 12.0 / ps)), 0.0, 0.95).astype(_F32)
    blend(img, paved_alpha, np.array([134, 132, 126], dtype=_F32) * (1.0 + 0.05 * tex)[..., None])
    paint_soil(img, soil_alpha, tex)
    if yard_mask.any():  # farm yards (gravel)
        img[yard_mask] = np.array([150, 142, 124], dtype=_F32) * (1.0 + 0.05 * tex[yard_mask])[:, None]
    for poly, angle, period, tone in fields:  # ploughed (two soils) or cropped (green, ripe)
        win = window_mask(poly, shape, pad=0)
        if win is not None:
            paint_stripes(img, win, angle, period, FIELD_TONES[tone], tex)
    paint_water(rng, img, water, ps, crop=True)
    if roads:
        paint_asphalt(img, road_mask, tex, ps)
        dashes = [dash for r in roads if r.main for dash in centre_dashes(r.line, ps)]
        if dashes:
            others = raster([r.polygon.buffer(2.0 / ps) for r in roads if not r.main], shape).astype(bool)
            paint_dashes(img, raster(dashes, shape).astype(bool) & road_mask & ~others)
    paint_driveways(img, drive_mask, tex)
    _paint_cars(rng, img, roads, kinds, water, road_mask, ps)

    paint_trees(rng, img, tree_h, tree_ids, tree_tints, ps)
    paint_building_shadows(img, placed, ps)
    paint_roofs(rng, img, roof_labels, placed, ps)
    rgb = sensor(rng, img)
    landcover = landcover_map((soil_alpha > 0.5) | field_mask | yard_mask, water,
                              road_mask | drive_mask | (paved_alpha > 0.5), tree_h > 0, roofs)
    scene = Scene(rgb=rgb, roof_labels=roof_labels, landcover=landcover, buildings=buildings, transform=transform,
                  epsg=epsg, params=params)
    regions = [(orient(to_map(cell, transform), 1.0), REGION_CLASSES[int(cls)]) for cell, cls in zip(cells, classes)]
    return Mosaic(scene=scene, regions=regions, region_map=class_map.astype(np.uint8))


def _paint_cars(rng: np.random.Generator, img: np.ndarray, roads: Sequence[Road], kinds: Sequence[int],
                water: np.ndarray, road_mask: np.ndarray, ps: float) -> None:
    """Cars: many in town, few in the country; drawn together from one raster of car ids."""
    size = road_mask.shape[0]
    cars: List[Tuple[Polygon, np.ndarray]] = []
    per_km = {URBAN: MOSAIC_DENSITY["urban"]["cars_per_km_street"],
              RURAL: MOSAIC_DENSITY["rural"]["cars_per_km_street"], -1: 1000.0 / 60.0}
    for r, kind in zip(roads, kinds):
        for _ in range(int(rng.poisson(r.line.length * ps / 1000.0 * per_km[kind]))):
            p, tx, ty = tangent(r.line, rng.uniform(0.0, r.line.length))
            lane = rng.choice([-1.0, 1.0]) * r.width / 4
            cx, cy = p.x - ty * lane, p.y + tx * lane
            if not (0 <= cx < size and 0 <= cy < size) or water[int(cy), int(cx)]:
                continue
            cars.append((car_polygon(cx, cy, tx, ty, ps), CAR_PALETTE[int(rng.integers(0, len(CAR_PALETTE)))]))
    if cars:
        shade_cars(img, cars, road_mask, ps)
        car_ids = raster([(c, i + 1) for i, (c, _) in enumerate(cars)], road_mask.shape, dtype="int32")
        on_road = (car_ids > 0) & road_mask
        colours = np.concatenate([np.zeros((1, 3), _F32), np.stack([col for _, col in cars])])
        img[on_road] = colours[car_ids[on_road]]


def write_regions_gpkg(path: str, regions: Sequence[Tuple[Polygon, str]], epsg: int) -> None:
    """Write the zones as layer ``regions`` (fields ``id``, ``class``, ``area_m2``; FID = id)."""
    write_polygon_gpkg(path, REGIONS_LAYER, epsg, (("id", "int"), ("class", "str"), ("area_m2", "float")),
                        [(i, poly, (i, cls, float(poly.area))) for i, (poly, cls) in enumerate(regions, start=1)])


def mosaic_paths(out_dir: PathLike) -> Dict[str, str]:
    """The scene's two paths (:func:`~sample_data.common.scene_paths`) and ``regions``."""
    paths = scene_paths(out_dir)
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
    paths = mosaic_paths(out_dir)
    for name in (MOSAIC_PARAMS_NAME, PARAMS_NAME):
        stale = os.path.join(os.fspath(out_dir), name)
        if os.path.exists(stale):
            os.remove(stale)
    write_tif(paths["scene"], mosaic.scene)
    write_buildings_gpkg(paths["buildings"], mosaic.scene.buildings, mosaic.scene.epsg)
    write_regions_gpkg(paths["regions"], mosaic.regions, mosaic.scene.epsg)
    write_params(os.path.join(os.fspath(out_dir), MOSAIC_PARAMS_NAME), mosaic.scene.params)
    return paths


def is_mosaic_up_to_date(out_dir: str, size: int = 2048, pixel_size: float = 0.5, seed: int = 0,
                         epsg: int = 32633, origin: Sequence[float] = (500000.0, 5000000.0)) -> bool:
    """Whether ``out_dir`` holds a complete mosaic made with these parameters and this version.

    False as well when a ``scene.json`` sits beside it (:func:`generate_scene` then wrote ``scene.tif``).

    Raises:
        ValueError: If a parameter is invalid.
    """
    wanted = mosaic_params(size, pixel_size, seed, epsg, origin)
    paths = mosaic_paths(out_dir)
    if not all(os.path.isfile(p) for p in paths.values()) or \
            os.path.exists(os.path.join(os.fspath(out_dir), PARAMS_NAME)):
        return False
    return params_match(os.path.join(os.fspath(out_dir), MOSAIC_PARAMS_NAME), wanted)


def read_regions(path: str) -> List[Tuple[Polygon, str]]:
    """Read the zones of a ``regions.gpkg`` written by :func:`generate_mosaic`, ordered by id.

    Args:
        path: GeoPackage path.

    Returns:
        ``(polygon, class)`` pairs in map coordinates; ``class`` is one of :data:`REGION_CLASSES`.

    Raises:
        ValueError: If the file or its ``regions`` layer cannot be opened.
    """
    rows = read_polygon_layer(path, REGIONS_LAYER, ("class",))
    rows.sort(key=lambda r: r[0])
    return [(geom, str(cls)) for _, geom, (cls,) in rows]
