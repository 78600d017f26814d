"""Communities of one population frame: window-autoencoder codes, k-means, then DBSCAN on the raster grid.

For one frame (population counts, NaN = nodata) and the flow leaving it (``u``, ``v`` in pixels/frame):

1. Five channels - population, u, v, row and column - are clipped at the ``clip_quantile`` quantiles and
   min-max normalised to ``[0, 1]`` on this frame's valid pixels (:func:`.autoencoder.normalise_channels`). Each frame has
   its own scaling (the original fitted one scaler on all frames, so a frame's features depended on the others).
2. A :class:`~..models.window_ae.WindowAE` is trained on ``window x window`` windows around random populated
   pixels (fresh centres every epoch, borders padded by reflection) to reconstruct the population and flow
   channels (:func:`.autoencoder.train_window_ae`); its reconstruction MSE on held-out centres is reported.
3. Every populated pixel is encoded, one strip of rows at a time (:func:`.autoencoder.encode_pixels`), the codes are
   standardised (scikit-learn ``StandardScaler``, fitted on this frame) and clustered with faiss k-means.
4. Within each k-means label, DBSCAN on the pixel coordinates (:func:`grid_dbscan`) splits the label into
   spatially coherent segments, numbered 1..N over the whole frame by decreasing population (the original
   numbered DBSCAN clusters per label, so ids of different labels collided).
5. Per segment: population, area, population-weighted centroid and polygon (:func:`community_records`).

Which pixels are clustered: valid pixels with population strictly above ``pop_min`` (default 0: every
populated pixel). Unpopulated land would otherwise form huge, meaningless "communities" of zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from affine import Affine

from ...core.deps import require
from ...core.errors import InputError
from ...core.kmeans import kmeans
from ...core.progress import Feedback, NullFeedback, SubFeedback, check_canceled, track
from ...core.scores import silhouette
from .autoencoder import encode_pixels, normalise_channels, train_window_ae
from .config import CommunityConfig

__all__ = [
    "CommunityConfig",
    "Community",
    "FrameCommunities",
    "disk_offsets",
    "grid_dbscan",
    "dbscan_segments",
    "order_segments",
    "k_report",
    "community_records",
    "frame_communities",
]

#: k-means of the k report trains on at most this many codes per cluster (faiss's default) and then assigns
#: every code, so the inertia is still over all codes: 14 values of k on 1.46 M codes took 97 s with every
#: code in training. The clustering kept for the frame trains on every code.
_REPORT_POINTS_PER_CENTROID = 256


# --------------------------------------------------------------------------------------------- DBSCAN

def disk_offsets(eps: float) -> np.ndarray:
    """``(m, 2)`` int offsets ``(drow, dcol)`` with ``sqrt(drow^2 + dcol^2) <= eps``, the origin included."""
    r = int(math.floor(eps))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    inside = np.sqrt(dy * dy + dx * dx) <= eps
    return np.stack([dy[inside], dx[inside]], axis=1)


def grid_dbscan(mask: np.ndarray, eps: float, min_samples: int) -> Tuple[np.ndarray, np.ndarray]:
    """DBSCAN of the pixels of ``mask`` (Euclidean distance on pixel coordinates), computed on the grid.

    Why not ``sklearn.cluster.DBSCAN``: it stores every point's neighbour list, about ``pi * eps^2`` indices
    per pixel (317 at eps = 10), so a million-pixel label needs gigabytes. On a grid the same clustering
    follows from raster operations in memory proportional to the mask:

    - core pixels: the number of mask pixels within ``eps`` (itself included, as scikit-learn counts) is a
      convolution of the mask with a disk (``scipy.signal.fftconvolve``, rounded: exact for these integers);
    - clusters: connected components of the graph joining cores at distance ``<= eps``. Adjacent cores are
      joined by ``scipy.ndimage.label``; components are then joined when any two of their cores lie within
      ``eps``. The closest two pixels of two components always lie on their boundaries (a pixel whose four
      neighbours are all in its own component can step towards the other one), so only boundary cores are
      looked at, over the half-disk of offsets, and the component graph is solved with
      ``scipy.sparse.csgraph.connected_components``. The core partition is exactly scikit-learn's;
    - border pixels: non-core mask pixels within ``eps`` of a core take the cluster of the nearest core
      (``scipy.ndimage.distance_transform_edt``). scikit-learn gives such a pixel the cluster that reaches
      it first instead, so the two differ only for border pixels within ``eps`` of cores of two clusters;
    - every other mask pixel is noise (0).

    Args:
        mask: ``(H, W)`` bool, the points.
        eps: neighbourhood radius in pixels (inclusive).
        min_samples: neighbours (itself included) that make a core pixel.

    Returns:
        ``(labels, core)``: ``(H, W)`` int32 cluster ids 1..n (0: noise or not a point), numbered in raster
        order of their first core pixel, and the ``(H, W)`` bool core mask.
    """
    ndimage = require("scipy.ndimage")
    signal = require("scipy.signal")
    csgraph = require("scipy.sparse.csgraph")
    sparse = require("scipy.sparse")

    points = np.asarray(mask, bool)
    height, width = points.shape
    labels = np.zeros((height, width), np.int32)
    if not points.any():
        return labels, np.zeros_like(points)
    offsets = disk_offsets(eps)
    r = int(math.floor(eps))
    kernel = np.zeros((2 * r + 1, 2 * r + 1))
    kernel[offsets[:, 0] + r, offsets[:, 1] + r] = 1.0
    counts = np.rint(signal.fftconvolve(points.astype(np.float64), kernel, mode="same"))
    core = points & (counts >= min_samples)
    del counts
    if not core.any():
        return labels, core

    # 1. components of adjacent cores (8-connected when the diagonal step sqrt(2) is within eps)
    if eps >= math.sqrt(2.0):
        component, n = ndimage.label(core, structure=np.ones((3, 3), bool))
    elif eps >= 1.0:
        component, n = ndimage.label(core)
    else:
        component = np.zeros((height, width), np.int32)
        n = int(np.count_nonzero(core))
        component[core] = np.arange(1, n + 1, dtype=np.int32)
    component = component.astype(np.int32, copy=False)

    # 2. join components with two cores within eps, looking only from boundary cores
    ring = np.pad(component, 1)
    boundary = core & ((ring[:-2, 1:-1] != component) | (ring[2:, 1:-1] != component)
                       | (ring[1:-1, :-2] != component) | (ring[1:-1, 2:] != component))
    del ring
    ys, xs = np.nonzero(boundary)
    source = component[ys, xs].astype(np.int64)
    half = offsets[(offsets[:, 0] > 0) | ((offsets[:, 0] == 0) & (offsets[:, 1] > 0))]
    found = []
    for dy, dx in half:
        ty, tx = ys + dy, xs + dx
        inside = (ty >= 0) & (ty < height) & (tx >= 0) & (tx < width)
        target = np.zeros(ys.size, np.int64)
        target[inside] = component[ty[inside], tx[inside]]
        joined = (target != 0) & (target != source)
        if joined.any():
            found.append(np.unique(source[joined] * (n + 1) + target[joined]))
    if found:
        codes = np.unique(np.concatenate(found))
        a, b = codes // (n + 1), codes % (n + 1)
        graph = sparse.coo_matrix((np.ones(codes.size), (a, b)), shape=(n + 1, n + 1))
        _, merged = csgraph.connected_components(graph, directed=False)
    else:
        merged = np.arange(n + 1)
    # renumber 1..m in raster order of the first core of each cluster
    first = np.flatnonzero(core.ravel())
    cluster_of_core = merged[component.ravel()[first]]
    _, first_seen = np.unique(cluster_of_core, return_index=True)
    rank = np.zeros(int(merged.max()) + 1, np.int32)
    rank[cluster_of_core[np.sort(first_seen)]] = np.arange(1, first_seen.size + 1, dtype=np.int32)
    labels.ravel()[first] = rank[cluster_of_core]

    # 3. border pixels: the cluster of the nearest core, when it lies within eps
    border = points & ~core
    if border.any():
        distance, (near_y, near_x) = ndimage.distance_transform_edt(~core, return_indices=True)
        border &= distance <= eps
        labels[border] = labels[near_y[border], near_x[border]]
    return labels, core


def dbscan_segments(kmeans_labels: np.ndarray, eps: float, min_samples: int,
                    feedback: Optional[Feedback] = None) -> np.ndarray:
    """DBSCAN within each k-means label, with segment ids unique over the frame.

    Each label is processed alone, inside its bounding box, so memory is bounded by one label's box.

    Args:
        kmeans_labels: ``(H, W)`` integer labels, negative = not clustered.
        eps: DBSCAN radius in pixels.
        min_samples: DBSCAN core threshold (itself included).
        feedback: progress (0..100 over the labels) and cancel, checked every label.

    Returns:
        ``(H, W)`` int32 segments, 0 = none (noise or not clustered), ids 1..N in order of label, then of
        first core pixel (use :func:`order_segments` for the final numbering).
    """
    feedback = feedback or NullFeedback()
    labels = np.asarray(kmeans_labels)
    segments = np.zeros(labels.shape, np.int32)
    present = [int(v) for v in np.unique(labels) if v >= 0]
    next_id = 0
    for value in track(present, feedback):
        mask = labels == value
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        found, _ = grid_dbscan(mask[box], eps, min_samples)
        del mask
        inside = found > 0
        segments[box][inside] = found[inside] + next_id
        next_id += int(found.max())
    return segments


def order_segments(segments: np.ndarray, population: np.ndarray) -> np.ndarray:
    """Renumber segments 1..N by decreasing population, ties broken by their first pixel in raster order.

    Args:
        segments: ``(H, W)`` int segment ids, 0 = none.
        population: ``(H, W)`` population (NaN counts as 0).

    Returns:
        ``(H, W)`` int32 renumbered segments.
    """
    flat = np.asarray(segments).ravel()
    chosen = np.flatnonzero(flat > 0)
    out = np.zeros(flat.shape, np.int32)
    if chosen.size == 0:
        return out.reshape(np.shape(segments))
    ids = flat[chosen]
    old, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    weights = np.nan_to_num(np.asarray(population, np.float64).ravel()[chosen])
    totals = np.bincount(inverse, weights=weights, minlength=old.size)
    order = np.lexsort((chosen[first], -totals))  # last key first: population descending, then position
    new = np.empty(old.size, np.int32)
    new[order] = np.arange(1, old.size + 1, dtype=np.int32)
    out[chosen] = new[inverse]
    return out.reshape(np.shape(segments))


# --------------------------------------------------------------------------------------------- k report

def k_report(codes: np.ndarray, k_min: int, k_max: int, seed: int = 0, sample: int = 10000,
             feedback: Optional[Feedback] = None) -> List[Dict[str, float]]:
    """k-means inertia and silhouette for every k in ``k_min..k_max`` (elbow and silhouette curves).

    k-means here trains on a subsample of at most 256 codes per cluster (then assigns every code), which is
    what makes a report over many k affordable on a whole frame.

    Args:
        codes: ``(n, D)`` standardised codes.
        k_min, k_max: the range of k (values above ``n - 1`` are skipped).
        seed: k-means seed and silhouette subset seed (the same subset for every k).
        sample: codes scored by the silhouette (a seeded subset, the same for every k).
        feedback: progress (0..100 over the values of k) and cancel.

    Returns:
        One dict per k: ``{"k", "inertia", "silhouette"}`` (silhouette NaN when the scored codes fall in
        fewer than 2 clusters, or each in its own).
    """
    feedback = feedback or NullFeedback()
    n = codes.shape[0]
    values = [k for k in range(int(k_min), int(k_max) + 1) if k <= n - 1]
    if len(values) < int(k_max) - int(k_min) + 1:
        feedback.warning(f"the k report stops at k = {n - 1}: only {n} pixels are clustered.")
    # one subset for every k, drawn here so silhouette() never copies all codes to float64
    subset = np.sort(np.random.default_rng(seed).choice(n, size=min(int(sample), n), replace=False))
    rows: List[Dict[str, float]] = []
    for k in track(values, feedback):
        result = kmeans(codes, k, seed=seed, max_points_per_centroid=_REPORT_POINTS_PER_CENTROID)
        if 2 <= np.unique(result.assignments[subset]).size < subset.size:  # where the silhouette is defined
            score = silhouette(codes[subset], result.assignments[subset])
        else:
            score = float("nan")
        rows.append({"k": k, "inertia": float(result.objective), "silhouette": float(score)})
    return rows


# --------------------------------------------------------------------------------------------- records

@dataclass
class Community:
    """One segment of one frame.

    Attributes:
        segment_id: 1..N, unique within the frame.
        kmeans_label: the k-means cluster its pixels belong to (0..K-1).
        population: summed population of its pixels.
        area_km2: pixel count times the pixel area.
        centroid_x, centroid_y: population-weighted centroid of its pixel centres, in map coordinates.
        pixels: pixel count.
        geometry: shapely Polygon or MultiPolygon of its pixels, in map coordinates (None when not traced).
    """

    segment_id: int
    kmeans_label: int
    population: float
    area_km2: float
    centroid_x: float
    centroid_y: float
    pixels: int
    geometry: Any = None


def community_records(segments: np.ndarray, kmeans_labels: np.ndarray, population: np.ndarray, transform: Affine,
                      pixel_area_m2: float, polygons: bool = True) -> List[Community]:
    """Summaries (and polygons) of segments 1..N.

    Polygons are traced with ``rasterio.features.shapes`` (4-connected, holes kept); a segment whose pixels
    form several pieces (DBSCAN joins pieces up to ``eps`` apart) becomes one MultiPolygon.

    Args:
        segments: ``(H, W)`` int32 segment ids 1..N, 0 = none.
        kmeans_labels: ``(H, W)`` k-means labels.
        population: ``(H, W)`` population (NaN counts as 0).
        transform: the frame's affine transform (pixel -> map).
        pixel_area_m2: area of one pixel in square metres.
        polygons: trace the polygons.

    Returns:
        One :class:`Community` per segment id, in id order.
    """
    flat = np.asarray(segments, np.int32).ravel()
    width = segments.shape[1]
    chosen = np.flatnonzero(flat > 0)
    if chosen.size == 0:
        return []
    ids = flat[chosen]
    n = int(ids.max())
    weights = np.nan_to_num(np.asarray(population, np.float64).ravel()[chosen])
    rows, cols = np.divmod(chosen, width)
    count = np.bincount(ids, minlength=n + 1)
    total = np.bincount(ids, weights=weights, minlength=n + 1)
    weighted = total > 0
    norm = np.where(weighted, total, count).astype(np.float64)
    norm[norm == 0] = 1.0
    source = np.where(weighted[ids], weights, 1.0)
    col_c = np.bincount(ids, weights=source * (cols + 0.5), minlength=n + 1) / norm
    row_c = np.bincount(ids, weights=source * (rows + 0.5), minlength=n + 1) / norm
    xs = transform.a * col_c + transform.b * row_c + transform.c
    ys = transform.d * col_c + transform.e * row_c + transform.f
    _, first = np.unique(ids, return_index=True)
    present = np.unique(ids)
    label_of = np.full(n + 1, -1, np.int64)
    label_of[present] = np.asarray(kmeans_labels).ravel()[chosen[first]]
    shapes_by_id: Dict[int, list] = {}
    if polygons:
        features = require("rasterio.features")
        shapely_geometry = require("shapely.geometry")
        for geojson, value in features.shapes(np.asarray(segments, np.int32), mask=np.asarray(segments) > 0,
                                              transform=transform, connectivity=4):
            shapes_by_id.setdefault(int(value), []).append(shapely_geometry.shape(geojson))
    records = []
    for sid in present:
        sid = int(sid)
        parts = shapes_by_id.get(sid)
        geometry = None
        if parts:
            geometry = parts[0] if len(parts) == 1 else require("shapely.geometry").MultiPolygon(parts)
        records.append(Community(segment_id=sid, kmeans_label=int(label_of[sid]), population=float(total[sid]),
                                 area_km2=float(count[sid]) * float(pixel_area_m2) / 1e6,
                                 centroid_x=float(xs[sid]), centroid_y=float(ys[sid]), pixels=int(count[sid]),
                                 geometry=geometry))
    return records


# --------------------------------------------------------------------------------------------- one frame

@dataclass
class FrameCommunities:
    """The communities of one frame.

    Attributes:
        segments: ``(H, W)`` int32 segment ids 1..N (0: nodata, unpopulated or DBSCAN noise).
        kmeans_labels: ``(H, W)`` int16 k-means labels 0..K-1 (-1: not clustered).
        records: one :class:`Community` per segment, in id order.
        k_report: rows of :func:`k_report` (empty unless asked for).
        ae_mse: held-out reconstruction MSE of the autoencoder (normalised units).
        ae_mse_std: standard deviation of the per-window MSE over the held-out windows.
        ae_baseline_mse: MSE of predicting the mean window (the autoencoder should be far below it).
        scaler_mean, scaler_scale: ``(D,)`` StandardScaler statistics of this frame's codes.
        kmeans_objective: k-means inertia on the standardised codes.
        channel_low, channel_high: clip bounds of population, u, v (raw units).
        clustered_pixels: number of pixels encoded and clustered.
    """

    segments: np.ndarray
    kmeans_labels: np.ndarray
    records: List[Community]
    k_report: List[Dict[str, float]]
    ae_mse: float
    ae_mse_std: float
    ae_baseline_mse: float
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    kmeans_objective: float
    channel_low: np.ndarray
    channel_high: np.ndarray
    clustered_pixels: int


def _check_frame(population: Any, u: Any, v: Any, config: CommunityConfig, name: str
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frame's arrays as float32, or InputError with what to do."""
    pop = np.asarray(population, dtype=np.float32)
    if pop.ndim != 2:
        raise InputError(f"frame '{name}' must be a single-band raster (a 2-D array), got shape {pop.shape}.",
                         "FRAMES")
    flows = [np.asarray(a, dtype=np.float32) for a in (u, v)]
    if any(f.shape != pop.shape for f in flows):
        raise InputError(f"the flow of frame '{name}' ({flows[0].shape}, {flows[1].shape}) is not on the frame's "
                         f"grid {pop.shape}; compute the flow from the same frames.", "FRAMES")
    height, width = pop.shape
    if height < config.window or width < config.window:
        raise InputError(f"frame '{name}' is {width} x {height} pixels, smaller than the {config.window}-pixel "
                         "window; lower WINDOW or use larger frames.", "WINDOW")
    pop = np.where(np.isinf(pop), np.nan, pop)
    valid = np.isfinite(pop)
    if not valid.any():
        raise InputError(f"frame '{name}' holds only nodata; check its nodata value or remove it from the series.",
                         "FRAMES")
    lowest = float(pop[valid].min())
    if lowest < 0:
        raise InputError(f"frame '{name}' holds negative population counts (down to {lowest:g}); if those pixels "
                         "mean 'no data', set that value as the raster's nodata value.", "FRAMES")
    return pop, flows[0], flows[1]


