"""Where a tiled sweep cuts: tile origins and the pixels each tile's output counts for, as a value.

A :class:`TileGrid` is computed without reading a pixel. Two layouts exist:

* :func:`hann_grid` (segmentation): tiles anchored at the region's origin, each blended over its whole
  extent with Hann weights, so the span of a tile is the tile itself;
* :func:`ramp_grid` (cluster maps): tiles anchored at the *raster's* origin, whatever region is asked for
  (so a pixel's result never depends on the extent), each owning its core plus a ramp of ``half`` pixels
  past every inner core border (:func:`support`).

The tile side comes from :func:`plan_tiles`: TILE_SIZE clamped to the pixels covered and, on CUDA, to what
:func:`device_tile_limit` measures the device can hold (the one function here that runs the model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

import numpy as np
from rasterio.windows import Window

from ..errors import InputError
from ..grid import axis_offsets, column_bands
from ..progress import Feedback

__all__ = ["DEFAULT_TILE", "Span", "TileGrid", "fit_tile", "check_overlap", "plan_tiles", "device_tile_limit",
           "tile_origins", "core_spans", "ramp_half", "support", "hann_grid", "ramp_grid"]

#: Tile side when none is asked for.
DEFAULT_TILE = 512


class Span(NamedTuple):
    """One tile along one axis: its first pixel and the pixels ``[start, stop)`` its output counts for."""

    origin: int
    start: int
    stop: int


@dataclass(frozen=True)
class TileGrid:
    """The tiles a sweep computes for a region of a raster.

    Attributes:
        tile: tile side in pixels.
        overlap: overlap of neighbouring tiles in pixels.
        region: the pixels to produce (a window inside the raster).
        rows: the tile rows, top to bottom, as :class:`Span` s of raster rows.
        cols: the tile columns, left to right, as :class:`Span` s of raster columns.
        raster_height: the raster's height in pixels.
        raster_width: the raster's width in pixels.
        half: half width of the blend ramp centred on core borders (ramp grids); 0 for Hann grids.
        part_rows: raster rows ``[a, b)`` of the region a distributed work unit gives (:meth:`row_part`);
            None: every row of the region.
    """

    tile: int
    overlap: int
    region: Window
    rows: Tuple[Span, ...]
    cols: Tuple[Span, ...]
    raster_height: int
    raster_width: int
    half: int = 0
    part_rows: Optional[Tuple[int, int]] = None

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def window(self, row: Span, col: Span) -> Window:
        """The tile at ``row``, ``col`` in raster pixels (it may run past the raster's edge)."""
        return Window(col.origin, row.origin, self.tile, self.tile)

    def windows(self) -> List[Window]:
        """Every tile, row-major."""
        return [self.window(r, c) for r in self.rows for c in self.cols]

    def column_bands(self, band_columns: int) -> List[Tuple[int, int]]:
        """The region's columns cut into ``(start, stop)`` bands of at most ``band_columns``."""
        return column_bands(int(self.region.col_off), int(self.region.width), band_columns)

    def cols_meeting(self, band: Tuple[int, int]) -> List[Span]:
        """The tile columns whose output counts for some column of ``band``."""
        return [c for c in self.cols if c.stop > band[0] and c.start < band[1]]

    @property
    def output_rows(self) -> Tuple[int, int]:
        """Raster rows ``[y0, y1)`` a sweep of this grid gives blocks for: the region's, or :attr:`part_rows`."""
        if self.part_rows is not None:
            return self.part_rows
        return int(self.region.row_off), int(self.region.row_off + self.region.height)

    def row_part(self, rows: Tuple[int, int]) -> "TileGrid":
        """The grid of a work unit that gives only raster rows ``[a, b)`` of the region, the same values.

        It keeps the tile rows whose output counts for some row of ``[a, b)``; the region, the tile columns
        and so the column bands stay the whole run's, so each tile row is batched as in the whole sweep.
        The blends then give every row of ``[a, b)`` bit for bit: a Hann pixel is the same sum, from zero,
        of the same tiles in the same order (tile rows top to bottom, tiles left to right), and a ramp
        pixel's earlier tile row (whose ramp rows are carried into the next) also holds the pixel in its
        support, so it is kept. Cost: the tile rows crossing ``a`` and ``b`` are computed by both units.

        Raises:
            ValueError: when ``[a, b)`` is empty or not inside the region's rows.
        """
        a, b = int(rows[0]), int(rows[1])
        y0, y1 = int(self.region.row_off), int(self.region.row_off + self.region.height)
        if not y0 <= a < b <= y1:
            raise ValueError(f"rows {a}..{b} are not inside the region's rows {y0}..{y1}")
        return replace(self, rows=tuple(r for r in self.rows if r.stop > a and r.start < b), part_rows=(a, b))

    def row_ranges(self, parts: int, step: int, min_rows: int = 1) -> List[Tuple[int, int]]:
        """The region's rows cut into at most ``parts`` ranges ``(a, b)`` for :meth:`row_part`.

        Every range starts a whole number of ``step`` rows below the region's first row (``step`` =
        the outputs' block height: parts then fill whole output blocks) and, unless the region is shorter,
        holds at least ``min_rows`` rows (a unit much shorter than a tile would mostly recompute the tile
        rows it shares with its neighbours). The ranges are as equal as ``step`` allows; the last one takes
        the rest (or joins the one before when it would be shorter than ``min_rows``).
        """
        y0, height = int(self.region.row_off), int(self.region.height)
        steps = -(-height // step)
        parts = max(1, min(int(parts), steps // -(-max(int(min_rows), 1) // step)))
        cuts = [y0 + i * steps // parts * step for i in range(parts)] + [y0 + height]
        if len(cuts) > 2 and cuts[-1] - cuts[-2] < min_rows:
            del cuts[-2]
        return list(zip(cuts[:-1], cuts[1:]))


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(max(value, multiple) / multiple) * multiple)


def fit_tile(requested: Optional[int], multiple: int, extent: Optional[Tuple[int, int]] = None,
             max_tile: Optional[int] = None) -> int:
    """The tile side: ``requested`` (None or 0: :data:`DEFAULT_TILE`) rounded up to the model's ``multiple``.

    Args:
        requested: the asked-for side in pixels.
        multiple: the model's input multiple.
        extent: ``(width, height)`` of the pixels the tiles must cover: the side is at most the longer one
            rounded up to ``multiple`` (a larger tile only computes padding: one 2048 px tile on a 256 px
            raster peaked at 2.97 GB, 1.04 GB at 256 px).
        max_tile: the largest side the device holds (:func:`device_tile_limit`): the side is at most that,
            rounded down to ``multiple`` (never below ``multiple``).
    """
    tile = _round_up(requested or DEFAULT_TILE, multiple)
    if extent is not None:
        tile = min(tile, _round_up(max(extent), multiple))
    if max_tile is not None:
        tile = min(tile, max(multiple, int(max_tile) // multiple * multiple))
    return tile


def check_overlap(tile: int, overlap: Optional[int]) -> int:
    """The overlap (None: a quarter of the tile), or an :class:`InputError` naming OVERLAP."""
    overlap = tile // 4 if overlap is None else int(overlap)
    if not 0 <= overlap < tile:
        raise InputError(f"must be at least 0 and less than the tile size ({tile}), got {overlap}.", "OVERLAP")
    return overlap


def plan_tiles(requested: Optional[int], overlap: Optional[int], multiple: int, extent: Tuple[int, int],
               max_tile: Optional[int] = None, feedback: Optional[Feedback] = None,
               what: str = "the region") -> Tuple[int, int]:
    """Tile side and overlap of a sweep: :func:`fit_tile` clamped to ``extent`` and ``max_tile``.

    OVERLAP is checked against the tile asked for. When the tile is clamped, the default OVERLAP and one
    that no longer fits become a quarter of the smaller tile, and ``feedback`` is told the tile size used
    and why. Without clamping the result is exactly ``fit_tile(requested, multiple)`` and
    ``check_overlap`` of it, so outputs do not change.

    Args:
        requested: TILE_SIZE (None or 0: :data:`DEFAULT_TILE`).
        overlap: OVERLAP (None: a quarter of the tile).
        multiple: the model's input multiple.
        extent: ``(width, height)`` of the pixels the tiles cover.
        max_tile: the largest side the device holds, or None.
        feedback: where the clamping is reported.
        what: what ``extent`` is, for that message (``the region``, ``the raster``).
    """
    wanted = fit_tile(requested, multiple)
    checked = check_overlap(wanted, overlap)
    tile = fit_tile(requested, multiple, extent, max_tile)
    if tile == wanted:
        return tile, checked
    reasons = []
    if tile == fit_tile(requested, multiple, extent):
        reasons.append(f"{what} is only {extent[0]} x {extent[1]} px, so a larger tile would compute padding")
    if max_tile is not None and tile == fit_tile(requested, multiple, None, max_tile):
        reasons.append(f"the device's free memory holds tiles of at most about {int(max_tile)} px")
    overlap = check_overlap(tile, None if overlap is None or checked >= tile else checked)
    if feedback is not None:
        feedback.info(f"Tile size {tile} px instead of {wanted} px (overlap {overlap} px): {'; '.join(reasons)}.")
    return tile, overlap


def device_tile_limit(predict: Callable[[np.ndarray], Any], channels: int, multiple: int, device: Any,
                      share: float = 0.6, probe: int = 256) -> Optional[int]:
    """The largest tile side one tile (a batch of 1) of ``predict`` fits in on a CUDA ``device``; None elsewhere.

    No library says how much memory a network's forward pass needs at a given input size, so this measures
    it: one forward pass of a ``probe`` px tile, its peak allocation per pixel (activations grow with the
    pixel count), scaled to ``share`` of the memory the device can still give (free plus torch's cache).
    The fixed costs of a small probe make the estimate err on the safe side.
    """
    if getattr(device, "type", str(device)) != "cuda":
        return None
    from ..deps import require

    torch = require("torch")
    side = _round_up(probe, multiple)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    predict(np.zeros((1, channels, side, side), np.float32))
    torch.cuda.synchronize(device)
    per_pixel = max(torch.cuda.max_memory_allocated(device) - base, 1) / side ** 2
    free, _total = torch.cuda.mem_get_info(device)
    available = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(math.sqrt(share * available / per_pixel))


def tile_origins(start: int, length: int, tile: int, stride: int) -> List[int]:
    """Tile starts covering ``[start, start + length)``; a region shorter than a tile gets one tile."""
    if length <= tile:
        return [start]
    offsets, _ = axis_offsets(start, length, tile, stride, "shift")
    return offsets


def core_spans(length: int, tile: int, overlap: int) -> List[Tuple[int, int, int]]:
    """Tiles along one axis of ``length`` pixels: ``(origin, core_start, core_end)`` per tile.

    Cores partition ``[0, length)``: the border between two neighbours is the midpoint of their overlap.
    """
    if length <= tile:
        return [(0, 0, length)]
    origins, _ = axis_offsets(0, length, tile, tile - overlap, "shift")
    bounds = [0] + [(a + b + tile) // 2 for a, b in zip(origins[:-1], origins[1:])] + [length]
    return [(o, bounds[i], bounds[i + 1]) for i, o in enumerate(origins)]


def ramp_half(overlap: int) -> int:
    """Half width of the blend ramp centred on each core border: a quarter of the overlap.

    Ramp pixels are at least ``overlap / 4`` from either tile's edge, where zero padding has faded.
    """
    return overlap // 4


def support(span: Tuple[int, int, int], length: int, half: int) -> Tuple[int, int]:
    """Pixels ``[start, stop)`` where a tile's output has a weight: its core plus ``half`` past inner borders."""
    _, start, stop = span
    return (start - half if start > 0 else 0), (stop + half if stop < length else length)


def hann_grid(region: Window, raster_height: int, raster_width: int, tile: int, overlap: int) -> TileGrid:
    """Tiles anchored at the region's origin, ``tile - overlap`` apart, the last one shifted to end with it."""
    x0, y0, width, height = (int(v) for v in (region.col_off, region.row_off, region.width, region.height))

    def spans(start: int, length: int) -> Tuple[Span, ...]:
        return tuple(Span(o, o, o + tile) for o in tile_origins(start, length, tile, tile - overlap))

    return TileGrid(tile, overlap, region, spans(y0, height), spans(x0, width), raster_height, raster_width)


def ramp_grid(region: Window, raster_height: int, raster_width: int, tile: int, overlap: int) -> TileGrid:
    """Tiles of the raster-anchored core grid whose support (core plus ramp) meets the region."""
    half = ramp_half(overlap)

    def spans(length: int, lo: int, hi: int) -> Tuple[Span, ...]:
        out = (Span(c[0], *support(c, length, half)) for c in core_spans(length, tile, overlap))
        return tuple(s for s in out if s.stop > lo and s.start < hi)

    x0, y0 = int(region.col_off), int(region.row_off)
    return TileGrid(tile, overlap, region, spans(raster_height, y0, y0 + int(region.height)),
                    spans(raster_width, x0, x0 + int(region.width)), raster_height, raster_width, half)
