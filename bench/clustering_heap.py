"""Heap profile of ``cluster_raster`` at several raster sizes: does any live data grow with the raster?

Peak RSS (what ``bench_clustering.py`` measures) also counts memory the allocator kept after it was freed; a heap
profile counts only what is allocated. Each size runs in its own ``memray run --native`` child (every allocation of
Python, numpy, torch, oneDNN and GDAL, with its stack) on the top-left ``size`` x ``size`` of the cached largest
source, with the tiny ClusterNet of ``bench_clustering.py`` (tile 512, batch 4, 2 torch threads); the table gives the
heap's high-water mark and the biggest groups of allocations live at that moment.

memray is a profiler, not a SatSeg dependency: ``.venv/bin/pip install memray`` first (or put it on PYTHONPATH).
The runs are slow under the profiler (20480² took 12 minutes on 2 cores)::

    .venv/bin/python bench/clustering_heap.py --sizes 5120,10240,20480
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
from sources import ensure_source  # noqa: E402

#: The groups of allocations live at the peak, by what :func:`group_of` finds in their stacks.
GROUPS = ("GDAL raster blocks", "carried ramp rows", "one batch's features", "torch, other", "other")


def child(source: str, model: str, size: int, output: str) -> None:
    """One ``cluster_raster`` run on the top-left ``size`` px of ``source`` (run under memray)."""
    import rasterio
    import torch

    from satseg_plugin.pipelines.clustering.pixel.cluster_map import ClusterMapConfig, cluster_raster

    torch.set_num_threads(2)
    with rasterio.open(source) as src:
        left, top = src.bounds.left, src.bounds.top
        bounds = (left, top - size * src.res[1], left + size * src.res[0], top)
    cluster_raster(source, model, output, ClusterMapConfig(tile_size=512, batch_size=4, bounds=bounds), device="cpu")


def group_of(stack: List[Tuple[str, str, int]]) -> str:
    """The :data:`GROUPS` entry of an allocation, from its (native + Python) stack, innermost frame first."""
    names = [f"{function}:{os.path.basename(path)}" for function, path, _line in stack]
    top = names[0] if names else ""
    if top.startswith("VSIMallocAligned"):
        return GROUPS[0]
    if top.startswith("default_calloc") and any(n.startswith("sweep:") for n in names):  # np.zeros of the sweep
        return GROUPS[1]
    if any(n.startswith("features:cluster_map") for n in names):
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
    parser.add_argument("--sizes", default="5120,10240,20480", help="raster edges (px), each a child run")
    parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    parser.add_argument("--child", nargs=4, metavar=("SOURCE", "MODEL", "SIZE", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        source, model, size, output = args.child
        return child(source, model, int(size), output)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    source = ensure_source(args.out_dir, max(sizes), log)
    model = ensure_tiny_clusternet(args.out_dir, source)
    rows = []
    for size in sizes:
        capture, output = (os.path.join(args.out_dir, f"heap_{size}{ext}") for ext in (".bin", ".tif"))
        for path in (capture, output):
            if os.path.exists(path):
                os.remove(path)
        log(f"memray run --native: cluster_raster on {size}x{size} px ...")
        subprocess.run([sys.executable, "-m", "memray", "run", "--native", "-q", "-o", capture, __file__, "--child",
                        source, model, str(size), output], check=True)
        rows.append((size, *peak_groups(capture)))
        os.remove(output)
    print("| raster | heap high-water mark (MiB) | " + " | ".join(GROUPS) + " |")
    print("|---|---:|" + "---:|" * len(GROUPS))
    for size, peak, groups in rows:
        print(f"| {size}² ({size * size / 1e6:.0f} Mpx) | {peak:.1f} | "
              + " | ".join(f"{groups.get(n, 0.0):.1f}" for n in GROUPS) + " |")


if __name__ == "__main__":
    main()