def frame_communities(population: np.ndarray, u: np.ndarray, v: np.ndarray, transform: Affine,
                      pixel_area_m2: float, config: Optional[CommunityConfig] = None,
                      feedback: Optional[Feedback] = None, report_k: bool = False, polygons: bool = True,
                      name: str = "frame") -> FrameCommunities:
    """Find the communities of one population frame.

    Deterministic on the CPU for a given ``config.seed``.

    Args:
        population: ``(H, W)`` population counts, NaN (or inf) = nodata.
        u, v: ``(H, W)`` flow from this frame to the next (the last frame: from the previous one), in
            pixels/frame, +column and +row; NaN counts as no motion.
        transform: the frame's affine transform (centroids and polygons are in its map coordinates).
        pixel_area_m2: area of one pixel in m² (for ``area_km2``).
        config: the settings (None: defaults).
        feedback: progress, messages and cancel (checked every epoch, strip and label).
        report_k: also compute the inertia / silhouette report for ``k_min..k_max``.
        polygons: trace the community polygons.
        name: the frame's name in messages.

    Returns:
        The :class:`FrameCommunities`.

    Raises:
        InputError: on a bad setting, a frame smaller than the window, an all-nodata frame, negative
            populations, or fewer populated pixels than K.
        CanceledError: when the user cancels.
    """
    from ...core.device import resolve_device  # lazy: imports torch

    config = config or CommunityConfig()
    config.validate()
    feedback = feedback or NullFeedback()
    if not (math.isfinite(pixel_area_m2) and pixel_area_m2 > 0):
        raise InputError(f"the pixel area must be a positive number of m², got {pixel_area_m2}.", "FRAMES")
    pop, u_arr, v_arr = _check_frame(population, u, v, config, name)
    stack = normalise_channels(pop, u_arr, v_arr, config.clip_quantile)
    clustered = stack.valid & (np.nan_to_num(pop, nan=-1.0) > config.pop_min)
    count = int(np.count_nonzero(clustered))
    if count == 0:
        raise InputError(f"frame '{name}' has no pixel with population above POP_MIN = {config.pop_min:g}; lower "
                         "POP_MIN or check the frame.", "FRAMES")
    if count < config.k:
        raise InputError(f"frame '{name}' has only {count} pixels with population above POP_MIN, fewer than "
                         f"K = {config.k} clusters; lower K (or POP_MIN).", "K")
    device = resolve_device(config.device)
    report_span = 10.0 if report_k else 0.0
    trained = train_window_ae(stack.channels, clustered, config, device, SubFeedback(feedback, 0.0, 60.0))
    feedback.info(f"{name}: autoencoder reconstruction MSE {trained.mse:.2e} ± {trained.mse_std:.1e} on "
                  f"{trained.holdout} held-out windows (predicting the mean window: {trained.baseline_mse:.2e})")
    codes = encode_pixels(trained.model, stack.channels, clustered, device, config.tile_pixels,
                          SubFeedback(feedback, 60.0, 75.0))
    preprocessing = require("sklearn.preprocessing")
    scaler = preprocessing.StandardScaler().fit(codes)
    scaled = np.ascontiguousarray(scaler.transform(codes), dtype=np.float32)
    del codes
    check_canceled(feedback)
    result = kmeans(scaled, config.k, seed=config.seed, feedback=SubFeedback(feedback, 75.0, 80.0))
    labels = np.full(pop.shape, -1, np.int16)
    labels[clustered] = result.assignments.astype(np.int16)
    report: List[Dict[str, float]] = []
    if report_k:
        report = k_report(scaled, config.k_min, config.k_max, config.seed, config.silhouette_sample,
                          SubFeedback(feedback, 80.0, 80.0 + report_span))
    del scaled
    segments = dbscan_segments(labels, config.eps, config.min_samples,
                               SubFeedback(feedback, 80.0 + report_span, 97.0))
    segments = order_segments(segments, pop)
    check_canceled(feedback)
    records = community_records(segments, labels, pop, transform, pixel_area_m2, polygons)
    feedback.set_progress(100.0)
    in_segments = int(np.count_nonzero(segments))
    feedback.info(f"{name}: {len(records)} communities from {count} populated pixels in {config.k} k-means "
                  f"clusters ({count - in_segments} pixels left as DBSCAN noise)")
    return FrameCommunities(segments=segments, kmeans_labels=labels, records=records, k_report=report,
                            ae_mse=trained.mse, ae_mse_std=trained.mse_std, ae_baseline_mse=trained.baseline_mse,
                            scaler_mean=np.asarray(scaler.mean_, np.float32),
                            scaler_scale=np.asarray(scaler.scale_, np.float32),
                            kmeans_objective=float(result.objective), channel_low=stack.low,
                            channel_high=stack.high, clustered_pixels=count)
