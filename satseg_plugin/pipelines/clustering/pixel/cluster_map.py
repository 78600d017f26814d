"""Apply a ClusterNet model: tiled per-pixel features and nearest-centroid cluster ids, streamed to a GeoTIFF.

The sweep (tile grid, reading with the nodata rule, batching, blending, column bands, rows written in whole
blocks) is :mod:`....core.tiling`'s; this module holds what is the cluster map's own: the ClusterNet that
turns a batch of tiles into per-pixel features, the assignment of blended features to the nearest
centroid, and the uint16 id raster.

Tiles lie on one grid anchored at the raster's origin (whatever EXTENT is asked for) and overlap. Each tile
owns its core, and across a ramp of half the overlap centred on each core border the features go linearly
from one tile's to the other's (:class:`~....core.tiling.RampBlend`, which says why a ramp and not the
Hann window segmentation uses). A pixel's features depend only on the grid, so its cluster is the same in a
whole-raster run and in an EXTENT run.

With a SCHEDULER each column band, cut into ranges of output rows, is a set of Dask work units
(:func:`cluster_band`), each writing its ids into a part GeoTIFF that the caller copies into the staged output (:mod:`....core.distributed`; docs/distributed.md).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.windows import Window

from ....core.deps import require
from ....core.distributed import Scheduler, assemble_part, parse_scheduler, run_tile_units
from ....core.errors import InputError
from ....core.fit import choose_precision
from ....core.progress import Feedback, NullFeedback, check_canceled
from ....core.raster import (
    bounds_region,
    check_georeferencing,
    check_geotiff_name,
    check_model_fits,
    geotiff_profile,
    open_raster,
    overview_factors,
    raster_env,
)
from ....core.staging import StagedFile, Transaction, current_transaction, stages_outputs
from ....core.tiling import (
    ROW_BLOCK,
    Block,
    BlockWriter,
    Output,
    RampBlend,
    TileGrid,
    TileReader,
    device_tile_limit,
    plan_tiles,
    ramp_grid,
    sweep,
    threads_for,
)
from .config import ClusterMapConfig

__all__ = ["ClusterMapConfig", "ClusterMapResult", "ClusterModel", "ClusterPlan", "ClusterBand", "cluster_grid",
           "feature_blocks", "cluster_raster", "cluster_band", "open_cluster_model", "CLUSTER_NODATA",
           "CLUSTER_BAND_COLUMNS"]

#: Nodata of cluster rasters; clusters are numbered 1..K.
CLUSTER_NODATA = 0
#: Widest column band swept at once: the carried ramp rows cost ``D x 2 half x band`` floats (about 70 MiB
#: for 35 channels and the default 512 px tiles). A multiple of the output block size.
CLUSTER_BAND_COLUMNS = 8192


@dataclass
class ClusterMapResult:
    """Written output and a summary."""

    path: str
    window: Tuple[int, int, int, int]
    tiles: int
    num_clusters: int
    pixel_counts: List[int]


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
        #: float32 and mixed precision (bf16 or fp16, as training chooses), picked per call by ``amp``
        self.precision = {amp: choose_precision(device, amp, training=False) for amp in (False, True)}
        self.metadata = ckpt.metadata
        self.model = clusternet_from_checkpoint(ckpt).to(device).eval()
        extras = {k: v.numpy() for k, v in ckpt.extras.items()}
        self.centroids = np.ascontiguousarray(extras["centroids"], np.float32)
        self._centroids = torch.from_numpy(self.centroids).to(device)
        self.transform = FeatureTransform.from_tensors(extras, bool(self.metadata.extra.get("normalize", True)))
        self.mean = np.asarray(self.metadata.mean, np.float32)
        self.std = np.asarray(self.metadata.std, np.float32)
        self._mean, self._std = (torch.tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1)
                                 for v in (self.mean, self.std))
        from ....models.registry import input_multiple

        self.multiple = int(self.metadata.extra.get("input_multiple") or
                            input_multiple(self.metadata.architecture, self.metadata.encoder,
                                           **self.metadata.model_kwargs))

    @property
    def num_clusters(self) -> int:
        """K."""
        return int(self.centroids.shape[0])

    @property
    def on_device(self) -> bool:
        """Whether a cluster map keeps the features on the model's device from the forward to the ids: on a
        GPU (issue 16: copying 35 float32 channels a pixel to the host held ``cluster_raster`` to 1/100 of its
        forward on an H200). The CPU keeps the host path (numpy blend, the same ids; see :func:`_block_ids`)."""
        return self.device.type == "cuda"

    def features(self, raw: np.ndarray, amp: bool = False, on_device: bool = False) -> Any:
        """Raw tiles ``(N, C, H, W)`` (band units) -> features ``(N, D, H, W)`` float32: numpy, or with
        ``on_device`` the tensor on the model's device (for ``RampBlend(device)``)."""
        torch = self.torch
        # normalised on the device, as segmentation's Ensemble does (float32 either way; torch.nan_to_num has
        # numpy's defaults, so the CPU result is bit-identical to the former host pass)
        x = torch.nan_to_num((torch.from_numpy(np.ascontiguousarray(raw, np.float32)).to(self.device)
                              - self._mean) / self._std)
        with torch.no_grad(), self.precision[amp].autocast():
            out = self.model.features(x).float()
        return out if on_device else out.cpu().numpy()

    def assign(self, features: Any,
               splits: Optional[Dict[int, Tuple[np.ndarray, Sequence[int]]]] = None) -> np.ndarray:
        """``(n, D)`` raw features -> cluster ids 1..K as uint16 (the id raster's type); see
        :func:`cluster_raster` for ``splits``.

        On the model's device, in torch (:func:`~....core.kmeans.nearest_centroid_tensor`): on the CPU about a
        fifth of ``cluster_raster``'s time went to faiss's search and the numpy transform around it.

        Args:
            features: a numpy array, or a float32 tensor (features kept on the device are used there; any
                strides: the rows are made contiguous, as a numpy array's are, so both give the same ids).
            splits: see :func:`cluster_raster`.

        Returns:
            ``(n,)`` uint16 numpy ids, narrowed on the device: 2 bytes a pixel are copied back.
        """
        from ....core.kmeans import nearest_centroid_tensor

        torch = self.torch
        if isinstance(features, torch.Tensor):
            x = features.to(self.device, torch.float32).contiguous()
        else:
            x = torch.from_numpy(np.ascontiguousarray(features, np.float32)).to(self.device)
        space = self.transform.apply_tensor(x)
        labels = nearest_centroid_tensor(space, self._centroids) + 1
        for cluster, (centroids, new_ids) in (splits or {}).items():
            hit = labels == cluster
            if bool(hit.any()):
                sub = nearest_centroid_tensor(space[hit], torch.as_tensor(np.asarray(centroids, np.float32),
                                                                          device=self.device))
                labels[hit] = torch.as_tensor(np.asarray(new_ids, np.int64), device=self.device)[sub]
        return labels.to(torch.uint16).cpu().numpy()


