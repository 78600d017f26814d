"""Benchmark SatSeg's pixel clustering: ClusterNet quality, annotations needed, throughput, memory and seams.

1. Quality on the sample scene (``sample_data.generate.generate_scene(size=1024, seed=0)``):

   a. ``train_clusternet`` with the default ``ClusterNetConfig`` (U-Net/resnet18, k = 20; ``--rounds`` can
      shorten it), then ``cluster_raster`` of the scene (tile 512, default overlap) and ``evaluate_clusters``
      against the building footprints: best reachable building Dice/IoU, Dice/IoU at the keep threshold 0.4,
      purity and NMI;
   b. the baseline: faiss k-means (``core.kmeans.kmeans``, same k, iterations and seed) on the z-scored band
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
import os
import shutil
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from clustering_quality import KEEP_THRESHOLD, annotation_experiment, cluster_scores, footprint_mask, kmeans_baseline
from clustering_report import (
    SEAM_SCENE,
    Findings,
    MemoryRow,
    SeamRow,
    effective_tile,
    fmt_load,
    id_agreement,
    id_seams,
    seam_excess,
    section,
)
from clustering_runs import (
    CHILDREN,
    ensure_tiny_clusternet,
    ensure_trained_clusternet,
    measured_cluster,
    run_child,
    set_threads,
)
from harness import (
    DEFAULT_OUT,
    THREAD_VARS,
    add_common_args,
    child_main,
    command_line,
    git_state,
    log,
    new_parser,
    parallel_probe,
    publish_section,
)
from sources import ORIGIN, PIXEL_SIZE, TINY_ENCODER, TINY_KWARGS, ensure_scene, ensure_source


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
    add_common_args(parser, "clustering", quick="2 training rounds, n <= 4 annotations, memory sizes 1024,2048, no strips",
                    note=True, out_dir=DEFAULT_OUT)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = args.rounds or 2
        args.max_annotations = args.max_annotations or 4
        args.memory_sizes = "1024,2048"
        args.no_strips = True
    args.memory_sizes = sorted({int(s) for s in str(args.memory_sizes).split(",") if s.strip()})
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark and print (and with ``--write-results`` write) the clustering section."""
    args = parse_args(argv)
    if args.child:  # the children live in clustering_runs.py; this entry point stays for old command lines
        return child_main(CHILDREN, ["--child", *args.child])

    if args.threads:  # before torch and faiss start their thread pools
        os.environ.update({var: str(args.threads) for var in THREAD_VARS})
    import torch

    set_threads(args.threads)
    command = command_line(__file__)
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
    ref = footprint_mask(scene["scene"], buildings)
    annotations = annotation_experiment(cluster_path, base_path, scene["scene"], model, buildings, ref, scratch,
                                        args.max_annotations)
    loads.append(("after the annotation runs", os.getloadavg()))

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

    multiple = ClusterModel(model, torch.device("cpu")).multiple

    def eff(t: int) -> int:
        return effective_tile(t, multiple)

    # (label, the run's raster at its core borders, the tile-free k-means raster at the same lines: the control)
    seams: List[SeamRow] = []
    for name, label in (("full", f"tile {eff(tile)}, overlap {eff(tile) // 4} (default)"),
                        ("half", f"tile {eff(half)}, overlap {eff(half) // 4} (default)"),
                        ("naive", f"tile {eff(half)}, overlap 0 (no ramp: each pixel from one tile)")):
        t = eff(seam_runs[name]["tile"])
        ov = t // 4 if seam_runs[name]["overlap"] is None else seam_runs[name]["overlap"]
        seams.append((label, id_seams(seam_runs[name]["output"], t, ov), id_seams(control_path, t, ov)))
    agree_half = id_agreement(seam_runs["full"]["output"], seam_runs["half"]["output"])
    for (label, st, c), (eb, er) in zip(seams, seam_excess(seams)):
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
    mem: List[MemoryRow] = []
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
    findings = Findings(
        args=args, command=command, minutes=(time.perf_counter() - started) / 60, code_start=code_start,
        code_end=git_state(), loads=loads, parallel=parallel_probe(), threads=threads, tile=tile, batch=batch,
        model_info=model_info, buildings=len(buildings), building_share=float(ref.mean()), scene_run=scene_run,
        net=net, base=base, base_info=base_info, annotations=annotations, probe=probe, floor=floor, memory=mem,
        skipped=skipped, seams=seams, multiple=multiple, half=half, agree_half=agree_half)
    publish_section(section(findings), "clustering", args.write_results)
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
