"""Where things go in the mosaic: zones and their classes, roads, water, buildings, fields and trees.

Each function takes the mosaic's one seeded generator and returns geometry in pixel coordinates;
:mod:`sample_data.mosaic` paints it with the scene's painting stages. The call order is part of the seed.
The region classes and the densities of what each holds live here (:data:`MOSAIC_DENSITY`).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import shapely
import shapely.ops
from shapely.geometry import LineString, MultiPoint, Point, Polygon, box
from shapely.geometry.polygon import orient

from sample_data.common import (
    ROOF_COLOURS,
    ROOF_WEIGHTS_HOUSE,
    ROOF_WEIGHTS_LARGE,
    Part,
    Placed,
    Road,
    curve,
    place,
    raster,
    smooth_noise,
)
from sample_data.scene_layout import draw_crowns

#: Region classes of :func:`~sample_data.mosaic.generate_mosaic` (index = value of ``Mosaic.region_map``).
REGION_CLASSES: Tuple[str, ...] = ("urban", "rural", "uninhabited")
URBAN, RURAL, WILD = range(3)

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
SOIL_THRESHOLD = {URBAN: 1.9, RURAL: 1.3, WILD: MOSAIC_DENSITY["uninhabited"]["soil_threshold"]}


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
    """Set the pixels of the rectangles ``(cx, cy, cos, sin, hw, hh)`` grown by ``grow`` in ``mask``."""
    for cx, cy, c, s, hw, hh in rects:
        win = _rect_window(cx, cy, c, s, hw + grow, hh + grow, mask.shape)
        if win is not None:
            (r0, r1, c0, c1), m = win
            mask[r0:r1, c0:c1] |= m


def mosaic_zones(rng: np.random.Generator, size: int, ps: float
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
    classes = np.full(n, RURAL, dtype=np.uint8)
    classes[order[:n_urban]] = URBAN
    classes[order[n - n_wild:]] = WILD
    return cells, classes, pts, town


def map_zones(cells: List[Polygon], pts: np.ndarray, size: int) -> np.ndarray:
    """Index of the zone holding every pixel centre (rasterised cells; the nearest generator where no cell
    claims a pixel, which only a centre on a shared vertex can cause)."""
    out = raster([(c, z + 1) for z, c in enumerate(cells)], (size, size), dtype="int32") - 1
    rr, cc = np.nonzero(out < 0)
    if rr.size:
        d = (cc[:, None] + 0.5 - pts[None, :, 0]) ** 2 + (rr[:, None] + 0.5 - pts[None, :, 1]) ** 2
        out[rr, cc] = d.argmin(axis=1)
    return out


def line_parts(geom: Any, min_len: float) -> List[LineString]:
    if geom.is_empty:
        return []
    parts = [geom] if geom.geom_type == "LineString" else [g for g in getattr(geom, "geoms", [])
                                                           if g.geom_type == "LineString"]
    return [p for p in parts if p.length >= min_len]


def mosaic_roads(rng: np.random.Generator, size: int, ps: float, cells: List[Polygon], classes: np.ndarray,
                  town: Tuple[float, float]) -> Tuple[List[Road], List[int]]:
    """Main roads through the town, street grids in urban zones, a few country roads in rural zones.

    Returns the roads and, per road, its zone class (main roads: -1).
    """
    size_m = size * ps
    roads: List[Road] = []
    kinds: List[int] = []
    n_main = 1 if size_m < 400 else 2
    base = rng.uniform(0, math.pi)
    for m in range(n_main):
        angle = base + m * math.pi / 2 + rng.uniform(-0.3, 0.3)
        centre = (town[0] + rng.uniform(-0.05, 0.05) * size, town[1] + rng.uniform(-0.05, 0.05) * size)
        line = curve(rng, size, centre, angle, amp=rng.uniform(0.0, 0.04) * size,
                      wavelength=rng.uniform(1.5, 3.0) * size)
        if line is None:
            continue
        width = rng.uniform(7.0, 9.0) / ps
        roads.append(Road(line, width, True, line.buffer(width / 2, cap_style="flat")))
        kinds.append(-1)
    mains = [r.line for r in roads]
    main_union = shapely.union_all(mains) if mains else None
    urban = MOSAIC_DENSITY["urban"]
    rural = MOSAIC_DENSITY["rural"]
    for cell, cls in zip(cells, classes):
        if cls == URBAN:
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
                    for part in line_parts(line.intersection(cell), 25.0 / ps):
                        if main_union is not None and \
                                part.buffer(14.0 / ps).intersection(main_union).length > 0.5 * part.length:
                            continue  # runs along a main road
                        width = rng.uniform(*urban["street_width"]) / ps
                        roads.append(Road(part, width, False, part.buffer(width / 2, cap_style="flat")))
                        kinds.append(URBAN)
        elif cls == RURAL:
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
                line = curve(rng, size, (start.x, start.y), angle, amp=rng.uniform(0.0, 0.04) * size,
                              wavelength=rng.uniform(0.8, 1.5) * size, half_len=length, n=60)
                if line is None:
                    continue
                for part in line_parts(line.intersection(cell), 30.0 / ps):
                    width = rng.uniform(*rural["road_width"]) / ps
                    roads.append(Road(part, width, False, part.buffer(width / 2, cap_style="flat")))
                    kinds.append(RURAL)
    return roads, kinds


def mosaic_water(rng: np.random.Generator, size: int, ps: float, cells: List[Polygon], classes: np.ndarray,
                  zone_map: np.ndarray, roads: List[Road]) -> np.ndarray:
    """Lakes in uninhabited zones and ponds in rural ones, clear of the roads and inside their zone."""
    shape = (size, size)
    water = np.zeros(shape, dtype=bool)
    lobes = smooth_noise(rng, shape, 40.0 / ps)
    road_union = shapely.union_all([r.polygon for r in roads]) if roads else None
    for z, (cell, cls) in enumerate(zip(cells, classes)):
        if cls == WILD and rng.random() < MOSAIC_DENSITY["uninhabited"]["lake_probability"]:
            lo, hi, cap = 0.35, 0.6, 150.0 / ps
        elif cls == RURAL and rng.random() < MOSAIC_DENSITY["rural"]["pond_probability"]:
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
    weights = ROOF_WEIGHTS_LARGE if large else ROOF_WEIGHTS_HOUSE
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
               placed: List[Placed], driveway: Optional[Any] = None) -> bool:
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
    poly = place(_parts_polygon(parts_local), cx, cy, cos_a, sin_a)
    minx, miny, maxx, maxy = poly.bounds
    if minx < 1 or miny < 1 or maxx > size - 1 or maxy > size - 1:
        return False
    _rects_mark(rects, gap, occupied)
    parts = [Part(x, y, hw, hh) for (x, y, _, _, hw, hh) in rects]
    placed.append(Placed(poly, cos_a, sin_a, parts, roof, height, driveway))
    return True


def tangent(line: LineString, t: float) -> Tuple[Point, float, float]:
    p = line.interpolate(t)
    q = line.interpolate(min(t + 2.0, line.length))
    if q.distance(p) < 1e-6:
        q, p = p, line.interpolate(max(t - 2.0, 0.0))
    norm = math.hypot(q.x - p.x, q.y - p.y) or 1.0
    return line.interpolate(t), (q.x - p.x) / norm, (q.y - p.y) / norm


def urban_buildings(rng: np.random.Generator, size: int, ps: float, roads: List[Road], occupied: np.ndarray,
                     placed: List[Placed]) -> None:
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
                p, tx, ty = tangent(road.line, tc)
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


def rural_buildings(rng: np.random.Generator, size: int, ps: float, cells: List[Polygon], classes: np.ndarray,
                     zone_map: np.ndarray, roads: List[Road], kinds: List[int], occupied: np.ndarray,
                     placed: List[Placed]) -> List[Any]:
    """Farmsteads (a house and barns around a yard) and a few houses along country roads; returns the yards."""
    rural = MOSAIC_DENSITY["rural"]
    yards = []
    for z, (cell, cls) in enumerate(zip(cells, classes)):
        if cls != RURAL:
            continue
        area_km2 = cell.area * ps * ps / 1e6
        n_farms = max(1, int(round(area_km2 * rng.uniform(*rural["farms_per_km2"]))))
        cell_roads = [r for r, k in zip(roads, kinds) if k == RURAL and r.line.intersects(cell)] or \
            [r for r in roads if r.line.intersects(cell)]
        minx, miny, maxx, maxy = cell.bounds
        for _ in range(n_farms):
            for _attempt in range(20):
                if cell_roads and rng.random() < 0.75:
                    road = cell_roads[int(rng.integers(0, len(cell_roads)))]
                    p, tx, ty = tangent(road.line, rng.uniform(0.0, road.line.length))
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
        for road in [r for r, k in zip(roads, kinds) if k == RURAL and r.line.intersects(cell)]:
            for _ in range(int(rng.poisson(road.line.length * ps / 1000.0 * rural["houses_per_km_road"]))):
                p, tx, ty = tangent(road.line, rng.uniform(0.0, road.line.length))
                side = rng.choice([-1.0, 1.0])
                w, d, l_shape, roof, height = _make_building(rng, ps, False, 0.3)
                dist = road.width / 2 + rng.uniform(4.0, 12.0) / ps + d / 2
                cx, cy = p.x - ty * side * dist, p.y + tx * side * dist
                if 0 <= cx < size and 0 <= cy < size and zone_map[int(cy), int(cx)] == z:
                    _try_place(rng, size, w, d, l_shape, roof, height, cx, cy, tx * side, ty * side,
                               rng.uniform(2.0, 4.0) / ps, occupied, placed)
    return yards


def mosaic_fields(rng: np.random.Generator, size: int, ps: float, cells: List[Polygon], classes: np.ndarray,
                   blocked: np.ndarray) -> List[Tuple[Polygon, float, float, int]]:
    """A patchwork of fields over every rural zone: (polygon px, stripe angle, period px, tone index).

    Each zone gets a rotated grid of parcels 35-100 m by 25-75 m separated by 3-6 m tracks; a parcel becomes
    a field with probability ``field_fill`` if it is clear of ``blocked`` (else its two halves are tried).
    """
    fields: List[Tuple[Polygon, float, float, int]] = []
    fill = MOSAIC_DENSITY["rural"]["field_fill"]
    frame = box(0, 0, size, size)
    for cell, cls in zip(cells, classes):
        if cls != RURAL:
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
                    poly = place(box(-hw, -hh, hw, hh), px, py, ca, sa).intersection(frame)
                    if poly.is_empty or poly.area < 0.5 * 4 * hw * hh:
                        continue
                    _rects_mark(rect, 1.0, blocked)
                    fields.append((poly, stripe, period, tone))
                    if k == 0:
                        break  # the whole parcel is a field: no halves
    return fields


def mosaic_trees(rng: np.random.Generator, size: int, ps: float, class_map: np.ndarray, free_dist: np.ndarray,
                  forest_field: np.ndarray, roads: List[Road], kinds: List[int]
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
    keep = (class_map[iy, ix] == WILD) & (forest_field[iy, ix] > wild["forest_threshold"])
    xs_all.append(gx[keep])
    ys_all.append(gy[keep])
    rs_all.append(radii[keep])
    sets_all.append(np.ones(int(keep.sum()), np.int64))
    # Rural copses and single trees; urban garden trees.
    rural = MOSAIC_DENSITY["rural"]
    cands = []
    for _ in range(int(round(areas[RURAL] * rng.uniform(*rural["copses_per_km2"])))):
        cx, cy = rng.uniform(0, size, 2)
        n = int(rng.integers(8, 40))
        xy = rng.normal(0.0, rng.uniform(5.0, 12.0) / ps, (n, 2)) + (cx, cy)
        cands.append((xy, rng.uniform(2.0, 4.5, n) / ps, RURAL))
    n_single = int(round(areas[RURAL] * rural["single_trees_per_km2"]))
    cands.append((rng.uniform(0, size, (n_single, 2)), rng.uniform(1.5, 3.5, n_single) / ps, RURAL))
    n_garden = int(round(areas[URBAN] * MOSAIC_DENSITY["urban"]["garden_trees_per_km2"]))
    cands.append((rng.uniform(0, size, (n_garden, 2)), rng.uniform(1.5, 3.2, n_garden) / ps, URBAN))
    for road, kind in zip(roads, kinds):
        if kind == URBAN and rng.random() < MOSAIC_DENSITY["urban"]["street_tree_share"]:
            n = max(int(road.line.length / (10.0 / ps)), 1)
            pts = shapely.get_coordinates(shapely.line_interpolate_point(road.line, np.linspace(0, road.line.length,
                                                                                                n)))
            for side in (-1.0, 1.0):
                _, tx, ty = tangent(road.line, 0.0)
                off = road.width / 2 + 2.5 / ps
                cands.append((pts + (-ty * side * off, tx * side * off), rng.uniform(1.8, 3.0, n) / ps, URBAN))
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
    return draw_crowns(rng, shape, crowns, sets[ok])


