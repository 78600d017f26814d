"""Rows of a sweep's outputs, buffered per column band and written in whole GeoTIFF blocks, on a writer thread.

Writing (the MASK, the caller's hook, GDAL's write and the compression GDAL does in it) runs on one
background thread (:class:`concurrent.futures.ThreadPoolExecutor` with one worker: strips are written in
the order they are finished), at most :attr:`~.concurrency.SweepThreads.write_queue` strips behind the
sweep. Each strip handed to it is a copy, so the threads share no array. A write error is raised again in
the caller, by the next :meth:`BlockWriter.put` or by :meth:`BlockWriter.close`.

Only the writer thread writes to the outputs, one output at a time; other threads only read other files.
A reader thread may still write an output's dirty block when it evicts it from GDAL's shared block cache
(patching deadlocked that way with a cache of 256 bytes, see :data:`~..raster.CACHE_BYTES`); it then waits
for that output's lock while holding none, so no two threads wait for each other.

GDAL's block cache (``GDAL_CACHEMAX``) holds written blocks until it is full or the file is closed: the
compression of the last cacheful runs when the caller closes the output, not here (rasterio closes
holding the GIL). ``geotiff_profile(..., compress_threads=True)`` lets GDAL compress on several threads.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple

import numpy as np
from rasterio.windows import Window

from .concurrency import DEFAULT_THREADS, SweepThreads

__all__ = ["ROW_BLOCK", "Output", "BlockWriter"]

#: Output GeoTIFF block edge: outputs are created with 256 x 256 blocks and rows are written in whole blocks.
ROW_BLOCK = 256


@dataclass
class Output:
    """One output raster of a sweep: an open dataset (``count`` bands of ``dtype``) and its nodata value."""

    dataset: object
    count: int
    dtype: str
    nodata: float


class BlockWriter:
    """Buffers one column band's output rows and writes them in whole blocks of :data:`ROW_BLOCK` rows.

    Blocks are put band by band, each band top to bottom (as :func:`~.sweep.sweep` gives them); putting a
    block at row ``r0`` writes every whole block of rows above ``r0``. Pixels outside ``mask`` become each
    output's nodata; ``before_write(window, strips)`` may then change the strips in place (``window`` in
    output pixels) and count what is written. Both run on the writer thread, strip after strip in order:
    the hook must not touch what the caller's thread uses meanwhile, and what it counts is complete when
    :meth:`close` returns. The output datasets belong to the writer thread until then.

    Use it as a context manager (or call :meth:`close`): leaving the block normally writes the rest and
    waits for it; leaving it by an exception drops the strips not written yet and stops the thread.

    Memory: ``(depth + ROW_BLOCK) x band`` pixels per output band, plus up to ``write_queue`` strips (usually
    ``ROW_BLOCK x band``) waiting for the writer thread.

    Args:
        outputs: the output rasters, whose top-left pixel is the region's.
        region: the region of the raster the outputs cover (raster pixels).
        depth: rows one put may hold (the tile side).
        transform_of: raster window -> its affine transform (``src.window_transform``), for the mask.
        mask: shapely geometry in the raster's CRS, or None.
        before_write: hook called with each strip before it is written.
        threads: ``write_queue`` strips may wait for the writer thread (0: write in the caller's thread).
    """

    def __init__(self, outputs: Sequence[Output], region: Window, depth: int, transform_of: Callable,
                 mask=None, before_write: Optional[Callable[[Window, List[np.ndarray]], None]] = None,
                 threads: SweepThreads = DEFAULT_THREADS) -> None:
        self.outputs = list(outputs)
        self.x0, self.y0 = int(region.col_off), int(region.row_off)
        self.y1 = self.y0 + int(region.height)
        self.rows = depth + ROW_BLOCK
        self.transform_of, self.mask, self.before_write = transform_of, mask, before_write
        self.band: Optional[Tuple[int, int]] = None
        self.bufs: List[np.ndarray] = []
        self.base = self.y0
        self.queue = int(threads.write_queue)
        self.pool: Optional[ThreadPoolExecutor] = None
        if self.queue > 0:
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="satseg-block-writer")
        self.pending: Deque[Future] = deque()  # strips handed to the writer thread, oldest first
        self._failed = False

    def __enter__(self) -> "BlockWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def put(self, r0: int, c0: int, band: Tuple[int, int], arrays: Sequence[np.ndarray]) -> None:
        """Output pixels ``(count, h, w)`` per output whose top-left raster pixel is ``(c0, r0)`` in ``band``.

        Raises:
            Exception: what writing an earlier strip raised on the writer thread.
        """
        if band != self.band:
            self._end_band()
            self.band, self.base = band, self.y0
            self.bufs = [np.full((o.count, self.rows, band[1] - band[0]), o.nodata, o.dtype) for o in self.outputs]
        self._flush(r0)
        for buf, values in zip(self.bufs, arrays):
            h, w = values.shape[1:]
            buf[:, r0 - self.base:r0 - self.base + h, c0 - band[0]:c0 - band[0] + w] = values

    def close(self) -> None:
        """Write the current band's remaining rows and wait until every strip is written.

        Raises:
            Exception: what writing a strip raised on the writer thread (the thread is stopped either way).
        """
        try:
            self._end_band()
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the strips not written yet, wait for the one being written and stop the writer thread."""
        self.band = None
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        self.pending.clear()

    def _end_band(self) -> None:
        """Write the current band's remaining rows."""
        if self.band is not None:
            self._flush(self.y1, final=True)
            self.band = None

    def _flush(self, upto: int, final: bool = False) -> None:
        """Write finished rows ``[base, upto)``, in whole blocks unless ``final``."""
        rows = upto - self.base
        if not final:
            rows = (rows // ROW_BLOCK) * ROW_BLOCK
        if rows <= 0:
            return
        c0, c1 = self.band
        window = Window(c0, self.base, c1 - c0, rows)
        if self.pool is None:
            self._write(window, [buf[:, :rows] for buf in self.bufs])
        else:  # the writer thread gets copies: the buffers move on below
            self._submit(window, [buf[:, :rows].copy() for buf in self.bufs])
        keep = self.rows - rows
        for buf, output in zip(self.bufs, self.outputs):
            buf[:, :keep] = buf[:, rows:]
            buf[:, keep:] = output.nodata
        self.base += rows

    def _submit(self, window: Window, strips: List[np.ndarray]) -> None:
        """Hand a strip to the writer thread once fewer than ``write_queue`` wait; raise an earlier write's error."""
        while self.pending and (self.pending[0].done() or len(self.pending) >= self.queue):
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(self._write_in_turn, window, strips))

    def _write_in_turn(self, window: Window, strips: List[np.ndarray]) -> None:
        """On the writer thread: write a strip, unless an earlier one failed (its error reaches the caller)."""
        if self._failed:
            return
        try:
            self._write(window, strips)
        except BaseException:
            self._failed = True
            raise

    def _write(self, window: Window, strips: List[np.ndarray]) -> None:
        """Mask, hook and write the strips of raster pixels ``window``."""
        if self.mask is not None:
            from rasterio.features import geometry_mask

            outside = geometry_mask([self.mask], out_shape=(int(window.height), int(window.width)),
                                    transform=self.transform_of(window))
            for strip, output in zip(strips, self.outputs):
                strip[:, outside] = output.nodata
        out = Window(int(window.col_off) - self.x0, int(window.row_off) - self.y0, window.width, window.height)
        if self.before_write is not None:
            self.before_write(out, strips)
        for strip, output in zip(strips, self.outputs):
            output.dataset.write(strip, window=out)
