"""GPU check of SatSeg's tiled tools: the whole pipeline against the bare model forward, with a profile.

Runs on a machine with CUDA (or, for a dry run, on the CPU with ``--device cpu --size 1024``):

1. an ``--size`` px square, 3-band uint8 tiled GeoTIFF of smooth random texture (written window by window);
2. U-Net/``--encoder`` with seeded random weights, saved as a ``.satseg`` model;
3. ``segment_raster`` over the whole raster (``--tile``, ``--overlap``, ``--batch``, AMP), after a warm-up run on a
   corner; then the bare forward of the same number of tiles, tensors already on the device, same batch and AMP,
   and the ratio pipeline / bare (issue 16's target: >= 0.5 on an H200);
4. one more pipeline run under cProfile: the 30 most expensive functions (cumulative) go to ``profile.txt``;
5. ClusterNet trained for two short rounds on a 512 px crop on the device (``train_clusternet``), then
   ``cluster_raster`` over the whole raster, timed, against the bare feature forward of the same tiles (issue
   16's target for it: >= 0.5 too).

6. with ``--threads-sweep``: the pipeline again with reader threads x read-ahead (``SATSEG_SWEEP_THREADS``,
   :data:`SWEEP_READERS` x :data:`SWEEP_READ_AHEAD`), to pick :data:`~satseg_plugin.core.tiling.GPU_THREADS` from
   measurements;
7. with ``--ensemble``: the seed-like ensemble of issue 16 (:data:`ENSEMBLE`, random weights) over an
   ``--ensemble-size`` px raster, pipeline against the bare forward of its three models, and against the original
   competition script's :data:`ORIGINAL_ENSEMBLE_MPX_S` (measured once on an H200 in issue 16, not in this run).

Everything is written to ``--out-dir`` (``--out`` is the same flag; ``results.json``, ``profile.txt``); the numbers
are printed too, and ``--write-results FILE`` puts them in the ``gpu`` section of that file. Needs neither QGIS
nor ``/usr/bin/time``: everything runs in this process.

Usage::

    python bench/bench_gpu.py --out /tmp/gpu --write-results bench/RESULTS.md   # on the GPU machine
    python bench/bench_gpu.py --device cpu --size 1024 --out /tmp/gpu          # dry run here
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import datetime as _dt
import io
import json
import os
import platform
import pstats
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from harness import (
    DEFAULT_OUT,
    REPO_ROOT,
    add_common_args,
    command_line,
    cpu_model,
    git_state,
    host_info,
    log,
    new_parser,
    publish_section,
)

#: cProfile rows (by cumulative time) kept in the results section; profile.txt keeps PROFILE_FILE_ROWS.
PROFILE_SECTION_ROWS = 15
PROFILE_FILE_ROWS = 30
#: Upper-left corner and pixel size of the generated raster (EPSG:32633).
ORIGIN = (500000.0, 5000000.0)
PIXEL = 0.5
#: Edge of the corner the warm-up run predicts.
WARM_EDGE = 1024
#: ``--threads-sweep``: reader threads and batches read ahead tried (issue 16: readers 2/4/8 x read-ahead 1/2/4).
SWEEP_READERS = (2, 4, 8)
SWEEP_READ_AHEAD = (1, 2, 4)
#: ``--ensemble``: issue 16's seed-like ensemble, ``(architecture, encoder, weight)``.
ENSEMBLE = (("pspnet", "densenet161", 0.7), ("deeplabv3plus", "tu-mobilenetv3_large_100", 0.15),
            ("unet", "resnet50", 0.15))
#: The original competition script's throughput with that ensemble on an H200 (issue 16; the target is 10x).
ORIGINAL_ENSEMBLE_MPX_S = 2.4


def write_raster(path: str, size: int, seed: int = 0) -> None:
    """A smooth random 3-band uint8 texture, 512 px blocks, written one block row at a time."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.002, 0.05, size=(3, 4, 2))
    phase = rng.uniform(0, 2 * np.pi, size=(3, 4))
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", tiled=True, blockxsize=512,
                   blockysize=512, crs="EPSG:32633", transform=from_origin(*ORIGIN, PIXEL, PIXEL))
    cols = np.arange(size, dtype=np.float32)[None, :]
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, size, 512):
            rows = np.arange(top, min(top + 512, size), dtype=np.float32)[:, None]
            data = np.empty((3, rows.shape[0], size), dtype=np.uint8)
            for b in range(3):
                wave = sum(np.sin(freq[b, k, 0] * rows + freq[b, k, 1] * cols + phase[b, k]) for k in range(4))
                noise = rng.normal(0, 8, size=(rows.shape[0], size))
                data[b] = np.clip(128 + 28 * wave + noise, 0, 255).astype(np.uint8)
            dst.write(data, window=Window(0, top, size, rows.shape[0]))


