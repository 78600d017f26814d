"""Heap profile of ``cluster_raster`` or ``segment_raster`` on several regions: does live data grow with the raster?

Peak RSS (what ``bench_clustering.py`` and ``bench_segmentation.py`` measure) also counts memory the allocator kept
after it was freed; a heap profile counts only what is allocated. Each region runs in its own ``memray run
--native`` child (every allocation of Python, numpy, torch, oneDNN and GDAL, with its stack) on the top-left
``W`` x ``H`` px of the cached source of the largest side, with the benchmarks' tiny models (the tiny ClusterNet of
``bench_clustering.py``, the tiny U-Net of ``bench_segmentation.py``; tile 512, batch 4, default overlap, 2 torch
threads); the table gives the heap's high-water mark and the groups of allocations live at that moment.

memray is a profiler, not a SatSeg dependency: ``.venv/bin/pip install memray`` first (or put it on PYTHONPATH).
The runs are slow under the profiler (cluster_raster on 20480² took 12 minutes on 2 cores)::

    .venv/bin/python bench/heap_profile.py --pipeline cluster --regions 5120,10240,20480
    .venv/bin/python bench/heap_profile.py --pipeline segment --regions 2048x20480,20480x2048
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clustering_runs import ensure_tiny_clusternet  # noqa: E402
from harness import log  # noqa: E402
from segmentation_runs import ensure_tiny_model  # noqa: E402
from sources import ensure_source  # noqa: E402

#: The groups of allocations live at the peak, by what :func:`group_of` finds in their stacks.
GROUPS = ("GDAL raster blocks", "sweep accumulators", "model forward", "torch, other", "other")


def child(pipeline: str, source: str, model: str, width: int, height: int, output: str) -> None:
    """One run on the top-left ``width`` x ``height`` px of ``source`` (under memray)."""
    import rasterio
    import torch

    torch.set_num_threads(2)
    with rasterio.open(source) as src:
        left, top = src.bounds.left, src.bounds.top
        bounds = (left, top - height * src.res[1], left + width * src.res[0], top)
    if pipeline == "cluster":
        from satseg_plugin.pipelines.clustering.pixel.cluster_map import ClusterMapConfig, cluster_raster

        cluster_raster(source, model, output, ClusterMapConfig(tile_size=512, batch_size=4, bounds=bounds),
                       device="cpu")
    else:
        from satseg_plugin.pipelines.segmentation.segment import InferenceConfig, segment_raster

        segment_raster(source, [model], output, output[:-4] + "_mask.tif",
                       InferenceConfig(tile_size=512, batch_size=4, bounds=bounds), device="cpu")


def group_of(stack: List[Tuple[str, str, int]]) -> str:
    """The :data:`GROUPS` entry of an allocation, from its (native + Python) stack, innermost frame first."""
    names = [f"{function}:{os.path.basename(path)}" for function, path, _line in stack]
    top = names[0] if names else ""
    if top.startswith("VSIMallocAligned"):
        return GROUPS[0]
    if top.startswith(("default_calloc", "default_malloc")) and any(
            n.startswith(("sweep:", "add:", "_blend", "__init__:accumulat")) for n in names):
        return GROUPS[1]  # numpy buffers of the tiled sweep (ramp rows, blend accumulators)
    if any(n.startswith(("features:cluster_map", "forward:")) for n in names):
        return GROUPS[2]
    return GROUPS[3] if "alloc_cpu" in top else GROUPS[4]


def peak_groups(capture: str) -> Tuple[float, Dict[str, float]]:
    """The heap's high-water mark (MiB) and the MiB of each group live at it."""
    from memray import FileReader

    reader = FileReader(capture)
    groups: Dict[str, float] = collections.Counter()
    for record in reader.get_high_watermark_allocation_records(merge_threads=True):
        groups[group_of(record.hybrid_stack_trace(max_stacks=30))] += record.size / 2 ** 20
    return reader.metadata.peak_memory / 2 ** 20, dict(groups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", choices=("cluster", "segment"), default="cluster")
    parser.add_argument("--regions", default="5120,10240,20480",
                        help="regions, each a child run: N (N x N px) or WxH, comma-separated")
    parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        pipeline, source, model, width, height, output = args.child
        return child(pipeline, source, model, int(width), int(height), output)
    regions = []
    for item in args.regions.split(","):
        width, _, height = item.strip().lower().partition("x")
        regions.append((int(width), int(height or width)))
    source = ensure_source(args.out_dir, max(max(r) for r in regions), log)
    model = ensure_tiny_clusternet(args.out_dir, source) if args.pipeline == "cluster" else \
        ensure_tiny_model(args.out_dir)
    rows = []
    for width, height in regions:
        capture, output = (os.path.join(args.out_dir, f"heap_{width}x{height}{ext}") for ext in (".bin", ".tif"))
        outputs = (output, output[:-4] + "_mask.tif")
        for path in (capture, *outputs):
            if os.path.exists(path):
                os.remove(path)
        log(f"memray run --native: {args.pipeline} on {width}x{height} px ...")
        subprocess.run([sys.executable, "-m", "memray", "run", "--native", "-q", "-o", capture, __file__, "--child",
                        args.pipeline, source, model, str(width), str(height), output], check=True)
        rows.append((width, height, *peak_groups(capture)))
        for path in (capture, *outputs):
            if os.path.exists(path):
                os.remove(path)
    print(f"{args.pipeline}: | region | heap high-water mark (MiB) | " + " | ".join(GROUPS) + " |")
    print("|---|---:|" + "---:|" * len(GROUPS))
    for width, height, peak, groups in rows:
        print(f"| {width} x {height} ({width * height / 1e6:.0f} Mpx) | {peak:.1f} | "
              + " | ".join(f"{groups.get(n, 0.0):.1f}" for n in GROUPS) + " |")


if __name__ == "__main__":
    main()
