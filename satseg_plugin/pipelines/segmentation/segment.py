"""Tiled, seamless inference of one model or an ensemble over a raster of any size.

The sweep itself (tile grid, reading with the nodata rule, batching, Hann blending, column bands, rows
written in whole blocks) is :mod:`...core.tiling`'s; this module holds what is segmentation's own: the
ensemble of models that turns a batch of tiles into class probabilities, the threshold that turns blended
probabilities into a class mask, and the two staged outputs. Tiles lie on one grid anchored at the
region's origin and overlap; each pixel is the Hann-weighted mean of every tile holding it, so there are
no seams. Outputs are moved into place only when the whole raster is done.

One function sweeps column bands into open outputs (:func:`_sweep_bands`): in-process it fills the staged
outputs with every band; with a SCHEDULER each column band, cut into ranges of output rows, is a set of Dask
work units (:func:`segment_band`) that fill their own part GeoTIFFs, which the caller copies into the staged
outputs before the same sieve, overviews and commit (:mod:`...core.distributed`; docs/distributed.md).
"""

from __future__ import annotations

import os
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from ...core.distributed import Scheduler, assemble_part, parse_scheduler, run_tile_units
from ...core.errors import InputError
from ...core.progress import Feedback, NullFeedback, check_canceled
from ...core.raster import (
    bounds_region,
    check_georeferencing,
    check_geotiff_name,
    check_model_fits,
    geotiff_profile,
    open_raster,
    overview_factors,
    raster_env,
)
from ...core.staging import StagedFile, Transaction, current_transaction, stages_outputs
from ...core.tiling import (
    ROW_BLOCK,
    BlockWriter,
    HannBlend,
    Output,
    TileGrid,
    TileReader,
    device_tile_limit,
    hann_grid,
    plan_tiles,
    sweep,
    threads_for,
)
from ...core.vectorize import sieve_file
from .config import InferenceConfig
from .ensemble import Ensemble

__all__ = ["InferenceConfig", "SegmentResult", "SegmentPlan", "SegmentBand", "segment_raster", "segment_band",
           "PROB_NODATA", "MASK_NODATA", "BAND_COLUMNS"]

PROB_NODATA = -1.0
MASK_NODATA = 255
# Widest column band swept at once: the Hann accumulators cost tile x BAND_COLUMNS x (4K + 5) bytes and the row
# buffers (tile + 256) x BAND_COLUMNS x (4K + 1), about 65 MiB for one class and 512 px tiles. A multiple of the
# output block size, so bands write whole blocks.
BAND_COLUMNS = 8192


@dataclass
class SegmentResult:
    """Written outputs and a summary of the run."""

    probability_path: str
    mask_path: str
    threshold: float
    classes: List[str]
    window: Tuple[int, int, int, int]
    tiles: int
    positive_pixels: int


@dataclass(frozen=True)
class SegmentPlan:
    """What every column band of a run shares: plain values and paths, so it travels to Dask workers as is.

    Attributes:
        source: the input raster's path.
        model_paths: the model files (each worker loads them: models travel as files, never pickled modules).
        config: the run's settings.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, resolved where the band runs (per worker).
        threshold: the probability threshold of the class mask.
        grid: the tiles of the whole run (computed once, by the caller).
        band_columns: widest column band.
    """

    source: str
    model_paths: Tuple[str, ...]
    config: InferenceConfig
    device: str
    threshold: float
    grid: TileGrid
    band_columns: int


@dataclass(frozen=True)
class SegmentBand:
    """A distributed run's work unit: one column band (or a range of its rows), written to its own part GeoTIFFs.

    Attributes:
        plan: the run's shared plan.
        band: ``(first column, stop column)`` in raster pixels, one of ``plan.grid.column_bands``.
        probability_part: where the unit's probabilities go (a folder every worker and the client share).
        mask_part: where the unit's class mask goes (before the sieve, which runs on the assembled mask).
        rows: ``(first row, stop row)`` of the region the unit gives (:meth:`~...core.tiling.TileGrid.row_part`);
            None: all of them.
    """

    plan: SegmentPlan
    band: Tuple[int, int]
    probability_part: str
    mask_part: str
    rows: Optional[Tuple[int, int]] = None


