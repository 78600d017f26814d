"""Segmentation evaluation: the competition's per-tile Dice, per-building F1, and whole-raster scores.

The math is pure functions on arrays (:func:`tile_dice_score`, :func:`object_scores`; pixel counts and
Dice/IoU come from :mod:`...core.scores`, with its conventions for empty cases); :func:`evaluate_rasters`
streams a prediction raster and its reference (a mask raster on the same grid, or polygons) through the same
code, row strip by row strip. :func:`tile_dice_score` leaves out tiles where both masks are empty, and is 1.0
if every tile is.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import rasterio
from rasterio import features
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from ...core.errors import InputError
from ...core.progress import Feedback, NullFeedback, track
from ...core.raster import Grid, check_georeferencing, open_raster, raster_env, require_same_grid, window_footprint
from ...core.scores import as_bool, confusion, dice, f1, iou, precision, recall
from .rle import binarize

__all__ = [
    "STRIP_PIXELS",
    "ObjectScores",
    "EvaluationResult",
    "ObjectAccumulator",
    "tile_counts",
    "tile_dice_score",
    "object_scores",
    "evaluate_masks",
    "evaluate_rasters",
]

#: Pixels per row strip that :func:`evaluate_rasters` reads at once (rounded to whole tile rows).
STRIP_PIXELS = 4_000_000


def _block_sums(mask: np.ndarray, tile: int) -> np.ndarray:
    """Sum of a 2-D boolean mask over ``tile`` x ``tile`` blocks from the top-left (partial edge blocks too)."""
    rows = np.add.reduceat(mask.view(np.uint8), np.arange(0, mask.shape[0], tile), axis=0, dtype=np.int64)
    return np.add.reduceat(rows, np.arange(0, mask.shape[1], tile), axis=1)


def tile_counts(pred: np.ndarray, ref: np.ndarray, tile: int = 224) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-tile ``tp``, ``fp``, ``fn`` of two ``(H, W)`` masks, over a grid of ``tile`` px tiles from the
    top-left corner.

    Edge tiles that run past the mask count only their pixels inside it, which is the same as padding
    them with 0 (padding adds true negatives only).

    Returns:
        Three ``(ceil(H / tile), ceil(W / tile))`` integer arrays.
    """
    p, r = as_bool(pred), as_bool(ref)
    if p.ndim != 2 or p.shape != r.shape:
        raise ValueError(f"masks must be 2-D with the same shape, got pred {p.shape}, ref {r.shape}")
    if int(tile) < 1:
        raise ValueError(f"tile size must be at least 1, got {tile}")
    if p.size == 0:
        empty = np.zeros((0, 0), np.int64)
        return empty, empty, empty
    tp = _block_sums(p & r, int(tile))
    return tp, _block_sums(p, int(tile)) - tp, _block_sums(r, int(tile)) - tp


