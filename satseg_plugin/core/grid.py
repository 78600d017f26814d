"""Patch grids: where patches start along each axis, for each edge mode.

Pure integer arithmetic, no IO: ``rasterio.windows`` describes one window well but has no notion of a
grid with a stride and an edge policy, so that part is ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

from .errors import InputError

__all__ = ["EDGE_MODES", "PatchWindow", "axis_offsets", "column_bands", "patch_grid"]

#: ``shift``: the last patch moves inward so the edge is covered; ``pad``: the last patch runs past the
#: edge and is padded with nodata; ``drop``: patches that do not fit are left out.
EDGE_MODES: Tuple[str, ...] = ("shift", "pad", "drop")


@dataclass(frozen=True)
class PatchWindow:
    """One patch of a grid, in pixel coordinates of the source raster.

    ``index`` is the cell's row-major number in the whole grid (``row * columns + col``), stable whatever
    subset of the grid is kept. The patch always has the requested ``width`` x ``height``; in ``pad`` mode
    it may run past the region.
    """

    index: int
    row: int
    col: int
    x_off: int
    y_off: int
    width: int
    height: int


def column_bands(x0: int, width: int, band: int) -> List[Tuple[int, int]]:
    """Split columns ``[x0, x0 + width)`` into ``(start, stop)`` bands of at most ``band`` columns."""
    return [(c, min(c + band, x0 + width)) for c in range(x0, x0 + width, band)]


def axis_offsets(start: int, length: int, patch: int, stride: int, edge: str) -> Tuple[List[int], bool]:
    """Start offsets of patches along one axis of a region ``[start, start + length)``.

    Args:
        start: first pixel of the region on this axis.
        length: region length in pixels (> 0).
        patch: patch size in pixels (> 0).
        stride: step between patch starts (> 0); smaller than ``patch`` means overlap.
        edge: one of :data:`EDGE_MODES`.

    Returns:
        The offsets, and whether any patch runs past the region's end (so needs padding or reading
        beyond the region).

    Raises:
        InputError: for a bad size, stride or edge mode.
    """
    if patch <= 0:
        raise InputError(f"patch size must be a positive number of pixels, got {patch}.")
    if stride <= 0:
        raise InputError(f"stride must be a positive number of pixels, got {stride}. "
                         "Use the patch size for touching patches, less for overlap.")
    if edge not in EDGE_MODES:
        raise InputError(f"unknown edge mode '{edge}'; choose one of {', '.join(EDGE_MODES)}.")
    if length <= 0:
        return [], False
    end = start + length
    if patch > length:
        if edge == "drop":
            return [], False
        # A single patch cannot be shifted inside a region smaller than itself: it starts at the region
        # start and runs past its end, in 'shift' as in 'pad'.
        return [start], True
    offsets = list(range(start, end - patch + 1, stride))
    last_end = offsets[-1] + patch
    if last_end < end:
        if edge == "shift":
            offsets.append(end - patch)
        elif edge == "pad":
            off = offsets[-1] + stride
            padded = False
            while off < end:  # with stride > patch, the next start may already lie past the end
                offsets.append(off)
                if off + patch >= end:
                    padded = off + patch > end
                    break
                off += stride
            return offsets, padded
    return offsets, False


def patch_grid(region: Tuple[int, int, int, int], patch_size: Tuple[int, int], stride: Tuple[int, int],
               edge: str) -> Tuple[List[PatchWindow], bool]:
    """All patches covering a pixel region, row-major.

    Args:
        region: ``(x_off, y_off, width, height)`` of the region in source pixels.
        patch_size: ``(width, height)`` of a patch.
        stride: ``(stride_x, stride_y)``.
        edge: one of :data:`EDGE_MODES`.

    Returns:
        The patch windows (row/col are grid indices) and whether any patch runs past the region.
    """
    x0, y0, width, height = region
    xs, pad_x = axis_offsets(x0, width, patch_size[0], stride[0], edge)
    ys, pad_y = axis_offsets(y0, height, patch_size[1], stride[1], edge)
    windows = [PatchWindow(r * len(xs) + c, r, c, x, y, patch_size[0], patch_size[1])
               for r, y in enumerate(ys) for c, x in enumerate(xs)]
    return windows, pad_x or pad_y
