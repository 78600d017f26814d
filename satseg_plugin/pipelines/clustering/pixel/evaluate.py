"""How well clusters match reference classes: best reachable Dice/IoU, purity and NMI, from a contingency table.

The cluster raster is streamed in row strips against the rasterised reference polygons, so only a
``(K + 1) x (C + 1)`` table is kept. The scores are pure functions of that table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from rasterio.windows import Window

from ....core.errors import InputError
from ....core.labels import IGNORE, LabelSet
from ....core.progress import Feedback, NullFeedback, check_canceled
from ....core.raster import open_raster, raster_env
from ....core.scores import dice, iou

__all__ = ["ClusterScores", "contingency", "purity", "nmi_from_table", "reachable_scores", "evaluate_clusters"]


@dataclass
class ClusterScores:
    """Scores of a cluster raster against reference classes.

    Attributes:
        class_names: reference classes 1..C.
        keep_threshold: share of a cluster's pixels that must be of a class for the cluster to count as it.
        dice, iou: per class, at ``keep_threshold``.
        best_dice, best_iou: per class, the best over every threshold (the best any cluster -> class
            mapping reaches).
        positive_clusters: per class, the clusters counted as it at ``keep_threshold``.
        purity: share of pixels whose cluster's majority class is their class (background included).
        nmi: normalised mutual information between clusters and reference classes (arithmetic mean).
        pixels: valid pixels compared.
        table: the ``(K + 1, C + 1)`` contingency table (row = cluster id, column = class, 0 = background).
    """

    class_names: List[str]
    keep_threshold: float
    dice: Dict[str, float]
    iou: Dict[str, float]
    best_dice: Dict[str, float]
    best_iou: Dict[str, float]
    positive_clusters: Dict[str, List[int]]
    purity: float
    nmi: float
    pixels: int
    table: np.ndarray = field(repr=False)


def contingency(cluster_path: str, reference: LabelSet, feedback: Optional[Feedback] = None,
                strip_rows: int = 512) -> np.ndarray:
    """Pixel counts ``(K + 1, C + 1)``: row = cluster id (0 unused), column = reference class (0 background).

    Nodata pixels of the cluster raster and pixels outside the reference AOI are left out.
    """
    feedback = feedback or NullFeedback()
    with raster_env(), open_raster(cluster_path, "INPUT") as src:
        if src.count != 1 or not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
            raise InputError("choose a cluster raster (one integer band of cluster ids).", "INPUT")
        pairs: Dict[int, np.ndarray] = {}
        c = reference.num_classes + 1
        for y in range(0, src.height, strip_rows):
            check_canceled(feedback)
            win = Window(0, y, src.width, min(strip_rows, src.height - y))
            ids = src.read(1, window=win).astype(np.int64)
            lab = reference.rasterize(src.window_transform(win), ids.shape).astype(np.int64)
            keep = (lab != IGNORE) & (ids > 0)
            if src.nodata is not None:
                keep &= ids != src.nodata
            codes = np.bincount(ids[keep] * c + lab[keep])
            for code in np.flatnonzero(codes):
                pairs[int(code)] = pairs.get(int(code), 0) + codes[code]
            feedback.set_progress(100.0 * min(1.0, (y + strip_rows) / src.height))
    if not pairs:
        raise InputError("the cluster raster has no valid pixel where the reference is defined. Check that the "
                         "reference covers the raster and its CRS is right.", "REFERENCE")
    top = max(pairs) // c
    table = np.zeros((top + 1, c), np.int64)
    for code, n in pairs.items():
        table[code // c, code % c] = n
    return table


def purity(table: np.ndarray) -> float:
    """Share of pixels in their cluster's majority class."""
    total = table.sum()
    return float(table.max(axis=1).sum() / total) if total else 0.0


def nmi_from_table(table: np.ndarray) -> float:
    """Normalised mutual information (arithmetic normalisation, as scikit-learn's default) of a contingency table."""
    total = table.sum()
    if total == 0:
        return 0.0
    p = table / total
    pa, pb = p.sum(axis=1), p.sum(axis=0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / np.outer(pa, pb)[nz])).sum())
    ha = float(-(pa[pa > 0] * np.log(pa[pa > 0])).sum())
    hb = float(-(pb[pb > 0] * np.log(pb[pb > 0])).sum())
    if ha == 0 and hb == 0:
        return 1.0
    denom = (ha + hb) / 2
    return max(0.0, mi / denom) if denom > 0 else 0.0


def reachable_scores(table: np.ndarray, column: int, keep_threshold: float):
    """Dice/IoU for class ``column`` when clusters with at least ``keep_threshold`` of it count as it, and the
    best Dice/IoU over every threshold (adding clusters in order of decreasing share is optimal for Dice).

    Returns:
        ``(dice, iou, best_dice, best_iou, positive cluster ids)``.
    """
    pos = table[:, column].astype(np.float64)
    tot = table.sum(axis=1).astype(np.float64)
    all_pos = pos.sum()
    share = np.divide(pos, tot, out=np.zeros_like(pos), where=tot > 0)
    chosen = np.flatnonzero((share >= keep_threshold) & (tot > 0))
    tp = pos[chosen].sum()
    fp = tot[chosen].sum() - tp
    fn = all_pos - tp
    best_d = best_i = 0.0
    order = [i for i in np.argsort(-share, kind="stable") if tot[i] > 0]
    tp_c = fp_c = 0.0
    for i in order:
        tp_c += pos[i]
        fp_c += tot[i] - pos[i]
        best_d = max(best_d, dice(tp_c, fp_c, all_pos - tp_c))
        best_i = max(best_i, iou(tp_c, fp_c, all_pos - tp_c))
    return dice(tp, fp, fn), iou(tp, fp, fn), best_d, best_i, [int(i) for i in chosen]


def evaluate_clusters(cluster_path: str, reference: LabelSet, keep_threshold: float = 0.4,
                      feedback: Optional[Feedback] = None) -> ClusterScores:
    """Score a cluster raster against reference polygons (unlabelled pixels inside the AOI are background).

    Args:
        cluster_path: cluster ids 1..K (nodata 0).
        reference: reference polygons with classes, in the cluster raster's CRS.
        keep_threshold: a cluster counts as a class when at least this share of its pixels is of that class.
        feedback: progress and cancel.
    """
    if not 0 < keep_threshold <= 1:
        raise InputError(f"must lie in (0, 1], got {keep_threshold}.", "KEEP_THRESHOLD")
    table = contingency(cluster_path, reference, feedback)
    names = list(reference.class_names)
    scores = {name: reachable_scores(table, i, keep_threshold) for i, name in enumerate(names, start=1)}
    return ClusterScores(names, keep_threshold, {n: s[0] for n, s in scores.items()},
                         {n: s[1] for n, s in scores.items()}, {n: s[2] for n, s in scores.items()},
                         {n: s[3] for n, s in scores.items()}, {n: s[4] for n, s in scores.items()},
                         purity(table), nmi_from_table(table), int(table.sum()), table)