def _tile_dices(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Dice of the tiles where prediction or reference has a pixel (the others are left out)."""
    denominator = 2 * tp + fp + fn
    scored = denominator > 0
    return 2.0 * tp[scored] / denominator[scored]


def tile_dice_score(pred: np.ndarray, ref: np.ndarray, tile: int = 224, valid: Optional[np.ndarray] = None) -> float:
    """The competition score: mean Dice over ``tile`` x ``tile`` tiles, leaving out tiles where both the
    prediction and the reference are empty.

    Args:
        pred: ``(H, W)`` predicted mask.
        ref: ``(H, W)`` reference mask.
        tile: tile edge in pixels; edge tiles are scored on their pixels inside the mask.
        valid: optional ``(H, W)`` mask; pixels outside it count as empty in both.

    Returns:
        The mean per-tile Dice, or 1.0 when every tile is empty in both.
    """
    if valid is not None:
        v = as_bool(valid)
        pred, ref = as_bool(pred) & v, as_bool(ref) & v
    dices = _tile_dices(*tile_counts(pred, ref, tile))
    return math.fsum(dices) / dices.size if dices.size else 1.0


@dataclass(frozen=True)
class ObjectScores:
    """Per-object (per-building) detection scores.

    Attributes:
        tp: predicted objects matched one-to-one to a reference object at IoU >= the threshold.
        fp: predicted objects left unmatched.
        fn: reference objects left unmatched.
        precision: ``tp / (tp + fp)`` (1.0 without predicted objects).
        recall: ``tp / (tp + fn)`` (1.0 without reference objects).
        f1: ``2 tp / (2 tp + fp + fn)`` (1.0 when both have no object).
        mean_iou: mean IoU of the matched pairs (0.0 without a match).
    """

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    mean_iou: float


class _Components:
    """Connected components of a mask fed as consecutive row strips, merged across strip boundaries."""

    def __init__(self, structure: np.ndarray) -> None:
        self.structure = structure
        self.count = 0
        self._areas: List[np.ndarray] = []
        self._edges: List[Tuple[np.ndarray, np.ndarray]] = []
        self._last_row: Optional[np.ndarray] = None

    def add(self, mask: np.ndarray) -> np.ndarray:
        """Label one strip; return its labels as global ids (0 = background)."""
        from scipy import ndimage  # lazy: scipy is only needed for object scores

        if mask.shape[0] == 0:
            return np.zeros(mask.shape, np.int64)
        local, n = ndimage.label(mask, structure=self.structure)
        labels = local.astype(np.int64)
        if n:
            self._areas.append(np.bincount(local.ravel(), minlength=n + 1)[1:])
            labels[local > 0] += self.count
            if self._last_row is not None:
                self._link(self._last_row, labels[0])
        self._last_row = labels[-1].copy()
        self.count += n
        return labels

    def _link(self, above: np.ndarray, below: np.ndarray) -> None:
        shifts = (0,) if self.structure[0, 0] == 0 else (-1, 0, 1)
        width = above.shape[0]
        for shift in shifts:  # the pixel below-left, below, below-right of each pixel of the row above
            a = above[max(0, -shift):width - max(0, shift)]
            b = below[max(0, shift):width - max(0, -shift)]
            touching = (a > 0) & (b > 0)
            if touching.any():
                self._edges.append((a[touching], b[touching]))

    def resolve(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(component of each global id, indexed by id (entry 0 unused), area of each component)``."""
        areas = np.concatenate(self._areas) if self._areas else np.zeros(0, np.int64)
        if self._edges:
            from scipy.sparse import coo_matrix
            from scipy.sparse.csgraph import connected_components

            a = np.concatenate([e[0] for e in self._edges]) - 1
            b = np.concatenate([e[1] for e in self._edges]) - 1
            graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(self.count, self.count))
            n, component = connected_components(graph, directed=False)
        else:
            n, component = self.count, np.arange(self.count)
        merged = np.bincount(component, weights=areas, minlength=n).astype(np.int64)
        return np.concatenate(([-1], component)), merged