def _palette(k: int) -> List[Tuple[int, int, int]]:
    """K distinct colours (golden-ratio hue steps), stored as the GeoTIFF's colour table."""
    import colorsys

    colours = []
    for i in range(k):
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.65 + 0.35 * (i % 2), 0.95 - 0.25 * ((i // 2) % 2))
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


def cluster_grid(src: rasterio.DatasetReader, cm: ClusterModel, config: ClusterMapConfig,
                 feedback: Optional[Feedback] = None) -> TileGrid:
    """The tiles ``config`` asks for on ``src``: the raster-anchored ramp grid meeting the EXTENT.

    The tile is clamped to the raster (not the EXTENT: a pixel's features must not depend on the extent) and
    to what the device holds; ``feedback`` is told when it is.
    """
    limit = device_tile_limit(lambda raw: cm.features(raw, config.amp), len(cm.metadata.bands), cm.multiple,
                              cm.device)
    tile, overlap = plan_tiles(config.tile_size, config.overlap, cm.multiple, (src.width, src.height), limit,
                               feedback, "the raster")
    region = bounds_region(src, config.bounds)
    return ramp_grid(Window(*region), src.height, src.width, tile, overlap)


def feature_blocks(src: rasterio.DatasetReader, cm: ClusterModel, grid: TileGrid, config: ClusterMapConfig,
                   feedback: Feedback, band_columns: Optional[int] = None,
                   bands: Optional[Sequence[Tuple[int, int]]] = None, on_device: bool = False) -> Iterator[Block]:
    """Blended per-pixel features (``Block.values``, ``(D, h, w)``) of the grid's region.

    The region is swept in column bands of at most ``band_columns`` pixels (None: ``CLUSTER_BAND_COLUMNS``),
    each top to bottom (only ``bands`` of them when given: a distributed run's unit); a pixel's features
    depend only on the raster-anchored grid, never on the region or on the column bands. Memory is one
    batch of tile features and the ramp rows carried from one tile row to the next (``D x 2 half x band``
    floats), never the raster's size.

    ``on_device``: blend on the model's device (``RampBlend(cm.device)``): the tiles' features never leave it
    and ``Block.values`` are tensors there (the same values as the host blend's); else numpy.
    """
    reader = TileReader(src, cm.metadata.bands, cm.mean, grid.tile)
    return sweep(grid, reader, lambda raw: cm.features(raw, config.amp, on_device),
                 RampBlend(cm.device if on_device else None), feedback, config.batch_size,
                 band_columns or CLUSTER_BAND_COLUMNS, threads_for(cm.device), bands)


def open_cluster_model(model_path: str, device: str, feedback: Feedback) -> ClusterModel:
    """Resolve the device and load a ClusterNet model file on it."""
    from ....core.device import describe_device, resolve_device

    torch_device = resolve_device(device)
    feedback.info(f"Device: {describe_device(torch_device)}")
    return ClusterModel(model_path, torch_device)


@dataclass(frozen=True)
class ClusterPlan:
    """What every column band of a cluster map shares: plain values and paths, so it travels to Dask workers.

    Attributes:
        source: the input raster's path.
        model_path: the ClusterNet model file (each worker loads it: models travel as files).
        config: the run's settings.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, resolved where the band runs (per worker).
        grid: the tiles of the whole run (computed once, by the caller).
        band_columns: widest column band.
        top: the highest cluster id (splits included): the length of the counts.
        splits: see :func:`cluster_raster`.
        keep_nodata_of: see :func:`cluster_raster`.
    """

    source: str
    model_path: str
    config: ClusterMapConfig
    device: str
    grid: TileGrid
    band_columns: int
    top: int
    splits: Optional[Dict[int, Tuple[np.ndarray, Sequence[int]]]] = None
    keep_nodata_of: Optional[str] = None


@dataclass(frozen=True)
class ClusterBand:
    """A distributed cluster map's work unit: one column band (or a range of its rows, ``rows``: see
    :meth:`~....core.tiling.TileGrid.row_part`; None: all of them), written to its own part GeoTIFF."""

    plan: ClusterPlan
    band: Tuple[int, int]
    part: str
    rows: Optional[Tuple[int, int]] = None


def _id_profile(src: rasterio.DatasetReader, window: Window, threaded: bool) -> dict:
    """Creation profile of the uint16 cluster id GeoTIFF of raster pixels ``window``."""
    profile = geotiff_profile(int(window.width), int(window.height), 1, "uint16", src.crs,
                              src.window_transform(window), CLUSTER_NODATA, level=1, compress_threads=threaded)
    profile.update(blockxsize=ROW_BLOCK, blockysize=ROW_BLOCK)
    return profile


def _sweep_cluster_bands(src: rasterio.DatasetReader, cm: ClusterModel, plan: ClusterPlan, dst, region: Window,
                         feedback: Feedback, bands: Optional[Sequence[Tuple[int, int]]] = None
                         ) -> Tuple[np.ndarray, bool]:
    """Sweep ``bands`` of the plan's grid (None: all) into the id raster ``dst`` covering raster pixels ``region``.

    The one loop of both runs: in-process it fills the staged output, on a worker one band's part.

    Returns:
        Pixels per id (index 0: nodata) and whether any pixel of the bands was not nodata.
    """
    config, grid = plan.config, plan.grid
    counts = np.zeros(plan.top + 1, np.int64)
    valid = False
    previous = open_raster(plan.keep_nodata_of, "INPUT") if plan.keep_nodata_of else None
    # the earlier raster covers the run's region; this one's output pixel (0, 0) is ``region``'s corner
    dx, dy = int(region.col_off - grid.region.col_off), int(region.row_off - grid.region.row_off)

    def finish_strip(window: Window, strips: List[np.ndarray]) -> None:
        strip = strips[0][0]
        if previous is not None:
            nodata = previous.nodata if previous.nodata is not None else 0
            earlier = previous.read(1, window=Window(window.col_off + dx, window.row_off + dy, window.width,
                                                     window.height))
            strip[earlier == nodata] = CLUSTER_NODATA
        counts[:] += np.bincount(strip.ravel(), minlength=len(counts))[:len(counts)]

    with previous or contextlib.nullcontext():
        writer = BlockWriter([Output(dst, 1, "uint16", CLUSTER_NODATA)], region, grid.tile, src.window_transform,
                             config.mask, finish_strip, threads_for(cm.device))
        blocks = feature_blocks(src, cm, grid, config, feedback, plan.band_columns, bands, cm.on_device)
        # strips are finished and counted on the writer thread: counts are complete once it is closed
        with writer, contextlib.closing(blocks):
            for block in blocks:
                valid = valid or not block.empty.all()
                writer.put(block.r0, block.c0, block.band, [_block_ids(cm, block, plan.splits)[None]])
    return counts, valid


def _block_ids(cm: ClusterModel, block: Block,
              splits: Optional[Dict[int, Tuple[np.ndarray, Sequence[int]]]] = None) -> np.ndarray:
    """The uint16 cluster ids ``(h, w)`` of a block of blended features, CLUSTER_NODATA where it is empty.

    Features kept on the device (tensors) are assigned there, every pixel through one ``(h w, D)`` copy of
    the block (no boolean gather on the device, no mask sent to it); the empty pixels are then set to nodata
    on the host, so from a GPU only 2 bytes a pixel come back. Host features assign only the kept pixels:
    on the CPU assigning every pixel was no faster (cProfile, 2048 px, 448 px blocks of 35 channels: the
    gather and the ``(n, D)`` copy both ~27 ms, the assignment ~100 ms) and would spend it on the empty ones.
    """
    keep, values = ~block.empty, block.values
    if not keep.any():
        return np.full(keep.shape, CLUSTER_NODATA, np.uint16)
    if isinstance(values, np.ndarray):
        ids = np.full(keep.shape, CLUSTER_NODATA, np.uint16)
        ids[keep] = cm.assign(np.ascontiguousarray(values[:, keep].T), splits)
    else:
        ids = cm.assign(values.movedim(0, -1).reshape(-1, values.shape[0]), splits).reshape(keep.shape)
        ids[block.empty] = CLUSTER_NODATA
    return ids


@lru_cache(maxsize=1)
def _worker_model(model_path: str, device: str) -> ClusterModel:
    """The model on a worker, loaded once per worker process for the bands it runs one after another."""
    from ....core.device import resolve_device

    return ClusterModel(model_path, resolve_device(device))


def cluster_band(unit: ClusterBand, feedback: Feedback) -> Tuple[np.ndarray, bool]:
    """Run one unit (a column band, or a range of its rows) into its part GeoTIFF (a Dask work unit; also runs
    in-process): the in-process run's ids of that window, bit for bit.

    Returns:
        :func:`_sweep_cluster_bands`' pixels per id and whether the unit holds data.
    """
    plan = unit.plan
    cm = _worker_model(plan.model_path, plan.device)
    if unit.rows is not None:  # the region stays the run's, so KEEP_NODATA_OF's offsets stay right
        plan = replace(plan, grid=plan.grid.row_part(unit.rows))
    y0, y1 = plan.grid.output_rows
    window = Window(unit.band[0], y0, unit.band[1] - unit.band[0], y1 - y0)
    with raster_env(), open_raster(plan.source) as src, \
            rasterio.open(unit.part, "w", **_id_profile(src, window, threaded=False)) as dst:
        return _sweep_cluster_bands(src, cm, plan, dst, window, feedback, [unit.band])


def _cluster_on_cluster(scheduler: Scheduler, plan: ClusterPlan, dst, output_path: str,
                        feedback: Feedback) -> Tuple[np.ndarray, bool]:
    """Run the plan's units (column bands x row ranges) on a Dask cluster and assemble their parts into the open
    output ``dst``."""
    region = plan.grid.region

    def unit(band: Tuple[int, int], rows: Tuple[int, int], folder: str) -> ClusterBand:
        return ClusterBand(plan, band, os.path.join(folder, f"ids-{band[0]}-{rows[0]}.tif"), rows)

    def assemble(units: Sequence[ClusterBand]) -> None:
        for done in units:
            check_canceled(feedback)
            assemble_part(done.part, dst, done.band[0] - int(region.col_off), done.rows[0] - int(region.row_off))

    inputs = [(plan.source, "INPUT"), (plan.model_path, "MODEL")]
    if plan.keep_nodata_of:
        inputs.append((plan.keep_nodata_of, "INPUT"))
    results = run_tile_units(scheduler, feedback, inputs, output_path, "OUTPUT", current_transaction(), plan.grid,
                             plan.band_columns, unit, cluster_band, assemble)
    return sum(r[0] for r in results), any(r[1] for r in results)


@stages_outputs
def cluster_raster(source: str, model_path: str, output_path: str, config: ClusterMapConfig = ClusterMapConfig(),
                   device: str = "auto", feedback: Optional[Feedback] = None,
                   splits: Optional[Dict[int, Tuple[np.ndarray, Sequence[int]]]] = None,
                   keep_nodata_of: Optional[str] = None,
                   transaction: Optional[Transaction] = None, scheduler: str = "") -> ClusterMapResult:
    """Write the cluster id (1..K, nodata 0) of every pixel as a uint16 GeoTIFF on the input's grid.

    Args:
        source: raster with the bands the model was trained on.
        model_path: a SatSeg ClusterNet model file.
        output_path: GeoTIFF to write (``.tif``); staged and moved into place at the end.
        config: tiling and extent settings.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (on a cluster: resolved on each worker).
        feedback: progress per tile row (on a cluster: per finished column band), cancel, log.
        splits: ``{cluster id: (sub-centroids (m, d) in k-means space, their new ids)}``: pixels of that
            cluster are reassigned to the nearest sub-centroid (how ``clusters_to_classes`` splits a cluster
            two classes share).
        keep_nodata_of: a raster on the output's grid (an earlier cluster raster): its nodata pixels stay
            nodata here (so a re-clustering keeps an earlier run's MASK).
        transaction: stage the outputs into this run's transaction and leave the commit to its owner
            (default: the current run's, else they are moved into place together when this returns).
        scheduler: SCHEDULER (:func:`~....core.distributed.parse_scheduler`): empty runs in-process; ``local:N``
            or a scheduler's address run the column bands as Dask work units on storage the workers share,
            with the same ids.

    Returns:
        The output path and per-cluster pixel counts (index i = cluster i + 1, new ids of splits included).
    """
    feedback = feedback or NullFeedback()
    config.validate()
    check_geotiff_name(output_path, "OUTPUT")
    cluster = parse_scheduler(scheduler)
    cm = open_cluster_model(model_path, device, feedback)
    k = cm.num_clusters
    top = max([k] + [max(ids) for _, ids in (splits or {}).values()])
    with raster_env(), open_raster(source) as src:
        check_georeferencing(src, feedback)
        check_model_fits(src, cm.metadata.bands, cm.metadata.pixel_size, feedback)
        grid = cluster_grid(src, cm, config, feedback)
        x0, y0, width, height = (int(v) for v in grid.region.flatten())
        feedback.info(f"Clustering {len(grid)} tiles of {grid.tile} px (overlap {grid.overlap} px) over "
                      f"{width} x {height} px into {k} clusters.")
        if keep_nodata_of:
            with open_raster(keep_nodata_of, "INPUT") as previous:
                if (previous.width, previous.height) != (width, height):
                    raise InputError("the earlier cluster raster does not match the region being clustered.",
                                     "INPUT")
        plan = ClusterPlan(os.path.abspath(source), os.path.abspath(model_path), config, device, grid,
                           CLUSTER_BAND_COLUMNS, top, splits,
                           os.path.abspath(keep_nodata_of) if keep_nodata_of else None)
        staged = StagedFile(output_path, parameter="OUTPUT", suffix=".tif")
        with staged as tmp:
            with rasterio.open(tmp, "w", **_id_profile(src, grid.region, threaded=True)) as dst:
                dst.set_band_description(1, "cluster")
                # how the ids were made, so a later split recomputes features with the same tiles
                dst.update_tags(satseg_tile=grid.tile, satseg_overlap=grid.overlap, satseg_model=os.path.basename(
                    model_path))
                dst.write_colormap(1, {0: (0, 0, 0, 0), **{i + 1: (*c, 255) for i, c in enumerate(_palette(top))}})
                if cluster.in_process:
                    counts, valid = _sweep_cluster_bands(src, cm, plan, dst, grid.region, feedback)
                else:
                    counts, valid = _cluster_on_cluster(cluster, plan, dst, output_path, feedback)
                check_canceled(feedback)
                if not valid:
                    feedback.warning("Every pixel of INPUT in the extent is nodata; the output is empty.")
                factors = overview_factors(width, height)
                if factors:
                    from rasterio.enums import Resampling

                    dst.build_overviews(factors, Resampling.mode)
            staged.commit()
    feedback.set_progress(100.0)
    used = int((counts[1:] > 0).sum())
    feedback.info(f"{used} of {top} clusters occur; {int(counts[0])} pixels are nodata.")
    return ClusterMapResult(os.path.abspath(output_path), (x0, y0, width, height), len(grid), top,
                            [int(c) for c in counts[1:]])
