"""Tiled, seamless inference of one model or an ensemble over a raster of any size.

The sweep itself (tile grid, reading with the nodata rule, batching, Hann blending, column bands, rows
written in whole blocks) is :mod:`...core.tiling`'s; this module holds what is segmentation's own: the
ensemble of models that turns a batch of tiles into class probabilities, the threshold that turns blended
probabilities into a class mask, and the two staged outputs. Tiles lie on one grid anchored at the
region's origin and overlap; each pixel is the Hann-weighted mean of every tile holding it, so there are
no seams. Outputs are moved into place only when the whole raster is done.
"""

from __future__ import annotations

import os
from contextlib import closing
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from ...core.errors import InputError
from ...core.progress import Feedback, NullFeedback
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
from ...core.staging import StagedFile, Transaction, stages_outputs
from ...core.tiling import (
    ROW_BLOCK,
    BlockWriter,
    HannBlend,
    Output,
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

__all__ = ["InferenceConfig", "SegmentResult", "segment_raster", "PROB_NODATA", "MASK_NODATA", "BAND_COLUMNS"]

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


@stages_outputs
def _count_positive(mask_path: str) -> int:
    """Foreground pixels of a written mask, read block by block."""
    with rasterio.open(mask_path) as mask:
        return sum(int(((cls > 0) & (cls != MASK_NODATA)).sum())
                   for cls in (mask.read(1, window=w) for _, w in mask.block_windows(1)))


def segment_raster(source: str, model_paths: Sequence[str], probability_path: str, mask_path: str,
                   config: InferenceConfig = InferenceConfig(), device: str = "auto",
                   feedback: Optional[Feedback] = None,
                   transaction: Optional[Transaction] = None) -> SegmentResult:
    """Predict a probability raster and a class mask with one model or a weighted ensemble.

    Args:
        source: raster path (the models' bands are read from it).
        model_paths: SatSeg segmentation model files.
        probability_path: float32 GeoTIFF of foreground probabilities (one band per class; nodata -1).
        mask_path: uint8 GeoTIFF mask (binary: 0/1; multi-class: class index; nodata 255).
        config: tiling, ensemble and output settings.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        feedback: progress per tile row, cancel, log.
        transaction: stage the outputs into this run's transaction and leave the commit to its owner
            (default: the current run's, else they are moved into place together when this returns).

    Returns:
        Paths and a summary. Outputs have the input's CRS and grid (cropped to the extent's pixel window).
    """
    from ...core.device import describe_device, resolve_device

    feedback = feedback or NullFeedback()
    check_geotiff_name(probability_path, "OUTPUT_PROBABILITY")
    check_geotiff_name(mask_path, "OUTPUT_MASK")
    config.validate()
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
        tile, overlap = plan_tiles(config.tile_size, config.overlap, ensemble.multiple, (width, height), limit,
                                   feedback)
        grid = hann_grid(Window(*region), src.height, src.width, tile, overlap)
        feedback.info(f"Predicting {len(grid)} tiles of {tile} px (overlap {overlap} px) over "
                      f"{width} x {height} px; threshold {threshold:.3f}{', flip TTA' if config.tta else ''}.")
        window_transform = src.window_transform(Window(x0, y0, width, height))
        k = ensemble.out_bands
        # level 1: the float probabilities encode ~5x faster for a few percent more bytes (see bench/RESULTS.md)
        prob_profile = geotiff_profile(width, height, k, "float32", src.crs, window_transform, PROB_NODATA, level=1,
                                       compress_threads=True)
        prob_profile.update(blockxsize=ROW_BLOCK, blockysize=ROW_BLOCK, interleave="band")
        mask_profile = geotiff_profile(width, height, 1, "uint8", src.crs, window_transform, MASK_NODATA, level=1,
                                       compress_threads=True)
        mask_profile.update(blockxsize=ROW_BLOCK, blockysize=ROW_BLOCK)
        staged_prob = StagedFile(probability_path, parameter="OUTPUT_PROBABILITY", suffix=".tif")
        staged_mask = StagedFile(mask_path, parameter="OUTPUT_MASK", suffix=".tif")
        reader = TileReader(src, meta.bands, np.asarray(meta.mean, np.float32), tile)
        positive, valid = [0], [False]

        def count_positive(_window: Window, strips: List[np.ndarray]) -> None:
            cls = strips[1]
            positive[0] += int(((cls > 0) & (cls != MASK_NODATA)).sum())

        with staged_prob as prob_tmp, staged_mask as mask_tmp:
            with rasterio.open(prob_tmp, "w", **prob_profile) as prob_dst, \
                    rasterio.open(mask_tmp, "w", **mask_profile) as mask_dst:
                for i, name in enumerate(meta.classes, start=1):
                    prob_dst.set_band_description(i, f"{name} probability")
                mask_dst.set_band_description(1, "class" if k > 1 else f"{meta.classes[0]} mask")
                threads = threads_for(torch_device)
                writer = BlockWriter([Output(prob_dst, k, "float32", PROB_NODATA), Output(mask_dst, 1, "uint8",
                                                                                          MASK_NODATA)],
                                     grid.region, tile, src.window_transform, config.mask, count_positive, threads)
                blocks = sweep(grid, reader, lambda raw: ensemble.predict(raw, config.tta), HannBlend(tile),
                               feedback, config.batch_size, BAND_COLUMNS, threads)
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
                if not valid[0]:
                    feedback.warning("Every pixel of INPUT in the extent is nodata; the outputs are empty.")
            if min_object > 1:  # on the closed file, before its overviews
                sieve_file(mask_tmp, min_object)
                positive[0] = _count_positive(mask_tmp)
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
                         list(meta.classes), region, len(grid), positive[0])
