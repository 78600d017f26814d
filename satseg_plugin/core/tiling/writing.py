"""Rows of a sweep's outputs, buffered per column band and written in whole GeoTIFF blocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from rasterio.windows import Window

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
    output pixels) and count what is written. Memory: ``(depth + ROW_BLOCK) x band`` pixels per output band.

    Args:
        outputs: the output rasters, whose top-left pixel is the region's.
        region: the region of the raster the outputs cover (raster pixels).
        depth: rows one put may hold (the tile side).
        transform_of: raster window -> its affine transform (``src.window_transform``), for the mask.
        mask: shapely geometry in the raster's CRS, or None.
        before_write: hook called with each strip before it is written.
    """

    def __init__(self, outputs: Sequence[Output], region: Window, depth: int, transform_of: Callable,
                 mask=None, before_write: Optional[Callable[[Window, List[np.ndarray]], None]] = None) -> None:
        self.outputs = list(outputs)
        self.x0, self.y0 = int(region.col_off), int(region.row_off)
        self.y1 = self.y0 + int(region.height)
        self.rows = depth + ROW_BLOCK
        self.transform_of, self.mask, self.before_write = transform_of, mask, before_write
        self.band: Optional[Tuple[int, int]] = None
        self.bufs: List[np.ndarray] = []
        self.base = self.y0

    def put(self, r0: int, c0: int, band: Tuple[int, int], arrays: Sequence[np.ndarray]) -> None:
        """Output pixels ``(count, h, w)`` per output whose top-left raster pixel is ``(c0, r0)`` in ``band``."""
        if band != self.band:
            self.close()
            self.band, self.base = band, self.y0
            self.bufs = [np.full((o.count, self.rows, band[1] - band[0]), o.nodata, o.dtype) for o in self.outputs]
        self._flush(r0)
        for buf, values in zip(self.bufs, arrays):
            h, w = values.shape[1:]
            buf[:, r0 - self.base:r0 - self.base + h, c0 - band[0]:c0 - band[0] + w] = values

    def close(self) -> None:
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
        strips = [buf[:, :rows] for buf in self.bufs]
        if self.mask is not None:
            from rasterio.features import geometry_mask

            outside = geometry_mask([self.mask], out_shape=(rows, c1 - c0),
                                    transform=self.transform_of(Window(c0, self.base, c1 - c0, rows)))
            for strip, output in zip(strips, self.outputs):
                strip[:, outside] = output.nodata
        out = Window(c0 - self.x0, self.base - self.y0, c1 - c0, rows)
        if self.before_write is not None:
            self.before_write(out, strips)
        for strip, output in zip(strips, self.outputs):
            output.dataset.write(strip, window=out)
        keep = self.rows - rows
        for buf, output in zip(self.bufs, self.outputs):
            buf[:, :keep] = buf[:, rows:]
            buf[:, keep:] = output.nodata
        self.base += rows
