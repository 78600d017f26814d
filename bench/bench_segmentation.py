"""Benchmark SatSeg's tiled segmentation (``segment_raster``): throughput, seams, memory, and GPU when present.

1. Throughput on a generated sample scene (``sample_data.generate``, 2048 px by default) with a U-Net
   (``--encoder``, resnet18 by default) trained briefly on it with ``train_segmentation`` (cached):

   a. the whole pipeline, ``segment_raster`` with 512 px tiles and 128 px overlap (read, normalise, batch,
      forward, Hann blend, write the probability and mask rasters, overviews);
   b. the bare model forward on exactly the same tiles (same count, size, batches and thread count;
      tensors prepared in memory beforehand, ``torch.no_grad``, eval mode), and the ratio pipeline/bare;
   c. the naive way: non-overlapping tiles, one at a time (``segment_raster`` with overlap 0, batch 1);
   d. a seam check on the naive and the blended probability rasters: mean |difference| of adjacent pixel
      pairs that straddle a tile border, divided by the same statistic for pairs inside tiles.

   One extra pipeline run under cProfile shows where the pipeline's time goes.
2. Memory: peak RSS of ``segment_raster`` with a deliberately tiny U-Net (random weights) on rasters of
   growing size (the cached synthetic rasters of ``sources.py``), plus a tall and a wide strip of
   the largest raster (``bounds``) to separate the height- and width-dependence; the peak size of GDAL's
   block cache is sampled in the same process.
3. GPU: when torch sees CUDA, the pipeline and the bare forward also run on it with mixed precision.

Every measured run is its own child process; wall time and peak RSS (``ru_maxrss`` through
``/usr/bin/time``) are taken by the parent, the engine/forward time inside the child. Scene, models and
source rasters are cached under ``bench/out/`` (git-ignored); outputs are deleted after use.

Usage::

    .venv/bin/python bench/bench_segmentation.py --write-results bench/RESULTS.md   # make bench
    .venv/bin/python bench/bench_segmentation.py --quick                            # a few minutes
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from harness import (
    DEFAULT_OUT,
    Run,
    add_common_args,
    child_main,
    command_line,
    log,
    new_parser,
    parallel_probe,
    publish_section,
)
from segmentation_report import Findings, MemoryRow, profile_rows, seam_stats, section
from segmentation_runs import CHILDREN, ensure_tiny_model, ensure_trained_model, measured, run_child
from sources import ORIGIN, PIXEL_SIZE, TINY_ENCODER, ensure_scene, ensure_source


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    parser = new_parser(__doc__)
    parser.add_argument("--encoder", default="resnet18", help="U-Net encoder of the throughput model (resnet18)")
    parser.add_argument("--scene-size", type=int, default=2048, help="sample scene edge in pixels (2048)")
    parser.add_argument("--tile", type=int, default=512, help="tile size (512)")
    parser.add_argument("--overlap", type=int, default=128, help="tile overlap of the blended runs (128)")
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass (8, the default of the tool)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in every child (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="pipeline and bare-forward runs each, alternating; the fastest counts (3)")
    parser.add_argument("--train-epochs", type=int, default=4, help="training epochs of the benchmark model (4)")
    parser.add_argument("--train-batches", type=int, default=25, help="training batches per epoch (25)")
    parser.add_argument("--memory-sizes", default="2048,10240,20480",
                        help="raster edges of the memory runs, comma-separated (2048,10240,20480)")
    parser.add_argument("--memory-batch", type=int, default=4,
                        help="tiles per batch in the memory runs (4: small enough that every raster, even the "
                             "2048 px one with 5 tiles per row, runs full batches, so activations are equal)")
    parser.add_argument("--memory-budget", type=float, default=900.0,
                        help="seconds: the largest memory run is skipped when estimated longer than this, and "
                             "then only sizes estimated under 2/3 of it run (900)")
    parser.add_argument("--no-strips", action="store_true", help="skip the tall/wide strip memory runs")
    add_common_args(parser, "segmentation", out_dir=DEFAULT_OUT,
                    quick="a quick run: 1024 px scene, 1 repeat, short training, memory sizes 1024,4096")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.scene_size, args.repeats, args.train_epochs, args.train_batches = 1024, 1, 2, 10
        args.memory_sizes = "1024,4096"
    args.memory_sizes = sorted({int(s) for s in str(args.memory_sizes).split(",") if s.strip()})
    if args.tile <= 0 or not 0 <= args.overlap < args.tile or args.repeats < 1:
        parser.error("need tile > 0, 0 <= overlap < tile, repeats >= 1")
    return args


def gpu_check(spec: Callable[..., Dict[str, Any]]) -> List[str]:
    """The pipeline and the bare forward on CUDA with mixed precision, when torch sees a GPU; the section's lines."""
    import torch

    if not torch.cuda.is_available():
        log("No GPU: skipped")
        return [f"GPU: no GPU: skipped (torch {torch.__version__} sees no CUDA device). When one is present, "
                "this script also runs the pipeline and the bare forward on cuda with mixed precision."]
    name = torch.cuda.get_device_name(0)
    log(f"GPU {name}: pipeline and bare forward with mixed precision ...")
    gpu_runs = []
    for label, mode, s in (("pipeline, cuda, AMP", "pipeline", spec("gpu", device="cuda", amp=True)),
                           ("bare forward, cuda, AMP", "bare", spec("gpu_bare", device="cuda", amp=True)),
                           ("pipeline, cuda, AMP (2nd)", "pipeline", spec("gpu", device="cuda", amp=True)),
                           ("bare forward, cuda, AMP (2nd)", "bare", spec("gpu_bare", device="cuda", amp=True))):
        gpu_runs.append(measured(label, mode, s))
    gp = min(gpu_runs[0::2], key=lambda r: r.engine_s)
    gb = min(gpu_runs[1::2], key=lambda r: r.engine_s)
    return [f"GPU: {name}, mixed precision (fp16 autocast), same tiles and batches; fastest of 2 each "
            "(the first includes CUDA start-up).", "",
            "| Run | Time (s) | Mpx/s | Peak RSS (MiB) |", "|---|---:|---:|---:|",
            f"| pipeline (`segment_raster`, device cuda) | {gp.engine_s:.2f} | {gp.mpx_s:.1f} | "
            f"{gp.maxrss_mib:.0f} |",
            f"| bare forward (cuda) | {gb.engine_s:.2f} | {gb.mpx_s:.1f} | {gb.maxrss_mib:.0f} |",
            "", f"Ratio pipeline/bare on the GPU: {gb.engine_s / gp.engine_s:.2f}."]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; return the exit status (1 when a run failed its consistency checks)."""
    args = parse_args(argv)
    if args.child:  # the children live in segmentation_runs.py; this entry point stays for old command lines
        return child_main(CHILDREN, ["--child", *args.child])

    import torch

    command = command_line(__file__)
    out_dir = os.path.abspath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    scratch = os.path.join(out_dir, "seg_run")
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    tile, overlap, batch = args.tile, args.overlap, args.batch_size
    threads = args.threads or torch.get_num_threads()
    started = time.perf_counter()

    scene = ensure_scene(out_dir, args.scene_size, log)
    model, model_info = ensure_trained_model(out_dir, scene, args)
    tiny = ensure_tiny_model(out_dir)

    def spec(name: str, **kw: Any) -> Dict[str, Any]:
        base = {"source": scene["scene"], "model": model, "tile": tile, "overlap": overlap, "batch": batch,
                "threads": threads, "device": "cpu", "prob": os.path.join(scratch, f"{name}_prob.tif"),
                "mask": os.path.join(scratch, f"{name}_mask.tif")}
        base.update(kw)
        return base

    # 1. throughput ------------------------------------------------------------------------------
    log(f"Throughput on the {args.scene_size} px scene, tile {tile}, overlap {overlap}, batch {batch}, "
        f"{threads} torch thread(s):")
    pipes: List[Run] = []
    bares: List[Run] = []
    for i in range(args.repeats):
        pipes.append(measured(f"pipeline #{i + 1}", "pipeline", spec("blend")))
        bares.append(measured(f"bare forward #{i + 1}", "bare", spec("bare")))
    naive = measured("naive (overlap 0, batch 1)", "pipeline", spec("naive", overlap=0, batch=1))
    naive_bare = measured("bare forward, naive tiles (batch 1)", "bare", spec("naive_bare", overlap=0, batch=1))
    profile_path = os.path.join(scratch, "pipeline.prof")
    profiled = measured("pipeline under cProfile", "pipeline", spec("prof", profile=profile_path))
    breakdown = profile_rows(profile_path, profiled.engine_s)
    seams = {"naive": seam_stats(spec("naive")["prob"], tile, 0),
             "blend": seam_stats(spec("blend")["prob"], tile, overlap),
             "blend_grid": seam_stats(spec("blend")["prob"], tile, 0)}  # blended output at the naive grid lines
    ratio = min(r.engine_s for r in bares) / min(r.engine_s for r in pipes)  # = (pipeline Mpx/s) / (bare Mpx/s)
    log(f"  ratio pipeline/bare {ratio:.3f}; seams border/interior: naive {seams['naive']['ratio']:.2f}, "
        f"blended {seams['blend']['ratio']:.2f}")

    # 3. GPU ------------------------------------------------------------------------------------
    gpu_lines = gpu_check(spec)

    # 2. memory ---------------------------------------------------------------------------------
    mem: List[MemoryRow] = []  # (label, width, height, run)
    skipped: List[str] = []
    sources = {size: ensure_source(out_dir, size, log) for size in args.memory_sizes}

    def mem_run(label: str, source: str, width: int, height: int, bounds=None) -> Run:
        name = f"mem_{width}x{height}"
        s = spec(name, source=source, model=tiny, batch=args.memory_batch, overlap=overlap)
        if bounds:
            s["bounds"] = list(bounds)
        try:
            run = measured(label, "pipeline", s)
        finally:
            for key in ("prob", "mask"):
                if os.path.exists(s[key]):
                    os.remove(s[key])
        mem.append((label, width, height, run))
        return run

    _, floor = run_child("imports", {})
    log(f"Memory: import floor (torch, smp, rasterio, SatSeg imported, nothing run): {floor.maxrss_mib:.0f} MiB")
    smallest = args.memory_sizes[0]
    log(f"Memory: tiny U-Net ({TINY_ENCODER}), tile {tile}, overlap {overlap}, batch {args.memory_batch}:")
    first = mem_run(f"{smallest}x{smallest}", sources[smallest], smallest, smallest)
    per_px = first.wall_s / smallest ** 2
    largest = args.memory_sizes[-1]
    allowed = args.memory_budget if per_px * largest ** 2 <= args.memory_budget else args.memory_budget * 2 / 3
    for size in args.memory_sizes[1:]:
        estimate = per_px * size ** 2
        if estimate > allowed:
            skipped.append(f"{size}x{size} (estimated {estimate / 60:.0f} min, over the {allowed / 60:.0f} min limit)")
            log(f"  skipping {size}x{size}: estimated {estimate:.0f} s")
            continue
        run = mem_run(f"{size}x{size}", sources[size], size, size)
        per_px = run.wall_s / size ** 2
    done_sizes = [w for _, w, h, _ in mem if w == h]
    big = max(done_sizes)
    if not args.no_strips and big > smallest:
        x0, top = ORIGIN
        ps = PIXEL_SIZE
        mem_run(f"{smallest} wide x {big} tall strip of the {big} raster", sources[big], smallest, big,
                (x0, top - big * ps, x0 + smallest * ps, top))
        mem_run(f"{big} wide x {smallest} tall strip of the {big} raster", sources[big], big, smallest,
                (x0, top - smallest * ps, x0 + big * ps, top))
    shutil.rmtree(scratch, ignore_errors=True)

    # report ------------------------------------------------------------------------------------
    findings = Findings(args=args, command=command, minutes=(time.perf_counter() - started) / 60,
                        parallel=parallel_probe(), threads=threads, model_info=model_info, pipes=pipes, bares=bares,
                        naive=naive, naive_bare=naive_bare, profiled=profiled, breakdown=breakdown, seams=seams,
                        gpu_lines=gpu_lines, floor=floor, memory=mem, skipped=skipped)
    publish_section(section(findings), "segmentation", args.write_results)
    return 0 if findings.tiles_ok else 1


if __name__ == "__main__":
    sys.exit(main())