class ObjectAccumulator:
    """Matches predicted and reference objects (connected components) of masks fed as row strips.

    Feed consecutive, touching row strips of the same width with :meth:`add`; objects that cross a strip
    boundary are merged, so the result equals that of the whole masks while memory holds one strip plus
    a few numbers per object. Intersections are counted sparsely from the label pairs of overlapping
    pixels, never as a dense ``n_pred x n_ref`` matrix.

    Matching is one-to-one and greedy by IoU, highest first (ties: lower predicted id, then lower
    reference id), among pairs with IoU >= ``iou_threshold``. For a threshold above 0.5 a match is
    unique anyway (two objects cannot both overlap a third by more than half of their union).

    Args:
        iou_threshold: minimum IoU of a match (0 < t <= 1).
        connectivity: 4 (edge neighbours) or 8 (diagonals too) for connected components.
    """

    def __init__(self, iou_threshold: float = 0.5, connectivity: int = 4) -> None:
        if not 0.0 < float(iou_threshold) <= 1.0:
            raise ValueError(f"IoU threshold must lie in (0, 1], got {iou_threshold}")
        if connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
        self.iou_threshold = float(iou_threshold)
        structure = np.ones((3, 3), bool) if connectivity == 8 else np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
        self._pred = _Components(structure)
        self._ref = _Components(structure)
        self._pairs: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, pred: np.ndarray, ref: np.ndarray) -> None:
        """Add the next row strip of both masks (``(h, W)``, non-zero = foreground)."""
        pred_labels = self._pred.add(as_bool(pred))
        ref_labels = self._ref.add(as_bool(ref))
        both = (pred_labels > 0) & (ref_labels > 0)
        if both.any():
            base = self._ref.count + 1
            keys, counts = np.unique(pred_labels[both] * base + ref_labels[both], return_counts=True)
            self._pairs.append((keys // base, keys % base, counts))

    def result(self) -> ObjectScores:
        """Match the objects seen so far and score them."""
        pred_comp, pred_area = self._pred.resolve()
        ref_comp, ref_area = self._ref.resolve()
        n_pred, n_ref = len(pred_area), len(ref_area)
        tp, matched_ious = 0, []
        if self._pairs and n_pred and n_ref:
            p = pred_comp[np.concatenate([x[0] for x in self._pairs])]
            r = ref_comp[np.concatenate([x[1] for x in self._pairs])]
            counts = np.concatenate([x[2] for x in self._pairs])
            keys, inverse = np.unique(p * n_ref + r, return_inverse=True)
            inter = np.bincount(inverse, weights=counts).astype(np.int64)
            p, r = keys // n_ref, keys % n_ref
            ious = inter / (pred_area[p] + ref_area[r] - inter)
            keep = ious >= self.iou_threshold
            p, r, ious = p[keep], r[keep], ious[keep]
            used_p, used_r = set(), set()
            for i in np.lexsort((r, p, -ious)):
                if p[i] not in used_p and r[i] not in used_r:
                    used_p.add(p[i])
                    used_r.add(r[i])
                    matched_ious.append(float(ious[i]))
            tp = len(matched_ious)
        fp, fn = n_pred - tp, n_ref - tp
        return ObjectScores(tp, fp, fn, precision(tp, fp), recall(tp, fn), f1(tp, fp, fn),
                            float(np.mean(matched_ious)) if matched_ious else 0.0)


def object_scores(pred: np.ndarray, ref: np.ndarray, iou_threshold: float = 0.5, connectivity: int = 4,
                  valid: Optional[np.ndarray] = None) -> ObjectScores:
    """Per-building detection scores of two ``(H, W)`` masks.

    Objects are the connected components of each mask; they are matched one-to-one by IoU (see
    :class:`ObjectAccumulator`). A predicted object matched at IoU >= ``iou_threshold`` is a true
    positive; unmatched predicted objects are false positives and unmatched reference objects false
    negatives. A reference building predicted in two pieces thus counts at most one piece as a match.

    Args:
        pred: predicted mask.
        ref: reference mask.
        iou_threshold: minimum IoU of a match.
        connectivity: 4 or 8.
        valid: optional mask: objects are clipped to it before labelling.
    """
    accumulator = ObjectAccumulator(iou_threshold, connectivity)
    p, r = as_bool(pred), as_bool(ref)
    if p.ndim != 2 or p.shape != r.shape:
        raise ValueError(f"masks must be 2-D with the same shape, got pred {p.shape}, ref {r.shape}")
    if valid is not None:
        v = as_bool(valid)
        p, r = p & v, r & v
    accumulator.add(p, r)
    return accumulator.result()


@dataclass(frozen=True)
class EvaluationResult:
    """Scores of a predicted mask against a reference.

    Attributes:
        tp, fp, fn, tn: pixel counts (inside the AOI, when one is given).
        dice, iou, precision, recall: pixel scores from those counts.
        tile_dice: the competition score, mean Dice over tiles not empty in both.
        tiles_scored: how many tiles that mean is over.
        object_tp, object_fp, object_fn: matched, spurious and missed buildings.
        object_precision, object_recall, object_f1: per-building scores at IoU >= ``iou_threshold``.
        object_mean_iou: mean IoU of the matched buildings.
        tile_size, threshold, iou_threshold: the settings used.
    """

    tp: int
    fp: int
    fn: int
    tn: int
    dice: float
    iou: float
    precision: float
    recall: float
    tile_dice: float
    tiles_scored: int
    object_tp: int
    object_fp: int
    object_fn: int
    object_precision: float
    object_recall: float
    object_f1: float
    object_mean_iou: float
    tile_size: int
    threshold: float
    iou_threshold: float

    def metrics(self) -> Dict[str, Union[int, float]]:
        """Every field as ``{name: value}``, scores first (the rows of a metrics table)."""
        return asdict(self)


class _Evaluator:
    """Accumulates pixel counts, per-tile Dice and objects over consecutive row strips.

    Every strip but the last must be a whole number of tile rows high, so tiles never straddle strips.
    """

    def __init__(self, tile_size: int, threshold: float, iou_threshold: float, connectivity: int) -> None:
        self.tile_size, self.threshold, self.iou_threshold = tile_size, threshold, iou_threshold
        self.counts = np.zeros(4, np.int64)
        self.tile_dices: List[np.ndarray] = []  # summed exactly at the end: the result is independent of strips
        self.objects = ObjectAccumulator(iou_threshold, connectivity)

    def add(self, pred: np.ndarray, ref: np.ndarray, valid: Optional[np.ndarray] = None) -> None:
        if valid is not None:
            pred, ref = pred & valid, ref & valid
        self.counts += confusion(pred, ref, valid)
        self.tile_dices.append(_tile_dices(*tile_counts(pred, ref, self.tile_size)))
        self.objects.add(pred, ref)

    def result(self) -> EvaluationResult:
        tp, fp, fn, tn = (int(c) for c in self.counts)
        objects = self.objects.result()
        tiles = sum(d.size for d in self.tile_dices)
        tile_dice = math.fsum(np.concatenate(self.tile_dices)) / tiles if tiles else 1.0
        return EvaluationResult(
            tp, fp, fn, tn, dice(tp, fp, fn), iou(tp, fp, fn), precision(tp, fp), recall(tp, fn), tile_dice, tiles,
            objects.tp, objects.fp, objects.fn, objects.precision, objects.recall, objects.f1, objects.mean_iou,
            self.tile_size, self.threshold, self.iou_threshold)


def _check_settings(tile_size: int, threshold: float, iou_threshold: float, connectivity: int) -> None:
    if int(tile_size) < 1:
        raise InputError(f"tile size must be at least 1 pixel, got {tile_size}.", "TILE_SIZE")
    if not math.isfinite(threshold):
        raise InputError(f"threshold must be a number, got {threshold}.", "THRESHOLD")
    if not 0.0 < iou_threshold <= 1.0:
        raise InputError(f"must lie in (0, 1], got {iou_threshold}; 0.5 is the usual building-matching "
                         "threshold.", "IOU_THRESHOLD")
    if connectivity not in (4, 8):
        raise InputError(f"connectivity must be 4 or 8, got {connectivity}.", "CONNECTIVITY")


def evaluate_masks(pred: np.ndarray, ref: np.ndarray, valid: Optional[np.ndarray] = None, tile_size: int = 224,
                   threshold: float = 0.5, iou_threshold: float = 0.5, connectivity: int = 4) -> EvaluationResult:
    """Every score of an in-memory ``(H, W)`` prediction against a reference mask, as :func:`evaluate_rasters`.

    Args:
        pred: predicted mask or probabilities; values above ``threshold`` are foreground.
        ref: reference mask of the same shape; non-zero is foreground.
        valid: optional mask; only its pixels are scored and objects are clipped to it.
        tile_size: tile edge of the per-tile Dice.
        threshold: prediction values above this are foreground (0.5 suits 0/1 masks and probabilities).
        iou_threshold: minimum IoU of a building match.
        connectivity: 4 or 8, for the buildings (connected components).
    """
    _check_settings(tile_size, threshold, iou_threshold, connectivity)
    p, r = binarize(pred, None, threshold), as_bool(ref)
    if p.ndim != 2 or p.shape != r.shape:
        raise ValueError(f"masks must be 2-D with the same shape, got pred {p.shape}, ref {r.shape}")
    evaluator = _Evaluator(int(tile_size), float(threshold), float(iou_threshold), connectivity)
    evaluator.add(p, r, None if valid is None else as_bool(valid))
    return evaluator.result()


def _polygon_parts(geometry: Any, parameter: str) -> List[Any]:
    """The polygons of a shapely geometry or a sequence of them (lines and points dropped)."""
    import shapely

    if geometry is None:
        return []
    geometries = [geometry] if isinstance(geometry, shapely.Geometry) else list(geometry)
    if not all(isinstance(g, shapely.Geometry) for g in geometries):
        raise InputError("expected shapely polygons.", parameter)
    parts = shapely.get_parts(shapely.get_parts(np.asarray(geometries, dtype=object)))  # collections, multi
    polygonal = shapely.get_type_id(parts) == 3
    return [g for g in parts[polygonal] if not g.is_empty]


class _Rasterizer:
    """Burns polygons into row-strip windows of a raster grid (pixel-centre rule), one strip at a time."""

    def __init__(self, polygons: List[Any], transform: Any) -> None:
        import shapely

        self.polygons, self.transform = polygons, transform
        self.tree = shapely.STRtree(polygons) if polygons else None

    def __call__(self, window: Window) -> np.ndarray:
        from shapely.geometry import Polygon

        shape = (int(window.height), int(window.width))
        if self.tree is None:
            return np.zeros(shape, bool)
        footprint = Polygon(window_footprint(self.transform, int(window.col_off), int(window.row_off), shape[1],
                                             shape[0]))
        hits = self.tree.query(footprint, predicate="intersects")
        if not len(hits):
            return np.zeros(shape, bool)
        burned = features.rasterize(((self.polygons[i], 1) for i in hits), out_shape=shape,
                                    transform=window_transform(window, self.transform), fill=0, dtype="uint8",
                                    all_touched=False)
        return burned.astype(bool)


def _check_same_grid(src: rasterio.DatasetReader, ref: rasterio.DatasetReader, feedback: Feedback) -> None:
    reference = Grid.of(ref)
    if bool(src.crs) != bool(ref.crs):
        feedback.warning("Only one of prediction and reference mask has a CRS: they are compared pixel by pixel.")
        reference = reference._replace(crs=src.crs)
    require_same_grid(reference, Grid.of(src), "REFERENCE_MASK", "the reference mask", "the prediction",
                      "Resample the reference onto the prediction's grid (Raster > Projections > Warp, with the "
                      "prediction's extent and resolution) or give polygons as REFERENCE_POLYGONS.")


def evaluate_rasters(pred_path: str, reference: Union[str, Any, Sequence[Any]], threshold: float = 0.5,
                     tile_size: int = 224, aoi: Any = None, iou_threshold: float = 0.5, connectivity: int = 4,
                     feedback: Optional[Feedback] = None) -> EvaluationResult:
    """Score a predicted mask or probability raster against a reference, streaming row strips.

    Band 1 of the prediction is read; values above ``threshold`` are buildings, everything else
    (nodata and NaN included) is background. The reference is either a mask raster on exactly the same
    grid (values above 0 are buildings, nodata is background) or shapely polygons in the prediction's CRS,
    burned into each strip with the pixel-centre rule. Only pixels whose centre lies inside ``aoi`` (when
    given) are scored, and buildings are clipped to it.

    Memory holds one strip of about :data:`STRIP_PIXELS` pixels (a whole number of tile rows) plus a few
    numbers per building, whatever the raster's size: buildings crossing strips are merged afterwards.
    Reference buildings are the connected components of the burned reference, so touching polygons
    count as one building.

    Args:
        pred_path: the predicted mask or probability raster.
        reference: path of a reference mask raster, or shapely polygon(s).
        threshold: prediction values above this are buildings (0.5 for probabilities; works for 0/1 masks).
        tile_size: tile edge of the per-tile Dice.
        aoi: optional shapely polygon(s) in the prediction's CRS restricting the evaluation.
        iou_threshold: minimum IoU of a building match.
        connectivity: 4 or 8, for buildings (connected components).
        feedback: progress, cancel and log.

    Returns:
        Pixel, per-tile and per-building scores.

    Raises:
        InputError: unreadable rasters, a reference mask on another grid, an AOI outside the raster, bad
            settings; the message names the parameter (PREDICTION, REFERENCE_MASK, AOI, ...).
        CanceledError: the user canceled.
    """
    from shapely.geometry import Polygon  # lazy, as everywhere in the engine

    feedback = feedback or NullFeedback()
    _check_settings(tile_size, threshold, iou_threshold, connectivity)
    tile = int(tile_size)
    with contextlib.ExitStack() as stack:
        stack.enter_context(raster_env())
        src = stack.enter_context(open_raster(pred_path, "PREDICTION"))
        check_georeferencing(src, feedback, "PREDICTION")
        if src.count > 1:
            feedback.warning(f"The prediction raster has {src.count} bands: only band 1 is evaluated.")
        footprint = Polygon(window_footprint(src.transform, 0, 0, src.width, src.height))
        ref_src, burn_ref = None, None
        if isinstance(reference, str):
            ref_src = stack.enter_context(open_raster(reference, "REFERENCE_MASK"))
            _check_same_grid(src, ref_src, feedback)
        else:
            polygons = _polygon_parts(reference, "REFERENCE_POLYGONS")
            if not any(p.intersects(footprint) for p in polygons):
                feedback.warning("No reference polygon overlaps the prediction raster: every predicted pixel "
                                 "counts as a false positive. Check the reference layer and its CRS.")
            burn_ref = _Rasterizer(polygons, src.transform)
        burn_aoi = None
        if aoi is not None:
            aoi_parts = _polygon_parts(aoi, "AOI")
            if not any(p.intersects(footprint) for p in aoi_parts):
                raise InputError("the area of interest does not overlap the prediction raster. Check its "
                                 "position and CRS, or leave AOI empty to evaluate the whole raster.", "AOI")
            burn_aoi = _Rasterizer(aoi_parts, src.transform)

        strip = tile * max(1, STRIP_PIXELS // max(1, src.width * tile))
        windows = [Window(0, y, src.width, min(strip, src.height - y)) for y in range(0, src.height, strip)]
        feedback.info(f"Evaluating {src.width}x{src.height} px in {len(windows)} strips (threshold {threshold}, "
                      f"{tile} px tiles, building IoU >= {iou_threshold}).")
        evaluator = _Evaluator(tile, float(threshold), float(iou_threshold), connectivity)
        for window in track(windows, feedback, span=(0.0, 95.0)):
            pred = binarize(src.read(1, window=window), src.nodata, threshold)
            if ref_src is not None:
                ref = binarize(ref_src.read(1, window=window), ref_src.nodata, 0.0)
            else:
                ref = burn_ref(window)
            evaluator.add(pred, ref, burn_aoi(window) if burn_aoi is not None else None)
    result = evaluator.result()
    if result.tp + result.fp + result.fn + result.tn == 0:
        raise InputError("the area of interest holds no pixel centre of the prediction raster, so nothing was "
                         "evaluated. Draw a larger area or leave AOI empty.", "AOI")
    feedback.set_progress(100.0)
    feedback.info(f"Dice {result.dice:.4f}, IoU {result.iou:.4f}, tile Dice {result.tile_dice:.4f} over "
                  f"{result.tiles_scored} tiles; buildings: F1 {result.object_f1:.4f} ({result.object_tp} matched, "
                  f"{result.object_fp} false, {result.object_fn} missed).")
    return result
