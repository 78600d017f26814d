"""The one tiled sweep every raster model run uses (segmentation, cluster maps).

How a raster of any size is run through a model, in parts a caller combines:

* :mod:`.grid`: where the tiles lie (a :class:`TileGrid` value, testable without reading a pixel);
* :mod:`.reading`: reading one tile (clipped, padded, nodata flagged by one rule, filled with band means);
* :mod:`.blending`: turning overlapping tile outputs into one value per pixel (Hann or core ramps);
* :mod:`.readahead`: the tiles of a sweep read ahead, in order, on a few reader threads;
* :mod:`.sweep`: column bands (all of them, or some: a distributed run's unit), tile rows, batches with CUDA
  out-of-memory back-off, finished blocks;
* :mod:`.writing`: finished rows buffered per column band and written to the (staged) outputs in whole
  blocks, on a writer thread;
* :mod:`.concurrency`: how many reader threads, how far ahead they read and how many strips may wait for
  the writer (the one place to tune them).

A caller keeps only what is its own: the model (``predict``) and what it makes of a finished block
(class mask, cluster ids) and its outputs.
"""

from .blending import Block, HannBlend, RampBlend, hann_window, ramp_weights
from .concurrency import CPU_THREADS, DEFAULT_THREADS, GPU_THREADS, SERIAL, SweepThreads, threads_for
from .grid import (
    DEFAULT_TILE,
    Span,
    TileGrid,
    check_overlap,
    core_spans,
    device_tile_limit,
    fit_tile,
    hann_grid,
    plan_tiles,
    ramp_grid,
    ramp_half,
    support,
    tile_origins,
)
from .readahead import TileQueue
from .reading import Tile, TileReader, nodata_flags
from .sweep import Predict, TileBatches, sweep
from .writing import ROW_BLOCK, BlockWriter, Output

__all__ = ["Block", "HannBlend", "RampBlend", "hann_window", "ramp_weights", "DEFAULT_TILE", "Span", "TileGrid",
           "check_overlap", "core_spans", "device_tile_limit", "fit_tile", "plan_tiles", "hann_grid", "ramp_grid", "ramp_half", "support",
           "tile_origins", "Tile", "TileReader", "nodata_flags", "Predict", "TileBatches", "sweep", "ROW_BLOCK",
           "BlockWriter", "Output", "SweepThreads", "CPU_THREADS", "GPU_THREADS", "DEFAULT_THREADS", "SERIAL",
           "threads_for", "TileQueue"]