def write_model(path: str, encoder: str, tile: int, architecture: str = "unet") -> None:
    """``architecture``/``encoder`` with seeded random weights as a segmentation model file."""
    import torch
    from rasterio.crs import CRS

    from satseg_plugin.models.checkpoint import ModelMetadata, model_tensors, save_checkpoint
    from satseg_plugin.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(architecture, encoder, in_channels=3, classes=1).eval()
    meta = ModelMetadata(kind="segmentation", architecture=architecture, encoder=encoder, in_channels=3,
                         classes=["building"], bands=[1, 2, 3], mean=[128.0, 128.0, 128.0], std=[40.0, 40.0, 40.0],
                         patch_size=tile, pixel_size=(PIXEL, PIXEL), crs_wkt=CRS.from_epsg(32633).to_wkt(),
                         crs_units="metre", threshold=0.5, extra={"note": "random weights; bench_gpu.py"})
    save_checkpoint(path, model_tensors(model), meta)


def timed_batches(step: Callable[[int], Any], tiles: int, batch: int, device: str) -> float:
    """Seconds for ``tiles`` tiles through ``step`` (called with each batch's size), after a warm-up of two
    batches (kernels chosen, memory pooled); CUDA work is waited for."""
    import torch

    def run(n: int) -> None:
        for start in range(0, n, batch):
            step(min(batch, n - start))
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    run(min(tiles, 2 * batch))
    t0 = time.perf_counter()
    run(tiles)
    return time.perf_counter() - t0


def bare_forward(model_paths: Sequence[str], tiles: int, tile: int, batch: int, device: str, amp: bool) -> float:
    """Seconds for ``tiles`` tiles through the models (each tile through every one), inputs already on the device
    (no IO, no blending, no ensemble weighting)."""
    import torch

    from satseg_plugin.models.checkpoint import build_from_checkpoint, load_checkpoint

    models = [build_from_checkpoint(load_checkpoint(p)).to(device).eval() for p in model_paths]
    x = torch.randn(batch, 3, tile, tile, device=device)
    dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float16
    use_amp = amp and device.startswith("cuda")

    def step(n: int) -> None:
        with torch.no_grad(), torch.autocast(device_type="cuda", dtype=dtype, enabled=use_amp):
            for model in models:
                model(x[:n])

    return timed_batches(step, tiles, batch, device)


def bare_features(model_path: str, tiles: int, tile: int, batch: int, device: str, amp: bool) -> float:
    """Seconds for ``tiles`` tiles through a ClusterNet's feature forward as ``cluster_raster`` runs it (its
    precision), inputs already on the device (no IO, no blending, no assignment)."""
    import torch

    from satseg_plugin.pipelines.clustering.pixel.cluster_map import ClusterModel

    cm = ClusterModel(model_path, torch.device(device))
    x = torch.randn(batch, 3, tile, tile, device=device)

    def step(n: int) -> None:
        with torch.no_grad(), cm.precision[amp].autocast():
            cm.model.features(x[:n]).float()

    return timed_batches(step, tiles, batch, device)


def remove_rasters(paths: Sequence[str]) -> None:
    """Delete the GeoTIFFs among ``paths`` this run wrote (the models, results.json and profile.txt stay)."""
    for name in paths:
        if name.endswith(".tif") and os.path.exists(name):
            os.remove(name)