def _profiles(src: rasterio.DatasetReader, window: Window, k: int, threaded: bool) -> Tuple[dict, dict]:
    """Creation profiles of the probability and mask GeoTIFFs of raster pixels ``window``."""
    transform = src.window_transform(window)
    width, height = int(window.width), int(window.height)
    # level 1: the float probabilities encode ~5x faster for a few percent more bytes (see bench/RESULTS.md)
    prob = geotiff_profile(width, height, k, "float32", src.crs, transform, PROB_NODATA, level=1,
                           compress_threads=threaded)
    prob.update(blockxsize=ROW_BLOCK, blockysize=ROW_BLOCK, interleave="band")
    mask = geotiff_profile(width, height, 1, "uint8", src.crs, transform, MASK_NODATA, level=1,
                           compress_threads=threaded)
    mask.update(blockxsize=ROW_BLOCK, blockysize=ROW_BLOCK)
    return prob, mask


@contextmanager
def _open_outputs(src: rasterio.DatasetReader, window: Window, classes: Sequence[str], prob_path: str,
                  mask_path: str, threaded: bool = True) -> Iterator[Tuple[Any, Any]]:
    """The probability and mask GeoTIFFs of raster pixels ``window``, open for writing, bands described."""
    prob_profile, mask_profile = _profiles(src, window, len(classes), threaded)
    with rasterio.open(prob_path, "w", **prob_profile) as prob_dst, \
            rasterio.open(mask_path, "w", **mask_profile) as mask_dst:
        for i, name in enumerate(classes, start=1):
            prob_dst.set_band_description(i, f"{name} probability")
        mask_dst.set_band_description(1, "class" if len(classes) > 1 else f"{classes[0]} mask")
        yield prob_dst, mask_dst


def _sweep_bands(src: rasterio.DatasetReader, ensemble: Ensemble, plan: SegmentPlan, prob_dst: Any, mask_dst: Any,
                 region: Window, feedback: Feedback, bands: Optional[Sequence[Tuple[int, int]]] = None
                 ) -> Tuple[int, bool]:
    """Sweep ``bands`` of the plan's grid (None: all) into outputs covering raster pixels ``region``.

    The one loop of both runs: in-process it fills the staged outputs, on a worker one band's parts.

    Returns:
        The foreground pixels written and whether any pixel of the bands was not nodata.
    """
    config, grid, threshold = plan.config, plan.grid, plan.threshold
    k = ensemble.out_bands
    positive, valid = [0], [False]

    def count_positive(_window: Window, strips: List[np.ndarray]) -> None:
        cls = strips[1]
        positive[0] += int(((cls > 0) & (cls != MASK_NODATA)).sum())

    threads = threads_for(ensemble.device)
    reader = TileReader(src, ensemble.metadata.bands, np.asarray(ensemble.metadata.mean, np.float32), grid.tile)
    writer = BlockWriter([Output(prob_dst, k, "float32", PROB_NODATA), Output(mask_dst, 1, "uint8", MASK_NODATA)],
                         region, grid.tile, src.window_transform, config.mask, count_positive, threads)
    # on a GPU the tiles' probabilities stay there and are blended there; only finished rows come back
    blend = HannBlend(grid.tile, ensemble.device if ensemble.device.type == "cuda" else None)
    blocks = sweep(grid, reader, lambda raw: ensemble.predict(raw, config.tta, on_device=blend.on_device), blend,
                   feedback, config.batch_size, plan.band_columns, threads, bands)
    # rows are written on the writer thread: the counts are complete when the writer is closed
    with writer, closing(blocks):
        for block in blocks:
            probs = block.values
            if k == 1:
                cls = (probs[0] >= threshold).astype(np.uint8)
            else:
                cls = np.where(probs.max(0) >= threshold, probs.argmax(0) + 1, 0).astype(np.uint8)
            valid[0] = valid[0] or not block.empty.all()
            probs[:, block.empty] = PROB_NODATA
            cls[block.empty] = MASK_NODATA
            writer.put(block.r0, block.c0, block.band, [probs, cls[None]])
    return positive[0], valid[0]


