"""THE tiled sweep: column bands, tile rows, batches of tiles through a model, blended finished blocks.

Memory is bounded by the tile size and the band width, never by the raster's size: the region is cut into
column bands (:meth:`~.grid.TileGrid.column_bands`), each swept top to bottom; a band computes every tile
whose output counts for it, so a tile column straddling a band border is computed twice (about
``tile / band_columns`` extra work) and every pixel gets the same blend as in a single sweep. A distributed
run cuts further: a work unit is some column bands of a grid restricted to a range of output rows
(:meth:`~.grid.TileGrid.row_part`), whose blocks are the whole sweep's rows of that range, bit for bit.

Producer / consumer seam: a :class:`~.readahead.TileQueue` reads the tiles in the sweep's order, a few
batches ahead on reader threads (:mod:`.concurrency` says how many); :meth:`TileBatches.tile_outputs` takes
them a batch at a time and runs the model on them in the caller's thread; the blender consumes the outputs.
On a GPU the blender keeps its accumulators there (``HannBlend(tile, device)``): the consumer side
changes, the reading does not.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..fit import OomBackoff
from ..progress import Feedback, check_canceled
from .blending import Block
from .concurrency import DEFAULT_THREADS, SweepThreads
from .grid import Span, TileGrid
from .readahead import TileQueue
from .reading import TileReader

__all__ = ["Predict", "TileBatches", "sweep"]

#: A model step: raw tiles ``(N, C, T, T)`` float32 (band units) -> outputs ``(N, D, T, T)`` float32.
Predict = Callable[[np.ndarray], np.ndarray]

_OOM_ADVICE = "Lower TILE_SIZE or use DEVICE=cpu."


class TileBatches:
    """Runs tiles through the model in batches, halving the batch after a CUDA out-of-memory error
    (:class:`~..fit.OomBackoff`, as the trainers do).

    The batch size is kept from one call to the next, so one out-of-memory error shrinks the rest of the run.
    With ``span_rows`` a batch is filled with the next tiles of the sweep when a tile row has fewer left (a row
    of an 8192 px band is 16-22 tiles of 512 px, below a GPU's batch of 32): their outputs wait, in order, for
    their own row. Without it every batch holds tiles of one row, as on the CPU, where a batch's composition
    could change the last bits of a convolution and the outputs are kept bit-identical to earlier runs.
    """

    def __init__(self, batch_size: int, feedback: Feedback, span_rows: bool = False) -> None:
        self.backoff = OomBackoff(max(1, int(batch_size)), feedback, "tile", _OOM_ADVICE)
        self.feedback = feedback
        self.span_rows = span_rows
        #: outputs ``(output, empty)`` of tiles after the current row, computed with an earlier batch, in order
        self.ready: Deque[Tuple[Any, np.ndarray]] = deque()

    @property
    def size(self) -> int:
        """The batch size now."""
        return self.backoff.batch_size

    def tile_outputs(self, tiles: TileQueue, predict: Predict, cols: List[Span]
                     ) -> Iterator[Tuple[Span, Any, np.ndarray]]:
        """``(col, output (D, T, T), empty (T, T))`` of the tiles ``cols`` of one tile row, left to right.

        ``tiles`` gives the sweep's tiles next, in order (this row's first, in the order of ``cols``); a batch is
        popped once the model ran it.
        """
        start = 0
        while start < len(cols) and self.ready:
            output, empty = self.ready.popleft()
            yield cols[start], output, empty
            start += 1
        while start < len(cols):
            check_canceled(self.feedback)

            def step(size: int, start: int = start):
                batch = tiles.peek(size if self.span_rows else min(size, len(cols) - start))
                return batch, predict(np.stack([t.raw for t in batch]))

            batch, outputs = self.backoff.run(step)
            tiles.pop(len(batch))  # the next reads start while this batch is blended
            done = min(len(batch), len(cols) - start)
            yield from zip(cols[start:start + done], outputs[:done], [t.empty for t in batch[:done]])
            self.ready.extend(zip(outputs[done:], [t.empty for t in batch[done:]]))
            start += done


def sweep(grid: TileGrid, reader: TileReader, predict: Predict, blend, feedback: Feedback, batch_size: int,
          band_columns: int, threads: SweepThreads = DEFAULT_THREADS,
          bands: Optional[Sequence[Tuple[int, int]]] = None) -> Iterator[Block]:
    """Finished, blended blocks of the grid's region (its :attr:`~.grid.TileGrid.output_rows`), band by band,
    each band top to bottom.

    Args:
        grid: where the tiles lie (:func:`~.grid.hann_grid` or :func:`~.grid.ramp_grid`).
        reader: reads a tile as model input, nodata flagged and filled (read on ``threads.readers`` threads,
            each through its own :meth:`~.reading.TileReader.reopen` copy).
        predict: the model step (see :data:`Predict`), run in the caller's thread.
        blend: a blend strategy (:class:`~.blending.HannBlend` or :class:`~.blending.RampBlend`) suiting the grid.
        feedback: cancel is checked per tile row and per batch; progress (0..95 %) is set per tile row.
        batch_size: tiles per model step (halved on CUDA out-of-memory).
        band_columns: widest column band.
        threads: reader threads and how many batches they read ahead (:mod:`.concurrency`); the blocks do
            not depend on them.
        bands: sweep only these of ``grid.column_bands(band_columns)`` (a distributed run's work unit: each
            band's blocks are the same whether it is swept alone or with the others); None: every band.

    Yields:
        :class:`~.blending.Block` s; when a block of a band starts at row ``r0``, every row of that band above
        ``r0`` has been given. Block values may be views into buffers reused later: use them before the
        next block. The reader threads stop when the sweep ends, raises, or is closed early (close the
        generator, e.g. with :func:`contextlib.closing`, when not iterating it to the end).
    """
    batches = TileBatches(batch_size, feedback, threads.span_rows)
    every = grid.column_bands(band_columns)
    if bands is not None and not set(bands) <= set(every):
        raise ValueError(f"bands {list(bands)} are not column bands of {band_columns} px of the grid's region")
    plan = [(band, grid.cols_meeting(band)) for band in (every if bands is None else bands)]
    steps = len(plan) * len(grid.rows)
    windows = (grid.window(row, col) for _, cols in plan for row in grid.rows for col in cols)
    with TileQueue(reader, windows, threads.readers, threads.depth(batch_size)) as tiles:
        for band_index, (band, cols) in enumerate(plan):
            blender = blend.band(grid, band)
            for row_index, row in enumerate(grid.rows):
                check_canceled(feedback)
                yield from blender.start_row(row)
                for col, output, empty in batches.tile_outputs(tiles, predict, cols):
                    yield from blender.add(row, col, output, empty)
                yield from blender.end_row(row)
                feedback.set_progress(95.0 * (band_index * len(grid.rows) + row_index + 1) / steps)
            check_canceled(feedback)
            yield from blender.finish()