def profile_table(profiler: cProfile.Profile, rows: int) -> List[str]:
    """The top ``rows`` functions by cumulative time as a Markdown table (paths relative to the repository or
    to site-packages; this script's own functions left out)."""
    stats = pstats.Stats(profiler).get_stats_profile().func_profiles
    own = os.path.abspath(__file__)  # this script's wrappers only repeat the total
    top = sorted(((name, fp) for name, fp in stats.items() if os.path.abspath(fp.file_name) != own),
                 key=lambda item: item[1].cumtime, reverse=True)[:rows]
    lines = ["| ncalls | tottime (s) | cumtime (s) | function |", "|---:|---:|---:|---|"]
    for name, fp in top:
        where = fp.file_name
        if "site-packages" in where:
            where = where.split("site-packages" + os.sep, 1)[-1]
        elif where.startswith(REPO_ROOT):
            where = os.path.relpath(where, REPO_ROOT)
        place = f"{where}:{fp.line_number}({name})" if where != "~" else name
        lines.append(f"| {fp.ncalls} | {fp.tottime:.3f} | {fp.cumtime:.3f} | `{place}` |")
    return lines


def device_line(device: str) -> str:
    """torch, and the device the run used (GPU name and memory, or the CPU model)."""
    import torch

    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        return (f"torch {torch.__version__} (CUDA {torch.version.cuda}), numpy {np.__version__}; device "
                f"{props.name}, {props.total_memory / 2**30:.0f} GiB")
    return f"torch {torch.__version__}, numpy {np.__version__}; device CPU ({torch.get_num_threads()} threads)"


def extra_tables(results: Dict[str, Any]) -> List[str]:
    """The ``--threads-sweep`` and ``--ensemble`` parts of the section (nothing when they did not run)."""
    lines: List[str] = []
    if "threads_sweep" in results:
        lines += ["Reader threads x batches read ahead (`SATSEG_SWEEP_THREADS`, the same pipeline run; the default "
                  "`GPU_THREADS` is 4 x 2):", "",
                  "| Readers | Read-ahead | Pipeline (s) | Pipeline Mpx/s | Pipeline / bare |",
                  "|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['readers']} | {r['read_ahead']} | {r['pipeline_s']:.2f} | {r['pipeline_mpx_s']:.2f} | "
                  f"{r['ratio']:.3f} |" for r in results["threads_sweep"]]
        lines.append("")
    if "ensemble_s" in results:
        members = ", ".join(f"{a}/{e} {w}" for a, e, w in ENSEMBLE)
        size = results["ensemble_size"]
        lines += [f"Seed-like ensemble ({members}; random weights) over a {size}x{size} raster, "
                  f"{results['ensemble_tiles']} tiles: pipeline {results['ensemble_s']:.2f} s "
                  f"({results['ensemble_mpx_s']:.2f} Mpx/s), bare forward of the three models "
                  f"{results['ensemble_bare_s']:.2f} s ({results['ensemble_bare_mpx_s']:.2f} Mpx/s), pipeline / bare "
                  f"**{results['ensemble_ratio']:.3f}**; **{results['ensemble_x_original']:.1f}x** the original "
                  f"competition script's {ORIGINAL_ENSEMBLE_MPX_S} Mpx/s (issue 16's target: >= 10x; that reference "
                  "was measured in the issue, not in this run).", ""]
    return lines


