"""bench_clustering.py's measured children and models: ``cluster_raster``, training, imports, thread probe.

Each child runs in its own process (``python bench/clustering_runs.py --child MODE JSON``, measured by
:func:`harness.run_json_child`); the models are cached under ``bench/out/`` with their recipe.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import sys
import time
from dataclasses import asdict
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
from harness import CachePoller, Measurement, Run, child_main, log, run_json_child
from sources import PIXEL_SIZE, TINY_ENCODER, TINY_KWARGS, warm_cache

#: Bump when the recipe of a cached model changes.
MODEL_VERSION = 1


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
            "clusters_used": sum(1 for c in result.pixel_counts if c), "gdal_cache_peak": poller.peak, "heap_peak": poller.heap_peak,
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
    """Run one child of this module, measured; its summary (last output line) and measurement.

    With ``spec["threads"]``, the child's OpenMP and BLAS pools get that many threads too (environment).
    """
    return run_json_child(__file__, mode, spec, threads=int(spec.get("threads") or 0))


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



if __name__ == "__main__":  # a measured child
    sys.exit(child_main(CHILDREN))