@lru_cache(maxsize=1)
def _worker_ensemble(model_paths: Tuple[str, ...], weights: Optional[Tuple[float, ...]], device: str,
                     amp: bool) -> Ensemble:
    """The models on a worker, loaded once per worker process for the bands it runs one after another."""
    from ...core.device import resolve_device

    return Ensemble(model_paths, weights, resolve_device(device), amp, NullFeedback())


def segment_band(unit: SegmentBand, feedback: Feedback) -> Tuple[int, bool]:
    """Run one unit (a column band, or a range of its rows) into its part GeoTIFFs (a Dask work unit; also
    runs in-process): the in-process run's pixels of that window, bit for bit.

    Returns:
        :func:`_sweep_bands`' foreground pixels and whether the unit holds data.
    """
    plan = unit.plan
    config = plan.config
    ensemble = _worker_ensemble(tuple(plan.model_paths), tuple(config.weights) if config.weights else None,
                                plan.device, config.amp)
    if unit.rows is not None:
        plan = replace(plan, grid=plan.grid.row_part(unit.rows))
    y0, y1 = plan.grid.output_rows
    window = Window(unit.band[0], y0, unit.band[1] - unit.band[0], y1 - y0)
    with raster_env(), open_raster(plan.source) as src, \
            _open_outputs(src, window, ensemble.metadata.classes, unit.probability_part, unit.mask_part,
                          threaded=False) as (prob_dst, mask_dst):
        return _sweep_bands(src, ensemble, plan, prob_dst, mask_dst, window, feedback, [unit.band])


def _segment_on_cluster(scheduler: Scheduler, src: rasterio.DatasetReader, plan: SegmentPlan, classes: Sequence[str],
                        prob_tmp: str, mask_tmp: str, probability_path: str,
                        feedback: Feedback) -> Tuple[int, bool]:
    """Run the plan's units (column bands x row ranges) on a Dask cluster and assemble their parts into the
    staged outputs."""
    region = plan.grid.region

    def unit(band: Tuple[int, int], rows: Tuple[int, int], folder: str) -> SegmentBand:
        return SegmentBand(plan, band, os.path.join(folder, f"probability-{band[0]}-{rows[0]}.tif"),
                           os.path.join(folder, f"mask-{band[0]}-{rows[0]}.tif"), rows)

    def assemble(units: Sequence[SegmentBand]) -> None:
        with _open_outputs(src, region, classes, prob_tmp, mask_tmp) as (prob_dst, mask_dst):
            for done in units:
                check_canceled(feedback)
                offset = done.band[0] - int(region.col_off), done.rows[0] - int(region.row_off)
                assemble_part(done.probability_part, prob_dst, *offset)
                assemble_part(done.mask_part, mask_dst, *offset)

    inputs = [(plan.source, "INPUT")] + [(p, "MODELS") for p in plan.model_paths]
    results = run_tile_units(scheduler, feedback, inputs, probability_path, "OUTPUT_PROBABILITY",
                             current_transaction(), plan.grid, plan.band_columns, unit, segment_band, assemble)
    feedback.set_progress(95.0)
    return sum(r[0] for r in results), any(r[1] for r in results)


def _count_positive(mask_path: str) -> int:
    """Foreground pixels of a written mask, read block by block."""
    with rasterio.open(mask_path) as mask:
        return sum(int(((cls > 0) & (cls != MASK_NODATA)).sum())
                   for cls in (mask.read(1, window=w) for _, w in mask.block_windows(1)))


