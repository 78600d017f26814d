"""Follow population communities from frame to frame: links, split/merge/birth/death events and track ids.

Input is one segment raster per frame (integer, ``0`` = no segment, ids ``1..N`` unique within a frame) and
one flow per consecutive pair (``u``, ``v`` in pixels per frame, ``u`` = +column, ``v`` = +row, NaN =
unknown, read as no motion). Segment ``a`` of frame ``t`` is linked to segment ``b`` of frame ``t + 1``
by the rule of the original study: advect ``a``'s pixels by the flow, and over the pixels where they land
in ``b`` sum the cosine between the flow at the source and the flow at the landing pixel; the pair is
linked when the sum is positive (the two move the same way where they meet). The flow at the landing pixel
is the same pair's by default, or the next pair's as in the original (:data:`COMPARE_NEXT` says why that
is not the default).

Unlike the original, which compared every segment of ``t`` with every segment of ``t + 1`` in Python and
ran out of memory, the scores of all pairs are summed in one vectorised pass over pixel correspondences,
keyed by ``(a, b)`` (sparse counting): time O(pixels log pixels), memory O(pixels + links). A second,
backward pass (each pixel of ``t + 1`` pulled back by the flow) finds the pairs the forward pass misses,
such as a merge target that no advected pixel hit.

Frames are 0-based indices. Every consecutive pair ``(t, t + 1)`` gives rows of one link table
(:data:`LINK_FIELDS`); :func:`track_communities` chains the pairs and gives every segment a track id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

import numpy as np

from ...core.errors import InputError
from ...core.progress import Feedback, NullFeedback, track

__all__ = [
    "CONTINUE",
    "SPLIT",
    "MERGE",
    "SPLIT_MERGE",
    "BIRTH",
    "DEATH",
    "EVENTS",
    "COMPARE_SAME",
    "COMPARE_NEXT",
    "COMPARE_MODES",
    "LINK_FIELDS",
    "DEFAULT_MIN_OVERLAP",
    "DEFAULT_MIN_FRACTION",
    "DEFAULT_MIN_SPEED",
    "Flow",
    "Link",
    "PairScores",
    "TrackLine",
    "Tracking",
    "LinkAccuracy",
    "score_pairs",
    "link_frames",
    "track_communities",
    "link_accuracy",
]

#: Event of a link whose source has one outgoing and whose target has one incoming link.
CONTINUE = "continue"
#: Event of a link whose source has more than one outgoing link (the community split).
SPLIT = "split"
#: Event of a link whose target has more than one incoming link (communities merged).
MERGE = "merge"
#: Event of a link that is both: its source splits and its target merges (a regrouping).
SPLIT_MERGE = "split+merge"
#: Row of a segment of frame ``t + 1`` with no incoming link (``segment`` is None).
BIRTH = "birth"
#: Row of a segment of frame ``t`` with no outgoing link (``next_segment`` is None).
DEATH = "death"
#: Every event, in the order a legend lists them.
EVENTS = (CONTINUE, SPLIT, MERGE, SPLIT_MERGE, BIRTH, DEATH)

#: ``compare`` of :func:`track_communities`: the cosine compares the flow at a source pixel with the same
#: pair's flow where the pixel lands (does the mass keep moving the way it came?).
COMPARE_SAME = "same"
#: ... or with the next pair's flow where it lands (does ``b`` go on moving the way ``a`` moved?), the
#: original study's rule. It rejects merges of communities that approach each other: after the merge the
#: merged community moves with the average of its parents, against at least one of them.
COMPARE_NEXT = "next"
#: The choices of ``compare``.
COMPARE_MODES = (COMPARE_SAME, COMPARE_NEXT)

#: Columns of the link table, in order (:meth:`Link.as_row`).
LINK_FIELDS = ("frame", "segment", "next_frame", "next_segment", "score", "overlap", "forward_overlap",
               "backward_overlap", "event")

#: A link needs at least this many corresponding pixels.
DEFAULT_MIN_OVERLAP = 1
#: ... and its overlap must be at least this share of the smaller of its two segments. Genuine links cover
#: most of the smaller segment (a continuing, split-off or merging community lands largely inside its
#: partner); links made by boundary pixels rounded or smoothed into a neighbour cover a small part of it.
#: Measured on 200 moving disks per frame (1796 x 1105, 4 pairs, true flow): shares 0.1 / 0.2 / 0.3 kept
#: 99.9 / 99.7 / 99.6 % of true links with 32 / 16 / 9 false ones; with the flow halved 98.7 / 98.5 / 97.2 %.
DEFAULT_MIN_FRACTION = 0.2
#: Flow slower than this (pixels per frame) counts as "not moving": its cosine with any vector counts as 1
#: (agreement), so a still community links to itself. Horn-Schunck smoothing leaks a few hundredths of a
#: pixel of motion into still areas; taking those directions at face value would score still communities
#: by noise.
DEFAULT_MIN_SPEED = 0.05

#: A flow: ``(u, v)`` float arrays ``(H, W)`` of displacement in pixels per frame (+column, +row).
Flow = Tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Link:
    """One row of the link table of frame pair ``(frame, next_frame)``.

    Attributes:
        frame: index of the earlier frame (0-based).
        segment: segment id in ``frame``; None on a birth row.
        next_frame: ``frame + 1``.
        next_segment: segment id in ``next_frame``; None on a death row.
        score: the flow-agreement score, the mean of the forward and backward sums of cosines (so a pair
            that agrees everywhere scores about its overlap in pixels); 0 on birth and death rows.
        overlap: pixel correspondences of the pair, the larger of ``forward_overlap`` and
            ``backward_overlap``.
        event: one of :data:`EVENTS`.
        forward_overlap: pixels of ``segment`` that the flow carries into ``next_segment``.
        backward_overlap: pixels of ``next_segment`` that the reversed flow carries back into ``segment``.
        forward_score: sum of cosines over the forward correspondences.
        backward_score: sum of cosines over the backward correspondences.
    """

    frame: int
    segment: Optional[int]
    next_frame: int
    next_segment: Optional[int]
    score: float
    overlap: int
    event: str
    forward_overlap: int = 0
    backward_overlap: int = 0
    forward_score: float = 0.0
    backward_score: float = 0.0

    def as_row(self) -> Tuple[Any, ...]:
        """The values of :data:`LINK_FIELDS`, in order."""
        return tuple(getattr(self, name) for name in LINK_FIELDS)


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


class TrackLine(NamedTuple):
    """A line of the track layer, joining the centroids of two linked segments (geometry added by the caller).

    ``track_id`` is the track of ``next_segment``, the line's end: a continuing track's lines carry its own
    id, and the line from a parent to a split-off child (or from a merged-away parent to the merged
    community) carries the id of the track it leads into.
    """

    frame: int
    segment: int
    next_frame: int
    next_segment: int
    event: str
    track_id: int


@dataclass
class Tracking:
    """What :func:`track_communities` found.

    Attributes:
        links: the link table of every pair, pair by pair (links, then deaths, then births).
        track_ids: per frame, segment id -> track id (every segment of every frame has one).
        lines: one :class:`TrackLine` per link (not for birth and death rows).
    """

    links: List[Link]
    track_ids: List[Dict[int, int]]
    lines: List[TrackLine] = field(default_factory=list)

    @property
    def num_tracks(self) -> int:
        """Number of distinct tracks."""
        return len({tid for frame in self.track_ids for tid in frame.values()})

    def event_counts(self) -> Dict[str, int]:
        """Number of link-table rows per event (every event listed, zeros included)."""
        counts = {event: 0 for event in EVENTS}
        for link in self.links:
            counts[link.event] += 1
        return counts


# --------------------------------------------------------------------------------------------- validation

def _check_segments(seg: Any, name: str, shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
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


def _check_flow(flow: Any, name: str, shape: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
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


def _sum_by_pair(a: np.ndarray, b: np.ndarray, weights: np.ndarray
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
    seg_a = _check_segments(seg_a, "the segments of the earlier frame")
    shape = (int(seg_a.shape[0]), int(seg_a.shape[1]))
    seg_b = _check_segments(seg_b, "the segments of the later frame", shape)
    fu, fv = _check_flow(flow_ab, "the flow", shape)
    gu, gv = (fu, fv) if flow_next is None else _check_flow(flow_next, "the next pair's flow", shape)
    height, width = shape
    flat_a, flat_b = seg_a.ravel(), seg_b.ravel()
    fu, fv, gu, gv = fu.ravel(), fv.ravel(), gu.ravel(), gv.ravel()

    # forward: q in a -> p = q + f(q)
    q = np.flatnonzero(flat_a)
    q, p = _land(q, fu[q], fv[q], height, width)
    hit = flat_b[p] > 0
    q, p = q[hit], p[hit]
    forward = _sum_by_pair(flat_a[q], flat_b[p], _cosines(fu[q], fv[q], gu[p], gv[p], min_speed))

    # backward: p in b -> q = p - f(p)
    p = np.flatnonzero(flat_b)
    p, q = _land(p, -fu[p], -fv[p], height, width)
    hit = flat_a[q] > 0
    q, p = q[hit], p[hit]
    backward = _sum_by_pair(flat_a[q], flat_b[p], _cosines(fu[q], fv[q], gu[p], gv[p], min_speed))
    del q, p, hit

    keys = np.union1d(forward[0], backward[0])
    scores = {}
    for name, (pass_keys, sums, counts) in (("forward", forward), ("backward", backward)):
        where = np.searchsorted(keys, pass_keys)
        score, overlap = np.zeros(keys.size, np.float64), np.zeros(keys.size, np.int64)
        score[where], overlap[where] = sums, counts
        scores[f"{name}_score"], scores[f"{name}_overlap"] = score, overlap
    return PairScores(segment=keys >> 32, next_segment=keys & 0xFFFFFFFF, **scores)


# --------------------------------------------------------------------------------------------- linking

def _segment_sizes(seg: np.ndarray) -> Dict[int, int]:
    """Pixel count of every segment id > 0."""
    ids, counts = np.unique(seg[seg > 0], return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist()))


def _check_thresholds(min_overlap: int, min_fraction: float, min_speed: float) -> None:
    if not (isinstance(min_overlap, (int, np.integer)) and min_overlap >= 1):
        raise InputError(f"must be a whole number of pixels >= 1, got {min_overlap!r}.", "MIN_OVERLAP")
    if not 0.0 <= min_fraction <= 1.0:
        raise InputError(f"must be a share between 0 and 1, got {min_fraction!r}.", "MIN_FRACTION")
    if not (math.isfinite(min_speed) and min_speed >= 0.0):
        raise InputError(f"must be a speed >= 0 in pixels per frame, got {min_speed!r}.", "MIN_SPEED")


def _pair_links(seg_a: np.ndarray, seg_b: np.ndarray, flow_ab: Flow, flow_next: Optional[Flow], frame: int,
                min_overlap: int, min_fraction: float, min_speed: float,
                sizes_a: Dict[int, int], sizes_b: Dict[int, int]) -> List[Link]:
    """The link-table rows of one pair (links, then deaths, then births), segment sizes given."""
    pairs = score_pairs(seg_a, seg_b, flow_ab, flow_next, min_speed)
    score, overlap = pairs.score, pairs.overlap
    smaller = np.array([min(sizes_a[a], sizes_b[b]) for a, b in zip(pairs.segment.tolist(),
                                                                        pairs.next_segment.tolist())], np.float64)
    keep = (score > 0) & (overlap >= min_overlap) & (overlap >= min_fraction * smaller)
    kept = np.flatnonzero(keep)
    outgoing: Dict[int, int] = {}
    incoming: Dict[int, int] = {}
    for i in kept:
        a, b = int(pairs.segment[i]), int(pairs.next_segment[i])
        outgoing[a] = outgoing.get(a, 0) + 1
        incoming[b] = incoming.get(b, 0) + 1
    rows: List[Link] = []
    for i in kept:
        a, b = int(pairs.segment[i]), int(pairs.next_segment[i])
        splits, merges = outgoing[a] > 1, incoming[b] > 1
        event = SPLIT_MERGE if splits and merges else SPLIT if splits else MERGE if merges else CONTINUE
        rows.append(Link(frame, a, frame + 1, b, float(score[i]), int(overlap[i]), event,
                         int(pairs.forward_overlap[i]), int(pairs.backward_overlap[i]),
                         float(pairs.forward_score[i]), float(pairs.backward_score[i])))
    rows.extend(Link(frame, a, frame + 1, None, 0.0, 0, DEATH) for a in sorted(sizes_a) if a not in outgoing)
    rows.extend(Link(frame, None, frame + 1, b, 0.0, 0, BIRTH) for b in sorted(sizes_b) if b not in incoming)
    return rows


def link_frames(seg_a: np.ndarray, seg_b: np.ndarray, flow_ab: Flow, flow_next: Optional[Flow] = None,
                frame: int = 0, min_overlap: int = DEFAULT_MIN_OVERLAP,
                min_fraction: float = DEFAULT_MIN_FRACTION, min_speed: float = DEFAULT_MIN_SPEED) -> List[Link]:
    """Link the segments of frame ``frame`` to those of ``frame + 1`` and classify the events.

    A scored pair (see :func:`score_pairs`) is linked when its score is positive (the flows agree where the
    segments meet), its overlap is at least ``min_overlap`` pixels and at least ``min_fraction`` of the
    smaller segment's pixels (which drops links made by a few boundary pixels rounded into a neighbour).

    Events: a link is "continue" when its source has one outgoing and its target one incoming link,
    "split" when the source has several outgoing links, "merge" when the target has several incoming
    links, "split+merge" when both. A segment of ``frame`` without an outgoing link gets a "death" row
    (``next_segment`` None), a segment of ``frame + 1`` without an incoming link a "birth" row
    (``segment`` None); both rows carry ``frame`` and ``frame + 1`` and a score of 0.

    Args:
        seg_a: ``(H, W)`` integer segment ids of frame ``frame`` (0 = none).
        seg_b: ``(H, W)`` integer segment ids of frame ``frame + 1``.
        flow_ab: ``(u, v)`` flow from ``frame`` to ``frame + 1`` in pixels per frame (+column, +row).
        flow_next: the flow from ``frame + 1`` to ``frame + 2`` to compare with (the original's rule), or None
            to compare with ``flow_ab`` itself (see :func:`track_communities`'s ``compare``).
        frame: index of the earlier frame, written into the rows.
        min_overlap: minimum pixel correspondences of a link.
        min_fraction: minimum overlap as a share of the smaller of the two segments.
        min_speed: pixels per frame below which a flow vector counts as still (cosine 1).

    Returns:
        The pair's link-table rows: links sorted by (segment, next segment), then deaths, then births.

    Raises:
        InputError: on bad arrays (SEGMENTS, FLOWS) or thresholds (MIN_OVERLAP, MIN_FRACTION, MIN_SPEED).
    """
    _check_thresholds(min_overlap, min_fraction, min_speed)
    seg_a = _check_segments(seg_a, "the segments of the earlier frame")
    seg_b = _check_segments(seg_b, "the segments of the later frame", seg_a.shape)
    return _pair_links(seg_a, seg_b, flow_ab, flow_next, frame, min_overlap, min_fraction, min_speed,
                       _segment_sizes(seg_a), _segment_sizes(seg_b))


# --------------------------------------------------------------------------------------------- tracks

def _pass_tracks(links: Sequence[Link], parents: Dict[int, int], children: Sequence[int],
                 next_track: int) -> Tuple[Dict[int, int], int]:
    """Give the segments of the later frame track ids from the links of one pair.

    Links are taken by decreasing score; each parent hands its track to at most one child and each child
    takes at most one track. So a continuing segment inherits its track, in a split the best-scoring
    child keeps the parent's track, and in a merge the merged segment keeps the track of its best-scoring
    parent (unless that parent's track already went to a better-scoring child of its own, in which case it
    takes its next parent's). Children left without a track start new ones, numbered in id order.
    """
    tracks: Dict[int, int] = {}
    handed: Set[int] = set()
    joined = [link for link in links if link.segment is not None and link.next_segment is not None]
    for link in sorted(joined, key=lambda x: (-x.score, x.segment, x.next_segment)):
        if link.segment in handed or link.next_segment in tracks:
            continue
        tracks[link.next_segment] = parents[link.segment]
        handed.add(link.segment)
    for child in sorted(children):
        if child not in tracks:
            next_track += 1
            tracks[child] = next_track
    return tracks, next_track


def track_communities(segments: Sequence[np.ndarray], flows: Sequence[Flow], feedback: Optional[Feedback] = None,
                      min_overlap: int = DEFAULT_MIN_OVERLAP, min_fraction: float = DEFAULT_MIN_FRACTION,
                      min_speed: float = DEFAULT_MIN_SPEED, compare: str = COMPARE_SAME) -> Tracking:
    """Link the segments of every consecutive pair of frames and give every segment a track id.

    Pair ``(t, t + 1)`` is linked by :func:`link_frames` with ``flows[t]``; the cosines compare it with
    ``flows[t]`` itself at the landing pixels (``compare="same"``, the default) or with ``flows[t + 1]``
    (``compare="next"``, the original study's rule; the last pair then uses ``flows[t]``). On the sample
    population series with its true flows, "same" finds all 42 true links and "next" misses one parent of
    the merge (see :data:`COMPARE_NEXT`). Track ids are 1, 2, ... in order of first appearance (frame,
    then segment id): the segments of frame 0 start tracks, and track ids pass along links as
    :func:`_pass_tracks` describes; births and split-off or unclaimed children start new tracks.

    Args:
        segments: ``T >= 2`` integer segment rasters ``(H, W)`` on one grid (0 = none).
        flows: ``T - 1`` flows ``(u, v)``, ``flows[t]`` from frame ``t`` to ``t + 1``, pixels per frame.
        feedback: progress (per frame pair) and cancel.
        min_overlap, min_fraction, min_speed: as in :func:`link_frames`.
        compare: "same" or "next" (:data:`COMPARE_MODES`): which flow the landing pixels are compared with.

    Returns:
        The link table, the track ids per frame and the track lines.

    Raises:
        InputError: on fewer than two frames, frames on different grids (SEGMENTS), a wrong number of
            flows or flows of the wrong shape (FLOWS), bad thresholds or ``compare`` (COMPARE).
        CanceledError: when the user cancels (checked before each pair).
    """
    feedback = feedback or NullFeedback()
    _check_thresholds(min_overlap, min_fraction, min_speed)
    if compare not in COMPARE_MODES:
        raise InputError(f"must be one of {', '.join(COMPARE_MODES)}, got {compare!r}.", "COMPARE")
    segments = list(segments)
    flows = list(flows)
    if len(segments) < 2:
        raise InputError(f"tracking needs at least two frames, got {len(segments)}. Give the segment rasters "
                         "of two or more consecutive frames.", "SEGMENTS")
    first = _check_segments(segments[0], "frame 0")
    shape = (int(first.shape[0]), int(first.shape[1]))
    segments = [first] + [_check_segments(seg, f"frame {t}", shape) for t, seg in enumerate(segments[1:], 1)]
    if len(flows) != len(segments) - 1:
        raise InputError(f"{len(segments)} frames need {len(segments) - 1} flows (one per consecutive pair), "
                         f"got {len(flows)}.", "FLOWS")
    # validate every flow up front, so a bad last flow fails before minutes of work
    flows = [_check_flow(flow, f"the flow of frames {t} -> {t + 1}", shape) for t, flow in enumerate(flows)]

    sizes = [_segment_sizes(segments[0])]
    track_ids: List[Dict[int, int]] = [{seg: i for i, seg in enumerate(sorted(sizes[0]), 1)}]
    next_track = len(track_ids[0])
    links: List[Link] = []
    lines: List[TrackLine] = []
    for t in track(range(len(segments) - 1), feedback):
        sizes.append(_segment_sizes(segments[t + 1]))
        flow_next = flows[t + 1] if compare == COMPARE_NEXT and t + 1 < len(flows) else None
        rows = _pair_links(segments[t], segments[t + 1], flows[t], flow_next, t, min_overlap, min_fraction,
                           min_speed, sizes[t], sizes[t + 1])
        tracks, next_track = _pass_tracks(rows, track_ids[t], list(sizes[t + 1]), next_track)
        track_ids.append(tracks)
        links.extend(rows)
        lines.extend(TrackLine(t, link.segment, t + 1, link.next_segment, link.event, tracks[link.next_segment])
                     for link in rows if link.segment is not None and link.next_segment is not None)
    result = Tracking(links=links, track_ids=track_ids, lines=lines)
    counts = result.event_counts()
    feedback.info(f"Tracked {sum(len(s) for s in sizes)} segments in {len(segments)} frames: "
                  f"{result.num_tracks} tracks; " + ", ".join(f"{counts[e]} {e}" for e in EVENTS) + ".")
    return result


# --------------------------------------------------------------------------------------------- accuracy

@dataclass
class LinkAccuracy:
    """How well predicted links match true ones (on the level of true communities).

    Attributes:
        true_links: true links (rows joining two communities).
        predicted_links: distinct predicted links after mapping segments to true communities (links with an
            end that maps to no community count one each).
        found: true links that some predicted link maps onto.
        false_links: predicted links that are not true links.
        recall: ``found / true_links`` (share of true links found).
        precision: ``found / predicted_links``.
        events_total: true rows scored for events (links, births and deaths).
        events_correct: true rows whose event the prediction got right.
        event_accuracy: ``events_correct / events_total``.
    """

    true_links: int
    predicted_links: int
    found: int
    false_links: int
    recall: float
    precision: float
    events_total: int
    events_correct: int
    event_accuracy: float


def _segment_id(value: Any) -> Optional[int]:
    """A segment id from a table cell: None, "", 0 and NaN mean no segment."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = float(value)
    if math.isnan(number) or number == 0:
        return None
    return int(number)


def _as_row(item: Any) -> Tuple[int, Optional[int], int, Optional[int], str, float]:
    """``(frame, segment, next_frame, next_segment, event, score)`` of a row given as an object, mapping or tuple.

    Objects (a :class:`Link`, the sample data's ``TrueLink``) and mappings (``csv.DictReader`` rows) may name
    the segments ``community``/``next_community``, as the sample data's true-links CSV does.
    """
    if isinstance(item, Link):
        values = (item.frame, item.segment, item.next_frame, item.next_segment, item.event, item.score)
    elif isinstance(item, Mapping) or hasattr(item, "frame"):
        get = item.get if isinstance(item, Mapping) else lambda name, default=None: getattr(item, name, default)
        values = (get("frame"), get("segment", get("community")), get("next_frame"),
                  get("next_segment", get("next_community")), get("event", ""), get("score", 0.0))
    else:
        values = tuple(item) + (0.0,) * (6 - len(tuple(item)))
    frame, seg, next_frame, next_seg, event, score = values[:6]
    return (int(frame), _segment_id(seg), int(next_frame), _segment_id(next_seg), str(event).strip(),
            float(score or 0.0))


def _majority(pred: np.ndarray, truth: np.ndarray) -> Dict[int, int]:
    """Each predicted segment -> the true community (> 0) covering most of its pixels (ties: smaller id)."""
    both = (pred > 0) & (truth > 0)
    keys, _, counts = _sum_by_pair(pred[both], truth[both], np.ones(int(both.sum()), np.float64))
    segs, comms = keys >> 32, keys & 0xFFFFFFFF
    order = np.lexsort((comms, -counts, segs))
    segs, comms = segs[order], comms[order]
    first = np.ones(segs.size, bool)
    first[1:] = segs[1:] != segs[:-1]
    return dict(zip(segs[first].tolist(), comms[first].tolist()))


def link_accuracy(pred_links: Sequence[Any], true_links: Sequence[Any], pred_segments: Sequence[np.ndarray],
                  true_segments: Sequence[np.ndarray]) -> LinkAccuracy:
    """Score predicted links against true links, through the true communities the segments cover.

    Each predicted segment of each frame stands for the true community that covers most of its pixels
    (background left out; a segment over background only stands for none). A predicted link then joins two
    true communities; several predicted links onto the same pair count once. Events are scored per true row:
    a true link by the event of the best-scoring predicted link mapped onto it, a true birth (death) as
    right when some predicted segment stands for the community and no predicted link maps into (out of) it.
    "split+merge" only matches "split+merge".

    Args:
        pred_links: predicted rows (:class:`Link`).
        true_links: true rows: objects or mappings with ``frame, segment|community, next_frame,
            next_segment|next_community, event`` (e.g. ``csv.DictReader`` rows; empty cells and 0 mean
            none) or tuples in that order.
        pred_segments: predicted segment rasters, one per frame.
        true_segments: true community rasters (0 = background), one per frame, on the same grid.

    Returns:
        Recall, precision, false links and event accuracy.

    Raises:
        InputError: when the frame counts or grids of the two raster lists differ (SEGMENTS).
    """
    if len(pred_segments) != len(true_segments):
        raise InputError(f"{len(pred_segments)} predicted and {len(true_segments)} true segment rasters; give "
                         "one of each per frame.", "SEGMENTS")
    mapping: List[Dict[int, int]] = []
    for t, (pred, truth) in enumerate(zip(pred_segments, true_segments)):
        pred = _check_segments(pred, f"predicted frame {t}")
        truth = _check_segments(truth, f"true frame {t}", pred.shape)
        mapping.append(_majority(pred.ravel(), truth.ravel()))

    def community(frame: int, seg: Optional[int]) -> Optional[int]:
        if seg is None or not 0 <= frame < len(mapping):
            return None
        return mapping[frame].get(seg)

    truth_rows = [_as_row(item) for item in true_links]
    true_pairs = {(f, a, nf, b): event for f, a, nf, b, event, _ in truth_rows if a is not None and b is not None}
    predicted: Dict[Tuple[int, int, int, int], Tuple[float, str]] = {}
    unmapped = 0
    covered: Set[Tuple[int, int]] = set()
    for t, frame_map in enumerate(mapping):
        covered.update((t, c) for c in frame_map.values())
    for f, a, nf, b, event, score in (_as_row(item) for item in pred_links):
        if a is None or b is None:
            continue
        key = (f, community(f, a), nf, community(nf, b))
        if key[1] is None or key[3] is None:
            unmapped += 1
        elif key not in predicted or score > predicted[key][0]:
            predicted[key] = (score, event)
    found = sum(1 for key in predicted if key in true_pairs)
    n_predicted = len(predicted) + unmapped
    into = {(nf, b) for _, _, nf, b in predicted}
    out_of = {(f, a) for f, a, _, _ in predicted}

    correct = 0
    total = 0
    for f, a, nf, b, event, _ in truth_rows:
        if a is not None and b is not None:
            total += 1
            correct += int(predicted.get((f, a, nf, b), (0.0, None))[1] == event)
        elif b is not None and event == BIRTH:
            total += 1
            correct += int((nf, b) in covered and (nf, b) not in into)
        elif a is not None and event == DEATH:
            total += 1
            correct += int((f, a) in covered and (f, a) not in out_of)
    return LinkAccuracy(
        true_links=len(true_pairs), predicted_links=n_predicted, found=found, false_links=n_predicted - found,
        recall=found / len(true_pairs) if true_pairs else float("nan"),
        precision=found / n_predicted if n_predicted else float("nan"),
        events_total=total, events_correct=correct, event_accuracy=correct / total if total else float("nan"))
