"""bench_clustering.py's quality part: scores against the footprints, the k-means baseline, annotations needed."""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from harness import log

#: evaluate_clusters' default keep threshold (also the Processing tool's default).
KEEP_THRESHOLD = 0.4
#: "Enough annotations": class-raster Dice within this of the best reachable Dice.
DICE_SLACK = 0.05
#: Side of the background annotation squares, metres.
BOX_SIDE_M = 16.0
#: One row of the annotation experiment: n, then ClusterNet with splits, without splits, the k-means baseline.
AnnotationRow = Tuple[int, Dict[str, Any], Dict[str, Any], Dict[str, Any]]


def kmeans_baseline(scene: str, out_path: str, k: int, niter: int, seed: int) -> Dict[str, Any]:
    """faiss k-means on the z-scored bands of every pixel, written as a cluster raster (ids 1..k, nodata 0)."""
    import rasterio

    from satseg_plugin.core.kmeans import kmeans

    with rasterio.open(scene) as src:
        data = src.read().astype(np.float64)
        profile = src.profile
    c, h, w = data.shape
    x = data.reshape(c, -1).T
    x = ((x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-6)).astype(np.float32)
    start = time.perf_counter()
    result = kmeans(x, k, niter=niter, seed=seed)
    elapsed = time.perf_counter() - start
    ids = (result.assignments.reshape(h, w) + 1).astype(np.uint16)
    profile.update(count=1, dtype="uint16", nodata=0, compress="DEFLATE", photometric="MINISBLACK", tiled=True,
                   blockxsize=256, blockysize=256)
    profile.pop("interleave", None)
    with rasterio.open(out_path, "w", **profile) as dst:
        dst.write(ids[None])
    return {"kmeans_s": elapsed, "pixels": int(h * w), "iterations": result.iterations}


def cluster_scores(cluster_path: str, buildings: Sequence[Any]) -> Dict[str, float]:
    """``evaluate_clusters`` against the footprints (one class, building)."""
    from satseg_plugin.core.labels import LabelSet
    from satseg_plugin.pipelines.clustering.pixel.evaluate import evaluate_clusters

    s = evaluate_clusters(cluster_path, LabelSet(list(buildings), [1] * len(buildings)), KEEP_THRESHOLD)
    used = int((s.table.sum(axis=1)[1:] > 0).sum())
    return {"best_dice": s.best_dice["building"], "best_iou": s.best_iou["building"], "dice": s.dice["building"],
            "iou": s.iou["building"], "purity": s.purity, "nmi": s.nmi, "clusters_used": used,
            "positive": len(s.positive_clusters["building"])}


def footprint_mask(scene: str, buildings: Sequence[Any]) -> np.ndarray:
    """The footprints burned on the scene's grid (pixel-centre rule, as ``LabelSet.rasterize``)."""
    import rasterio
    from rasterio.features import rasterize

    with rasterio.open(scene) as src:
        return rasterize([(b, 1) for b in buildings], out_shape=(src.height, src.width), transform=src.transform,
                         fill=0, dtype=np.uint8).astype(bool)


def building_dice(class_path: str, ref: np.ndarray) -> Tuple[float, float]:
    """Dice and IoU of class 1 (building) of a class raster against the footprint mask."""
    import rasterio

    with rasterio.open(class_path) as src:
        pred = src.read(1) == 1
    tp = float(np.count_nonzero(pred & ref))
    fp = float(np.count_nonzero(pred & ~ref))
    fn = float(np.count_nonzero(~pred & ref))
    return (2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0), (tp / (tp + fp + fn) if tp + fp + fn else 1.0)


def background_boxes(scene: str, buildings: Sequence[Any], count: int, seed: int) -> List[Any]:
    """``count`` seeded random squares of ``BOX_SIDE_M`` inside the scene that touch no building (1 m margin)."""
    import rasterio
    import shapely
    from shapely.geometry import box

    with rasterio.open(scene) as src:
        b = src.bounds
    tree = shapely.STRtree([g.buffer(1.0) for g in buildings])
    rng = np.random.default_rng(seed)
    boxes: List[Any] = []
    tries = 0
    while len(boxes) < count:
        tries += 1
        if tries > 100_000:
            raise RuntimeError("cannot place the background squares")
        x = rng.uniform(b.left, b.right - BOX_SIDE_M)
        y = rng.uniform(b.bottom, b.top - BOX_SIDE_M)
        candidate = box(x, y, x + BOX_SIDE_M, y + BOX_SIDE_M)
        if len(tree.query(candidate, predicate="intersects")) == 0 and \
                not any(candidate.intersects(o) for o in boxes):
            boxes.append(candidate)
    return boxes


