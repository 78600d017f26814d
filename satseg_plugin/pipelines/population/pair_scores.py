"""Score how segments of two consecutive frames correspond under a flow: the sparse flow-agreement sums.

Segment ``a`` of frame ``t`` and segment ``b`` of frame ``t + 1`` correspond where the flow carries ``a``'s
pixels into ``b`` (forward pass) or pulls ``b``'s pixels back into ``a`` (backward pass); over those pixels the
cosine between the flow at the source and the flow at the landing pixel is summed, as in the original study.

Unlike the original, which compared every segment of ``t`` with every segment of ``t + 1`` in Python and
ran out of memory, the scores of all pairs are summed in one vectorised pass over pixel correspondences,
keyed by ``(a, b)`` (sparse counting): time O(pixels log pixels), memory O(pixels + links). The backward
pass finds the pairs the forward pass misses, such as a merge target that no advected pixel hit.
:mod:`.tracks` turns the scores into links, events and track ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ...core.errors import InputError

__all__ = [
    "DEFAULT_MIN_SPEED",
    "Flow",
    "PairScores",
    "check_flow",
    "check_segments",
    "score_pairs",
    "segment_sizes",
    "sum_by_pair",
]

#: Flow slower than this (pixels per frame) counts as "not moving": its cosine with any vector counts as 1
#: (agreement), so a still community links to itself. Horn-Schunck smoothing leaks a few hundredths of a
#: pixel of motion into still areas; taking those directions at face value would score still communities
#: by noise.
DEFAULT_MIN_SPEED = 0.05

#: A flow: ``(u, v)`` float arrays ``(H, W)`` of displacement in pixels per frame (+column, +row).
Flow = Tuple[np.ndarray, np.ndarray]


@dataclass
class PairScores:
    """Scores of every segment pair that any pixel correspondence joins, sorted by ``(segment, next_segment)``.

    Attributes:
        segment, next_segment: ``(n,)`` int64 segment ids of the earlier and the later frame.
        forward_score, backward_score: ``(n,)`` float64 sums of cosines of each pass.
        forward_overlap, backward_overlap: ``(n,)`` int64 correspondences found by each pass.
    """

    segment: np.ndarray
    next_segment: np.ndarray
    forward_score: np.ndarray
    backward_score: np.ndarray
    forward_overlap: np.ndarray
    backward_overlap: np.ndarray

    @property
    def score(self) -> np.ndarray:
        """The combined score: the mean of the two passes' sums.

        Both passes sample the same correspondence between the frames, so the score is their average rather
        than the larger of the two (which would link a pair that one pass sees agreeing on a few pixels and
        the other sees disagreeing on many) or their plain sum (the same sign, in doubled units). A pair
        only one pass finds keeps that pass's sign.
        """
        return 0.5 * (self.forward_score + self.backward_score)

    @property
    def overlap(self) -> np.ndarray:
        """Correspondences of the pair: the larger of the two passes' counts."""
        return np.maximum(self.forward_overlap, self.backward_overlap)


# --------------------------------------------------------------------------------------------- validation

