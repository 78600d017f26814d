"""Reading one tile: the window clipped to the raster, padded, nodata flagged and filled with band means.

The nodata rule is :func:`~..raster.nodata_flags`, the one every reader of model input uses (re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import rasterio
from rasterio.windows import Window

from ..raster import nodata_flags, raster_env

__all__ = ["Tile", "TileReader", "nodata_flags"]


@dataclass
class Tile:
    """A read tile: ``raw`` ``(C, T, T)`` float32 model input in band units, ``empty`` ``(T, T)`` bool."""

    window: Window
    raw: np.ndarray
    empty: np.ndarray


class TileReader:
    """Reads square tiles of some bands of a raster as model input.

    Pixels past the raster's edge and nodata pixels (:func:`nodata_flags`) are flagged ``empty`` and fed
    as ``fill`` (the band means the model was normalised with, i.e. zero after normalisation, the most
    neutral input a network knows).

    Reading one tile touches nothing but ``src`` and this object's constants, so tiles are read ahead on
    reader threads (:class:`~.readahead.TileQueue`), each through its own copy (:meth:`reopen`).

    Args:
        src: the open raster.
        bands: 1-based bands to read, in model input order.
        fill: ``(C,)`` value per band fed for empty pixels.
        tile: tile side in pixels.
    """

    def __init__(self, src: rasterio.DatasetReader, bands: Sequence[int], fill: np.ndarray, tile: int) -> None:
        self.src, self.bands, self.tile = src, list(bands), tile
        self.fill = np.asarray(fill, np.float32).reshape(-1, 1)
        self._owns_src = False

    def reopen(self) -> "TileReader":
        """This reader on a new handle of the same raster, for one thread (a rasterio dataset is not thread-safe).

        The handle is opened with SatSeg's GDAL settings (:func:`~..raster.raster_env`) in the calling
        thread; the copy's :meth:`close` closes it.
        """
        with raster_env():
            src = rasterio.open(self.src.name)
        copy = TileReader(src, self.bands, self.fill[:, 0], self.tile)
        copy._owns_src = True
        return copy

    def close(self) -> None:
        """Close the handle :meth:`reopen` opened (a reader given an open dataset leaves it open)."""
        if self._owns_src:
            self.src.close()

    def read(self, window: Window) -> Tile:
        """The tile whose top-left raster pixel is ``window``'s offset (its size is the reader's tile)."""
        src, tile = self.src, self.tile
        tx, ty = int(window.col_off), int(window.row_off)
        ix0, iy0 = max(tx, 0), max(ty, 0)
        ix1, iy1 = min(tx + tile, src.width), min(ty + tile, src.height)
        inside = Window(ix0, iy0, ix1 - ix0, iy1 - iy0)
        data = src.read(self.bands, window=inside)
        raw = np.empty((len(self.bands), tile, tile), np.float32)
        empty = np.ones((tile, tile), bool)
        rows, cols = slice(iy0 - ty, iy1 - ty), slice(ix0 - tx, ix1 - tx)
        raw[:, rows, cols] = data
        empty[rows, cols] = nodata_flags(src, self.bands, inside, data)
        raw[:, empty] = self.fill
        return Tile(Window(tx, ty, tile, tile), raw, empty)
