"""Turn a cluster raster into a class raster: from a cluster -> class table, or from a few annotation polygons.

With polygons, every cluster takes the class that covers most of its annotated pixels. A cluster that two
classes share (each with at least ``split_share`` of its annotated pixels) is split, as in the original
interactive tool: its centroid is replaced by the per-class means of the annotated pixels' features (in the
model's k-means space) and the cluster's pixels are reassigned to the nearest of them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.windows import Window

from ....core.errors import InputError
from ....core.labels import LabelSet
from ....core.progress import Feedback, NullFeedback, SubFeedback, check_canceled
from ....core.raster import check_geotiff_name, geotiff_profile, open_raster, overview_factors, pixel_window, raster_env
from ....core.staging import StagedFile, Transaction, readable_path, stages_outputs

__all__ = ["ClusterDecision", "ClassMapResult", "parse_mapping", "count_annotations", "decide", "cluster_settings",
           "clusters_to_classes", "CLASS_NODATA", "UNASSIGNED"]

#: Class raster values: 0 = a cluster no class was given to, 1..C = classes, 255 = nodata.
UNASSIGNED = 0
CLASS_NODATA = 255


@dataclass
class ClusterDecision:
    """What happened to one cluster."""

    cluster: int
    annotated: Dict[str, int]
    decision: str
    class_id: int = UNASSIGNED
    new_clusters: Dict[str, int] = field(default_factory=dict)


@dataclass
class ClassMapResult:
    """Written outputs and the per-cluster report."""

    class_path: str
    class_names: List[str]
    decisions: List[ClusterDecision]
    cluster_path: Optional[str] = None
    pixel_counts: Dict[str, int] = field(default_factory=dict)


def parse_mapping(text: str) -> Dict[int, str]:
    """Parse a cluster -> class table such as ``"1,4,7-9=building; 2=water"`` (``:`` also works for ``=``).

    Also accepts one ``cluster=class`` pair per line. Raises :class:`InputError` naming ``MAPPING``.
    """
    mapping: Dict[int, str] = {}
    for part in re.split(r"[;\n]", text or ""):
        part = part.strip()
        if not part:
            continue
        match = re.match(r"^([\d,\s\-]+)[=:](.+)$", part)
        if not match or not match.group(2).strip():
            raise InputError(f"cannot read '{part}': write cluster ids, '=' and a class name, e.g. "
                             "'1,4,7-9=building; 2=water'.", "MAPPING")
        name = match.group(2).strip()
        for item in match.group(1).split(","):
            item = item.strip()
            if not item:
                continue
            if "-" in item:
                lo, _, hi = item.partition("-")
                if not lo.strip().isdigit() or not hi.strip().isdigit() or int(lo) > int(hi):
                    raise InputError(f"'{item}' is not a range of cluster ids like 7-9.", "MAPPING")
                ids = range(int(lo), int(hi) + 1)
            elif item.isdigit():
                ids = [int(item)]
            else:
                raise InputError(f"'{item}' is not a cluster id.", "MAPPING")
            for cid in ids:
                if cid in mapping and mapping[cid] != name:
                    raise InputError(f"cluster {cid} is mapped to both '{mapping[cid]}' and '{name}'.", "MAPPING")
                mapping[cid] = name
    if not mapping:
        raise InputError("the table maps no cluster; write e.g. '1,4=building; 2=water'.", "MAPPING")
    return mapping


def _annotation_window(src: rasterio.DatasetReader, labels: LabelSet) -> Tuple[int, int, int, int]:
    import shapely

    bounds = shapely.total_bounds(np.asarray(labels.geometries, dtype=object))
    window = pixel_window(src.transform, tuple(bounds), src.width, src.height)
    if window is None:
        raise InputError("no annotation polygon overlaps the cluster raster. Draw annotations on the raster's area "
                         "(and check the layer's CRS).", "ANNOTATIONS")
    return window


def count_annotations(cluster_path: str, labels: LabelSet, feedback: Optional[Feedback] = None,
                      strip_rows: int = 512) -> np.ndarray:
    """Annotated pixels per (cluster, class): ``(K + 1, C + 1)`` int64, row = cluster id, column = class id.

    Only the window around the annotations is read. Row 0 (nodata) and column 0 (not annotated) stay 0.
    """
    feedback = feedback or NullFeedback()
    with raster_env(), open_raster(cluster_path, "INPUT") as src:
        x0, y0, width, height = _annotation_window(src, labels)
        top = 0
        tables: List[np.ndarray] = []
        for y in range(y0, y0 + height, strip_rows):
            check_canceled(feedback)
            win = Window(x0, y, width, min(strip_rows, y0 + height - y))
            ids = src.read(1, window=win).astype(np.int64)
            lab = labels.rasterize(src.window_transform(win), ids.shape).astype(np.int64)
            keep = (lab > 0) & (lab <= labels.num_classes) & (ids > 0)
            if src.nodata is not None:
                keep &= ids != src.nodata
            if keep.any():
                top = max(top, int(ids[keep].max()))
                tables.append(np.stack([ids[keep], lab[keep]]))
    table = np.zeros((top + 1, labels.num_classes + 1), np.int64)
    for pairs in tables:
        np.add.at(table, (pairs[0], pairs[1]), 1)
    if table.sum() == 0:
        raise InputError("the annotations cover no valid pixel of the cluster raster. Draw them where the raster has "
                         "clusters (not on nodata).", "ANNOTATIONS")
    return table


def decide(table: np.ndarray, class_names: Sequence[str], split_share: float = 0.3) -> List[ClusterDecision]:
    """Per cluster with annotated pixels: the majority class, or a split when two classes each hold >= split_share.

    Args:
        table: ``(K + 1, C + 1)`` counts from :func:`count_annotations`.
        class_names: names of classes 1..C.
        split_share: share of a cluster's annotated pixels above which a second class forces a split
            (> 0.5 never splits).
    """
    decisions = []
    for cluster in range(1, table.shape[0]):
        counts = table[cluster, 1:]
        total = int(counts.sum())
        if total == 0:
            continue
        annotated = {class_names[i]: int(c) for i, c in enumerate(counts) if c}
        order = np.argsort(-counts, kind="stable")
        shares = counts[order] / total
        if len(order) > 1 and shares[1] >= split_share:
            kept = [int(i) for i, s in zip(order, shares) if s >= split_share]
            decisions.append(ClusterDecision(cluster, annotated, "split between " + ", ".join(
                class_names[i] for i in kept), UNASSIGNED, {class_names[i]: -1 for i in kept}))
        else:
            best = int(order[0])
            decisions.append(ClusterDecision(cluster, annotated, f"{class_names[best]} ({shares[0]:.0%} of "
                                             f"{total} annotated px)", best + 1))
    return decisions


def cluster_settings(source: str, cluster_path: str) -> Tuple[int, Optional[int], Tuple[int, int]]:
    """Tile size and overlap a cluster raster was made with (its tags; 512 and None for older files), and its
    pixel offset in ``source``'s grid.

    Raises:
        InputError: naming RASTER when the cluster raster is not on ``source``'s grid (other CRS, pixel size,
            or not aligned to its pixels).
    """
    with raster_env(), open_raster(source, "RASTER") as src, open_raster(cluster_path, "INPUT") as clusters:
        tags = clusters.tags()
        a, b = src.transform, clusters.transform
        dx, dy = ~a * (b.c, b.f)
        pixel_a, pixel_b = (a.a, a.b, a.d, a.e), (b.a, b.b, b.d, b.e)
        same = src.crs == clusters.crs and all(abs(p - q) <= 1e-9 * max(1.0, abs(p)) for p, q in zip(pixel_a, pixel_b))
        if not same or abs(dx - round(dx)) > 1e-6 or abs(dy - round(dy)) > 1e-6:
            raise InputError("RASTER must be the raster the cluster raster was made from (same CRS and pixel grid) "
                             "so that split clusters can be recomputed.", "RASTER")
    overlap = tags.get("satseg_overlap")
    return int(tags.get("satseg_tile", 512)), int(overlap) if overlap is not None else None, \
        (int(round(dx)), int(round(dy)))


def _split_centroids(source: str, model_path: str, cluster_path: str, labels: LabelSet,
                     splits: List[ClusterDecision], class_names: Sequence[str], device: str,
                     feedback: Feedback) -> Dict[int, Tuple[np.ndarray, List[int]]]:
    """Per split cluster: the per-class mean features (k-means space) of its annotated pixels."""
    from .cluster_map import ClusterMapConfig, cluster_grid, feature_blocks, open_cluster_model

    cm = open_cluster_model(model_path, device, feedback)
    wanted = {d.cluster: [class_names.index(n) + 1 for n in d.new_clusters] for d in splits}
    sums: Dict[Tuple[int, int], np.ndarray] = {}
    counts: Dict[Tuple[int, int], int] = {}
    tile, overlap, (dx, dy) = cluster_settings(source, cluster_path)
    with raster_env(), open_raster(source) as src, open_raster(cluster_path, "INPUT") as clusters:
        x0, y0, w, h = _annotation_window(clusters, labels)
        bounds = rasterio.windows.bounds(Window(x0, y0, w, h), clusters.transform)
        config = ClusterMapConfig(tile_size=tile, overlap=overlap, bounds=bounds)
        grid = cluster_grid(src, cm, config)
        for block in feature_blocks(src, cm, grid, config, feedback):
            r0, r1, c0, c1 = block.r0, block.r1, block.c0, block.c1
            win = Window(c0, r0, c1 - c0, r1 - r0)
            lab = labels.rasterize(src.window_transform(win), (r1 - r0, c1 - c0))
            ids = clusters.read(1, window=Window(c0 - dx, r0 - dy, c1 - c0, r1 - r0), boundless=True, fill_value=0)
            for cluster, class_ids in wanted.items():
                for class_id in class_ids:
                    sel = (ids == cluster) & (lab == class_id) & ~block.empty
                    if sel.any():
                        space = cm.transform.apply(np.ascontiguousarray(block.values[:, sel].T))
                        key = (cluster, class_id)
                        sums[key] = sums.get(key, 0) + space.astype(np.float64).sum(0)
                        counts[key] = counts.get(key, 0) + int(sel.sum())
    out = {}
    for cluster, class_ids in wanted.items():
        means = [sums[(cluster, c)] / counts[(cluster, c)] for c in class_ids if counts.get((cluster, c))]
        if len(means) < 2:
            continue
        centroids = np.asarray(means, np.float32)
        if cm.transform.normalize:
            centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        out[cluster] = (centroids, [c for c in class_ids if counts.get((cluster, c))])
    return out


def _class_palette(n: int) -> Dict[int, Tuple[int, int, int, int]]:
    base = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]
    colours = {UNASSIGNED: (200, 200, 200, 0), CLASS_NODATA: (0, 0, 0, 0)}
    for i in range(1, n + 1):
        colours[i] = (*base[(i - 1) % len(base)], 255)
    return colours


def _write_classes(cluster_path: str, output_path: str, lut: np.ndarray, class_names: Sequence[str],
                   feedback: Feedback, strip_rows: int = 512) -> Dict[str, int]:
    """Stream the cluster raster through a lookup table into a uint8 class raster on the same grid."""
    check_geotiff_name(output_path, "OUTPUT")
    counts = np.zeros(256, np.int64)
    with raster_env(), open_raster(cluster_path, "INPUT") as src:
        profile = geotiff_profile(src.width, src.height, 1, "uint8", src.crs, src.transform, CLASS_NODATA, level=1)
        staged = StagedFile(output_path, parameter="OUTPUT", suffix=".tif")
        with staged as tmp:
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.set_band_description(1, "class")
                dst.write_colormap(1, _class_palette(len(class_names)))
                dst.update_tags(classes=";".join(class_names))
                for y in range(0, src.height, strip_rows):
                    check_canceled(feedback)
                    win = Window(0, y, src.width, min(strip_rows, src.height - y))
                    ids = src.read(1, window=win).astype(np.int64)
                    nodata = ids == src.nodata if src.nodata is not None else np.zeros(ids.shape, bool)
                    ids = np.clip(ids, 0, len(lut) - 1)  # lut covers every uint16 id; clip guards other types
                    out = lut[ids]
                    out[nodata] = CLASS_NODATA
                    counts += np.bincount(out.ravel(), minlength=256)
                    dst.write(out[None], window=win)
                    feedback.set_progress(90.0 * min(1.0, (y + strip_rows) / src.height))
                factors = overview_factors(src.width, src.height)
                if factors:
                    from rasterio.enums import Resampling

                    dst.build_overviews(factors, Resampling.mode)
            staged.commit()
    result = {name: int(counts[i]) for i, name in enumerate(class_names, start=1)}
    result["unassigned"] = int(counts[UNASSIGNED])
    return result


@stages_outputs
def clusters_to_classes(cluster_path: str, output_path: str, mapping: Optional[Dict[int, str]] = None,
                        labels: Optional[LabelSet] = None, split_share: float = 0.3,
                        source: Optional[str] = None, model_path: Optional[str] = None,
                        cluster_output: Optional[str] = None, device: str = "auto",
                        feedback: Optional[Feedback] = None,
                        transaction: Optional[Transaction] = None) -> ClassMapResult:
    """Write a class raster (0 unassigned, 1..C classes, 255 nodata) from a cluster raster.

    Args:
        cluster_path: a cluster raster from :func:`cluster_raster` (ids 1..K, nodata 0).
        output_path: the class GeoTIFF to write.
        mapping: ``{cluster id: class name}`` (from a table, :func:`parse_mapping`); or None to use ``labels``.
        labels: annotation polygons (classes by name) in the cluster raster's CRS.
        split_share: see :func:`decide`.
        source, model_path: the raster and ClusterNet model the clusters came from; needed to split clusters
            (without them, a shared cluster gets its majority class and a warning says so).
        cluster_output: where to write the cluster raster with split clusters (needed when a split happens;
            None: a file beside ``output_path``).
        device: torch device for the split step.
        feedback: progress, cancel, log.
        transaction: stage the outputs into this run's transaction and leave the commit to its owner
            (default: the current run's, else they are moved into place together when this returns).
    """
    feedback = feedback or NullFeedback()
    if (mapping is None) == (labels is None):
        raise InputError("give either a cluster -> class table or annotation polygons (not both).", "MAPPING")
    with raster_env(), open_raster(cluster_path, "INPUT") as src:
        if src.count != 1 or not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
            raise InputError("choose a cluster raster (one integer band of cluster ids) made by 'Cluster raster'.",
                             "INPUT")
    decisions: List[ClusterDecision]
    final_clusters = cluster_path
    if mapping is not None:
        class_names = list(dict.fromkeys(mapping.values()))
        decisions = [ClusterDecision(c, {}, name, class_names.index(name) + 1) for c, name in sorted(mapping.items())]
        top = max(mapping)
        lut = np.zeros(top + 1, np.uint8)
        for c, name in mapping.items():
            lut[c] = class_names.index(name) + 1
    else:
        class_names = list(labels.class_names)
        if len(class_names) > 254:
            raise InputError("at most 254 classes fit a class raster.", "ANNOTATIONS")
        table = count_annotations(cluster_path, labels, SubFeedback(feedback, 0, 10))
        decisions = decide(table, class_names, split_share)
        splits = [d for d in decisions if d.new_clusters]
        if splits and (source is None or model_path is None):
            feedback.warning(f"{len(splits)} cluster(s) hold two classes ({', '.join(str(d.cluster) for d in splits)}) "
                             "but no raster and model were given to split them; each gets its majority class. Give "
                             "RASTER and MODEL to split them.")
            for d in splits:
                counts = table[d.cluster, 1:]
                d.class_id = int(np.argmax(counts)) + 1
                d.decision = f"{class_names[d.class_id - 1]} (majority; not split: no model given)"
                d.new_clusters = {}
            splits = []
        lut_size = table.shape[0]
        split_ids: Dict[int, Tuple[np.ndarray, List[int]]] = {}
        if splits:
            from ....models.checkpoint import read_metadata
            from .cluster_map import ClusterMapConfig, cluster_raster

            centroids = _split_centroids(source, model_path, cluster_path, labels, splits, class_names, device,
                                         SubFeedback(feedback, 10, 40))
            next_id = len(read_metadata(model_path, kind="clusternet").classes) + 1
            for d in splits:
                if d.cluster not in centroids:
                    continue
                cents, class_ids = centroids[d.cluster]
                ids = list(range(next_id, next_id + len(class_ids)))
                next_id += len(class_ids)
                split_ids[d.cluster] = (cents, ids)
                d.new_clusters = {class_names[c - 1]: i for c, i in zip(class_ids, ids)}
                d.decision += " -> new clusters " + ", ".join(f"{i} ({n})" for n, i in d.new_clusters.items())
            with raster_env(), open_raster(cluster_path, "INPUT") as src:
                whole = src.bounds
            tile, overlap, _ = cluster_settings(source, cluster_path)
            cluster_output = cluster_output or os.path.splitext(output_path)[0] + "_clusters.tif"
            # same tiles, same region, same nodata as the first run: only the split clusters' pixels change
            cluster_raster(source, model_path, cluster_output, ClusterMapConfig(tile, overlap, bounds=tuple(whole)),
                           device, SubFeedback(feedback, 40, 80), splits=split_ids, keep_nodata_of=cluster_path)
            final_clusters = cluster_output
            lut_size = max(lut_size, next_id)
        lut = np.zeros(lut_size, np.uint8)
        for d in decisions:
            if d.cluster < lut_size and d.class_id:
                lut[d.cluster] = d.class_id
            for name, new_id in d.new_clusters.items():
                if new_id > 0:
                    lut[new_id] = class_names.index(name) + 1
    for d in decisions:
        feedback.info(f"Cluster {d.cluster}: {d.decision}" + (f"; annotated px {d.annotated}" if d.annotated else ""))
    # every uint16 id gets an entry: ids no decision names stay unassigned
    lut = np.concatenate([lut, np.zeros(max(0, 65536 - len(lut)), np.uint8)])
    # the split cluster raster is staged in this run, not yet in place: read the staged file
    pixel_counts = _write_classes(readable_path(final_clusters), output_path, lut, class_names,
                                  SubFeedback(feedback, 80, 100))
    feedback.set_progress(100.0)
    return ClassMapResult(os.path.abspath(output_path), class_names, decisions,
                          os.path.abspath(final_clusters) if final_clusters != cluster_path else None, pixel_counts)

