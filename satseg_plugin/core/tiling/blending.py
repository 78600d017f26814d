"""Blend strategies: how overlapping tile outputs become one value per pixel.

A strategy makes one band blender per column band. The sweep tells it where a tile row starts, hands it
each tile's output ``(D, T, T)`` with the tile's empty flags, and tells it where the row ends; the blender
gives back finished :class:`Block` s, top to bottom within its band (when a block starting at row ``r0``
is given, every row of the band above ``r0`` has been given).

* :class:`HannBlend` (segmentation): each pixel is the Hann-weighted mean of every tile holding it. It
  keeps ``D x tile x band`` float accumulators, cheap for a few class probabilities.
* :class:`RampBlend` (cluster maps): each tile owns its core, and across a ramp of ``2 half`` pixels
  centred on each core border the outputs go linearly from one tile's to the other's (separably in x and
  y, so four tiles meet at a corner). A Hann window would need ``D x (tile + 256) x band`` accumulators
  for D = 32..64 feature channels; the ramp carries only the ``D x 2 half x band`` rows where tile rows
  meet, and removes the seams that taking each pixel from one tile leaves in deep features.

Both run in numpy on the host, or in torch on the model's GPU (``HannBlend(tile, device)``,
``RampBlend(device)``): the tiles' outputs then never leave the device (issue 16: on an H200 the host's
blending was a third of ``segment_raster``'s time, and copying 35 feature channels a pixel to the host held
``cluster_raster`` to 1/100 of its forward). One band class per strategy runs on either, through the array
operations of :class:`_NumpyArrays` or :class:`_TorchArrays`. :class:`HannBlend` gives finished blocks back
as numpy (a few class probabilities a pixel); :class:`RampBlend` leaves them on the device, where the cluster
map turns the features into ids, so only 2 bytes a pixel come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np
from rasterio.windows import Window

from ..deps import require
from .grid import Span, TileGrid

__all__ = ["Block", "hann_window", "ramp_weights", "HannBlend", "RampBlend"]


@dataclass
class Block:
    """Finished values of raster pixels ``[r0, r1) x [c0, c1)`` of the column band ``band``.

    Attributes:
        values: ``(D, r1 - r0, c1 - c0)`` float32 blended outputs (may be a view into a tile's output): a
            numpy array, or from ``RampBlend(device)`` a torch tensor on that device.
        empty: ``(r1 - r0, c1 - c0)`` bool: nodata pixels (no output should be written there). Always numpy:
            the reader flags nodata on the host, and what is written there is decided on the host.
    """

    r0: int
    r1: int
    c0: int
    c1: int
    values: Any
    empty: np.ndarray
    band: Tuple[int, int]

    @property
    def window(self) -> Window:
        """The block's raster pixels."""
        return Window(self.c0, self.r0, self.c1 - self.c0, self.r1 - self.r0)


def hann_window(size: int) -> np.ndarray:
    """2-D Hann blending weights ``(size, size)``, strictly positive (so a lone tile still counts)."""
    w = np.hanning(size + 2)[1:-1]
    return np.outer(w, w).astype(np.float32)


def ramp_weights(half: int) -> np.ndarray:
    """Weight of the later tile across a ramp of ``2 * half`` pixels (the earlier one gets ``1 - w``)."""
    return (np.arange(2 * half, dtype=np.float32) + 0.5) / max(2 * half, 1)


class _NumpyArrays:
    """The array operations the band blenders need, on the host (numpy)."""

    def zeros(self, shape: Tuple[int, ...], dtype: str) -> np.ndarray:
        return np.zeros(shape, dtype)

    def asarray(self, array: np.ndarray) -> np.ndarray:
        """A host array (weights) where the blend computes."""
        return array

    def copy(self, array: np.ndarray) -> np.ndarray:
        return array.copy()

    def flags(self, empty: np.ndarray) -> np.ndarray:
        return empty

    def host(self, array: np.ndarray) -> np.ndarray:
        return array

    def at_least(self, array: np.ndarray, low: float) -> np.ndarray:
        return np.maximum(array, low)

    def shift_up(self, buf: np.ndarray, rows: int) -> None:
        """Move rows ``rows..`` of axis 1 to the top and zero the rest (numpy copies overlaps safely)."""
        keep = buf.shape[1] - rows
        buf[:, :keep] = buf[:, rows:]
        buf[:, keep:] = 0


class _TorchArrays:
    """The same operations on torch tensors on ``device`` (tile outputs arrive there; rows leave finished)."""

    def __init__(self, device: Any) -> None:
        self.torch = require("torch")
        self.device = device

    def zeros(self, shape: Tuple[int, ...], dtype: str) -> "Any":
        return self.torch.zeros(shape, dtype=getattr(self.torch, dtype), device=self.device)

    def asarray(self, array: np.ndarray) -> "Any":
        return self.torch.from_numpy(array).to(self.device)

    def copy(self, tensor: "Any") -> "Any":
        return tensor.clone()

    def flags(self, empty: np.ndarray) -> "Any":
        return self.torch.from_numpy(np.ascontiguousarray(empty)).to(self.device, non_blocking=True)

    def host(self, tensor: "Any") -> np.ndarray:
        return tensor.cpu().numpy()

    def at_least(self, tensor: "Any", low: float) -> "Any":
        return tensor.clamp_min(low)

    def shift_up(self, buf: "Any", rows: int) -> None:
        keep = buf.shape[1] - rows
        buf[:, :keep] = buf[:, rows:].clone()  # torch leaves overlapping in-place copies undefined
        buf[:, keep:] = 0


class _HannBand:
    """Weighted accumulators of one column band for the rows of one tile, emitted when a tile row starts.

    The accumulators live where ``arrays`` keeps them (host or GPU); tile outputs must be there too, and
    emitted blocks are always numpy.
    """

    def __init__(self, weight: Any, grid: TileGrid, band: Tuple[int, int], arrays: Any) -> None:
        self.weight, self.band, self.arrays = weight, band, arrays
        self.c0, self.width = band[0], band[1] - band[0]
        self.y0, self.y1 = grid.output_rows  # the region's rows, or a work unit's part of them
        self.rows = grid.tile
        self.base = self.y0  # raster row of buffer row 0; moves down as rows are emitted
        self.acc: Any = None
        self.wsum = arrays.zeros((self.rows, self.width), "float32")
        self.invalid = arrays.zeros((self.rows, self.width), "bool")

    def start_row(self, row: Span) -> List[Block]:
        """Rows above the tile row are final."""
        return self._emit(row.origin)

    def add(self, row: Span, col: Span, values: Any, empty: np.ndarray) -> List[Block]:
        """Add a tile's outputs ``(D, T, T)`` at raster ``col.origin, row.origin``."""
        x, y = col.origin, row.origin
        r0, r1 = max(y, self.base), min(y + self.rows, self.y1)
        c0, c1 = max(x, self.c0), min(x + self.rows, self.c0 + self.width)
        if r1 <= r0 or c1 <= c0:
            return []
        if self.acc is None:
            self.acc = self.arrays.zeros((values.shape[0], self.rows, self.width), "float32")
        w = self.weight[r0 - y:r1 - y, c0 - x:c1 - x]
        rows, cols = slice(r0 - self.base, r1 - self.base), slice(c0 - self.c0, c1 - self.c0)
        self.acc[:, rows, cols] += values[:, r0 - y:r1 - y, c0 - x:c1 - x] * w
        self.wsum[rows, cols] += w
        self.invalid[rows, cols] |= self.arrays.flags(empty[r0 - y:r1 - y, c0 - x:c1 - x])
        return []

    def end_row(self, row: Span) -> List[Block]:
        return []

    def finish(self) -> List[Block]:
        return self._emit(self.y1)

    def _emit(self, upto: int) -> List[Block]:
        rows = min(upto, self.y1) - self.base
        if rows <= 0 or self.acc is None:
            return []
        arrays = self.arrays
        values = arrays.host(self.acc[:, :rows] / arrays.at_least(self.wsum[:rows], 1e-12))
        empty = arrays.host(self.invalid[:rows] | (self.wsum[:rows] == 0))
        block = Block(self.base, self.base + rows, self.c0, self.c0 + self.width, values, empty, self.band)
        for buf in (self.acc, self.wsum[None], self.invalid[None]):
            arrays.shift_up(buf, rows)
        self.base += rows
        return [block]


class _Blend:
    """What both strategies share: where they compute (None: the host, in numpy; a ``torch.device``: there)."""

    def __init__(self, device: Any = None) -> None:
        self.arrays = _NumpyArrays() if device is None else _TorchArrays(device)

    @property
    def on_device(self) -> bool:
        """Whether tile outputs must be tensors on the device (not numpy arrays)."""
        return not isinstance(self.arrays, _NumpyArrays)


class HannBlend(_Blend):
    """Hann-weighted mean of every tile holding a pixel (use with :func:`~.grid.hann_grid`).

    Args:
        tile: the tile side.
        device: None (default): accumulate on the host, tile outputs are numpy arrays. A ``torch.device``:
            accumulate there; tile outputs must then be ``(D, T, T)`` float32 tensors on that device (the
            model's outputs, never copied to the host), and finished blocks come back as numpy.
    """

    def __init__(self, tile: int, device: Any = None) -> None:
        super().__init__(device)
        self.weight = self.arrays.asarray(hann_window(tile))

    def band(self, grid: TileGrid, band: Tuple[int, int]) -> _HannBand:
        """The blender of one column band."""
        return _HannBand(self.weight, grid, band, self.arrays)


class _RampBand:
    """Ramp blending of one column band; tiles come left to right, tile rows top to bottom.

    The carried ramps live where ``arrays`` keeps them (host or GPU); tile outputs must be there too, and
    the emitted blocks' values stay there (views into the tile outputs, blended in place).
    """

    def __init__(self, grid: TileGrid, band: Tuple[int, int], arrays: Any) -> None:
        self.grid, self.band, self.arrays = grid, band, arrays
        self.h, self.ramp = grid.half, arrays.asarray(ramp_weights(grid.half))
        self.y0, self.y1 = grid.output_rows  # the region's rows, or a work unit's part of them
        # The ramp rows of the previous tile row (blended in x), one buffer for the band: a tile's columns
        # are read from it and then overwritten with this row's ramp rows (tiles of a row never share columns).
        self.carry: Any = None  # (D, 2h, band) float32
        self.carry_row: Optional[int] = None  # raster row of carry[:, 0] for the tile row being processed
        self.left: Optional[Tuple[int, Any]] = None  # (first column, (D, rows, 2h)): previous tile's ramp

    def start_row(self, row: Span) -> List[Block]:
        self.left = None
        return []

    def add(self, row: Span, col: Span, values: Any, empty: np.ndarray) -> List[Block]:
        """Blend a tile's outputs with its left neighbour's and the previous row's ramps; give its finished part."""
        h, ramp, (bc0, bc1) = self.h, self.ramp, self.band
        ty, ys0, ys1 = row
        tx, xs0, xs1 = col
        piece = values[:, ys0 - ty:ys1 - ty, xs0 - tx:xs1 - tx]
        if self.left is not None and self.left[0] == xs0:
            piece[:, :, :2 * h] = self.left[1] * (1 - ramp) + piece[:, :, :2 * h] * ramp
        if xs1 < self.grid.raster_width:  # the last 2h columns wait for the next tile
            xs1 -= 2 * h
            self.left = (xs1, self.arrays.copy(piece[:, :, xs1 - xs0:]))
        a, b = max(xs0, bc0), min(xs1, bc1)
        if b <= a:
            return []
        piece = piece[:, :, a - xs0:b - xs0]
        if self.carry_row == ys0:
            top = self.carry[:, :, a - bc0:b - bc0]
            piece[:, :2 * h] = top * (1 - ramp[:, None]) + piece[:, :2 * h] * ramp[:, None]
        r1 = ys1
        if ys1 < self.grid.raster_height:  # the last 2h rows wait for the next tile row
            r1 = ys1 - 2 * h
            if self.carry is None:
                self.carry = self.arrays.zeros((piece.shape[0], 2 * h, bc1 - bc0), "float32")
            self.carry[:, :, a - bc0:b - bc0] = piece[:, r1 - ys0:]
        r0, r1 = max(ys0, self.y0), min(r1, self.y1)
        if r1 <= r0:
            return []
        return [Block(r0, r1, a, b, piece[:, r0 - ys0:r1 - ys0], empty[r0 - ty:r1 - ty, a - tx:b - tx], self.band)]

    def end_row(self, row: Span) -> List[Block]:
        self.carry_row = row.stop - 2 * self.h if row.stop < self.grid.raster_height else None
        return []

    def finish(self) -> List[Block]:
        return []


class RampBlend(_Blend):
    """Cores with linear ramps across their borders (use with :func:`~.grid.ramp_grid`).

    Args:
        device: None (default): blend on the host, tile outputs are numpy arrays and so are the blocks'
            values. A ``torch.device``: blend there; tile outputs must then be ``(D, T, T)`` float32 tensors on
            that device, and the blocks' values are tensors there too (only ``Block.empty`` is numpy), so a
            consumer can reduce them on the device before anything is copied back.
    """

    def band(self, grid: TileGrid, band: Tuple[int, int]) -> _RampBand:
        """The blender of one column band."""
        return _RampBand(grid, band, self.arrays)
