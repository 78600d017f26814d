"""Apply a ClusterNet model: tiled per-pixel features and nearest-centroid cluster ids, streamed to a GeoTIFF.

Tiles lie on one grid anchored at the raster's origin (whatever EXTENT is asked for) and overlap. Each tile
owns its core (the pixels nearer its centre than any other tile's, along each axis), and across a ramp of
half the overlap centred on each core border the features go linearly from one tile's to the other's. A deep
network's features depend on the tile's context, so taking each pixel from one tile only leaves seams of
changed cluster ids along core borders; the ramp removes them while no pixel takes weight from the outer
quarter of an overlap, where zero padding changes the features. A pixel's features depend only on the grid,
so its cluster is the same in a whole-raster run and in an EXTENT run.

Why a ramp at the core borders instead of the Hann window that segmentation blends probabilities with? A
Hann window needs ``D x (tile + 256) x band`` float accumulators (D = 32 to 64 feature channels); the ramp
needs only the ``2 x half`` rows where tile rows meet, so the carried rows of one column band cost
``D x overlap / 2 x band`` floats and the raster's size never matters.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.windows import Window

from ....core.deps import require
from ....core.errors import InputError
from ....core.grid import axis_offsets, column_bands
from ....core.progress import Feedback, NullFeedback, check_canceled
from ....core.raster import (
    bounds_region,
    check_georeferencing,
    check_geotiff_name,
    check_model_fits,
    geotiff_profile,
    nodata_pixels,
    open_raster,
    overview_factors,
    raster_env,
)
from ....core.staging import StagedFile

__all__ = ["ClusterMapConfig", "ClusterMapResult", "ClusterModel", "FeatureBlock", "core_spans", "ramp_half",
           "ramp_weights", "support", "feature_blocks", "cluster_raster", "open_cluster_model", "CLUSTER_NODATA",
           "CLUSTER_BAND_COLUMNS"]

#: Nodata of cluster rasters; clusters are numbered 1..K.
CLUSTER_NODATA = 0
#: Widest column band swept at once: the carried ramp rows cost ``D x 2 half x band`` floats (about 70 MiB
#: for 35 channels and the default 512 px tiles). A multiple of the output block size.
CLUSTER_BAND_COLUMNS = 8192
_ROW_BLOCK = 256  # output block edge: rows are written in whole blocks


@dataclass(frozen=True)
class ClusterMapConfig:
    """Cluster-raster settings.

    Attributes:
        tile_size: tile side in pixels (rounded up to what the network needs).
        overlap: overlap of neighbouring tiles (None: a quarter of the tile); each side keeps half of it.
        batch_size: tiles per forward pass (halved on CUDA out-of-memory).
        bounds: ``(xmin, ymin, xmax, ymax)`` in the raster's CRS: only this area.
        mask: shapely geometry in the raster's CRS: pixels outside become nodata.
        amp: mixed precision on CUDA.
    """

    tile_size: int = 512
    overlap: Optional[int] = None
    batch_size: int = 4
    bounds: Optional[Tuple[float, float, float, float]] = None
    mask: object = None
    amp: bool = True


@dataclass
class ClusterMapResult:
    """Written output and a summary."""

    path: str
    window: Tuple[int, int, int, int]
    tiles: int
    num_clusters: int
    pixel_counts: List[int]


def core_spans(length: int, tile: int, overlap: int) -> List[Tuple[int, int, int]]:
    """Tiles along one axis of ``length`` pixels: ``(origin, core_start, core_end)`` per tile.

    Cores partition ``[0, length)``: the border between two neighbours is the midpoint of their overlap.
    """
    if length <= tile:
        return [(0, 0, length)]
    origins, _ = axis_offsets(0, length, tile, tile - overlap, "shift")
    bounds = [0] + [(a + b + tile) // 2 for a, b in zip(origins[:-1], origins[1:])] + [length]
    return [(o, bounds[i], bounds[i + 1]) for i, o in enumerate(origins)]


class ClusterModel:
    """A loaded ClusterNet model file: network, normalisation, feature transform and centroids."""

    def __init__(self, path: str, device) -> None:
        torch = require("torch")
        from ....models.checkpoint import load_checkpoint
        from ....models.nets.clusternet import clusternet_from_checkpoint
        from .train import FeatureTransform

        ckpt = load_checkpoint(path, kind="clusternet")
        if "centroids" not in ckpt.extras:
            from ....core.errors import CheckpointError

            raise CheckpointError(f"'{os.path.basename(path)}' holds no cluster centroids; train it again with "
                                  "SatSeg.", path)
        self.torch, self.device, self.path = torch, device, path
        self.metadata = ckpt.metadata
        self.model = clusternet_from_checkpoint(ckpt).to(device).eval()
        extras = {k: v.numpy() for k, v in ckpt.extras.items()}
        self.centroids = np.ascontiguousarray(extras["centroids"], np.float32)
        self.transform = FeatureTransform.from_tensors(extras, bool(self.metadata.extra.get("normalize", True)))
        self.mean = np.asarray(self.metadata.mean, np.float32)
        self.std = np.asarray(self.metadata.std, np.float32)
        from ....models.registry import input_multiple

        self.multiple = int(self.metadata.extra.get("input_multiple") or
                            input_multiple(self.metadata.architecture, self.metadata.encoder))

    @property
    def num_clusters(self) -> int:
        """K."""
        return int(self.centroids.shape[0])

    def features(self, raw: np.ndarray, amp: bool = False) -> np.ndarray:
        """Raw tiles ``(N, C, H, W)`` (band units) -> features ``(N, D, H, W)`` float32."""
        torch = self.torch
        x = (raw - self.mean[None, :, None, None]) / self.std[None, :, None, None]
        x = torch.from_numpy(np.nan_to_num(x).astype(np.float32)).to(self.device)
        with torch.no_grad(), torch.autocast(device_type=self.device.type, enabled=amp and self.device.type == "cuda"):
            return self.model.features(x).float().cpu().numpy()

    def assign(self, features: np.ndarray,
               splits: Optional[Dict[int, Tuple[np.ndarray, Sequence[int]]]] = None) -> np.ndarray:
        """``(n, D)`` raw features -> cluster ids 1..K (int64); see :func:`cluster_raster` for ``splits``."""
        from ....core.kmeans import nearest_centroid

        space = self.transform.apply(features)
        labels, _ = nearest_centroid(space, self.centroids)
        labels += 1
        for cluster, (centroids, new_ids) in (splits or {}).items():
            hit = labels == cluster
            if hit.any():
                sub, _ = nearest_centroid(np.ascontiguousarray(space[hit]), np.asarray(centroids, np.float32))
                labels[hit] = np.asarray(new_ids, np.int64)[sub]
        return labels


def _palette(k: int) -> List[Tuple[int, int, int]]:
    """K distinct colours (golden-ratio hue steps), stored as the GeoTIFF's colour table."""
    import colorsys

    colours = []
    for i in range(k):
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.65 + 0.35 * (i % 2), 0.95 - 0.25 * ((i // 2) % 2))
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


@dataclass
class _Grid:
    """The tiles needed for a pixel region on the raster-anchored grid.

    ``rows`` and ``cols`` hold ``(origin, core_start, core_end)`` of every tile whose support (its core
    widened by ``half`` on each inner side) meets the region; ``height``/``width`` are the raster's.
    """

    tile: int
    overlap: int
    half: int
    region: Tuple[int, int, int, int]
    rows: List[Tuple[int, int, int]]
    cols: List[Tuple[int, int, int]]
    height: int
    width: int


def ramp_half(overlap: int) -> int:
    """Half width of the blend ramp centred on each core border: a quarter of the overlap.

    Ramp pixels are at least ``overlap / 4`` from either tile's edge, where zero padding has faded.
    """
    return overlap // 4


def support(span: Tuple[int, int, int], length: int, half: int) -> Tuple[int, int]:
    """Pixels ``[start, stop)`` where a tile's features have a weight: its core plus ``half`` past inner borders."""
    _, start, stop = span
    return (start - half if start > 0 else 0), (stop + half if stop < length else length)


def ramp_weights(half: int) -> np.ndarray:
    """Weight of the later tile across a ramp of ``2 * half`` pixels (the earlier one gets ``1 - w``)."""
    return (np.arange(2 * half, dtype=np.float32) + 0.5) / max(2 * half, 1)


def _meeting(spans: List[Tuple[int, int, int]], length: int, half: int, lo: int, hi: int
             ) -> List[Tuple[int, int, int]]:
    """The tiles of ``spans`` whose support meets pixels ``[lo, hi)``."""
    return [c for c in spans if support(c, length, half)[1] > lo and support(c, length, half)[0] < hi]


def _grid(src: rasterio.DatasetReader, cm: ClusterModel, config: ClusterMapConfig) -> _Grid:
    tile = int(math.ceil(max(config.tile_size, cm.multiple) / cm.multiple) * cm.multiple)
    overlap = tile // 4 if config.overlap is None else int(config.overlap)
    if not 0 <= overlap < tile:
        raise InputError(f"must be at least 0 and less than the tile size ({tile}), got {overlap}.", "OVERLAP")
    half = ramp_half(overlap)
    region = bounds_region(src, config.bounds)
    x0, y0, width, height = region

    # the grid is the whole raster's, so an extent run gives the same ids as a whole-raster run
    rows = _meeting(core_spans(src.height, tile, overlap), src.height, half, y0, y0 + height)
    cols = _meeting(core_spans(src.width, tile, overlap), src.width, half, x0, x0 + width)
    return _Grid(tile, overlap, half, region, rows, cols, src.height, src.width)


@dataclass
class FeatureBlock:
    """Finished features of a block of raster pixels ``[r0, r1) x [c0, c1)`` (raster pixel coordinates).

    Blocks come column band by column band (``band``: its columns), each band top to bottom; when a band's
    block starts at row ``r0``, every row of that band above ``r0`` has been given.
    """

    r0: int
    r1: int
    c0: int
    c1: int
    features: np.ndarray  # (D, r1 - r0, c1 - c0) float32
    empty: np.ndarray  # (r1 - r0, c1 - c0) bool: nodata pixels
    band: Tuple[int, int]


def _tile_rows(src: rasterio.DatasetReader, cm: ClusterModel, grid: _Grid, cols: List[Tuple[int, int, int]],
               ty: int, batch_size: List[int], config: ClusterMapConfig, feedback: Feedback):
    """Features of the tiles ``cols`` of the tile row at ``ty``, one tile at a time, left to right.

    Yields ``(span, features (D, tile, tile), empty (tile, tile))``; ``empty`` flags nodata pixels (and
    pixels past the raster's edge), which are the same in every tile that holds them.
    """
    torch = cm.torch
    from ....core.device import shrink_batch_after_oom

    tile, bands = grid.tile, list(cm.metadata.bands)
    start = 0
    while start < len(cols):
        check_canceled(feedback)
        chunk = cols[start:start + batch_size[0]]
        raws, empties = [], []
        for tx, _, _ in chunk:
            w, h = min(tile, src.width - tx), min(tile, src.height - ty)
            data = src.read(bands, window=Window(tx, ty, w, h)).astype(np.float32)
            raw = np.zeros((len(bands), tile, tile), np.float32)
            raw[:, :h, :w] = data
            empty = np.ones((tile, tile), bool)
            empty[:h, :w] = nodata_pixels(data, src.nodata) | ~np.all(np.isfinite(data), axis=0)
            raw[:, empty] = cm.mean[:, None]  # empty pixels are fed as the band means
            raws.append(raw)
            empties.append(empty)
        try:
            feats = cm.features(np.stack(raws), config.amp)
        except torch.cuda.OutOfMemoryError:
            batch_size[0] = shrink_batch_after_oom(batch_size[0], feedback, "tile",
                                                   "Lower TILE_SIZE or use DEVICE=cpu.")
            continue
        del raws
        for span, f, empty in zip(chunk, feats, empties):
            yield span, f, empty
        start += len(chunk)
        del feats


def feature_blocks(src: rasterio.DatasetReader, cm: ClusterModel, grid: _Grid, config: ClusterMapConfig,
                   feedback: Feedback, band_columns: Optional[int] = None):
    """Blended per-pixel features of the grid's region, as :class:`FeatureBlock` s.

    Each tile owns its core; across a ramp of ``2 * grid.half`` pixels centred on each core border the
    features go linearly from one tile's to the other's (separably in x and y, so four tiles meet at a
    corner), which keeps cluster ids free of tile seams. A pixel's features depend only on the
    raster-anchored grid, never on the region or on the column bands.

    The region is swept in column bands of at most ``band_columns`` pixels, each top to bottom. Memory
    is one batch of tile features, the ramp columns of the last tile and the ramp rows carried from one
    tile row to the next (``D x 2 half x band`` floats), never the raster's size. A tile column on a band border is
    computed for both bands (about ``tile / band_columns`` extra work).
    """
    band_columns = band_columns or CLUSTER_BAND_COLUMNS
    x0, y0, width, height = grid.region
    h, ramp = grid.half, ramp_weights(grid.half)
    batch_size = [max(1, config.batch_size)]
    bands = column_bands(x0, width, band_columns)
    for band_index, (bc0, bc1) in enumerate(bands):
        # tiles whose support meets the band; the first one's left ramp (unblended) lies outside the band
        cols = _meeting(grid.cols, grid.width, h, bc0, bc1)
        # The ramp rows of the previous tile row (blended in x), one buffer for the band: a tile's columns
        # are read from it and then overwritten with this row's ramp rows (tiles of a row never share columns).
        carry = None  # (D, 2h, band) float32
        carry_row = None  # raster row of carry[:, 0] for the tile row being processed
        for row_index, (ty, ry0, ry1) in enumerate(grid.rows):
            check_canceled(feedback)
            ys0, ys1 = support((ty, ry0, ry1), grid.height, h)
            left = None  # (first column, (D, rows, 2h)): the previous tile's ramp columns
            for (tx, cx0, cx1), f, empty in _tile_rows(src, cm, grid, cols, ty, batch_size, config, feedback):
                xs0, xs1 = support((tx, cx0, cx1), grid.width, h)
                piece = f[:, ys0 - ty:ys1 - ty, xs0 - tx:xs1 - tx]
                if left is not None and left[0] == xs0:
                    piece[:, :, :2 * h] = left[1] * (1 - ramp) + piece[:, :, :2 * h] * ramp
                if xs1 < grid.width:  # the last 2h columns wait for the next tile
                    xs1 -= 2 * h
                    left = (xs1, piece[:, :, xs1 - xs0:].copy())
                a, b = max(xs0, bc0), min(xs1, bc1)
                if b <= a:
                    continue
                piece = piece[:, :, a - xs0:b - xs0]
                if carry_row == ys0:
                    top = carry[:, :, a - bc0:b - bc0]
                    piece[:, :2 * h] = top * (1 - ramp[:, None]) + piece[:, :2 * h] * ramp[:, None]
                r1 = ys1
                if ys1 < grid.height:  # the last 2h rows wait for the next tile row
                    r1 = ys1 - 2 * h
                    if carry is None:
                        carry = np.empty((piece.shape[0], 2 * h, bc1 - bc0), np.float32)
                    carry[:, :, a - bc0:b - bc0] = piece[:, r1 - ys0:]
                r0, r1 = max(ys0, y0), min(r1, y0 + height)
                if r1 > r0:
                    yield FeatureBlock(r0, r1, a, b, piece[:, r0 - ys0:r1 - ys0], empty[r0 - ty:r1 - ty, a - tx:b - tx],
                                       (bc0, bc1))
            carry_row = ys1 - 2 * h if ys1 < grid.height else None
            feedback.set_progress(95.0 * (band_index * len(grid.rows) + row_index + 1) / (len(bands) * len(grid.rows)))


class _IdBand:
    """Cluster ids of one column band, written in whole output blocks as rows are finished."""

    def __init__(self, band: Tuple[int, int], grid: _Grid, dst, transform_of, mask, previous,
                 counts: np.ndarray) -> None:
        self.c0, self.c1 = band
        self.x0, self.y0, _, self.height = grid.region
        self.buf = np.full((grid.tile + _ROW_BLOCK, self.c1 - self.c0), CLUSTER_NODATA, np.uint16)
        self.base = self.y0
        self.dst, self.transform_of, self.mask, self.previous, self.counts = dst, transform_of, mask, previous, counts

    def put(self, r0: int, c0: int, keep: np.ndarray, ids: np.ndarray) -> None:
        """Ids of the ``keep`` pixels of a block whose top-left raster pixel is ``(c0, r0)``."""
        h, w = keep.shape
        self.buf[r0 - self.base:r0 - self.base + h, c0 - self.c0:c0 - self.c0 + w][keep] = ids

    def flush(self, upto: int = 0, final: bool = False) -> None:
        """Write finished rows ``[base, upto)`` in whole blocks (all finished rows when ``final``)."""
        rows = (self.y0 + self.height if final else upto) - self.base
        if not final:
            rows = (rows // _ROW_BLOCK) * _ROW_BLOCK
        if rows <= 0:
            return
        strip = self.buf[:rows]
        out = Window(self.c0 - self.x0, self.base - self.y0, self.c1 - self.c0, rows)
        if self.mask is not None:
            from rasterio.features import geometry_mask

            strip[geometry_mask([self.mask], out_shape=strip.shape, transform=self.transform_of(
                Window(self.c0, self.base, self.c1 - self.c0, rows)))] = CLUSTER_NODATA
        if self.previous is not None:
            nodata = self.previous.nodata if self.previous.nodata is not None else 0
            strip[self.previous.read(1, window=out) == nodata] = CLUSTER_NODATA
        self.counts += np.bincount(strip.ravel(), minlength=len(self.counts))[:len(self.counts)]
        self.dst.write(strip[None], window=out)
        keep = len(self.buf) - rows
        self.buf[:keep] = self.buf[rows:]
        self.buf[keep:] = CLUSTER_NODATA
        self.base += rows



def open_cluster_model(model_path: str, device: str, feedback: Feedback) -> ClusterModel:
    """Resolve the device and load a ClusterNet model file on it."""
    from ....core.device import describe_device, resolve_device

    torch_device = resolve_device(device)
    feedback.info(f"Device: {describe_device(torch_device)}")
    return ClusterModel(model_path, torch_device)


def cluster_raster(source: str, model_path: str, output_path: str, config: ClusterMapConfig = ClusterMapConfig(),
                   device: str = "auto", feedback: Optional[Feedback] = None,
                   splits: Optional[Dict[int, Tuple[np.ndarray, Sequence[int]]]] = None,
                   keep_nodata_of: Optional[str] = None) -> ClusterMapResult:
    """Write the cluster id (1..K, nodata 0) of every pixel as a uint16 GeoTIFF on the input's grid.

    Args:
        source: raster with the bands the model was trained on.
        model_path: a SatSeg ClusterNet model file.
        output_path: GeoTIFF to write (``.tif``); staged and moved into place at the end.
        config: tiling and extent settings.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        feedback: progress per tile row, cancel, log.
        splits: ``{cluster id: (sub-centroids (m, d) in k-means space, their new ids)}``: pixels of that
            cluster are reassigned to the nearest sub-centroid (how ``clusters_to_classes`` splits a cluster
            two classes share).
        keep_nodata_of: a raster on the output's grid (an earlier cluster raster): its nodata pixels stay
            nodata here (so a re-clustering keeps an earlier run's MASK).

    Returns:
        The output path and per-cluster pixel counts (index i = cluster i + 1, new ids of splits included).
    """
    feedback = feedback or NullFeedback()
    check_geotiff_name(output_path, "OUTPUT")
    cm = open_cluster_model(model_path, device, feedback)
    k = cm.num_clusters
    top = max([k] + [max(ids) for _, ids in (splits or {}).values()])
    with raster_env(), open_raster(source) as src:
        check_georeferencing(src, feedback)
        check_model_fits(src, cm.metadata.bands, cm.metadata.pixel_size, feedback)
        grid = _grid(src, cm, config)
        x0, y0, width, height = grid.region
        feedback.info(f"Clustering {len(grid.cols) * len(grid.rows)} tiles of {grid.tile} px (overlap "
                      f"{grid.overlap} px) over {width} x {height} px into {k} clusters.")
        profile = geotiff_profile(width, height, 1, "uint16", src.crs, src.window_transform(
            Window(x0, y0, width, height)), CLUSTER_NODATA, level=1)
        profile.update(blockxsize=_ROW_BLOCK, blockysize=_ROW_BLOCK)
        counts = np.zeros(top + 1, np.int64)
        staged = StagedFile(output_path, parameter="OUTPUT", suffix=".tif")
        previous = open_raster(keep_nodata_of, "INPUT") if keep_nodata_of else None
        if previous is not None and (previous.width, previous.height) != (width, height):
            previous.close()
            raise InputError("the earlier cluster raster does not match the region being clustered.", "INPUT")
        with staged as tmp, (previous or contextlib.nullcontext()):
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.set_band_description(1, "cluster")
                # how the ids were made, so a later split recomputes features with the same tiles
                dst.update_tags(satseg_tile=grid.tile, satseg_overlap=grid.overlap, satseg_model=os.path.basename(
                    model_path))
                dst.write_colormap(1, {0: (0, 0, 0, 0), **{i + 1: (*c, 255) for i, c in enumerate(_palette(top))}})
                ids = None
                for block in feature_blocks(src, cm, grid, config, feedback):
                    if ids is None or (ids.c0, ids.c1) != block.band:
                        if ids is not None:
                            ids.flush(final=True)
                        ids = _IdBand(block.band, grid, dst, src.window_transform, config.mask, previous, counts)
                    ids.flush(block.r0)
                    keep = ~block.empty
                    if keep.any():
                        ids.put(block.r0, block.c0, keep, cm.assign(np.ascontiguousarray(block.features[:, keep].T),
                                                                     splits))
                if ids is not None:
                    ids.flush(final=True)
                check_canceled(feedback)
                factors = overview_factors(width, height)
                if factors:
                    from rasterio.enums import Resampling

                    dst.build_overviews(factors, Resampling.mode)
            staged.commit()
    feedback.set_progress(100.0)
    used = int((counts[1:] > 0).sum())
    feedback.info(f"{used} of {top} clusters occur; {int(counts[0])} pixels are nodata.")
    return ClusterMapResult(os.path.abspath(output_path), grid.region, len(grid.rows) * len(grid.cols), top,
                            [int(c) for c in counts[1:]])
