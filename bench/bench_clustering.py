"""Benchmark SatSeg's pixel clustering: ClusterNet quality, annotations needed, throughput, memory and seams.

1. Quality on the sample scene (``sample_data.generate.generate_scene(size=1024, seed=0)``):

   a. ``train_clusternet`` with the default ``ClusterNetConfig`` (U-Net/resnet18, k = 20; ``--rounds`` can
      shorten it), then ``cluster_raster`` of the scene (tile 512, default overlap) and ``evaluate_clusters``
      against the building footprints: best reachable building Dice/IoU, Dice/IoU at the keep threshold 0.4,
      purity and NMI;
   b. the baseline: faiss k-means (``engine.kmeans.kmeans``, same k, iterations and seed) on the z-scored band
      values of every pixel of the scene, scored the same way;
   c. annotations needed: ``clusters_to_classes`` with n building footprints (seeded random order) plus n
      background squares (seeded random boxes that touch no building), classes ``building`` and ``other``,
      n = 1, 2, 4, ...; the building Dice of the class raster against the footprints, and the smallest n
      whose Dice is within 0.05 of the best reachable Dice. The ClusterNet runs get the scene and the model,
      so clusters both classes share are split; a no-split variant and the k-means baseline (which has no
      model, so no splits) run alongside.
2. Throughput and memory of ``cluster_raster`` in child processes, with a tiny ClusterNet (the encoder and
   decoder of ``bench_segmentation.py``'s tiny U-Net, random weights, centroids from k-means on its features)
   on the cached synthetic rasters of ``sources.py`` (2048, 10240 and, when its estimated time allows,
   20480 px), tile 512, batch 4: Mpx/s and peak RSS, against a child that only imports the libraries; the
   verdict compares the runs whose GDAL block cache reached its cap.
3. Seams, on the 2048 px scene with the trained ClusterNet: the share of adjacent pixel pairs with different
   cluster ids on the lines at tile core borders (and on the blend ramp's lines), against the 16 lines beside
   the ramp, over the same ratio of a tile-free k-means raster (the control).

Every ``cluster_raster`` run is its own child process (wall time and peak RSS through ``/usr/bin/time``, the
engine time inside the child). Scene, models and source rasters are cached under ``bench/out/``.

Usage::

    nice -n 5 .venv/bin/python bench/bench_clustering.py --write-results bench/RESULTS.md   # ~15-25 min
    .venv/bin/python bench/bench_clustering.py --quick                                      # a few minutes
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from harness import (
    DEFAULT_OUT,
    REPO_ROOT,
    THREAD_VARS,
    CachePoller,
    Measurement,
    add_common_args,
    machine_info,
    new_parser,
    parallel_probe,
    run_json_child,
    write_section,
)
from sources import (  # the tiny memory-run model is the tiny U-Net of bench_segmentation
    ORIGIN,
    PIXEL_SIZE,
    PLATEAU_LIMIT_MIB,
    SEAM_LIMIT,
    TINY_ENCODER,
    TINY_KWARGS,
    ensure_scene,
    ensure_source,
    warm_cache,
)

#: Bump when the recipe of a cached model changes.
MODEL_VERSION = 1
#: evaluate_clusters' default keep threshold (also the Processing tool's default).
KEEP_THRESHOLD = 0.4
#: "Enough annotations": class-raster Dice within this of the best reachable Dice.
DICE_SLACK = 0.05
# Seam verdict (SEAM_LIMIT, as for segmentation): id changes on core-border (and ramp) lines at most this times
# the flanking lines', over the same ratio of the tile-free control raster, counts as seamless.
#: Lines beside each blend ramp that give the local reference rate of id changes.
FLANK = 16
#: Scene of the seam runs: more tile borders than the quality scene gives a steadier statistic.
SEAM_SCENE = 2048
#: Side of the background annotation squares, metres.
BOX_SIDE_M = 16.0


def log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------------

def child_cluster(spec: Dict[str, Any]) -> Dict[str, Any]:
    """``cluster_raster`` once, as the spec says; the time of the forward and of the id assignment too."""
    import torch

    from satseg_plugin.pipelines.clustering.pixel import cluster_map
    from satseg_plugin.pipelines.clustering.pixel.cluster_map import ClusterMapConfig, cluster_raster

    start = time.perf_counter()
    import faiss  # noqa: F401
    import segmentation_models_pytorch  # imported on first use; a fixed cost per process  # noqa: F401

    set_threads(int(spec.get("threads") or 0))

    import_s = time.perf_counter() - start
    spent = {"features": 0.0, "assign": 0.0}

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t0
        return wrapper

    cluster_map.ClusterModel.features = timed("features", cluster_map.ClusterModel.features)
    cluster_map.ClusterModel.assign = timed("assign", cluster_map.ClusterModel.assign)
    bounds = tuple(spec["bounds"]) if spec.get("bounds") else None
    config = ClusterMapConfig(tile_size=spec["tile"], overlap=spec.get("overlap"), batch_size=spec["batch"],
                              bounds=bounds)
    with CachePoller() as poller:
        start = time.perf_counter()
        result = cluster_raster(spec["source"], spec["model"], spec["output"], config, device="cpu")
        elapsed = time.perf_counter() - start
    _, _, width, height = result.window
    return {"engine_s": elapsed, "import_s": import_s, "features_s": spent["features"], "assign_s": spent["assign"],
            "tiles": result.tiles, "width": width, "height": height, "threads": torch.get_num_threads(),
            "clusters_used": sum(1 for c in result.pixel_counts if c), "gdal_cache_peak": poller.peak,
            "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def child_train(spec: Dict[str, Any]) -> Dict[str, Any]:
    """``train_clusternet`` on the scene with the given settings."""
    import torch

    from satseg_plugin.core.progress import NullFeedback
    from satseg_plugin.pipelines.clustering.pixel.train import ClusterNetConfig, train_clusternet

    set_threads(int(spec.get("threads") or 0))
    config = ClusterNetConfig(**spec["config"])
    marks: List[float] = []

    class Rounds(NullFeedback):
        def info(self, message: str) -> None:
            if message.startswith("Round "):
                marks.append(time.perf_counter() - start)

    start = time.perf_counter()
    result = train_clusternet([spec["scene"]], spec["model"], config, "cpu", Rounds())
    return {"train_s": time.perf_counter() - start, "round_ends_s": marks, "rounds": result.rounds,
            "objective": result.objective,
            "cluster_sizes": result.cluster_sizes, "threads": torch.get_num_threads()}


def child_imports(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Only the imports of ``cluster_raster`` (torch, smp, faiss, rasterio, SatSeg): the RSS floor."""
    import faiss  # noqa: F401
    import rasterio  # noqa: F401
    import segmentation_models_pytorch  # noqa: F401
    import torch  # noqa: F401

    from satseg_plugin.core import kmeans  # noqa: F401
    from satseg_plugin.models.nets import clusternet  # noqa: F401
    from satseg_plugin.pipelines.clustering.pixel import cluster_map  # noqa: F401

    return {"self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def child_threads(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The two halves of ``cluster_raster``'s work with 1 and with 2 threads: the tiny model's forward on a
    batch of 4 tiles (torch threads) and the nearest-centroid assignment of one tile core (faiss threads)."""
    import faiss
    import torch

    from satseg_plugin.pipelines.clustering.pixel.cluster_map import ClusterModel

    cm = ClusterModel(spec["model"], torch.device("cpu"))
    raw = np.random.default_rng(0).integers(0, 255, (4, 3, 512, 512)).astype(np.float32)
    feats = cm.features(raw)  # warm-up
    rows = np.ascontiguousarray(feats[0][:, 64:448, 64:448].reshape(feats.shape[1], -1).T)
    out: Dict[str, Any] = {}
    for threads in (1, 2, 1, 2):
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
        t0 = time.perf_counter()
        cm.features(raw)
        t1 = time.perf_counter()
        cm.assign(rows)
        t2 = time.perf_counter()
        for key, value in ((f"forward_{threads}", t1 - t0), (f"assign_{threads}", t2 - t1)):
            out[key] = min(out.get(key, float("inf")), value)
    out["rows"] = int(rows.shape[0])
    return out


CHILDREN: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
    "cluster": child_cluster, "train": child_train, "imports": child_imports, "threads": child_threads}


def set_threads(threads: int) -> None:
    """torch intra-op threads and faiss OpenMP threads of this process (0: leave the defaults)."""
    if threads:
        import faiss
        import torch

        torch.set_num_threads(int(threads))
        faiss.omp_set_num_threads(int(threads))


def run_child(mode: str, spec: Dict[str, Any]) -> Tuple[Dict[str, Any], Measurement]:
    """Run one child of this script under ``/usr/bin/time``; its summary (last output line) and measurement.

    With ``spec["threads"]``, the child's OpenMP and BLAS pools get that many threads too (environment).
    """
    return run_json_child(__file__, mode, spec, threads=int(spec.get("threads") or 0))


@dataclass
class Run:
    """One measured ``cluster_raster`` child."""

    label: str
    summary: Dict[str, Any]
    wall_s: float
    maxrss_mib: float

    @property
    def engine_s(self) -> float:
        return float(self.summary["engine_s"])

    @property
    def mpx(self) -> float:
        return self.summary["width"] * self.summary["height"] / 1e6

    @property
    def mpx_s(self) -> float:
        return self.mpx / self.engine_s


def measured_cluster(label: str, spec: Dict[str, Any], keep: bool = False) -> Run:
    """A ``cluster_raster`` child; the output is deleted unless ``keep``."""
    warm_cache(spec["source"])
    try:
        summary, m = run_child("cluster", spec)
    finally:
        if not keep and os.path.exists(spec["output"]):
            os.remove(spec["output"])
    run = Run(label, summary, m.wall_s, m.maxrss_mib)
    log(f"  {label}: {run.engine_s:.1f} s in the child ({m.wall_s:.1f} s process), {run.mpx_s:.2f} Mpx/s, "
        f"peak RSS {m.maxrss_mib:.0f} MiB")
    return run


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------

def train_config(args: argparse.Namespace) -> Dict[str, Any]:
    """The ClusterNet recipe: the defaults, with ``--rounds`` when given."""
    from satseg_plugin.pipelines.clustering.pixel.train import ClusterNetConfig

    config = asdict(ClusterNetConfig())
    if args.rounds:
        config["rounds"] = args.rounds
    return config


def ensure_trained_clusternet(out_dir: str, scene: Dict[str, str], args: argparse.Namespace) -> Tuple[str, Dict]:
    """The ClusterNet trained on the scene, cached with its recipe (retrained when it changes or ``--retrain``)."""
    config = train_config(args)
    path = os.path.join(out_dir, f"clusternet_{config['encoder']}_{args.scene_size}_r{config['rounds']}"
                                 f"_v{MODEL_VERSION}.satseg")
    info_path = path + ".json"
    if not args.retrain and os.path.exists(path) and os.path.exists(info_path):
        with open(info_path, encoding="utf-8") as handle:
            info = json.load(handle)
        if info.get("config") == config:
            log(f"Using cached ClusterNet {os.path.relpath(path)} (trained {info.get('date')})")
            info["cached"] = True
            return path, info
    log(f"Training ClusterNet ({config['architecture']}/{config['encoder']}, k={config['num_clusters']}, "
        f"{config['rounds']} rounds x {config['steps_per_round']} steps of {config['batch_size']} x "
        f"{config['patch_size']} px) ...")
    summary, m = run_child("train", {"scene": scene["scene"], "model": path, "config": config,
                                     "threads": args.threads or None})
    info = {"config": config, "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "wall_s": m.wall_s, "maxrss_mib": m.maxrss_mib, "load_after": os.getloadavg(), **summary}
    with open(info_path, "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=1)
    last = summary["rounds"][-1]
    log(f"  trained in {summary['train_s']:.0f} s (process {m.wall_s:.0f} s, peak RSS {m.maxrss_mib:.0f} MiB); "
        f"last round: NMI with the previous round {last['nmi_previous']:.3f}, loss {last['loss']:.3f}")
    info["cached"] = False
    return path, info


def ensure_tiny_clusternet(out_dir: str, source: str) -> str:
    """A tiny ClusterNet (random weights) saved as a proper model file, with centroids fitted on its features.

    ``train_clusternet`` takes no backbone keyword arguments, so the tiny decoder cannot come from it; the file is
    written here the way ``train_clusternet`` writes its own (``kind="clusternet"``, whitening + L2 transform,
    k-means centroids), with ``model_kwargs`` that ``clusternet_from_checkpoint`` passes back to the backbone.
    """
    import rasterio
    import torch
    from rasterio.windows import Window

    from satseg_plugin.core.kmeans import kmeans
    from satseg_plugin.core.normalization import band_statistics
    from satseg_plugin.models.checkpoint import ModelMetadata, model_tensors, save_checkpoint
    from satseg_plugin.models.nets.clusternet import build_clusternet
    from satseg_plugin.models.registry import input_multiple
    from satseg_plugin.pipelines.clustering.pixel.train import ClusterNetConfig, FeatureTransform

    defaults = ClusterNetConfig()
    whiten, normalize = bool(defaults.whiten), bool(defaults.normalize)
    band_share = getattr(defaults, "band_share", None)
    tag = f"w{int(whiten)}n{int(normalize)}" + (f"b{band_share:g}" if band_share is not None else "")
    path = os.path.join(out_dir, f"tiny_clusternet_{TINY_ENCODER}_{tag}_v{MODEL_VERSION}.satseg")
    if os.path.exists(path):
        log(f"Using cached tiny ClusterNet {os.path.relpath(path)}")
        return path
    feature_dim, k = 32, 20
    torch.manual_seed(0)
    share = {} if band_share is None else {"band_share": band_share}
    model = build_clusternet("unet", TINY_ENCODER, 3, feature_dim, k, **share, **TINY_KWARGS).eval()
    with rasterio.open(source) as src:
        mean, std = band_statistics(src, [1, 2, 3])
        crops = [src.read([1, 2, 3], window=Window(x, y, 256, 256)).astype(np.float32)
                 for x, y in ((0, 0), (768, 256), (1536, 1024), (512, 1536))]
    x = (np.stack(crops) - mean[None, :, None, None]) / std[None, :, None, None]
    with torch.no_grad():
        feats = model.features(torch.from_numpy(x.astype(np.float32))).numpy()
    rows = np.ascontiguousarray(feats.transpose(0, 2, 3, 1).reshape(-1, feats.shape[1]))
    rng = np.random.default_rng(0)
    rows = rows[np.sort(rng.choice(len(rows), 100_000, replace=False))]
    transform = FeatureTransform.fit(rows, whiten, normalize)
    centroids = kmeans(transform.apply(rows), k, niter=20, seed=0).centroids
    multiple = input_multiple("unet", TINY_ENCODER, **TINY_KWARGS)
    with rasterio.open(source) as src:
        crs_wkt = src.crs.to_wkt()
    meta = ModelMetadata(kind="clusternet", architecture="unet", encoder=TINY_ENCODER, in_channels=3,
                         classes=[f"cluster {i}" for i in range(1, k + 1)], bands=[1, 2, 3],
                         mean=[float(v) for v in mean], std=[float(v) for v in std], patch_size=128,
                         pixel_size=(PIXEL_SIZE, PIXEL_SIZE), crs_wkt=crs_wkt, crs_units="metre",
                         model_kwargs=dict(TINY_KWARGS),
                         extra={"feature_dim": feature_dim, "normalize": normalize, "whiten": whiten,
                                "input_multiple": multiple, **share,
                                "note": "random weights; memory benchmark only (bench_clustering.py)"})
    extras = {"centroids": np.asarray(centroids, np.float32), **transform.tensors()}
    save_checkpoint(path, model_tensors(model, {n: torch.from_numpy(a) for n, a in extras.items()}), meta)
    params = sum(p.numel() for p in model.parameters())
    log(f"Wrote tiny ClusterNet {os.path.relpath(path)} ({params / 1e6:.2f} M parameters; whiten {whiten}, "
        f"normalize {normalize}, band share {band_share})")
    return path


# --------------------------------------------------------------------------------------------------
# Quality
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Seams
# --------------------------------------------------------------------------------------------------

def core_borders(length: int, tile: int, overlap: int) -> List[int]:
    """Positions ``e`` where one tile's core ends and the next begins: pairs ``(e - 1, e)`` straddle it."""
    from satseg_plugin.pipelines.clustering.pixel.cluster_map import core_spans

    return [c[1] for c in core_spans(length, tile, overlap)[1:]]


def id_seams(path: str, tile: int, overlap: int, flank: int = FLANK) -> Dict[str, float]:
    """Id changes on the lines at tile core borders against the parallel lines beside them.

    For every core border (both axes): the share of adjacent pixel pairs with different ids on the line
    that straddles the border, on the lines of the blend ramp (``overlap // 4`` either side), and on the
    ``flank`` lines just outside the ramp on each side (the local reference: what this part of the scene
    looks like). Pooled over all borders; nodata pairs left out.
    """
    import rasterio

    from satseg_plugin.pipelines.clustering.pixel.cluster_map import ramp_half

    with rasterio.open(path) as ds:
        ids = ds.read(1)
    half = ramp_half(overlap)
    sums = {"border": [0, 0], "ramp": [0, 0], "flank": [0, 0]}
    borders = []
    for axis in (0, 1):
        a = ids if axis == 0 else ids.T  # pairs along the rows (x borders), then along the columns
        diff = a[:, 1:] != a[:, :-1]
        valid = (a[:, 1:] > 0) & (a[:, :-1] > 0)
        changed, pairs = (diff & valid).sum(0), valid.sum(0)  # per pair line j: pixels (j, j + 1)
        ex = core_borders(a.shape[1], tile, overlap)
        borders.append(len(ex))
        for e in ex:
            lines = {"border": [e - 1], "ramp": list(range(e - 1 - half, e + half)),
                     "flank": list(range(e - 1 - half - flank, e - 1 - half)) + list(range(e + half, e + half + flank))}
            for name, js in lines.items():
                js = [j for j in js if 0 <= j < len(pairs)]
                sums[name][0] += int(changed[js].sum())
                sums[name][1] += int(pairs[js].sum())
    rate = {name: c / n if n else float("nan") for name, (c, n) in sums.items()}
    return {**rate, "border_ratio": rate["border"] / rate["flank"], "ramp_ratio": rate["ramp"] / rate["flank"],
            "border_pairs": sums["border"][1], "edges_x": borders[0], "edges_y": borders[1], "half": half}


def id_agreement(path_a: str, path_b: str) -> float:
    """Share of pixels with the same id in two cluster rasters of the same model and grid."""
    import rasterio

    with rasterio.open(path_a) as a, rasterio.open(path_b) as b:
        return float(np.mean(a.read(1) == b.read(1)))


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = new_parser(__doc__)
    parser.add_argument("--scene-size", type=int, default=1024, help="sample scene edge in pixels (1024)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="ClusterNet training rounds (0: the ClusterNetConfig default)")
    parser.add_argument("--retrain", action="store_true", help="train the ClusterNet even when a cached one fits")
    parser.add_argument("--tile", type=int, default=512, help="tile size of every cluster_raster run (512)")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (4, the tool's default)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in every child (0: torch's default)")
    parser.add_argument("--max-annotations", type=int, default=0,
                        help="largest n of the annotation experiment (0: every building)")
    parser.add_argument("--memory-sizes", default="2048,10240,20480",
                        help="raster edges of the memory runs; the first is the reference (2048,10240,20480)")
    parser.add_argument("--max-run-s", type=float, default=1200.0,
                        help="skip a memory run (after the second size) whose time, estimated from the previous "
                             "one, exceeds this (1200)")
    parser.add_argument("--no-strips", action="store_true",
                        help="skip the tall and wide strips of the second memory raster")
    add_common_args(parser, "clustering", quick='2 training rounds, n <= 4 annotations, memory sizes 1024,2048, no strips', note=True, out_dir=DEFAULT_OUT)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = args.rounds or 2
        args.max_annotations = args.max_annotations or 4
        args.memory_sizes = "1024,2048"
        args.no_strips = True
    args.memory_sizes = sorted({int(s) for s in str(args.memory_sizes).split(",") if s.strip()})
    return args


def git_state() -> str:
    """Commit and uncommitted core/pipelines/model files (other work goes on in the same tree)."""
    import subprocess

    try:
        head = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain", "--", "satseg_plugin/core", "satseg_plugin/pipelines",
                                "satseg_plugin/models"], capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    files = [line[3:] for line in dirty if line.strip()]
    return f"commit {head}" + (f", with uncommitted changes in {', '.join(files)}" if files else "")


def fmt_load(load: Sequence[float]) -> str:
    return "/".join(f"{v:.2f}" for v in load)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](json.loads(args.child[1]))))
        return 0

    if args.threads:  # before torch and faiss start their thread pools
        os.environ.update({var: str(args.threads) for var in THREAD_VARS})
    import torch

    set_threads(args.threads)
    rel = os.path.relpath(sys.executable)
    command = shlex.join([rel if not rel.startswith("..") else sys.executable,
                          os.path.relpath(os.path.abspath(__file__))] + list(sys.argv[1:]))
    niceness = os.nice(0)
    if niceness:
        command = f"nice -n {niceness} {command}"
    out_dir = os.path.abspath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    scratch = os.path.join(out_dir, "cluster_run")
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    threads = args.threads or torch.get_num_threads()
    tile, batch = args.tile, args.batch_size
    started = time.perf_counter()
    code_start = git_state()
    load_before = os.getloadavg()
    loads: List[Tuple[str, Tuple[float, ...]]] = [("start", load_before)]
    log(f"Load average at the start: {fmt_load(load_before)}")

    # 1. quality ----------------------------------------------------------------------------------
    from sample_data.generate import read_buildings
    from satseg_plugin.core.labels import LabelSet

    scene = ensure_scene(out_dir, args.scene_size, log)
    buildings = [b.polygon for b in read_buildings(scene["buildings"])]
    model, model_info = ensure_trained_clusternet(out_dir, scene, args)
    config = model_info["config"]
    k = config["num_clusters"]
    loads.append(("after training", os.getloadavg()))

    def spec(name: str, **kw: Any) -> Dict[str, Any]:
        base = {"source": scene["scene"], "model": model, "tile": tile, "overlap": None, "batch": batch,
                "threads": threads, "output": os.path.join(scratch, f"{name}.tif")}
        base.update(kw)
        return base

    log(f"Clustering the {args.scene_size} px scene (tile {tile}, default overlap, batch {batch}):")
    scene_run = measured_cluster("ClusterNet, scene", spec("scene"), keep=True)
    cluster_path = spec("scene")["output"]
    net = cluster_scores(cluster_path, buildings)
    log(f"  ClusterNet: best Dice {net['best_dice']:.3f}, Dice@{KEEP_THRESHOLD} {net['dice']:.3f}, purity "
        f"{net['purity']:.3f}, NMI {net['nmi']:.3f}")
    base_path = os.path.join(scratch, "kmeans_baseline.tif")
    base_info = kmeans_baseline(scene["scene"], base_path, k, config["kmeans_iterations"], config["seed"])
    base = cluster_scores(base_path, buildings)
    log(f"  k-means on bands: best Dice {base['best_dice']:.3f}, Dice@{KEEP_THRESHOLD} {base['dice']:.3f}, purity "
        f"{base['purity']:.3f}, NMI {base['nmi']:.3f} ({base_info['kmeans_s']:.1f} s)")

    # annotations needed
    ref = footprint_mask(scene["scene"], buildings)
    order = np.random.default_rng(0).permutation(len(buildings))
    ns = annotation_counts(len(buildings), args.max_annotations)
    boxes = background_boxes(scene["scene"], buildings, max(ns), seed=1)
    ann: List[Tuple[int, Dict[str, Any], Dict[str, Any], Dict[str, Any]]] = []
    log(f"Annotations needed: n building footprints + n background squares of {BOX_SIDE_M:g} m, n = {ns}:")
    for n in ns:
        geoms = [buildings[i] for i in order[:n]] + boxes[:n]
        labels = LabelSet(geoms, [1] * n + [2] * n, class_names=["building", "other"])
        split = annotations_run(cluster_path, scene["scene"], model, labels, ref, scratch, "split")
        nosplit = annotations_run(cluster_path, scene["scene"], None, labels, ref, scratch, "nosplit", 1.0)
        km = annotations_run(base_path, scene["scene"], None, labels, ref, scratch, "kmeans", 1.0)
        ann.append((n, split, nosplit, km))
        log(f"  n={n}: ClusterNet with splits Dice {split['dice']:.3f} ({split['splits']} split(s), "
            f"{split['seconds']:.0f} s), no splits {nosplit['dice']:.3f}, k-means baseline {km['dice']:.3f}")
    loads.append(("after the annotation runs", os.getloadavg()))

    def enough(column: int, best: float) -> str:
        hit = next((row[0] for row in ann if row[column]["dice"] >= best - DICE_SLACK), None)
        return f"n = {hit}" if hit is not None else f"not reached up to n = {ns[-1]}"

    # 3. seams (trained model, on a larger scene for more tile borders) ---------------------------
    seam_scene = ensure_scene(out_dir, SEAM_SCENE, log)
    log(f"Seams (trained ClusterNet on the {SEAM_SCENE} px scene):")
    half = max(tile // 2, 64)
    seam_runs = {"full": spec("seam_full", source=seam_scene["scene"]),
                 "half": spec("seam_half", source=seam_scene["scene"], tile=half),
                 "naive": spec("seam_naive", source=seam_scene["scene"], tile=half, overlap=0)}
    for run_spec in seam_runs.values():
        measured_cluster(f"seams: tile {run_spec['tile']}, overlap {run_spec['overlap']}", run_spec, keep=True)
    control_path = os.path.join(scratch, "kmeans_seam_scene.tif")
    kmeans_baseline(seam_scene["scene"], control_path, k, config["kmeans_iterations"], config["seed"])
    from satseg_plugin.pipelines.clustering.pixel.cluster_map import ClusterModel

    cm = ClusterModel(model, torch.device("cpu"))
    mult = cm.multiple
    del cm

    def eff(t: int) -> int:
        return int(np.ceil(max(t, mult) / mult) * mult)

    # (label, the run's raster at its core borders, the tile-free k-means raster at the same lines: the control)
    seam_rows_data = []
    for name, label in (("full", f"tile {eff(tile)}, overlap {eff(tile) // 4} (default)"),
                        ("half", f"tile {eff(half)}, overlap {eff(half) // 4} (default)"),
                        ("naive", f"tile {eff(half)}, overlap 0 (no ramp: each pixel from one tile)")):
        t = eff(seam_runs[name]["tile"])
        ov = t // 4 if seam_runs[name]["overlap"] is None else seam_runs[name]["overlap"]
        seam_rows_data.append((label, id_seams(seam_runs[name]["output"], t, ov), id_seams(control_path, t, ov)))
    excess = [(st["border_ratio"] / c["border_ratio"], st["ramp_ratio"] / c["ramp_ratio"])
              for _, st, c in seam_rows_data]
    agree_half = id_agreement(seam_runs["full"]["output"], seam_runs["half"]["output"])
    for (label, st, c), (eb, er) in zip(seam_rows_data, excess):
        log(f"  {label}: border line {st['border']:.4f}, ramp {st['ramp']:.4f}, flanks {st['flank']:.4f}; border/"
            f"flank {st['border_ratio']:.3f} (control {c['border_ratio']:.3f}, excess {eb:.3f}), ramp/flank "
            f"{st['ramp_ratio']:.3f} (control {c['ramp_ratio']:.3f}, excess {er:.3f})")

    # 2. throughput and memory -------------------------------------------------------------------
    sources = {size: ensure_source(out_dir, size, log) for size in args.memory_sizes}
    tiny = ensure_tiny_clusternet(out_dir, ensure_source(out_dir, 2048, log))
    probe, _ = run_child("threads", {"model": tiny})
    log(f"Thread probe (tiny model, batch of 4 tiles; one tile core's ids): forward {probe['forward_1']:.2f} s with 1 "
        f"thread, {probe['forward_2']:.2f} s with 2; assignment {probe['assign_1']:.3f} s / {probe['assign_2']:.3f} s")
    _, floor = run_child("imports", {"threads": threads})
    log(f"Memory: import floor (torch, smp, faiss, rasterio, SatSeg imported, nothing run): {floor.maxrss_mib:.0f} MiB")
    mem: List[Tuple[str, int, int, Run]] = []
    skipped: List[str] = []

    def mem_spec(name: str, size: int, **kw: Any) -> Dict[str, Any]:
        return spec(name, source=sources[size], model=tiny, **kw)

    first = args.memory_sizes[0]
    log(f"Memory: tiny ClusterNet ({TINY_ENCODER}, decoder {TINY_KWARGS['decoder_channels']}), tile {tile}, "
        f"batch {batch}:")
    r = measured_cluster(f"{first}x{first}", mem_spec(f"mem_{first}", first))
    mem.append((f"{first}x{first}", first, first, r))
    per_px = r.wall_s / first ** 2
    for i, size in enumerate(args.memory_sizes[1:]):
        estimate = per_px * size ** 2
        if i > 0 and estimate > args.max_run_s:  # the second size is the comparison: always run
            skipped.append(f"{size}x{size}: estimated {estimate / 60:.0f} min from the "
                           f"{mem[-1][0]} run, over the {args.max_run_s / 60:.0f} min limit per run")
            log(f"  skipping {size}x{size}: estimated {estimate:.0f} s")
            continue
        r = measured_cluster(f"{size}x{size}", mem_spec(f"mem_{size}", size))
        mem.append((f"{size}x{size}", size, size, r))
        per_px = r.wall_s / size ** 2
    if not args.no_strips and len(args.memory_sizes) > 1 and any(w == args.memory_sizes[1] for _, w, _, _ in mem):
        big = args.memory_sizes[1]
        x0, top = ORIGIN
        ps = PIXEL_SIZE
        for label, w, h in ((f"{first} wide x {big} tall strip of the {big} raster", first, big),
                            (f"{big} wide x {first} tall strip of the {big} raster", big, first)):
            r = measured_cluster(label, mem_spec(f"strip_{w}x{h}", big,
                                                 bounds=[x0, top - h * ps, x0 + w * ps, top]))
            mem.append((label, w, h, r))
    loads.append(("end", os.getloadavg()))

    # report -------------------------------------------------------------------------------------
    import faiss
    import rasterio
    import segmentation_models_pytorch as smp

    parallel = parallel_probe()
    code_end = git_state()
    ref_run = mem[0][3]
    ref_above = ref_run.maxrss_mib - floor.maxrss_mib
    feat_ch = 32 + 3

    def row_features_mib(width: int, t: int) -> float:
        """Arrays that grow with the width up to one column band (from the code): the ramp rows carried from
        one tile row to the next (D x 2 half x band float32) and the band's uint16 id buffer."""
        from satseg_plugin.pipelines.clustering.pixel.cluster_map import CLUSTER_BAND_COLUMNS, ramp_half

        band = min(width, CLUSTER_BAND_COLUMNS)
        return (feat_ch * 2 * ramp_half(t // 4) * band * 4 + (t + 256) * band * 2) / 2**20

    mem_rows = ["| Raster (W x H) | Mpx | Tiles | Time in child (s) | Mpx/s | Forward / id assignment (s) | "
                "Peak RSS (MiB) | Above the import floor (MiB) | x the first run | Peak GDAL block cache (MiB) | "
                "Above the floor, cache excluded (MiB) | x the first run | Carried ramp rows + id buffer, from "
                "the code (MiB) |", "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]

    def cache_mib(r: Run) -> float:
        peak = r.summary.get("gdal_cache_peak", -1)
        return peak / 2**20 if peak is not None and peak >= 0 else float("nan")

    ref_no_cache = ref_above - cache_mib(ref_run)
    for label, w, h, r in mem:
        above = r.maxrss_mib - floor.maxrss_mib
        no_cache = above - cache_mib(r)
        mem_rows.append(f"| {label} | {w * h / 1e6:.0f} | {r.summary['tiles']} | {r.engine_s:.1f} | {r.mpx_s:.2f} | "
                        f"{r.summary['features_s']:.1f} / {r.summary['assign_s']:.1f} | {r.maxrss_mib:.0f} | "
                        f"{above:.0f} | {above / ref_above:.2f} | {cache_mib(r):.0f} | {no_cache:.0f} | "
                        f"{no_cache / ref_no_cache:.2f} | {row_features_mib(w, tile):.0f} |")
    # As in bench_segmentation.py: runs whose GDAL block cache filled to its cap hold the same cache, so their
    # peak RSS differs only by what grows with the raster; the verdict is that plateau (at least two runs).
    top_cache = max(r.summary.get("gdal_cache_peak", 0) for *_, r in mem)
    capped = [(label, w * h, r.maxrss_mib) for label, w, h, r in mem
              if top_cache > 0 and r.summary.get("gdal_cache_peak", 0) >= 0.99 * top_cache]
    spread = max(m for *_, m in capped) - min(m for *_, m in capped) if len(capped) >= 2 else float("nan")
    mem_ok = len(capped) >= 2 and spread <= PLATEAU_LIMIT_MIB
    verdict_mem = (f"{'PASS' if mem_ok else 'FAIL'}: the {len(capped)} runs whose GDAL block cache reached its cap "
                   f"({top_cache / 2**20:.0f} MiB; " + ", ".join(f"{label} {m:.0f} MiB" for label, _, m in capped) +
                   f") peak within {spread:.0f} MiB of each other (limit {PLATEAU_LIMIT_MIB} MiB), from "
                   f"{min((p for _, p, _ in capped), default=0) / 1e6:.0f} to "
                   f"{max((p for _, p, _ in capped), default=0) / 1e6:.0f} Mpx.")
    tall = next((r for label, w, h, r in mem if w < h), None)
    wide = next((r for label, w, h, r in mem if w > h), None)
    strip_line = ""
    if tall is not None and wide is not None:
        strip_line = (f"Strips: {tall.maxrss_mib - floor.maxrss_mib:.0f} MiB above the floor for the tall strip "
                      f"({tall.maxrss_mib - ref_run.maxrss_mib:+.0f} MiB against the {mem[0][0]} run; GDAL cache "
                      f"peak {cache_mib(tall):.0f} MiB) and {wide.maxrss_mib - floor.maxrss_mib:.0f} MiB for the "
                      f"wide one ({wide.maxrss_mib - ref_run.maxrss_mib:+.0f} MiB; GDAL cache peak "
                      f"{cache_mib(wide):.0f} MiB).")
    log(verdict_mem)

    seam_ok = all(max(e) <= SEAM_LIMIT for e in excess[:2])
    seam_rows = ["| Run | Core borders (x, y) | Ramp half width (px) | Pairs on border lines | Id changes: border "
                 "lines | ramp lines | flanking lines | Border / flank | Ramp / flank | Control (k-means raster, "
                 "same lines): border / flank, ramp / flank | Excess over the control: border, ramp |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for (label, st, c), (eb, er) in zip(seam_rows_data, excess):
        seam_rows.append(f"| {label} | {st['edges_x']}, {st['edges_y']} | {st['half']} | {st['border_pairs']} | "
                         f"{st['border']:.4f} | {st['ramp']:.4f} | {st['flank']:.4f} | {st['border_ratio']:.3f} | "
                         f"{st['ramp_ratio']:.3f} | {c['border_ratio']:.3f}, {c['ramp_ratio']:.3f} | "
                         f"**{eb:.3f}**, **{er:.3f}** |")

    q_rows = ["| Clustering (k = %d) | Best reachable Dice | Best reachable IoU | Dice @ %.1f | IoU @ %.1f | "
              "Clusters counted building @ %.1f | Purity | NMI | Clusters used |" % (k, KEEP_THRESHOLD, KEEP_THRESHOLD,
                                                                                   KEEP_THRESHOLD),
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in ((f"ClusterNet ({config['architecture']}/{config['encoder']}, {config['rounds']} rounds)", net),
                    ("baseline: faiss k-means on z-scored band values", base)):
        q_rows.append(f"| {name} | **{s['best_dice']:.3f}** | {s['best_iou']:.3f} | {s['dice']:.3f} | {s['iou']:.3f} | "
                      f"{s['positive']} | {s['purity']:.3f} | {s['nmi']:.3f} | {s['clusters_used']} |")
    a_rows = ["| n (+ n background squares) | ClusterNet + splits: Dice | IoU | splits | building clusters | time (s) | "
              "ClusterNet, no splits: Dice | k-means baseline: Dice |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, s, ns_, km in ann:
        a_rows.append(f"| {n} | {s['dice']:.3f} | {s['iou']:.3f} | {s['splits']} | {s['building_clusters']} | "
                      f"{s['seconds']:.0f} | {ns_['dice']:.3f} | {km['dice']:.3f} |")
    best_split = max(row[1]["dice"] for row in ann)
    train_rounds = model_info["rounds"]
    last = train_rounds[-1]
    elapsed_min = (time.perf_counter() - started) / 60
    cached_note = (f"cached from {model_info.get('date')}, not retrained in this run" if model_info.get("cached")
                   else "trained in this run")
    fwd_share = scene_run.summary["features_s"] / scene_run.engine_s
    ends = model_info.get("round_ends_s") or []
    round_note = (f"; rounds took {min(np.diff([0.0] + ends)):.0f}-{max(np.diff([0.0] + ends)):.0f} s each"
                  if ends else "")
    body = [
        "## Clustering: ClusterNet quality, annotations needed, `cluster_raster` throughput, memory and seams",
        "",
        f"- Date: {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Machine: {machine_info(parallel).split('; Python')[0]}; Python {platform.python_version()}, "
        f"torch {torch.__version__} ({threads} thread(s) in every child), segmentation-models-pytorch "
        f"{smp.__version__}, faiss {faiss.__version__}, rasterio {rasterio.__version__} (GDAL "
        f"{rasterio.__gdal_version__}), CPU only",
        "- Load average (1/5/15 min): " + "; ".join(f"{name} {fmt_load(v)}" for name, v in loads) +
        ". The machine was shared with other jobs, so times carry noise.",
        f"- Command: `{command}` ({elapsed_min:.0f} min)",
        f"- Code: {code_start}" + (f" at the start; {code_end} at the end" if code_end != code_start else ""),
        *([f"- Note: {args.note}"] if args.note else []),
        "",
        "### 1. Quality on the sample scene",
        "",
        f"Scene: `generate_scene(size={args.scene_size}, seed=0)` ({args.scene_size}x{args.scene_size}x3 uint8, "
        f"0.5 m; {len(buildings)} buildings, {ref.mean():.1%} of the pixels). ClusterNet: `train_clusternet` with "
        f"`ClusterNetConfig` defaults" + (f" except rounds={config['rounds']}" if args.rounds else "") +
        f" ({config['architecture']}/{config['encoder']}, D={config['feature_dim']} + 3 band channels, "
        f"k={k}, {config['rounds']} rounds x {config['steps_per_round']} steps x {config['batch_size']} crops of "
        f"{config['patch_size']} px, {config['crops_per_round']} crops and {config['sample_pixels']} pixels "
        f"clustered per round, whiten={config['whiten']}, normalize={config['normalize']}"
        + (f", band_share={config['band_share']}" if "band_share" in config else "") +
        f", bootstrap={config['bootstrap']}, balance={config['balance']}, lr {config['learning_rate']:g}, seed "
        f"{config['seed']}): "
        f"**{model_info['train_s']:.0f} s** of training on CPU ({cached_note}{round_note}); last round: NMI with the "
        f"previous round {last['nmi_previous']:.3f}, loss {last['loss']:.3f}, largest cluster "
        f"{last['largest_cluster_share']:.1%}. `cluster_raster` of the scene (tile {tile}, overlap "
        f"{eff(tile) // 4}, batch {batch}): {scene_run.engine_s:.1f} s in the child ({scene_run.mpx_s:.2f} Mpx/s; "
        f"{fwd_share:.0%} of it the network forward), peak RSS {scene_run.maxrss_mib:.0f} MiB. Baseline: "
        f"`engine.kmeans.kmeans` (faiss, k-means++ seeding, {config['kmeans_iterations']} iterations, seed "
        f"{config['seed']}) on all {base_info['pixels'] / 1e6:.2f} M pixels' z-scored band values "
        f"({base_info['kmeans_s']:.1f} s). Both scored by `evaluate_clusters` against the footprints (class "
        "building, everything else background).",
        "",
        *q_rows,
        "",
        "Best reachable: the best Dice/IoU any cluster -> building mapping reaches (clusters added in order of "
        f"building share). @ {KEEP_THRESHOLD}: clusters with at least {KEEP_THRESHOLD:.0%} building pixels count as "
        "building.",
        "",
        "#### Annotations needed",
        "",
        f"`clusters_to_classes` with annotation polygons (`LabelSet`, classes `building`, `other`): the first n "
        f"building footprints in a seeded random order plus n seeded random {BOX_SIDE_M:g} m squares that touch no "
        "building (1 m margin). Dice/IoU: class 1 of the class raster against the footprint mask (pixel-centre "
        "rule); clusters no annotation touches stay unassigned (not building). ClusterNet + splits: the scene and "
        "model are given, so a cluster both classes share (each >= 30 % of its annotated pixels) is split on the "
        "per-class mean features (the whole scene is clustered again: the time column). No splits: the same with "
        "split_share 1.0 (majority class). k-means baseline: its cluster raster, majority class (no model, so no "
        "splits).",
        "",
        *a_rows,
        "",
        f"Smallest n within {DICE_SLACK} of the best reachable Dice: ClusterNet + splits "
        f"{enough(1, net['best_dice'])} (best reachable {net['best_dice']:.3f}; best class-raster Dice seen "
        f"{best_split:.3f}), ClusterNet without splits {enough(2, net['best_dice'])}, k-means baseline "
        f"{enough(3, base['best_dice'])} (best reachable {base['best_dice']:.3f}).",
        "",
        "### 2. Throughput and memory of `cluster_raster`",
        "",
        f"Tiny ClusterNet: U-Net with the `{TINY_ENCODER}` encoder and decoder channels "
        f"{TINY_KWARGS['decoder_channels']} (as `bench_segmentation.py`'s tiny U-Net), D=32 features + 3 bands, "
        "k=20, random weights, feature transform (the `ClusterNetConfig` defaults) and centroids fitted on its own "
        "features; written as a `clusternet` model "
        "file by this script, because `train_clusternet` / `ClusterNetConfig` take no backbone keyword arguments "
        "(`build_clusternet` and `clusternet_from_checkpoint` do). Cached synthetic rasters of "
        f"`bench/sources.py` (3-band uint8, DEFLATE); tile {tile}, overlap {tile // 4} (default), batch {batch}, "
        "CPU, each run its own child. Peak GDAL block cache: `gdal.GetCacheUsed()` sampled every 0.1 s in the "
        "child (same libgdal as rasterio; capped by `raster_env`'s `GDAL_CACHEMAX`). "
        "Forward / id assignment: time inside `ClusterModel.features` and "
        "`ClusterModel.assign` (whitening, L2, nearest centroid). The import floor is a child that only imports "
        f"torch, segmentation-models-pytorch, faiss, rasterio and SatSeg: {floor.maxrss_mib:.0f} MiB.",
        "",
        *mem_rows,
        "",
        *([f"Skipped: {'; '.join(skipped)}."] if skipped else []),
        *([strip_line] if strip_line else []),
        "",
        f"Memory: `feature_blocks` computes one batch of tiles at a time (`(batch, {feat_ch}, tile, tile)` float32, "
        "released before the next batch) and sweeps column bands of at most `CLUSTER_BAND_COLUMNS` px; what grows "
        "with the raster's width, up to one band, is the blend ramp rows carried between tile rows and the band's "
        "uint16 id buffer (last column). Peak RSS includes GDAL's block cache, which fills up to its cap on "
        "large rasters whatever their size; the verdict compares the runs at that cap.",
        "",
        f"Threads: every child ran with {threads} torch and faiss thread(s). A probe child timed the two halves of "
        f"the work with 1 and 2 threads (best of 2 each, same process): the tiny model's forward on a batch of 4 "
        f"tiles took {probe['forward_1']:.2f} s with 1 thread and {probe['forward_2']:.2f} s with 2; the id "
        f"assignment (`ClusterModel.assign`: whitening, L2, faiss nearest centroid) of one tile core "
        f"({probe['rows']} px) {probe['assign_1']:.3f} s and {probe['assign_2']:.3f} s.",
        "",
        "### 3. Seams",
        "",
        f"Cluster rasters of `generate_scene(size={SEAM_SCENE}, seed=0)` with the trained ClusterNet (more tile "
        "borders than the quality scene). For every tile core border, on both axes: the share of adjacent pixel "
        "pairs with different ids on the line that straddles the border, on the lines of the blend ramp "
        f"(`overlap // 4` either side), and on the {FLANK} lines just outside the ramp on each side, the local "
        "reference (what that part of the scene looks like); pooled over all borders. 1.0 means the border looks "
        "like the ground beside it. The same statistic on the same lines of a tile-free raster (faiss k-means on "
        "the z-scored bands of every pixel) is the control, and the verdict uses the excess over it. Ids agree "
        f"on {agree_half:.1%} of the pixels between tile {eff(tile)} and tile {eff(half)} (default overlaps).",
        "",
        *seam_rows,
        "",
        "### Verdicts",
        "",
        f"- Memory: {verdict_mem}",
        f"- Seams: {'PASS' if seam_ok else 'FAIL'}: with the default overlap, id changes on core-border lines "
        f"are {excess[0][0]:.3f}x and {excess[1][0]:.3f}x their flanking lines' (over the control), on ramp lines "
        f"{excess[0][1]:.3f}x and {excess[1][1]:.3f}x (limit {SEAM_LIMIT}); each pixel from one tile only (no "
        f"ramp): {excess[2][0]:.3f}x on the border lines.",
        f"- Quality: ClusterNet best reachable building Dice {net['best_dice']:.3f} against {base['best_dice']:.3f} "
        f"for k-means on the bands ({'better' if net['best_dice'] > base['best_dice'] else 'NOT better'}); "
        f"annotations needed: {enough(1, net['best_dice'])} building + n background polygons.",
    ]
    text = "\n".join(body)
    log("")
    log(text)
    if args.write_results:
        write_section(args.write_results, "clustering", text)
        log(f"\nWrote the clustering section of {args.write_results}")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