def check_segments(seg: Any, name: str, shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Return ``seg`` as a 2-D integer array of non-negative ids, or raise InputError naming SEGMENTS."""
    array = np.asarray(seg)
    if array.ndim != 2 or array.size == 0:
        raise InputError(f"{name} must be a 2-D segment raster, got shape {array.shape}. Give one single-band "
                         "segment raster per frame.", "SEGMENTS")
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"{name} must hold integer segment ids, got dtype {array.dtype}. Use the segment "
                         "rasters written by Population clusters (0 = no segment).", "SEGMENTS")
    if shape is not None and array.shape != shape:
        raise InputError(f"{name} has shape {array.shape} but the first frame has {shape}; all frames must "
                         "share one grid. Segment every frame on the same grid.", "SEGMENTS")
    if array.min() < 0:
        raise InputError(f"{name} holds negative ids; segment ids must be 0 (none) or positive.", "SEGMENTS")
    if array.max() > np.iinfo(np.int32).max:
        raise InputError(f"{name} holds ids above {np.iinfo(np.int32).max}; renumber the segments 1..N.",
                         "SEGMENTS")
    return array


def check_flow(flow: Any, name: str, shape: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Return ``(u, v)`` as float32 arrays of ``shape`` with NaN and infinities replaced by 0 (no motion)."""
    try:
        u, v = flow
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a pair (u, v) of flow arrays.", "FLOWS") from None
    arrays = []
    for part, array in (("u", u), ("v", v)):
        array = np.asarray(array)
        if array.shape != shape:
            raise InputError(f"{name} {part} has shape {array.shape} but the segments have {shape}; compute the "
                             "flow on the segments' grid.", "FLOWS")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise InputError(f"{name} {part} must hold numbers, got dtype {array.dtype}.", "FLOWS")
        array = np.asarray(array, np.float32)
        if not np.isfinite(array).all():
            array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)  # a copy: the caller's array is kept
        arrays.append(array)
    return arrays[0], arrays[1]


# --------------------------------------------------------------------------------------------- scoring

def _cosines(u1: np.ndarray, v1: np.ndarray, u2: np.ndarray, v2: np.ndarray, min_speed: float) -> np.ndarray:
    """Cosine between vectors ``(u1, v1)`` and ``(u2, v2)``, float64; 1 where either is slower than ``min_speed``."""
    u1, v1, u2, v2 = (np.asarray(x, np.float64) for x in (u1, v1, u2, v2))
    norm1, norm2 = np.hypot(u1, v1), np.hypot(u2, v2)
    moving = (norm1 >= min_speed) & (norm2 >= min_speed)
    norm1 *= norm2
    moving &= norm1 > 0
    cos = np.divide(u1 * u2 + v1 * v2, norm1, out=np.ones(u1.shape, np.float64), where=moving)
    return np.clip(cos, -1.0, 1.0, out=cos)


def _land(pixels: np.ndarray, du: np.ndarray, dv: np.ndarray, height: int, width: int
          ) -> Tuple[np.ndarray, np.ndarray]:
    """Move flat pixel indices by ``(du, dv)`` to the nearest pixel; return ``(kept, landed)`` flat indices.

    Pixels that leave the grid are dropped (``kept`` is the subset of ``pixels`` that stayed).
    """
    rows, cols = np.divmod(pixels, width)
    to_rows = np.rint(rows + dv.astype(np.float64))
    to_cols = np.rint(cols + du.astype(np.float64))
    inside = (to_rows >= 0) & (to_rows < height) & (to_cols >= 0) & (to_cols < width)
    landed = to_rows[inside].astype(np.int64) * width + to_cols[inside].astype(np.int64)
    return pixels[inside], landed