def annotation_counts(total: int, cap: Optional[int]) -> List[int]:
    """1, 2, 4, ... up to ``total`` (and ``total`` itself), at most ``cap``."""
    top = min(total, cap) if cap else total
    ns, n = [], 1
    while n < top:
        ns.append(n)
        n *= 2
    ns.append(top)
    return ns


def annotations_run(cluster_path: str, scene: str, model: Optional[str], labels: Any, ref: np.ndarray,
                    scratch: str, name: str, split_share: float = 0.3) -> Dict[str, Any]:
    """``clusters_to_classes`` with annotation polygons; the class raster's building Dice and what happened."""
    from satseg_plugin.core.progress import NullFeedback
    from satseg_plugin.pipelines.clustering.pixel.classes import clusters_to_classes

    out = os.path.join(scratch, f"{name}_classes.tif")
    split_out = os.path.join(scratch, f"{name}_split_clusters.tif")
    start = time.perf_counter()
    result = clusters_to_classes(cluster_path, out, labels=labels, split_share=split_share, source=scene if model
                                 else None, model_path=model, cluster_output=split_out, device="cpu",
                                 feedback=NullFeedback())
    elapsed = time.perf_counter() - start
    dice, iou = building_dice(out, ref)
    splits = sum(1 for d in result.decisions if d.new_clusters)
    building_clusters = sum(1 for d in result.decisions if d.class_id == 1) + \
        sum(1 for d in result.decisions for n in d.new_clusters if n == "building")
    for path in (out, split_out):
        if os.path.exists(path):
            os.remove(path)
    return {"dice": dice, "iou": iou, "seconds": elapsed, "splits": splits, "building_clusters": building_clusters,
            "annotated_clusters": len(result.decisions), "unassigned_px": result.pixel_counts.get("unassigned", 0)}


def annotation_experiment(cluster_path: str, base_path: str, scene: str, model: str, buildings: Sequence[Any],
                          ref: np.ndarray, scratch: str, max_annotations: int) -> List[AnnotationRow]:
    """``clusters_to_classes`` with n footprints + n background squares, n = 1, 2, 4, ... (:func:`annotation_counts`).

    Each n runs three ways: the ClusterNet raster with splits (scene and model given), without splits, and the
    k-means baseline raster (no model, so no splits).
    """
    from satseg_plugin.core.labels import LabelSet

    order = np.random.default_rng(0).permutation(len(buildings))
    ns = annotation_counts(len(buildings), max_annotations)
    boxes = background_boxes(scene, buildings, max(ns), seed=1)
    rows: List[AnnotationRow] = []
    log(f"Annotations needed: n building footprints + n background squares of {BOX_SIDE_M:g} m, n = {ns}:")
    for n in ns:
        geoms = [buildings[i] for i in order[:n]] + boxes[:n]
        labels = LabelSet(geoms, [1] * n + [2] * n, class_names=["building", "other"])
        split = annotations_run(cluster_path, scene, model, labels, ref, scratch, "split")
        nosplit = annotations_run(cluster_path, scene, None, labels, ref, scratch, "nosplit", 1.0)
        km = annotations_run(base_path, scene, None, labels, ref, scratch, "kmeans", 1.0)
        rows.append((n, split, nosplit, km))
        log(f"  n={n}: ClusterNet with splits Dice {split['dice']:.3f} ({split['splits']} split(s), "
            f"{split['seconds']:.0f} s), no splits {nosplit['dice']:.3f}, k-means baseline {km['dice']:.3f}")
    return rows


def enough(rows: Sequence[AnnotationRow], column: int, best: float) -> str:
    """The smallest n whose Dice in ``column`` (1: splits, 2: no splits, 3: k-means) is within ``DICE_SLACK``."""
    hit = next((row[0] for row in rows if row[column]["dice"] >= best - DICE_SLACK), None)
    return f"n = {hit}" if hit is not None else f"not reached up to n = {rows[-1][0]}"
