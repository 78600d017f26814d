"""bench_segmentation.py's measured children and models: ``segment_raster``, the bare forward, training, imports.

Each child runs in its own process (``python bench/segmentation_runs.py --child MODE JSON``, measured by
:func:`harness.run_json_child`); the models are cached under ``bench/out/`` with their recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
from harness import CachePoller, Measurement, Run, child_main, log, run_json_child
from sources import CRS as SOURCE_CRS
from sources import PIXEL_SIZE, TINY_ENCODER, TINY_KWARGS, warm_cache

#: Bump when the training recipe of the cached benchmark model changes.
MODEL_VERSION = 1


# --------------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------------

def _instrument_rasterio() -> None:
    """Route rasterio's read/write/overviews/close through Python functions, so cProfile times them.

    rasterio's dataset methods are Cython functions, which cProfile does not record on their own; their time
    would show up in whatever Python function called them.
    """
    from rasterio import _io, io

    def rasterio_read(self, *a, **k):
        return _io.DatasetReaderBase.read(self, *a, **k)

    def rasterio_write(self, *a, **k):
        return _io.DatasetWriterBase.write(self, *a, **k)

    def rasterio_build_overviews(self, *a, **k):
        return _io.DatasetWriterBase.build_overviews(self, *a, **k)

    def rasterio_close_writer(self, *a, **k):
        return _io.DatasetWriterBase.close(self, *a, **k)

    io.DatasetReader.read = rasterio_read
    io.DatasetWriter.read = rasterio_read
    io.DatasetWriter.write = rasterio_write
    io.DatasetWriter.build_overviews = rasterio_build_overviews
    io.DatasetWriter.close = rasterio_close_writer


def child_pipeline(spec: Dict[str, Any]) -> Dict[str, Any]:
    """``segment_raster`` once, as the spec says; returns a JSON-able summary."""
    import torch

    from satseg_plugin.pipelines.segmentation.segment import InferenceConfig, segment_raster

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    # segment_raster imports segmentation-models-pytorch (and timm) on first use: a fixed cost of a few seconds
    # per process (once per QGIS session), measured here apart from the pipeline, as the bare child has it
    # imported before its timer too.
    start = time.perf_counter()
    import segmentation_models_pytorch  # noqa: F401

    import_s = time.perf_counter() - start
    bounds = tuple(spec["bounds"]) if spec.get("bounds") else None
    config = InferenceConfig(tile_size=spec["tile"], overlap=spec["overlap"], batch_size=spec["batch"],
                             amp=spec.get("amp", True), bounds=bounds)
    profiler = None
    if spec.get("profile"):
        import cProfile

        _instrument_rasterio()
        profiler = cProfile.Profile()
    with CachePoller() as poller:
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        result = segment_raster(spec["source"], [spec["model"]], spec["prob"], spec["mask"], config,
                                device=spec.get("device", "cpu"))
        if profiler:
            profiler.disable()
        if spec.get("device", "cpu").startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    if profiler:
        profiler.dump_stats(spec["profile"])
    _, _, width, height = result.window
    return {"engine_s": elapsed, "import_s": import_s, "tiles": result.tiles, "width": width, "height": height,
            "threads": torch.get_num_threads(), "gdal_cache_peak": poller.peak, "heap_peak": poller.heap_peak,
            "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def child_bare(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The bare model forward over the pipeline's tiles, prepared in memory beforehand."""
    import rasterio
    import torch
    from rasterio.windows import Window

    from satseg_plugin.core.normalization import normalize
    from satseg_plugin.core.tiling import tile_origins
    from satseg_plugin.models.checkpoint import build_from_checkpoint, load_checkpoint

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec.get("device", "cpu"))
    ckpt = load_checkpoint(spec["model"], kind="segmentation")
    meta = ckpt.metadata
    model = build_from_checkpoint(ckpt).to(device).eval()
    tile, overlap, batch = spec["tile"], spec["overlap"], spec["batch"]
    batches: List["torch.Tensor"] = []
    with rasterio.open(spec["source"]) as src:
        width, height = src.width, src.height
        xs = tile_origins(0, width, tile, tile - overlap)
        ys = tile_origins(0, height, tile, tile - overlap)
        for ty in ys:  # batches are cut per tile row, as segment_raster does
            row = []
            for tx in xs:
                raw = np.zeros((len(meta.bands), tile, tile), np.float32)
                w, h = min(tile, width - tx), min(tile, height - ty)
                raw[:, :h, :w] = src.read(list(meta.bands), window=Window(tx, ty, w, h))
                row.append(normalize(raw, meta.mean, meta.std))
            for s in range(0, len(row), batch):
                batches.append(torch.from_numpy(np.stack(row[s:s + batch])).to(device))
    amp = bool(spec.get("amp")) and device.type == "cuda"
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=amp):
        for x in batches:
            model(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"forward_s": elapsed, "tiles": sum(int(b.shape[0]) for b in batches), "batches": len(batches),
            "batch_sizes": sorted({int(b.shape[0]) for b in batches}), "width": width, "height": height,
            "threads": torch.get_num_threads(),
            "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def child_train(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Train the benchmark model on the sample scene (``train_segmentation``)."""
    from sample_data.generate import read_buildings
    from satseg_plugin.core.labels import LabelSet
    from satseg_plugin.pipelines.segmentation.train import TrainConfig, train_segmentation

    buildings = read_buildings(spec["buildings"])
    labels = LabelSet([b.polygon for b in buildings], [1] * len(buildings))
    config = TrainConfig(**spec["config"])
    start = time.perf_counter()
    result = train_segmentation(spec["scene"], labels, spec["model"], config, "cpu")
    return {"train_s": time.perf_counter() - start, "best_dice": result.best_dice, "best_iou": result.best_iou,
            "epochs_run": result.epochs_run, "best_epoch": result.best_epoch}


def child_imports(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Only the imports of the pipeline (torch, segmentation-models-pytorch, rasterio, SatSeg): the RSS floor."""
    import rasterio  # noqa: F401
    import segmentation_models_pytorch  # noqa: F401
    import torch  # noqa: F401

    from satseg_plugin.pipelines.segmentation import segment as inference  # noqa: F401

    return {"self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


CHILDREN: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
    "pipeline": child_pipeline, "bare": child_bare, "train": child_train, "imports": child_imports}



def run_child(mode: str, spec: Dict[str, Any]) -> Tuple[Dict[str, Any], Measurement]:
    """Run one child of this module, measured; its summary (last output line) and measurement."""
    return run_json_child(__file__, mode, spec)


def measured(label: str, mode: str, spec: Dict[str, Any]) -> Run:
    """One measured child, its source raster read once before so it starts in the page cache."""
    warm_cache(spec["source"])
    summary, m = run_child(mode, spec)
    run = Run(label, summary, m.wall_s, m.maxrss_mib)
    log(f"  {label}: {run.engine_s:.2f} s in the child ({m.wall_s:.1f} s process), peak RSS "
        f"{m.maxrss_mib:.0f} MiB")
    return run


# --------------------------------------------------------------------------------------------------
# Inputs: scene, models
# --------------------------------------------------------------------------------------------------

def train_config(args: argparse.Namespace) -> Dict[str, Any]:
    """The training recipe of the benchmark model (short: it only has to produce a meaningful map)."""
    return {"architecture": "unet", "encoder": args.encoder, "patch_size": 128, "batch_size": 8,
            "epochs": args.train_epochs, "batches_per_epoch": args.train_batches, "max_val_tiles": 16,
            "patience": 5, "seed": 0}


def ensure_trained_model(out_dir: str, scene: Dict[str, str], args: argparse.Namespace) -> Tuple[str, Dict[str, Any]]:
    """The U-Net trained briefly on the scene, cached with its recipe (retrained when the recipe changes)."""
    config = train_config(args)
    path = os.path.join(out_dir, f"seg_unet_{args.encoder}_{args.scene_size}_v{MODEL_VERSION}.satseg")
    info_path = path + ".json"
    if os.path.exists(path) and os.path.exists(info_path):
        with open(info_path, encoding="utf-8") as handle:
            info = json.load(handle)
        if info.get("config") == config:
            log(f"Using cached model {os.path.relpath(path)}")
            return path, info
    log(f"Training U-Net/{args.encoder} on the scene (one time; {config['epochs']} epochs x "
        f"{config['batches_per_epoch']} batches of {config['batch_size']} x {config['patch_size']} px) ...")
    summary, m = run_child("train", {"scene": scene["scene"], "buildings": scene["buildings"], "model": path,
                                     "config": config})
    info = {"config": config, **summary}
    with open(info_path, "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=1)
    log(f"  trained in {m.wall_s:.0f} s: validation Dice {summary['best_dice']:.3f}, IoU {summary['best_iou']:.3f}")
    return path, info


def ensure_tiny_model(out_dir: str) -> str:
    """A tiny random-weight U-Net saved as a proper SatSeg model file (for the memory runs)."""
    import torch

    from satseg_plugin.models.checkpoint import ModelMetadata, model_tensors, save_checkpoint
    from satseg_plugin.models.registry import build_model

    path = os.path.join(out_dir, f"tiny_unet_{TINY_ENCODER}_v{MODEL_VERSION}.satseg")
    if os.path.exists(path):
        log(f"Using cached tiny model {os.path.relpath(path)}")
        return path
    torch.manual_seed(0)
    model = build_model("unet", TINY_ENCODER, in_channels=3, classes=1, **TINY_KWARGS).eval()
    from rasterio.crs import CRS

    meta = ModelMetadata(kind="segmentation", architecture="unet", encoder=TINY_ENCODER, in_channels=3,
                         classes=["building"], bands=[1, 2, 3], mean=[110.0, 120.0, 100.0], std=[40.0, 40.0, 40.0],
                         patch_size=512, pixel_size=(PIXEL_SIZE, PIXEL_SIZE),
                         crs_wkt=CRS.from_string(SOURCE_CRS).to_wkt(), crs_units="metre", threshold=0.5,
                         model_kwargs=dict(TINY_KWARGS),
                         extra={"note": "random weights; memory benchmark only (bench_segmentation.py)"})
    save_checkpoint(path, model_tensors(model), meta)
    params = sum(p.numel() for p in model.parameters())
    log(f"Wrote tiny model {os.path.relpath(path)} ({params / 1e6:.2f} M parameters)")
    return path



if __name__ == "__main__":  # a measured child
    sys.exit(child_main(CHILDREN))