def section(results: Dict[str, Any], profile: List[str], command: str, minutes: float, note: str) -> str:
    """The ``gpu`` section of RESULTS.md (Markdown, without its markers)."""

    def num(key: str, fmt: str = ".2f") -> str:
        return format(results[key], fmt) if key in results else "skipped"

    size = results["size"]
    row = (f"| {size}x{size} | {results['tile']} | {results['overlap']} | {results['batch']} | {results['encoder']} | "
           f"{results['device_name']} | {results['tiles']} | {num('pipeline_s')} | {num('pipeline_mpx_s')} | "
           f"{num('bare_s')} | {num('bare_mpx_s')} | **{num('ratio', '.3f')}** | {num('clusternet_train_s')} | "
           f"{num('cluster_raster_s')} | {num('cluster_mpx_s')} |")
    body = [
        "## GPU: `segment_raster` against the bare forward, and `cluster_raster`, on one device",
        "",
        f"- Date: {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Machine: {results['machine']}; {results['device_line']}",
        f"- Command: `{command}` ({minutes:.1f} min)",
        f"- Code: {results['code']}",
        *([f"- Note: {note}"] if note else []),
        "",
        "| Raster | Tile | Overlap | Batch | Encoder | Device | Tiles | Pipeline (s) | Pipeline Mpx/s | "
        "Bare forward (s) | Bare forward Mpx/s | Pipeline / bare | ClusterNet training (s) | `cluster_raster` (s) | "
        "`cluster_raster` Mpx/s |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        row,
        "",
        "Raster: 3-band uint8 tiled GeoTIFF of smooth random texture, written by the script. Pipeline: "
        "`segment_raster` over the whole raster with a seeded random U-Net (AMP on CUDA), after a warm-up run on a "
        f"{WARM_EDGE} px corner. Bare forward: the same number of tiles through the same model, input tensors "
        "already on the device, same batch and AMP, after a warm-up of two batches; no reading, blending or "
        "writing. Pipeline / bare = bare seconds / pipeline seconds (the share of the model's own speed the "
        "pipeline keeps). ClusterNet: `train_clusternet` (k = 8, 2 rounds x 5 steps, 16 crops a round) on a 512 px "
        "crop, then `cluster_raster` over the whole raster (default tile and overlap, batch as above).",
        "",
        f"`cluster_raster` against its bare feature forward (the same {num('cluster_tiles', 'd')} tiles through the "
        f"ClusterNet's features, inputs on the device, its precision): {num('cluster_bare_s')} s "
        f"({num('cluster_bare_mpx_s')} Mpx/s), `cluster_raster` / bare **{num('cluster_ratio', '.3f')}** "
        "(issue 16's target: >= 0.5).",
        "",
        *extra_tables(results),
        f"Where the pipeline's time goes: one more `segment_raster` run under cProfile, the top {len(profile) - 2} "
        "functions by cumulative time (CUDA work is asynchronous: it shows where the host waits for it):",
        "",
        *profile,
    ]
    return "\n".join(body)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    parser = new_parser(__doc__)
    parser.add_argument("--size", type=int, default=8192, help="raster edge in pixels (8192)")
    parser.add_argument("--tile", type=int, default=512, help="tile size (512)")
    parser.add_argument("--overlap", type=int, default=128, help="tile overlap (128)")
    parser.add_argument("--batch", type=int, default=32, help="tiles per forward (32)")
    parser.add_argument("--encoder", default="resnet34", help="U-Net encoder (resnet34)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a dry run")
    parser.add_argument("--no-cluster", action="store_true", help="skip the ClusterNet part")
    parser.add_argument("--threads-sweep", action="store_true", help="also time the pipeline with reader threads "
                        f"{'/'.join(map(str, SWEEP_READERS))} x read-ahead {'/'.join(map(str, SWEEP_READ_AHEAD))}")
    parser.add_argument("--ensemble", action="store_true", help="also time issue 16's seed-like ensemble "
                        "(PSPNet/densenet161, DeepLabV3+/mobilenetv3_large, U-Net/resnet50)")
    parser.add_argument("--ensemble-size", type=int, default=4096, help="raster edge of the ensemble run (4096)")
    add_common_args(parser, "gpu", note=True, out_dir=os.path.join(DEFAULT_OUT, "gpu"))
    parser.add_argument("--out", dest="out_dir", default=argparse.SUPPRESS, help="the same as --out-dir")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the check; print the results (and write them with ``--write-results``)."""
    args = parse_args(argv)
    import torch

    from satseg_plugin.pipelines.segmentation.segment import InferenceConfig, segment_raster

    command = command_line(__file__, argv)
    started = time.perf_counter()
    out = os.path.abspath(args.out_dir)
    os.makedirs(out, exist_ok=True)
    written: List[str] = []  # the files this run makes (its rasters are removed; nothing else in out-dir is)

    def path(name: str) -> str:
        written.append(os.path.join(out, name))
        return written[-1]

    device_name = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") \
        else cpu_model()
    results: Dict[str, Any] = {"size": args.size, "tile": args.tile, "overlap": args.overlap, "batch": args.batch,
                               "encoder": args.encoder, "device": args.device, "torch": torch.__version__,
                               "numpy": np.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
                               "device_name": device_name, "machine": host_info(),
                               "device_line": device_line(args.device), "code": git_state()}
    if args.device.startswith("cuda"):
        results["gpu"] = device_name
    source = path("scene.tif")
    t0 = time.perf_counter()
    write_raster(source, args.size)
    results["write_raster_s"] = round(time.perf_counter() - t0, 2)
    model = path("unet.satseg")
    write_model(model, args.encoder, args.tile)
    mpx = args.size * args.size / 1e6
    config = InferenceConfig(tile_size=args.tile, overlap=args.overlap, batch_size=args.batch, amp=True)

    outputs: List[str] = []  # the probability and mask rasters of the pipeline runs

    def run_pipeline(name: str, cfg: InferenceConfig = config) -> Any:
        outputs.extend([path(f"{name}_prob.tif"), path(f"{name}_mask.tif")])
        return segment_raster(source, [model], outputs[-2], outputs[-1], cfg, args.device)

    warm = InferenceConfig(tile_size=args.tile, overlap=args.overlap, batch_size=args.batch, amp=True,
                           bounds=(ORIGIN[0], ORIGIN[1] - WARM_EDGE * PIXEL, ORIGIN[0] + WARM_EDGE * PIXEL, ORIGIN[1]))
    run_pipeline("warm", warm)
    t0 = time.perf_counter()
    result = run_pipeline("full")
    pipeline_s = time.perf_counter() - t0
    bare_s = bare_forward([model], result.tiles, args.tile, args.batch, args.device, amp=True)
    results.update(tiles=result.tiles, pipeline_s=round(pipeline_s, 3), bare_s=round(bare_s, 3),
                   pipeline_mpx_s=round(mpx / pipeline_s, 2), bare_mpx_s=round(mpx / bare_s, 2),
                   ratio=round(bare_s / pipeline_s, 4))
    log(f"segment_raster {args.size}^2 on {args.device}: {pipeline_s:.2f} s ({mpx / pipeline_s:.2f} Mpx/s), "
        f"bare forward {bare_s:.2f} s ({mpx / bare_s:.2f} Mpx/s), ratio {bare_s / pipeline_s:.3f}")

    profiler = cProfile.Profile()
    profiler.enable()
    run_pipeline("profiled")
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(PROFILE_FILE_ROWS)
    with open(os.path.join(out, "profile.txt"), "w", encoding="utf-8") as handle:
        handle.write(text.getvalue())
    profile = profile_table(profiler, PROFILE_SECTION_ROWS)
    remove_rasters(outputs)  # before the cluster run needs the disk

    if args.threads_sweep:
        from satseg_plugin.core.tiling.concurrency import THREADS_ENV

        rows = []
        for readers in SWEEP_READERS:
            for ahead in SWEEP_READ_AHEAD:
                os.environ[THREADS_ENV] = f"{readers},{ahead}"
                try:
                    t0 = time.perf_counter()
                    run_pipeline(f"threads_{readers}_{ahead}")
                    seconds = time.perf_counter() - t0
                finally:
                    del os.environ[THREADS_ENV]
                remove_rasters(outputs)
                rows.append({"readers": readers, "read_ahead": ahead, "pipeline_s": round(seconds, 3),
                             "pipeline_mpx_s": round(mpx / seconds, 2), "ratio": round(bare_s / seconds, 4)})
                log(f"readers {readers}, read-ahead {ahead}: {seconds:.2f} s, ratio {bare_s / seconds:.3f}")
        results["threads_sweep"] = rows

    if args.ensemble:
        esrc = path("ensemble_scene.tif")
        write_raster(esrc, args.ensemble_size, seed=2)
        members = []
        for architecture, encoder, _weight in ENSEMBLE:
            members.append(path(f"{architecture}_{encoder}.satseg"))
            write_model(members[-1], encoder, args.tile, architecture)
        weights = tuple(weight for *_, weight in ENSEMBLE)
        ecfg = InferenceConfig(tile_size=args.tile, overlap=args.overlap, batch_size=args.batch, amp=True,
                               weights=weights)
        eout = [path("ensemble_prob.tif"), path("ensemble_mask.tif")]
        segment_raster(esrc, members, *eout, dataclasses.replace(ecfg, bounds=warm.bounds), args.device)
        t0 = time.perf_counter()
        eres = segment_raster(esrc, members, *eout, ecfg, args.device)
        ensemble_s = time.perf_counter() - t0
        ebare_s = bare_forward(members, eres.tiles, args.tile, args.batch, args.device, amp=True)
        empx = args.ensemble_size ** 2 / 1e6
        results.update(ensemble_size=args.ensemble_size, ensemble_tiles=eres.tiles, ensemble_s=round(ensemble_s, 3),
                       ensemble_mpx_s=round(empx / ensemble_s, 2), ensemble_bare_s=round(ebare_s, 3),
                       ensemble_bare_mpx_s=round(empx / ebare_s, 2), ensemble_ratio=round(ebare_s / ensemble_s, 4),
                       ensemble_x_original=round(empx / ensemble_s / ORIGINAL_ENSEMBLE_MPX_S, 2))
        log(f"ensemble {args.ensemble_size}^2: {ensemble_s:.2f} s ({empx / ensemble_s:.2f} Mpx/s, "
            f"{empx / ensemble_s / ORIGINAL_ENSEMBLE_MPX_S:.1f}x the original), bare {ebare_s:.2f} s")
        remove_rasters([esrc, *eout])

    if not args.no_cluster:
        from satseg_plugin.pipelines.clustering.pixel.cluster_map import ClusterMapConfig, cluster_raster
        from satseg_plugin.pipelines.clustering.pixel.train import ClusterNetConfig, train_clusternet

        crop = path("crop.tif")
        write_raster(crop, 512, seed=1)
        cn_path = path("clusternet.satseg")
        t0 = time.perf_counter()
        train_clusternet([crop], cn_path, ClusterNetConfig(num_clusters=8, rounds=2, steps_per_round=5,
                                                            crops_per_round=16), args.device)
        results["clusternet_train_s"] = round(time.perf_counter() - t0, 2)
        cluster_config = ClusterMapConfig(batch_size=args.batch)
        t0 = time.perf_counter()
        clustered = cluster_raster(source, cn_path, path("clusters.tif"), cluster_config, args.device)
        cluster_s = time.perf_counter() - t0
        cluster_bare_s = bare_features(cn_path, clustered.tiles, cluster_config.tile_size, args.batch, args.device,
                                       cluster_config.amp)
        results.update(cluster_raster_s=round(cluster_s, 2), cluster_mpx_s=round(mpx / cluster_s, 2),
                       cluster_tiles=clustered.tiles, cluster_bare_s=round(cluster_bare_s, 3),
                       cluster_bare_mpx_s=round(mpx / cluster_bare_s, 2),
                       cluster_ratio=round(cluster_bare_s / cluster_s, 4))
        log(f"cluster_raster {args.size}^2 on {args.device}: {cluster_s:.2f} s ({mpx / cluster_s:.2f} Mpx/s), "
            f"bare feature forward {cluster_bare_s:.2f} s ({mpx / cluster_bare_s:.2f} Mpx/s), "
            f"ratio {cluster_bare_s / cluster_s:.3f}")
    remove_rasters(written)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    log(json.dumps(results))
    publish_section(section(results, profile, command, (time.perf_counter() - started) / 60, args.note), "gpu",
                    args.write_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
