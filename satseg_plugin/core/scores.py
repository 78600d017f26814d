"""Scores shared by every pipeline: pixel counts and Dice/IoU/F1 of binary masks, and the agreement and
separation scores of clusterings (NMI, silhouette).

Conventions for empty cases (0/0), chosen so that "nothing to find and nothing found" is a perfect score:

- :func:`dice`, :func:`iou`, :func:`f1`: 1.0 when prediction and reference are both empty.
- :func:`precision`: 1.0 when nothing was predicted (no false claim was made).
- :func:`recall`: 1.0 when the reference is empty (nothing was missed).

So an empty prediction against a non-empty reference scores precision 1.0, recall 0.0, Dice/F1 0.0.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

from .deps import require
from .errors import InputError
from .kmeans import as_matrix
from .progress import Feedback, NullFeedback, check_canceled

__all__ = ["Confusion", "as_bool", "confusion", "dice", "iou", "precision", "recall", "f1", "nmi", "silhouette"]


class Confusion(NamedTuple):
    """Pixel (or object) counts: true positives, false positives, false negatives, true negatives."""

    tp: int
    fp: int
    fn: int
    tn: int


def as_bool(array: Any) -> np.ndarray:
    """``array`` as a boolean mask: non-zero is foreground."""
    return np.asarray(array) != 0


def confusion(pred: np.ndarray, ref: np.ndarray, valid: Optional[np.ndarray] = None) -> Confusion:
    """Count agreeing and disagreeing pixels of two binary masks.

    Args:
        pred: predicted mask, any shape; non-zero is foreground.
        ref: reference mask of the same shape.
        valid: optional mask of the same shape; only its non-zero pixels are counted.

    Returns:
        ``(tp, fp, fn, tn)``.

    Raises:
        ValueError: when the shapes differ.
    """
    p, r = as_bool(pred), as_bool(ref)
    if p.shape != r.shape or (valid is not None and np.shape(valid) != p.shape):
        raise ValueError(f"masks must have the same shape, got pred {p.shape}, ref {r.shape}"
                         + (f", valid {np.shape(valid)}" if valid is not None else ""))
    if valid is not None:
        v = as_bool(valid)
        p, r, total = p & v, r & v, int(np.count_nonzero(v))
    else:
        total = p.size
    tp = int(np.count_nonzero(p & r))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(r)) - tp
    return Confusion(tp, fp, fn, total - tp - fp - fn)


def dice(tp: int, fp: int, fn: int) -> float:
    """Dice coefficient ``2 tp / (2 tp + fp + fn)``; 1.0 when both masks are empty."""
    denominator = 2 * tp + fp + fn
    return 2.0 * tp / denominator if denominator else 1.0


def iou(tp: int, fp: int, fn: int) -> float:
    """Intersection over union (Jaccard) ``tp / (tp + fp + fn)``; 1.0 when both masks are empty."""
    denominator = tp + fp + fn
    return tp / denominator if denominator else 1.0


def precision(tp: int, fp: int) -> float:
    """``tp / (tp + fp)``; 1.0 when nothing was predicted."""
    return tp / (tp + fp) if tp + fp else 1.0


def recall(tp: int, fn: int) -> float:
    """``tp / (tp + fn)``; 1.0 when the reference is empty."""
    return tp / (tp + fn) if tp + fn else 1.0


def f1(tp: int, fp: int, fn: int) -> float:
    """F1 score ``2 tp / (2 tp + fp + fn)`` (equal to Dice on pixel counts); 1.0 when both are empty."""
    return dice(tp, fp, fn)


def nmi(a: Any, b: Any) -> float:
    """Normalised mutual information of two labellings (scikit-learn's, arithmetic normalisation).

    1.0 when one labelling is a renaming of the other; near 0 for independent labellings. DeepCluster
    tracks it between consecutive epochs' assignments to see when the clustering stabilises.

    Args:
        a: ``(n,)`` labels.
        b: ``(n,)`` labels.

    Returns:
        NMI in ``[0, 1]``.

    Raises:
        InputError: when the labellings differ in length.
    """
    left, right = np.asarray(a).ravel(), np.asarray(b).ravel()
    if left.shape != right.shape:
        raise InputError(f"the two labellings differ in length ({left.size} and {right.size}); "
                         "compare assignments of the same samples")
    metrics = require("sklearn.metrics")
    return float(metrics.normalized_mutual_info_score(left, right))


def silhouette(x: Any, labels: Any, sample: Optional[int] = None, seed: int = 0, chunk: int = 4096,
               device: str = "cpu", feedback: Optional[Feedback] = None) -> float:
    """Exact mean silhouette score (Euclidean), in O(chunk^2 + n (d + clusters)) memory.

    For each sample, ``a`` is the mean distance to the other members of its cluster and ``b`` the lowest
    mean distance to the members of another cluster; its silhouette is ``(b - a) / max(a, b)``, and 0 for a
    sample alone in its cluster (as in scikit-learn). Distances are computed in float64 with torch, one
    ``chunk x chunk`` tile of the distance matrix at a time, and only the tiles on and above the diagonal:
    each tile adds its row sums per cluster to its rows' samples and, transposed, its column sums to its
    columns' samples, so every distance is computed once. The result equals
    ``sklearn.metrics.silhouette_score`` (to float64 rounding) without its ``n x n`` memory, and about half
    the multiply-adds of a row-block loop. Time is still O(n^2 d): use ``sample`` for more than ~10^5
    samples on a CPU (28,228 x 512 features: see the ``silhouette`` section of bench/RESULTS.md).

    Args:
        x: ``(n, d)`` samples.
        labels: ``(n,)`` cluster labels (any integers).
        sample: score a seeded random subset of this many samples (None: all).
        seed: seed of the subset.
        chunk: side of a distance tile (rows and columns); a tile takes ``8 * chunk^2`` bytes.
        device: torch device (``"cpu"``, ``"cuda"``).
        feedback: progress (0..100 over the tiles) and cancel, checked between tiles.

    Returns:
        The mean silhouette in ``[-1, 1]``.

    Raises:
        InputError: when labels and samples differ in length, or there are fewer than 2 clusters or as
            many clusters as samples (the score is undefined).
        CanceledError: when the user cancels.
    """
    feedback = feedback or NullFeedback()
    data = as_matrix(x, dtype=np.float64)
    codes = np.asarray(labels).ravel()
    if codes.size != data.shape[0]:
        raise InputError(f"{codes.size} labels for {data.shape[0]} samples; pass one label per sample")
    if chunk < 1:
        raise InputError(f"chunk must be at least 1, got {chunk}")
    if sample is not None and sample < data.shape[0]:
        if sample < 2:
            raise InputError(f"the silhouette sample must hold at least 2 samples, got {sample}")
        keep = np.sort(np.random.default_rng(seed).choice(data.shape[0], int(sample), replace=False))
        data, codes = data[keep], codes[keep]
    _, codes = np.unique(codes, return_inverse=True)
    n, clusters = codes.size, int(codes.max()) + 1
    if not 2 <= clusters <= n - 1:
        raise InputError(f"the silhouette needs between 2 and n - 1 = {n - 1} clusters, got {clusters}; "
                         "cluster into more groups (or score more samples)")
    torch = require("torch")
    dev = torch.device(device)
    points = torch.as_tensor(data, dtype=torch.float64, device=dev)
    points = (points - points.mean(dim=0)).contiguous()  # centring keeps |x|^2 + |y|^2 - 2 x.y from cancelling
    del data  # the float64 copy of x (if one was made) is no longer needed
    squares = (points * points).sum(dim=1)
    member = torch.as_tensor(codes, dtype=torch.int64, device=dev)
    onehot = torch.zeros((n, clusters), dtype=torch.float64, device=dev)
    onehot[torch.arange(n, device=dev), member] = 1.0
    sizes = onehot.sum(dim=0)
    sums = torch.zeros((n, clusters), dtype=torch.float64, device=dev)  # summed distance to each cluster
    starts = list(range(0, n, int(chunk)))
    tiles, done = len(starts) * (len(starts) + 1) // 2, 0
    for i, top in enumerate(starts):
        bottom = min(top + chunk, n)
        block = points[top:bottom]
        for left in starts[i:]:
            check_canceled(feedback)
            right = min(left + chunk, n)
            # |y|^2 - 2 x.y in the GEMM itself, then + |x|^2, clamp and square root in place.
            distance = torch.addmm(squares[None, left:right], block, points[left:right].T, alpha=-2.0)
            distance.add_(squares[top:bottom, None]).clamp_min_(0.0).sqrt_()
            if left == top:
                distance.fill_diagonal_(0.0)  # exactly zero to itself
            sums[top:bottom] += distance @ onehot[left:right]
            if left != top:  # the tile below the diagonal is this one transposed
                sums[left:right] += distance.T @ onehot[top:bottom]
            done += 1
            feedback.set_progress(100.0 * done / tiles)
    rows = torch.arange(n, device=dev)
    own_size = sizes[member]
    a = sums[rows, member] / (own_size - 1.0).clamp_min(1.0)
    means = sums / sizes
    means[rows, member] = float("inf")
    b = means.min(dim=1).values
    denominator = torch.maximum(a, b)
    score = torch.where(denominator > 0, (b - a) / torch.where(denominator > 0, denominator, 1.0), 0.0)
    score = torch.where(own_size > 1, score, torch.zeros_like(score))
    return float(score.sum().item() / n)