@stages_outputs
def segment_raster(source: str, model_paths: Sequence[str], probability_path: str, mask_path: str,
                   config: InferenceConfig = InferenceConfig(), device: str = "auto",
                   feedback: Optional[Feedback] = None,
                   transaction: Optional[Transaction] = None, scheduler: str = "") -> SegmentResult:
    """Predict a probability raster and a class mask with one model or a weighted ensemble.

    Args:
        source: raster path (the models' bands are read from it).
        model_paths: SatSeg segmentation model files.
        probability_path: float32 GeoTIFF of foreground probabilities (one band per class; nodata -1).
        mask_path: uint8 GeoTIFF mask (binary: 0/1; multi-class: class index; nodata 255).
        config: tiling, ensemble and output settings.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (on a cluster: resolved on each worker).
        feedback: progress per tile row (on a cluster: per finished column band), cancel, log.
        transaction: stage the outputs into this run's transaction and leave the commit to its owner
            (default: the current run's, else they are moved into place together when this returns).
        scheduler: SCHEDULER (:func:`~...core.distributed.parse_scheduler`): empty runs in-process; ``local:N``
            or a scheduler's address run the column bands as Dask work units on storage the workers share,
            with the same outputs.

    Returns:
        Paths and a summary. Outputs have the input's CRS and grid (cropped to the extent's pixel window).
    """
    from ...core.device import describe_device, resolve_device

    feedback = feedback or NullFeedback()
    check_geotiff_name(probability_path, "OUTPUT_PROBABILITY")
    check_geotiff_name(mask_path, "OUTPUT_MASK")
    config.validate()
    cluster = parse_scheduler(scheduler)
    torch_device = resolve_device(device)
    feedback.info(f"Device: {describe_device(torch_device)}")
    ensemble = Ensemble(model_paths, config.weights, torch_device, config.amp, feedback)
    meta = ensemble.metadata
    threshold = ensemble.threshold if config.threshold is None else float(config.threshold)
    min_object = ensemble.min_object_pixels if config.min_object_pixels is None else int(config.min_object_pixels)
    if not 0 < threshold < 1:
        raise InputError(f"must lie strictly between 0 and 1, got {threshold}.", "THRESHOLD")
    with raster_env(), open_raster(source) as src:
        check_georeferencing(src, feedback)
        check_model_fits(src, meta.bands, meta.pixel_size, feedback)
        region = bounds_region(src, config.bounds)
        x0, y0, width, height = region
        limit = device_tile_limit(lambda raw: ensemble.predict(raw, config.tta), len(meta.bands),
                                  ensemble.multiple, torch_device)
        tile, overlap = plan_tiles(ensemble.tile_size(config.tile_size, feedback), config.overlap, ensemble.multiple,
                                   (width, height), limit, feedback)
        grid = hann_grid(Window(*region), src.height, src.width, tile, overlap)
        feedback.info(f"Predicting {len(grid)} tiles of {tile} px (overlap {overlap} px) over "
                      f"{width} x {height} px; threshold {threshold:.3f}{', flip TTA' if config.tta else ''}.")
        plan = SegmentPlan(os.path.abspath(source), tuple(os.path.abspath(p) for p in model_paths), config, device,
                           threshold, grid, BAND_COLUMNS)
        staged_prob = StagedFile(probability_path, parameter="OUTPUT_PROBABILITY", suffix=".tif")
        staged_mask = StagedFile(mask_path, parameter="OUTPUT_MASK", suffix=".tif")
        with staged_prob as prob_tmp, staged_mask as mask_tmp:
            if cluster.in_process:
                with _open_outputs(src, grid.region, meta.classes, prob_tmp, mask_tmp) as (prob_dst, mask_dst):
                    positive, valid = _sweep_bands(src, ensemble, plan, prob_dst, mask_dst, grid.region, feedback)
            else:
                positive, valid = _segment_on_cluster(cluster, src, plan, meta.classes, prob_tmp, mask_tmp,
                                                      probability_path, feedback)
            if not valid:
                feedback.warning("Every pixel of INPUT in the extent is nodata; the outputs are empty.")
            if min_object > 1:  # on the closed file, before its overviews
                sieve_file(mask_tmp, min_object)
                positive = _count_positive(mask_tmp)
                feedback.info(f"Removed objects under {min_object} pixels from the mask (and filled holes that "
                              "small).")
            factors = overview_factors(width, height)
            if factors:
                for path, resampling in ((prob_tmp, Resampling.average), (mask_tmp, Resampling.nearest)):
                    with rasterio.open(path, "r+") as dst:
                        dst.build_overviews(factors, resampling)
            # both files are complete and closed: they move into place together with the run's outputs
            staged_prob.commit()
            staged_mask.commit()
    feedback.set_progress(100.0)
    return SegmentResult(os.path.abspath(probability_path), os.path.abspath(mask_path), threshold,
                         list(meta.classes), region, len(grid), positive)
