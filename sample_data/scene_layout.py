"""Where things go in the settlement scene: water, roads, ploughed fields, buildings and tree crowns.

Each function takes the scene's one seeded generator and returns geometry in pixel coordinates (masks,
:class:`~sample_data.common.Road` and :class:`~sample_data.common.Placed` records, crown fields);
:mod:`sample_data.scene` paints them. The call order is part of the seed: the same calls in the same order
give the same scene. :func:`draw_crowns` is shared with the mosaic's trees.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import shapely
import shapely.ops
from rasterio.features import rasterize
from scipy import ndimage
from shapely.geometry import LineString, Point, Polygon, box
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
    smooth_noise,
    window_mask,
)

#: Crown tints: broadleaf (set 0) and the darker forest mix (set 1).
CROWN_PALETTES = (np.array([(36, 66, 32), (48, 80, 38), (30, 56, 34), (56, 84, 44)], dtype=np.float32),
                  np.array([(26, 50, 30), (34, 60, 32), (22, 44, 30), (44, 70, 38)], dtype=np.float32))


def make_water(rng: np.random.Generator, size: int, ps: float) -> np.ndarray:
    """Boolean water mask: a meandering river or a lake, or nothing for small scenes."""
    shape = (size, size)
    if size * ps < 150:
        return np.zeros(shape, dtype=bool)
    edge = smooth_noise(rng, shape, 30.0 / ps)
    if rng.random() < 0.6:
        angle = rng.uniform(0, math.pi)
        # Keep the river off the centre so the settlement has room.
        side = rng.choice([-1.0, 1.0])
        offset = side * rng.uniform(0.18, 0.34) * size
        cx = size / 2 - math.sin(angle) * offset
        cy = size / 2 + math.cos(angle) * offset
        line = curve(rng, size, (cx, cy), angle, amp=rng.uniform(0.04, 0.09) * size,
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
    lobes = smooth_noise(rng, shape, radius * 0.7)
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


def make_roads(rng: np.random.Generator, size: int, ps: float, water: np.ndarray) -> List[Road]:
    """Main roads across the scene and side streets branching off them."""
    size_m = size * ps
    if size_m < 80:
        return []
    max_wet = 45.0 / ps  # a bridge, not a causeway
    roads: List[Road] = []

    def main_road(base_angle: float) -> Optional[Road]:
        best = None
        for _ in range(8):
            angle = base_angle + rng.uniform(-0.35, 0.35)
            centre = (size * rng.uniform(0.3, 0.7), size * rng.uniform(0.3, 0.7))
            line = curve(rng, size, centre, angle, amp=rng.uniform(0.0, 0.05) * size,
                          wavelength=rng.uniform(1.5, 3.0) * size)
            if line is None:
                continue
            width = rng.uniform(7.0, 9.0) / ps
            best = Road(line, width, True, line.buffer(width / 2, cap_style="flat"))
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
            line = curve(rng, size, (p.x, p.y), angle, amp=rng.uniform(0.0, 0.04) * size,
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
            roads.append(Road(line, width, False, poly))
            break
    return roads


def make_fields(rng: np.random.Generator, size: int, ps: float, blocked: np.ndarray
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
            poly = place(local, cx, cy, math.cos(angle), math.sin(angle)).intersection(box(0, 0, size, size))
            if poly.is_empty or poly.area < 0.5 * w * h:
                continue
            win = window_mask(poly.buffer(4.0 / ps), blocked.shape)
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


def place_buildings(rng: np.random.Generator, size: int, ps: float, roads: List[Road],
                     occupied: np.ndarray) -> List[Placed]:
    """Place non-overlapping buildings, most of them along roads; ``occupied`` is updated in place."""
    shape = occupied.shape
    size_m = size * ps
    area_factor = (size_m / 512.0) ** 2
    target = max(2, int(round(rng.uniform(85.0, 125.0) * area_factor)))
    road_weights = np.array([r.line.length for r in roads], dtype=float)
    if len(roads):
        road_weights /= road_weights.sum()
    placed: List[Placed] = []
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
            roof_weights = ROOF_WEIGHTS_LARGE if large else ROOF_WEIGHTS_HOUSE
            roof = list(ROOF_COLOURS)[int(rng.choice(len(ROOF_COLOURS), p=roof_weights))]
            height_m = rng.uniform(7.0, 11.0) if large else rng.uniform(4.0, 8.0)
            gap = rng.uniform(2.0, 4.0) / ps
            if not (0 <= int(cx) < size and 0 <= int(cy) < size) or occupied[int(cy), int(cx)]:
                continue
            poly = place(local, cx, cy, cos_a, sin_a)
            minx, miny, maxx, maxy = poly.bounds
            if minx < 1 or miny < 1 or maxx > size - 1 or maxy > size - 1:
                continue
            win = window_mask(poly, shape)
            if win is None:
                continue
            (r0, r1, c0, c1), m = win
            if not m.any() or occupied[r0:r1, c0:c1][m].any():
                continue
            grow = window_mask(poly.buffer(gap, join_style="mitre"), shape)
            if grow is not None:
                (g0, g1, h0, h1), gm = grow
                occupied[g0:g1, h0:h1] |= gm
            parts = []
            for (pu, pv, hw, hh) in parts_local:
                parts.append(Part(cx + pu * cos_a - pv * sin_a, cy + pu * sin_a + pv * cos_a, hw, hh))
            driveway = None
            if anchor is not None and anchor[4] < anchor[5] / 2 + 10.0 / ps and rng.random() < 0.6:
                px, py, nx, ny, sb, _ = anchor
                drive_w = rng.uniform(2.5, 3.5) / ps
                off = rng.uniform(-0.3, 0.3) * w
                sx, sy = px + off * (-ny), py + off * nx
                driveway = LineString([(sx, sy), (sx + nx * (sb + 1.0), sy + ny * (sb + 1.0))]).buffer(
                    drive_w / 2, cap_style="flat")
            placed.append(Placed(poly, cos_a, sin_a, parts, roof, float(height_m), driveway))
        if len(placed) >= 2:
            break
        scale *= 0.7
    return placed


def make_trees(rng: np.random.Generator, size: int, ps: float, free_dist: np.ndarray
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
    return draw_crowns(rng, shape, crowns, np.zeros(len(crowns), np.int64))


def draw_crowns(rng: np.random.Generator, shape: Tuple[int, int], crowns: Sequence[Tuple[float, float, float]],
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
        broadleaf, forest = CROWN_PALETTES
        pick = rng.integers(0, len(broadleaf), len(crowns))
        sets = np.asarray(tint_sets, dtype=np.int64)
        base = np.where((sets == 1)[:, None], forest[pick], broadleaf[pick])
        tints[1:] = base * rng.uniform(0.9, 1.1, (len(crowns), 1)).astype(np.float32)
    return height, ids, tints