def sum_by_pair(a: np.ndarray, b: np.ndarray, weights: np.ndarray
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum ``weights`` and count rows per distinct ``(a, b)``: ``(keys, sums, counts)``, keys ``a << 32 | b`` sorted.

    With few distinct ids (the table of every ``(a, b)`` no larger than a few times the rows) the pairs are
    counted by ``np.bincount`` over that table, O(n); otherwise by one sort of the int64 keys, O(n log n).
    Either way memory is O(n + pairs) and no loop runs over segment pairs.
    """
    a, b = a.astype(np.int64), b.astype(np.int64)
    if a.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int64)
    columns = int(b.max()) + 1
    cells = (int(a.max()) + 1) * columns
    if cells <= max(4 * a.size, 1 << 16):
        dense = a * columns + b
        counts = np.bincount(dense, minlength=cells)
        sums = np.bincount(dense, weights=weights, minlength=cells)
        used = np.flatnonzero(counts)
        rows, cols = np.divmod(used, columns)
        return (rows << 32) | cols, sums[used], counts[used].astype(np.int64)
    keys = (a << 32) | b
    unique, inverse = np.unique(keys, return_inverse=True)
    sums = np.bincount(inverse, weights=weights, minlength=unique.size)
    counts = np.bincount(inverse, minlength=unique.size).astype(np.int64)
    return unique, sums, counts


def score_pairs(seg_a: np.ndarray, seg_b: np.ndarray, flow_ab: Flow, flow_next: Optional[Flow] = None,
                min_speed: float = DEFAULT_MIN_SPEED) -> PairScores:
    """Score every pair of segments of two consecutive frames that the flow joins.

    Forward pass: every pixel ``q`` of a segment ``a`` of ``seg_a`` moves by the flow at ``q`` to the nearest
    pixel ``p``; where ``seg_b[p] = b > 0``, ``cos(flow_ab[q], g[p])`` is added to the score of ``(a, b)``.
    Backward pass: every pixel ``p`` of a segment ``b`` moves by minus the flow at ``p`` (the approximate
    inverse flow) to ``q``; where ``seg_a[q] = a > 0`` the same cosine is added to the backward score of
    ``(a, b)``. ``g`` is ``flow_next`` (the flow of the next pair, how ``b`` goes on moving: the original's
    rule) or, when None, ``flow_ab`` itself. Vectors slower than ``min_speed`` agree with everything
    (cosine 1), so still communities link.

    Args:
        seg_a: ``(H, W)`` integer segment ids of frame ``t`` (0 = none).
        seg_b: ``(H, W)`` integer segment ids of frame ``t + 1``.
        flow_ab: ``(u, v)`` flow from ``t`` to ``t + 1`` in pixels per frame; NaN reads as no motion.
        flow_next: ``(u, v)`` flow from ``t + 1`` to ``t + 2``, or None to compare with ``flow_ab``.
        min_speed: pixels per frame below which a vector counts as still.

    Returns:
        The scores of every pair either pass found.

    Raises:
        InputError: on arrays of the wrong shape or type (naming SEGMENTS or FLOWS).
    """
    seg_a = check_segments(seg_a, "the segments of the earlier frame")
    shape = (int(seg_a.shape[0]), int(seg_a.shape[1]))
    seg_b = check_segments(seg_b, "the segments of the later frame", shape)
    fu, fv = check_flow(flow_ab, "the flow", shape)
    gu, gv = (fu, fv) if flow_next is None else check_flow(flow_next, "the next pair's flow", shape)
    height, width = shape
    flat_a, flat_b = seg_a.ravel(), seg_b.ravel()
    fu, fv, gu, gv = fu.ravel(), fv.ravel(), gu.ravel(), gv.ravel()

    # forward: q in a -> p = q + f(q)
    q = np.flatnonzero(flat_a)
    q, p = _land(q, fu[q], fv[q], height, width)
    hit = flat_b[p] > 0
    q, p = q[hit], p[hit]
    forward = sum_by_pair(flat_a[q], flat_b[p], _cosines(fu[q], fv[q], gu[p], gv[p], min_speed))

    # backward: p in b -> q = p - f(p)
    p = np.flatnonzero(flat_b)
    p, q = _land(p, -fu[p], -fv[p], height, width)
    hit = flat_a[q] > 0
    q, p = q[hit], p[hit]
    backward = sum_by_pair(flat_a[q], flat_b[p], _cosines(fu[q], fv[q], gu[p], gv[p], min_speed))
    del q, p, hit

    keys = np.union1d(forward[0], backward[0])
    scores = {}
    for name, (pass_keys, sums, counts) in (("forward", forward), ("backward", backward)):
        where = np.searchsorted(keys, pass_keys)
        score, overlap = np.zeros(keys.size, np.float64), np.zeros(keys.size, np.int64)
        score[where], overlap[where] = sums, counts
        scores[f"{name}_score"], scores[f"{name}_overlap"] = score, overlap
    return PairScores(segment=keys >> 32, next_segment=keys & 0xFFFFFFFF, **scores)


def segment_sizes(seg: np.ndarray) -> Dict[int, int]:
    """Pixel count of every segment id > 0."""
    ids, counts = np.unique(seg[seg > 0], return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist()))
