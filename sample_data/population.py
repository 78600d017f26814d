"""Seeded synthetic population time series with known motion, identities and events (the tracking truth).

Every frame is a population-count raster (float32, EPSG:3035 by default, 1 km pixels, the top-left corner on
the Dutch North Sea coast) made of *communities* on a low, static background. A community is one or two
Gaussian blobs; blobs move with constant known velocities of about 1 to 4 pixels per frame and grow in
population and size. Over the series (5 frames by default):

- most communities **continue** (one blob, its own velocity and growth; one large growing city);
- one community **splits**: two overlapping blobs drift apart, one community before frame ``frames // 2``
  and two after;
- two communities **merge**: two blobs approach until they overlap, one community from frame
  ``frames // 2 + 1``;
- one community is **born** at frame ``frames // 2`` and one **dies** (is absent) from frame
  ``frames // 2 + 1``.

A wavy strip of sea on the west side is nodata (NaN), as the sea pixels of GPWv4. Every random choice comes
from one ``numpy.random.default_rng(seed)``, so a seed always gives the same files.

Truth written next to the frames:

- ``communities_t{i}.tif``: int32 community ids, 0 = background and sea. A pixel belongs to the community of
  highest density there when that density is at least 15 % of the community's peak.
- ``flow_true_t{i}.tif`` (pairs ``i -> i+1``): 2 bands, ``u`` (+column) and ``v`` (+row) in pixels per frame,
  the displacement of the population at each pixel of frame ``i``: the density-weighted mean of the
  displacements of the blobs there (a blob's displacement at a pixel is its centre's motion plus its
  growth: ``(x' - x) + (col - x) (sigma_x' / sigma_x - 1)``, and the same for rows). Defined inside the true
  communities of frame ``i`` that live on in frame ``i + 1``; NaN elsewhere (background, sea, dying
  communities). So ``pop_{i+1}(col + u, row + v) ~= growth * pop_i(col, row)`` inside communities.
- ``links_true.csv``: ``frame,community,next_frame,next_community,event`` with event one of ``continue``,
  ``split``, ``merge``, ``birth``, ``death``; community 0 stands for "none" (the missing side of a birth or a
  death).
- ``population.json``: the parameters, the generator version and each community's blobs (written last).

Command line (also ``python -m sample_data.generate --population DIR``)::

    python -m sample_data.population [--out DIR] [--size W H] [--frames N] [--seed S] [--force]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage

__all__ = [
    "DEFAULT_POPULATION_DIR",
    "EVENTS",
    "FLOW_BAND_DESCRIPTIONS",
    "POPULATION_PARAMS_NAME",
    "POPULATION_VERSION",
    "PopulationSeries",
    "TrueLink",
    "generate_population_series",
    "is_population_up_to_date",
    "main",
    "population_paths",
    "read_true_links",
    "render_population_series",
    "run_cli",
]

#: Bump whenever the output for a given set of parameters changes; the command line then regenerates.
POPULATION_VERSION = 1
POPULATION_PARAMS_NAME = "population.json"
LINKS_NAME = "links_true.csv"
DEFAULT_POPULATION_DIR = os.path.join("sample_data", "generated", "population")
EVENTS: Tuple[str, ...] = ("continue", "split", "merge", "birth", "death")
#: The band descriptions SatSeg's flow rasters carry (``satseg_plugin.pipelines.population.flow.BAND_DESCRIPTIONS``).
FLOW_BAND_DESCRIPTIONS: Tuple[str, str] = ("u (pixels/frame, +column)", "v (pixels/frame, +row)")
LINK_FIELDS: Tuple[str, ...] = ("frame", "community", "next_frame", "next_community", "event")

#: Default top-left corner in EPSG:3035 (about 5.5 E, 52.8 N: the Dutch coast), metres.
_ORIGIN_3035 = (4_000_000.0, 3_300_000.0)
#: A pixel belongs to a community where its density is at least this share of the community's peak.
_MEMBERSHIP = 0.15
#: Blobs are drawn out to this many sigmas.
_REACH = 4.5
#: Base size the number of "continue" communities is scaled from, and how many it holds.
_BASE_AREA, _BASE_CONTINUE = 256 * 192, 5
_MIN_SIZE = (96, 64)


@dataclass(frozen=True)
class TrueLink:
    """One row of ``links_true.csv`` (community 0 = none, for births and deaths)."""

    frame: int
    community: int
    next_frame: int
    next_community: int
    event: str


@dataclass
class _Blob:
    """One Gaussian blob: per-frame centre (col, row), sigmas, amplitude (0 = absent) and community id."""

    x: np.ndarray
    y: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    amp: np.ndarray
    community: np.ndarray

    def alive(self, t: int) -> bool:
        return bool(self.amp[t] > 0)

    def window(self, t: int, width: int, height: int) -> Optional[Tuple[slice, slice, np.ndarray, np.ndarray]]:
        """Rows/cols slices of the blob's reach in frame ``t`` and the pixel coordinates there."""
        r0, r1 = max(0, int(self.y[t] - _REACH * self.sy[t])), min(height, int(self.y[t] + _REACH * self.sy[t]) + 2)
        c0, c1 = max(0, int(self.x[t] - _REACH * self.sx[t])), min(width, int(self.x[t] + _REACH * self.sx[t]) + 2)
        if r1 <= r0 or c1 <= c0:
            return None
        return slice(r0, r1), slice(c0, c1), np.arange(r0, r1)[:, None], np.arange(c0, c1)[None, :]

    def density(self, t: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.amp[t] * np.exp(-0.5 * (((cols - self.x[t]) / self.sx[t]) ** 2
                                            + ((rows - self.y[t]) / self.sy[t]) ** 2))


@dataclass
class PopulationSeries:
    """A rendered series (what :func:`generate_population_series` writes).

    Attributes:
        frames: ``frames`` float32 ``(H, W)`` population counts, NaN on the sea.
        communities: int32 ``(H, W)`` true community ids per frame, 0 = background.
        flows: ``frames - 1`` float32 ``(2, H, W)`` true displacement (u, v) of each pair, NaN where undefined.
        links: the true links between consecutive frames.
        transform: the frames' geotransform.
        epsg: the frames' EPSG code.
        params: the generation parameters and each community's blobs (JSON-ready).
    """

    frames: List[np.ndarray]
    communities: List[np.ndarray]
    flows: List[np.ndarray]
    links: List[TrueLink]
    transform: Affine
    epsg: int
    params: Dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------

def _coast(rows: np.ndarray, width: int, height: int, phase: float) -> np.ndarray:
    """Column of the coastline at each row: sea west of it."""
    return width * (0.07 + 0.035 * np.sin(2 * math.pi * 1.3 * rows / height + phase)
                    + 0.015 * np.sin(2 * math.pi * 4.1 * rows / height + 2 * phase))


def _unit(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, 2 * math.pi)
    return np.array([math.cos(angle), math.sin(angle)])


def _spec_continue(rng: np.random.Generator, frames: int, city: bool = False) -> List[dict]:
    """One blob moving at 1..4 px/frame (a slow, large, fast-growing city when ``city``)."""
    speed = rng.uniform(1.0, 1.3) if city else rng.uniform(1.0, 4.0)
    sigma = rng.uniform(6.5, 8.0) if city else rng.uniform(2.5, 5.0)
    amp = rng.uniform(2500.0, 3500.0) if city else math.exp(rng.uniform(math.log(150.0), math.log(1500.0)))
    growth = rng.uniform(1.06, 1.10) if city else rng.uniform(0.97, 1.08)
    spread = rng.uniform(1.03, 1.05) if city else rng.uniform(1.0, 1.03)
    aspect = rng.uniform(0.8, 1.25)
    t = np.arange(frames, dtype=float)
    vel = speed * _unit(rng)
    sx, sy = sigma * aspect ** 0.5 * spread ** t, sigma / aspect ** 0.5 * spread ** t
    return [dict(offset=np.outer(t, vel), sx=sx, sy=sy, amp=amp * growth ** t)]


def _spec_pair(rng: np.random.Generator, frames: int, event_frame: int, merge: bool) -> List[dict]:
    """Two blobs of sigma 2.5 px drifting together; they separate from (split) or meet at (merge)
    ``event_frame``: 3.5 px apart while one community, 6 px more per frame otherwise (3 px/frame each, so
    with the 1 px/frame drift every blob moves 1 to 4 px/frame)."""
    drift = _unit(rng)
    axis = _unit(rng)
    t = np.arange(frames, dtype=float)
    steps = np.maximum(0.0, (event_frame - t) if merge else (t - event_frame + 1))
    separation = 3.5 + 6.0 * steps
    amp = rng.uniform(500.0, 900.0)
    blobs = []
    for sign in (-1.0, 1.0):
        centre = np.outer(t, drift) + sign * 0.5 * separation[:, None] * axis[None, :]
        blobs.append(dict(offset=centre, sx=np.full(frames, 2.5), sy=np.full(frames, 2.5),
                          amp=amp * rng.uniform(0.85, 1.15) * 1.03 ** t))
    return blobs


def _spec_single_event(rng: np.random.Generator, frames: int, first: int, last: int) -> List[dict]:
    """One blob alive in frames ``first..last`` (a birth or a death)."""
    t = np.arange(frames, dtype=float)
    vel = rng.uniform(1.0, 3.0) * _unit(rng)
    alive = (t >= first) & (t <= last)
    sigma = rng.uniform(3.0, 4.0)
    return [dict(offset=np.outer(t, vel), sx=np.full(frames, sigma), sy=np.full(frames, sigma),
                 amp=np.where(alive, rng.uniform(400.0, 900.0), 0.0))]


def _place(rng: np.random.Generator, blobs: List[dict], width: int, height: int, phase: float,
           taken: List[Tuple[float, float, float]], tries: int = 400) -> Optional[np.ndarray]:
    """A reference point putting the blobs on land, inside the frame and clear of the ``taken`` discs."""
    points = np.concatenate([b["offset"] for b in blobs])
    reach = max(3.0 * max(b["sx"].max(), b["sy"].max()) for b in blobs)
    mid = (points.min(axis=0) + points.max(axis=0)) / 2
    radius = float(np.max(np.hypot(*(points - mid).T))) + reach + 3.0
    for _ in range(tries):
        ref = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        pts = points + ref
        if (pts[:, 0] < reach).any() or (pts[:, 0] > width - 1 - reach).any():
            continue
        if (pts[:, 1] < reach).any() or (pts[:, 1] > height - 1 - reach).any():
            continue
        if (pts[:, 0] < _coast(pts[:, 1], width, height, phase) + 0.6 * reach).any():
            continue
        centre = mid + ref
        if any(math.hypot(centre[0] - x, centre[1] - y) < radius + r for x, y, r in taken):
            continue
        taken.append((float(centre[0]), float(centre[1]), radius))
        return ref
    return None


def _layout(rng: np.random.Generator, width: int, height: int, frames: int,
            phase: float) -> Tuple[List[_Blob], Dict[int, str]]:
    """Every blob of the series, with per-frame community ids, and each community id's role."""
    split_at, merge_at = frames // 2, frames // 2 + 1
    groups: List[Tuple[str, List[dict]]] = [
        ("city", _spec_continue(rng, frames, city=True)),
        ("split", _spec_pair(rng, frames, split_at, merge=False)),
        ("merge", _spec_pair(rng, frames, merge_at, merge=True)),
        ("birth", _spec_single_event(rng, frames, frames // 2, frames - 1)),
        ("death", _spec_single_event(rng, frames, 0, frames // 2)),
    ]
    n_continue = max(1, int(round(_BASE_CONTINUE * width * height / _BASE_AREA)))
    groups += [("continue", _spec_continue(rng, frames)) for _ in range(n_continue)]
    taken: List[Tuple[float, float, float]] = []
    blobs: List[_Blob] = []
    roles: Dict[int, str] = {}
    next_id = 1
    t = np.arange(frames)
    for kind, specs in groups:
        ref = _place(rng, specs, width, height, phase, taken)
        if ref is None:
            if kind == "continue":
                continue  # the frame is full: fewer plain communities
            raise ValueError(f"a {width} x {height} frame has no room for the {kind} community; use a larger size")
        if kind in ("split", "merge"):
            before = t < (split_at if kind == "split" else merge_at)
            ids = [next_id, next_id + 1, next_id + 2]
            next_id += 3
            if kind == "split":  # one parent, then two children
                communities = [np.where(before, ids[0], ids[1 + k]) for k in range(2)]
                roles.update({ids[0]: "split parent", ids[1]: "split child", ids[2]: "split child"})
            else:  # two parents, then one merged community
                communities = [np.where(before, ids[k], ids[2]) for k in range(2)]
                roles.update({ids[0]: "merge parent", ids[1]: "merge parent", ids[2]: "merged"})
        else:
            communities = [np.full(frames, next_id)]
            roles[next_id] = kind
            next_id += 1
        for spec, community in zip(specs, communities):
            centre = spec["offset"] + ref
            blobs.append(_Blob(centre[:, 0].copy(), centre[:, 1].copy(), np.asarray(spec["sx"], float),
                               np.asarray(spec["sy"], float), np.asarray(spec["amp"], float),
                               np.asarray(community, np.int32)))
    return blobs, roles


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------

def _labels(blobs: List[_Blob], t: int, width: int, height: int, sea: np.ndarray) -> np.ndarray:
    """True community ids of frame ``t`` (see the module docstring)."""
    labels = np.zeros((height, width), np.int32)
    best = np.zeros((height, width), np.float64)
    ids = sorted({int(b.community[t]) for b in blobs if b.alive(t)})
    for cid in ids:
        members = [b for b in blobs if b.alive(t) and b.community[t] == cid]
        windows = [b.window(t, width, height) for b in members]
        windows = [w for w in windows if w is not None]
        if not windows:
            continue
        r0, r1 = min(w[0].start for w in windows), max(w[0].stop for w in windows)
        c0, c1 = min(w[1].start for w in windows), max(w[1].stop for w in windows)
        rows, cols = np.arange(r0, r1)[:, None], np.arange(c0, c1)[None, :]
        dens = sum(b.density(t, rows, cols) for b in members)
        keep = (dens >= _MEMBERSHIP * dens.max()) & (dens > best[r0:r1, c0:c1])
        best[r0:r1, c0:c1][keep] = dens[keep]
        labels[r0:r1, c0:c1][keep] = cid
    labels[sea] = 0
    return labels


def _true_flow(blobs: List[_Blob], t: int, labels: np.ndarray, dying: set) -> np.ndarray:
    """The density-weighted blob displacement from frame ``t`` to ``t + 1`` inside surviving communities."""
    height, width = labels.shape
    num = np.zeros((2, height, width), np.float64)
    den = np.zeros((height, width), np.float64)
    for b in blobs:
        if not (b.alive(t) and b.alive(t + 1)):
            continue
        win = b.window(t, width, height)
        if win is None:
            continue
        rs, cs, rows, cols = win
        w = b.density(t, rows, cols)
        du = (b.x[t + 1] - b.x[t]) + (cols - b.x[t]) * (b.sx[t + 1] / b.sx[t] - 1.0)
        dv = (b.y[t + 1] - b.y[t]) + (rows - b.y[t]) * (b.sy[t + 1] / b.sy[t] - 1.0)
        num[0, rs, cs] += w * du
        num[1, rs, cs] += w * dv
        den[rs, cs] += w
    flow = np.full((2, height, width), np.nan, np.float32)
    defined = (labels > 0) & ~np.isin(labels, sorted(dying)) & (den > 0)
    flow[:, defined] = (num[:, defined] / den[defined]).astype(np.float32)
    return flow


def _links(blobs: List[_Blob], frames: int) -> List[TrueLink]:
    """Continue / split / merge / birth / death links implied by the blobs' community ids per frame."""
    links: List[TrueLink] = []
    for t in range(frames - 1):
        pairs = sorted({(int(b.community[t]), int(b.community[t + 1])) for b in blobs
                        if b.alive(t) and b.alive(t + 1)})
        now = {int(b.community[t]) for b in blobs if b.alive(t)}
        nxt = {int(b.community[t + 1]) for b in blobs if b.alive(t + 1)}
        children: Dict[int, set] = {}
        parents: Dict[int, set] = {}
        for a, b in pairs:
            children.setdefault(a, set()).add(b)
            parents.setdefault(b, set()).add(a)
        for a, b in pairs:
            if len(children[a]) > 1:
                event = "split"
            elif len(parents[b]) > 1:
                event = "merge"
            else:
                event = "continue"
            links.append(TrueLink(t, a, t + 1, b, event))
        links += [TrueLink(t, c, t + 1, 0, "death") for c in sorted(now - set(children))]
        links += [TrueLink(t, 0, t + 1, c, "birth") for c in sorted(nxt - set(parents))]
    return links


def _check(size: Sequence[int], frames: int, pixel_size: float) -> Tuple[int, int]:
    width, height = (int(s) for s in size)
    if width < _MIN_SIZE[0] or height < _MIN_SIZE[1]:
        raise ValueError(f"size must be at least {_MIN_SIZE[0]} x {_MIN_SIZE[1]} pixels, got {width} x {height}")
    if frames < 3:
        raise ValueError(f"frames must be at least 3 (to hold a split, a merge, a birth and a death), got {frames}")
    if not pixel_size > 0:
        raise ValueError(f"pixel_size must be positive, got {pixel_size}")
    return width, height


def render_population_series(size: Sequence[int] = (256, 192), frames: int = 5, seed: int = 0,
                             pixel_size: float = 1000.0, epsg: int = 3035,
                             origin: Optional[Sequence[float]] = None) -> PopulationSeries:
    """Render the series in memory (see the module docstring).

    Args:
        size: ``(width, height)`` in pixels (at least 96 x 64).
        frames: number of frames (at least 3).
        seed: random seed; the same arguments always give the same arrays.
        pixel_size: pixel size in metres.
        epsg: EPSG code of the frames' CRS.
        origin: map ``(x, y)`` of the top-left corner (default: the Dutch coast in EPSG:3035, else 0, 0).

    Returns:
        The frames, true communities, true flows and true links.

    Raises:
        ValueError: if a parameter is invalid or the frame is too small for the event communities.
    """
    width, height = _check(size, frames, pixel_size)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * math.pi)
    rows = np.arange(height)
    sea = np.arange(width)[None, :] < _coast(rows, width, height, phase)[:, None]
    coarse = rng.standard_normal((height // 16 + 3, width // 16 + 3))
    smooth = ndimage.zoom(coarse, (height / (coarse.shape[0] - 2), width / (coarse.shape[1] - 2)), order=3)
    smooth = smooth[:height, :width]
    smooth = (smooth - smooth.min()) / max(float(np.ptp(smooth)), 1e-9)
    background = 1.0 + 8.0 * smooth  # 1..9 people per pixel, static
    blobs, roles = _layout(rng, width, height, frames, phase)
    pops, labels = [], []
    for t in range(frames):
        pop = background.copy()
        for b in blobs:
            win = b.window(t, width, height) if b.alive(t) else None
            if win is not None:
                rs, cs, rr, cc = win
                pop[rs, cs] += b.density(t, rr, cc)
        pop *= 1.0 + 0.02 * rng.standard_normal(pop.shape)  # census noise, independent per frame
        pop = np.maximum(pop, 0.0).astype(np.float32)
        pop[sea] = np.nan
        pops.append(pop)
        labels.append(_labels(blobs, t, width, height, sea))
    links = _links(blobs, frames)
    flows = []
    for t in range(frames - 1):
        dying = {link.community for link in links if link.frame == t and link.event == "death"}
        flows.append(_true_flow(blobs, t, labels[t], dying))
    if origin is None:
        origin = _ORIGIN_3035 if epsg == 3035 else (0.0, 0.0)
    transform = Affine(pixel_size, 0.0, float(origin[0]), 0.0, -pixel_size, float(origin[1]))
    params = {
        "version": POPULATION_VERSION, "size": [width, height], "frames": frames, "seed": seed,
        "pixel_size": pixel_size, "epsg": epsg, "origin": [float(origin[0]), float(origin[1])],
        "communities": {str(cid): role for cid, role in sorted(roles.items())},
        "blobs": [{"community": b.community.tolist(), "x": np.round(b.x, 4).tolist(), "y": np.round(b.y, 4).tolist(),
                   "sigma_x": np.round(b.sx, 4).tolist(), "sigma_y": np.round(b.sy, 4).tolist(),
                   "amplitude": np.round(b.amp, 3).tolist()} for b in blobs],
    }
    return PopulationSeries(pops, labels, flows, links, transform, epsg, params)


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------

def population_paths(out_dir: str, frames: int = 5) -> Dict[str, str]:
    """The files :func:`generate_population_series` writes: ``pop_t{i}``, ``communities_t{i}``,
    ``flow_true_t{i}`` (one per pair), ``links_true`` and ``params``."""
    folder = os.path.abspath(os.fspath(out_dir))
    paths = {f"pop_t{i}": os.path.join(folder, f"pop_t{i}.tif") for i in range(frames)}
    paths.update({f"flow_true_t{i}": os.path.join(folder, f"flow_true_t{i}.tif") for i in range(frames - 1)})
    paths.update({f"communities_t{i}": os.path.join(folder, f"communities_t{i}.tif") for i in range(frames)})
    paths["links_true"] = os.path.join(folder, LINKS_NAME)
    paths["params"] = os.path.join(folder, POPULATION_PARAMS_NAME)
    return paths


def _write(path: str, data: np.ndarray, series: PopulationSeries, nodata: Optional[float],
           descriptions: Sequence[str]) -> None:
    data = data[None] if data.ndim == 2 else data
    count, height, width = data.shape
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name,
                   crs=CRS.from_epsg(series.epsg), transform=series.transform, nodata=nodata, tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate", interleave="pixel")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for band, text in enumerate(descriptions, start=1):
            dst.set_band_description(band, text)


def generate_population_series(out_dir: str, size: Sequence[int] = (256, 192), frames: int = 5, seed: int = 0,
                               pixel_size: float = 1000.0, epsg: int = 3035) -> Dict[str, str]:
    """Render a series and write its frames and truth into ``out_dir`` (see the module docstring).

    Existing files are overwritten; ``population.json`` is written last, so an interrupted run is redone by
    :func:`is_population_up_to_date`-based callers such as the command line.

    Args:
        out_dir: output folder (created if missing).
        size: ``(width, height)`` in pixels.
        frames: number of frames (at least 3).
        seed: random seed.
        pixel_size: pixel size in metres.
        epsg: EPSG code.

    Returns:
        :func:`population_paths` of ``out_dir``.
    """
    series = render_population_series(size, frames, seed, pixel_size, epsg)
    os.makedirs(os.fspath(out_dir), exist_ok=True)
    paths = population_paths(out_dir, frames)
    if os.path.exists(paths["params"]):
        os.remove(paths["params"])
    for t in range(frames):
        _write(paths[f"pop_t{t}"], series.frames[t], series, float("nan"), ["population (count per pixel)"])
        _write(paths[f"communities_t{t}"], series.communities[t], series, None, ["true community id"])
    for t in range(frames - 1):
        _write(paths[f"flow_true_t{t}"], series.flows[t], series, float("nan"), FLOW_BAND_DESCRIPTIONS)
    with open(paths["links_true"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(LINK_FIELDS)
        writer.writerows((link.frame, link.community, link.next_frame, link.next_community, link.event)
                         for link in series.links)
    with open(paths["params"], "w", encoding="utf-8") as handle:
        json.dump(series.params, handle, indent=1, sort_keys=True)
        handle.write("\n")
    return paths


def read_true_links(path: str) -> List[TrueLink]:
    """Read ``links_true.csv`` (as written by :func:`generate_population_series`)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [TrueLink(int(row["frame"]), int(row["community"]), int(row["next_frame"]),
                         int(row["next_community"]), row["event"]) for row in csv.DictReader(handle)]


def is_population_up_to_date(out_dir: str, size: Sequence[int] = (256, 192), frames: int = 5, seed: int = 0,
                             pixel_size: float = 1000.0, epsg: int = 3035) -> bool:
    """Whether ``out_dir`` holds a complete series of these parameters and this generator version."""
    paths = population_paths(out_dir, frames)
    if not all(os.path.isfile(p) for p in paths.values()):
        return False
    try:
        with open(paths["params"], encoding="utf-8") as handle:
            stored = json.load(handle)
    except (OSError, ValueError):
        return False
    wanted = {"version": POPULATION_VERSION, "size": [int(s) for s in size], "frames": frames, "seed": seed,
              "pixel_size": pixel_size, "epsg": epsg}
    return all(stored.get(key) == value for key, value in wanted.items())


def run_cli(out_dir: Optional[str] = None, size: Sequence[int] = (256, 192), frames: int = 5, seed: int = 0,
            force: bool = False) -> int:
    """Write the series unless it is up to date, print the paths, return 0 (the command lines' body)."""
    out = out_dir or DEFAULT_POPULATION_DIR
    if not force and is_population_up_to_date(out, size, frames, seed):
        paths = population_paths(out, frames)
        print(f"Up to date (use --force to regenerate): {out}")
    else:
        paths = generate_population_series(out, size, frames, seed)
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m sample_data.population",
                                     description="Write a seeded population time series with its true flow, "
                                                 "communities and links.")
    parser.add_argument("--out", default=DEFAULT_POPULATION_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=(256, 192),
                        help="width and height in pixels (default: 256 192)")
    parser.add_argument("--frames", type=int, default=5, help="number of frames (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the files are up to date")
    args = parser.parse_args(argv)
    try:
        return run_cli(args.out, args.size, args.frames, args.seed, args.force)
    except ValueError as exc:
        parser.error(str(exc))
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
