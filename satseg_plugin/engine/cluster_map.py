"""Apply a ClusterNet model: tiled per-pixel features and nearest-centroid cluster ids, streamed to a GeoTIFF.

Tiles lie on one grid anchored at the raster's origin (whatever EXTENT is asked for), overlap, and every
pixel takes its features from the tile whose centre is nearest along each axis (the overlap-tile strategy of
the U-Net paper). So a pixel's cluster is the same in a whole-raster run and in an EXTENT run, and no pixel
is ever taken from the border band of a tile, where zero padding changes the features.

Why not blend features with a Hann window as segmentation blends probabilities? Blending D-channel
features needs ``D x (tile + 256) x width`` float accumulators (2 GB for D = 32 on a 20000 px wide raster),
while the cluster id of a pixel needs only its own tile's features: memory here is one tile row of uint16
ids, independent of D and of the raster size.
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

from .deps import require
from .errors import InputError
from .grid import axis_offsets
from .progress import Feedback, NullFeedback, check_canceled
from .raster import (bounds_region, check_geotiff_name, check_georeferencing, check_model_fits, geotiff_profile,
                     nodata_pixels, open_raster, overview_factors, raster_env)
from .staging import StagedFile

__all__ = ["ClusterMapConfig", "ClusterMapResult", "ClusterModel", "core_spans", "core_blocks", "cluster_raster",
           "open_cluster_model", "CLUSTER_NODATA"]

#: Nodata of cluster rasters; clusters are numbered 1..K.
CLUSTER_NODATA = 0


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
        from ..models.checkpoint import load_checkpoint  # noqa: PLC0415
        from ..models.clusternet import clusternet_from_checkpoint  # noqa: PLC0415
        from .clusternet import FeatureTransform  # noqa: PLC0415

        ckpt = load_checkpoint(path, kind="clusternet")
        if "centroids" not in ckpt.extras:
            from .errors import CheckpointError  # noqa: PLC0415

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
        from ..models.registry import input_multiple  # noqa: PLC0415

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
        from .kmeans import nearest_centroid  # noqa: PLC0415

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
    import colorsys  # noqa: PLC0415

    colours = []
    for i in range(k):
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.65 + 0.35 * (i % 2), 0.95 - 0.25 * ((i // 2) % 2))
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


@dataclass
class _Grid:
    """The tiles covering a pixel region on the raster-anchored grid."""

    tile: int
    overlap: int
    region: Tuple[int, int, int, int]
    rows: List[Tuple[int, int, int]]
    cols: List[Tuple[int, int, int]]


def _grid(src: rasterio.DatasetReader, cm: ClusterModel, config: ClusterMapConfig) -> _Grid:
    tile = int(math.ceil(max(config.tile_size, cm.multiple) / cm.multiple) * cm.multiple)
    overlap = tile // 4 if config.overlap is None else int(config.overlap)
    if not 0 <= overlap < tile:
        raise InputError(f"must be at least 0 and less than the tile size ({tile}), got {overlap}.", "OVERLAP")
    region = bounds_region(src, config.bounds)
    x0, y0, width, height = region
    # the grid is the whole raster's, so an extent run gives the same ids as a whole-raster run
    cols = [c for c in core_spans(src.width, tile, overlap) if c[2] > x0 and c[1] < x0 + width]
    rows = [r for r in core_spans(src.height, tile, overlap) if r[2] > y0 and r[1] < y0 + height]
    return _Grid(tile, overlap, region, rows, cols)


def core_blocks(src: rasterio.DatasetReader, cm: ClusterModel, grid: _Grid, config: ClusterMapConfig,
                feedback: Feedback):
    """Per batch of tiles ``(r0, r1, cores, row_done)``, tile rows top to bottom, rows clipped to the region.

    ``cores`` lists ``(c0, c1, features (D, r1 - r0, c1 - c0), empty (r1 - r0, c1 - c0))`` per tile of the
    batch: the tile's core clipped to the region, in raster pixel coordinates. ``row_done`` is True on the
    last batch of a tile row. Consumers must be done with a batch's features before asking for the next:
    only one batch of features is alive at a time, so memory does not grow with the raster's width.
    """
    torch = cm.torch
    from .device import shrink_batch_after_oom  # noqa: PLC0415

    tile = grid.tile
    x0, y0, width, height = grid.region
    bands = list(cm.metadata.bands)
    batch_size = max(1, config.batch_size)
    for ty, ry0, ry1 in grid.rows:
        check_canceled(feedback)
        r0, r1 = max(ry0, y0), min(ry1, y0 + height)
        start = 0
        while start < len(grid.cols):
            check_canceled(feedback)
            chunk = grid.cols[start:start + batch_size]
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
                batch_size = shrink_batch_after_oom(batch_size, feedback, "tile", "Lower TILE_SIZE or use DEVICE=cpu.")
                continue
            del raws
            cores = []
            for (tx, cx0, cx1), f, empty in zip(chunk, feats, empties):
                c0, c1 = max(cx0, x0), min(cx1, x0 + width)
                rows, cols = slice(r0 - ty, r1 - ty), slice(c0 - tx, c1 - tx)
                cores.append((c0, c1, f[:, rows, cols], empty[rows, cols]))
            start += len(chunk)
            yield r0, r1, cores, start >= len(grid.cols)
            del feats, cores


def open_cluster_model(model_path: str, device: str, feedback: Feedback) -> ClusterModel:
    """Resolve the device and load a ClusterNet model file on it."""
    from .device import describe_device, resolve_device  # noqa: PLC0415

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
                strip, done = None, 0
                for r0, r1, cores, row_done in core_blocks(src, cm, grid, config, feedback):
                    if strip is None:
                        strip = np.full((r1 - r0, width), CLUSTER_NODATA, np.uint16)
                    for c0, c1, feats, empty in cores:
                        keep = ~empty
                        if keep.any():
                            rows = np.ascontiguousarray(feats[:, keep].T)
                            ids = cm.assign(rows, splits)
                            strip[:, c0 - x0:c1 - x0][keep] = ids
                    if not row_done:
                        continue
                    done += 1
                    if config.mask is not None:
                        from rasterio.features import geometry_mask  # noqa: PLC0415

                        outside = geometry_mask([config.mask], out_shape=strip.shape,
                                                transform=src.window_transform(Window(x0, r0, width, r1 - r0)))
                        strip[outside] = CLUSTER_NODATA
                    if previous is not None:
                        before = previous.read(1, window=Window(0, r0 - y0, width, r1 - r0))
                        strip[before == (previous.nodata if previous.nodata is not None else 0)] = CLUSTER_NODATA
                    counts += np.bincount(strip.ravel(), minlength=top + 1)[:top + 1]
                    dst.write(strip[None], window=Window(0, r0 - y0, width, r1 - r0))
                    strip = None
                    feedback.set_progress(95.0 * done / len(grid.rows))
                check_canceled(feedback)
                factors = overview_factors(width, height)
                if factors:
                    from rasterio.enums import Resampling  # noqa: PLC0415

                    dst.build_overviews(factors, Resampling.mode)
            staged.commit()
    feedback.set_progress(100.0)
    used = int((counts[1:] > 0).sum())
    feedback.info(f"{used} of {top} clusters occur; {int(counts[0])} pixels are nodata.")
    return ClusterMapResult(os.path.abspath(output_path), grid.region, len(grid.rows) * len(grid.cols), top,
                            [int(c) for c in counts[1:]])
