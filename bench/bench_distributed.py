"""Benchmark SatSeg's tiled tools on a Dask cluster (SCHEDULER, issue 17) against the same runs in-process.

For patchraster (:func:`~satseg_plugin.pipelines.patching.patches.write_patches`, 512 px patches), clusterraster
(a tiny random-weight ClusterNet, as bench_clustering.py's memory runs) and segmentraster (a tiny random-weight
U-Net) on one ``--size`` px synthetic raster, each tool runs twice, each run in its own child process:
in-process (what a user gets without a cluster) and on a local Dask cluster of ``--workers`` single-threaded
worker processes that the child starts itself, so that the cluster's start is timed apart from the run and the
scheduler's task stream gives every work unit's compute and transfer times. The parent then checks that the
two runs wrote the same outputs (pixels of the rasters, bytes of the patch files, the patch index).

From the measured units it fits each tool's cost model (a unit costs ``a + b x work``, work = the tiles a
unit computes, tile rows shared with a neighbouring unit included, or the patches it writes), takes the
client's fixed cost before the first unit starts and its assembly after the last one ends, and the
scheduler's gap between two units on a worker, and predicts the run on 8, 64 and 512 workers by list
scheduling the units the tool would cut for that many workers. That prediction is a SIMULATION: it assumes
workers as fast as this machine's cores and storage that keeps up, and is labelled so in RESULTS.md.

Usage::

    .venv/bin/python bench/bench_distributed.py --write-results bench/RESULTS.md   # make bench (10240 px)
    .venv/bin/python bench/bench_distributed.py --size 1024                        # a dry run, a few minutes
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
from harness import (
    DEFAULT_OUT,
    add_common_args,
    child_main,
    command_line,
    git_state,
    load_text,
    log,
    machine_info,
    new_parser,
    parallel_probe,
    publish_section,
    run_json_child,
)
from sources import ensure_source, warm_cache

SECTION = "distributed"
TOOLS = ("patchraster", "clusterraster", "segmentraster")
#: Workers the simulation predicts for.
SIMULATED = (8, 64, 512)
#: Patch side of patchraster (bench_patching.py's).
PATCH = 512
#: Smallest source the tiny ClusterNet's centroids are fitted on (its fit reads crops up to 1792 px).
MODEL_SOURCE = 2048
#: Largest difference of float outputs put down to rounding: torch sums a convolution in another order with
#: another thread count (the workers run one thread each), which moves probabilities by about 1e-7.
FLOAT_ROUNDING = 1e-6


# --------------------------------------------------------------------------------------------------
# The measured child: one tool, one mode
# --------------------------------------------------------------------------------------------------

def _run_tool(spec: Dict[str, Any], scheduler: str) -> Dict[str, Any]:
    """Run the tool of ``spec`` into ``spec['dest']``; what the parent needs to rebuild its work units."""
    from satseg_plugin.core.progress import RecordingFeedback

    tool, fb = spec["tool"], RecordingFeedback()
    if tool == "patchraster":
        from satseg_plugin.pipelines.patching.patches import PatchConfig, write_patches

        result = write_patches(spec["source"], spec["dest"], PatchConfig(patch_width=PATCH, patch_height=PATCH),
                               fb, scheduler=scheduler)
        return {"patches": len(result.records), "infos": fb.infos}
    if tool == "clusterraster":
        from satseg_plugin.pipelines.clustering.pixel.cluster_map import ClusterMapConfig, cluster_raster

        result = cluster_raster(spec["source"], spec["model"], os.path.join(spec["dest"], "ids.tif"),
                                ClusterMapConfig(), "cpu", fb, scheduler=scheduler)
        return {"tiles": result.tiles, "infos": fb.infos}
    from satseg_plugin.pipelines.segmentation.segment import InferenceConfig, segment_raster

    result = segment_raster(spec["source"], [spec["model"]], os.path.join(spec["dest"], "p.tif"),
                            os.path.join(spec["dest"], "m.tif"), InferenceConfig(), "cpu", fb, scheduler=scheduler)
    return {"tiles": result.tiles, "infos": fb.infos}


def child_run(spec: Dict[str, Any]) -> Dict[str, Any]:
    """In-process (``workers`` 0) or on a local cluster the child starts; the run's times and, on the cluster,
    every unit's ``[start, stop, transfer seconds, worker]`` from the scheduler's task stream."""
    os.makedirs(spec["dest"], exist_ok=True)
    if not spec["workers"]:
        start = time.perf_counter()
        out = _run_tool(spec, "")
        return {**out, "run_s": time.perf_counter() - start}
    import logging

    from distributed import Client, LocalCluster, get_task_stream

    start = time.perf_counter()
    with LocalCluster(n_workers=spec["workers"], threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster.scheduler_address) as client:
        client.wait_for_workers(spec["workers"])
        cluster_s = time.perf_counter() - start
        with get_task_stream(client) as stream:
            t0 = time.time()
            out = _run_tool(spec, cluster.scheduler_address)
            t1 = time.time()
    units = []
    for task in stream.data:
        if not str(task["key"]).startswith("satseg-"):
            continue
        compute = [s for s in task["startstops"] if s["action"] == "compute"]
        transfer = sum(s["stop"] - s["start"] for s in task["startstops"] if s["action"] != "compute")
        units.append([int(str(task["key"]).rsplit("-", 1)[1]), compute[0]["start"] - t0, compute[-1]["stop"] - t0,
                      transfer, task.get("worker", "")])
    return {**out, "run_s": t1 - t0, "cluster_s": cluster_s, "units": sorted(units)}


CHILDREN: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {"run": child_run}


# --------------------------------------------------------------------------------------------------
# Outputs compared
# --------------------------------------------------------------------------------------------------

def _compare_rasters(a: str, b: str, rows: int = 2048) -> str:
    """``identical`` or how many pixels differ (and by how much), read ``rows`` rows at a time."""
    import rasterio
    from rasterio.windows import Window

    differing, largest = 0, 0.0
    with rasterio.open(a) as x, rasterio.open(b) as y:
        if (x.width, x.height, x.count, x.transform) != (y.width, y.height, y.count, y.transform):
            return "different grids"
        floats = x.dtypes[0].startswith("float")
        for r in range(0, x.height, rows):
            window = Window(0, r, x.width, min(rows, x.height - r))
            p, q = x.read(window=window), y.read(window=window)
            same = (p == q) | (np.isnan(p) & np.isnan(q)) if p.dtype.kind == "f" else p == q
            differing += int((~same).sum())
            if differing:
                largest = max(largest, float(np.nanmax(np.abs(p.astype(np.float64) - q))))
    if not differing:
        return "identical"
    close = " (float rounding)" if floats and largest <= FLOAT_ROUNDING else ""
    return f"{differing} pixels differ{close} (largest difference {largest:.3g})"


def _compare_folders(a: str, b: str) -> str:
    """``identical`` when both folders hold the same files byte for byte (the index's paths made relative)."""
    names = sorted(os.listdir(a))
    if names != sorted(os.listdir(b)):
        return "different file lists"
    differing = 0
    for name in names:
        with open(os.path.join(a, name), "rb") as x, open(os.path.join(b, name), "rb") as y:
            p, q = x.read(), y.read()
        if name.endswith(".json"):  # the index records the patches' paths, in each run's own folder
            p, q = p.replace(os.path.abspath(a).encode(), b""), q.replace(os.path.abspath(b).encode(), b"")
        differing += p != q
    return "identical" if not differing else f"{differing} of {len(names)} files differ"


def identical(verdict: str, rounding: bool = False) -> bool:
    """Whether a :func:`compare` verdict says every output is identical (``rounding``: or differs only by
    float rounding)."""
    return all(part.endswith("identical") or (rounding and "(float rounding)" in part) for part in verdict.split("; "))


def compare(tool: str, here: str, there: str) -> str:
    """Whether the in-process and the cluster run wrote the same outputs (``identical`` per output, or how not)."""
    if tool == "patchraster":
        return _compare_folders(here, there)
    names = ["ids.tif"] if tool == "clusterraster" else ["p.tif", "m.tif"]
    return "; ".join(f"{n}: {_compare_rasters(os.path.join(here, n), os.path.join(there, n))}" for n in names)


# --------------------------------------------------------------------------------------------------
# The units and the scaling model
# --------------------------------------------------------------------------------------------------

def unit_work(tool: str, size: int, infos: Sequence[str], units: int) -> List[int]:
    """The work of each unit the tool cuts for ``units`` (tiles computed, or patches), in submission order."""
    import re

    from rasterio.windows import Window

    from satseg_plugin.core.distributed import tile_units
    from satseg_plugin.core.tiling import hann_grid, ramp_grid

    if tool == "patchraster":
        from satseg_plugin.pipelines.patching.patches import UNIT_PATCHES

        per_row, rows = -(-size // PATCH), -(-size // PATCH)
        group = max(1, min(UNIT_PATCHES, -(-per_row * rows // units)) // per_row)  # whole patch rows
        return [per_row * min(group, rows - r) for r in range(0, rows, group)]
    found = next(re.search(r"tiles of (\d+) px \(overlap (\d+) px\)", m) for m in infos if "tiles of" in m)
    tile, overlap = int(found.group(1)), int(found.group(2))
    if tool == "clusterraster":
        from satseg_plugin.pipelines.clustering.pixel.cluster_map import CLUSTER_BAND_COLUMNS as band_columns

        grid = ramp_grid(Window(0, 0, size, size), size, size, tile, overlap)
    else:
        from satseg_plugin.pipelines.segmentation.segment import BAND_COLUMNS as band_columns

        grid = hann_grid(Window(0, 0, size, size), size, size, tile, overlap)
    return [len(grid.row_part(rows).rows) * len(grid.cols_meeting(band))
            for band, rows in tile_units(grid, band_columns, units)]


def fit(work: Sequence[int], seconds: Sequence[float]) -> Tuple[float, float]:
    """``(a, b)`` of ``seconds ~ a + b x work`` by least squares (``a`` >= 0; one size of unit: ``a`` = 0)."""
    x, y = np.asarray(work, float), np.asarray(seconds, float)
    if len(set(work)) < 2:
        return 0.0, float(y.sum() / x.sum())
    b, a = np.polyfit(x, y, 1)
    if a < 0:
        return 0.0, float(y.sum() / x.sum())
    return float(a), float(b)


def makespan(costs: Sequence[float], workers: int) -> float:
    """When the last of ``costs`` ends, run in order on ``workers`` (each unit to the first free worker, as
    Dask hands out queued tasks)."""
    free = [0.0] * workers
    for cost in costs:
        i = int(np.argmin(free))
        free[i] += cost
    return max(free)


def model(tool: str, size: int, here: Dict[str, Any], there: Dict[str, Any], workers: int) -> Dict[str, Any]:
    """The measured unit costs and overheads of a cluster run, and its predictions (the SIMULATION)."""
    units = there["units"]
    work = unit_work(tool, size, there["infos"], 4 * workers)
    if len(work) != len(units):
        raise RuntimeError(f"{tool}: {len(units)} units ran but the model cut {len(work)}")
    compute = [u[2] - u[1] for u in units]
    a, b = fit(work, compute)
    gaps = []
    for worker in {u[4] for u in units}:
        mine = sorted((u for u in units if u[4] == worker), key=lambda u: u[1])
        gaps += [nxt[1] - prev[2] for prev, nxt in zip(mine, mine[1:])]
    gap = statistics.median(gaps) if gaps else 0.0
    transfer = statistics.mean(u[3] for u in units)
    first, last = min(u[1] for u in units), max(u[2] for u in units)
    client, assembly = first, there["run_s"] - last
    out = {"units": len(units), "unit_s": statistics.median(compute), "a": a, "b": b, "gap": gap,
           "transfer": transfer, "client": client, "assembly": assembly, "predicted": {}}
    for w in (workers,) + SIMULATED:
        costs = [a + b * x + gap + transfer for x in unit_work(tool, size, there["infos"], 4 * w)]
        seconds = client + makespan(costs, w) + assembly
        out["predicted"][w] = {"units": len(costs), "s": seconds, "speedup": here["run_s"] / seconds}
    return out


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------

def measure(tool: str, spec: Dict[str, Any], workers: int, out_dir: str) -> Dict[str, Any]:
    """Both runs of one tool, their outputs compared (and removed), and the model."""
    here_dir, there_dir = (os.path.join(out_dir, f"distributed-{tool}-{m}") for m in ("here", "there"))
    for folder in (here_dir, there_dir):
        shutil.rmtree(folder, ignore_errors=True)
    warm_cache(spec["source"])
    log(f"{tool}: in-process ...")
    here, m_here = run_json_child(__file__, "run", {**spec, "tool": tool, "workers": 0, "dest": here_dir},
                                  threads=spec["threads"])
    log(f"  {here['run_s']:.1f} s (child {m_here.wall_s:.1f} s, peak RSS {m_here.maxrss_mib:.0f} MiB)")
    log(f"{tool}: local cluster of {workers} workers ...")
    there, m_there = run_json_child(__file__, "run", {**spec, "tool": tool, "workers": workers, "dest": there_dir})
    log(f"  {there['run_s']:.1f} s + {there['cluster_s']:.1f} s to start the cluster; {len(there['units'])} units")
    same = compare(tool, here_dir, there_dir)
    log(f"  outputs: {same}")
    for folder in (here_dir, there_dir):
        shutil.rmtree(folder, ignore_errors=True)
    return {"tool": tool, "here": here, "there": there, "same": same, "model": model(tool, spec["size"], here,
                                                                                       there, workers)}


def report(results: Sequence[Dict[str, Any]], args: Any, machine: str, loads: str, code: str) -> str:
    """The RESULTS.md section."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    w = args.workers
    lines = [f"## Beyond one machine: in-process vs a local Dask cluster (SCHEDULER=local:{w})", "",
             f"- Date: {now}; code: {code}", f"- Machine: {machine}", f"- Command: `{command_line(__file__)}`",
             f"- {loads}" + (f". {args.note}" if args.note else ""),
             f"- Raster: {args.size}x{args.size}x3 uint8 synthetic GeoTIFF (bench/sources.py). patchraster: "
             f"{PATCH} px patches; clusterraster: a tiny random-weight ClusterNet; segmentraster: a tiny "
             "random-weight U-Net; DEVICE=cpu, every other setting at its default. Each run is its own child "
             "process; the cluster's start (worker processes spawned) is timed apart and added in the last "
             "column. In-process threads: "
             + (f"{args.inprocess_threads} (OpenMP/BLAS)" if args.inprocess_threads else "the libraries' default")
             + f"; each worker runs one. Float outputs that differ by at most {FLOAT_ROUNDING:g} are marked "
             "*float rounding*: torch sums a convolution in another order with another thread count "
             "(`--inprocess-threads 1` makes them bit-identical).", "",
             f"| Tool | In-process (s) | local:{w} run (s) | + cluster start (s) | Speed-up (run) | Speed-up "
             "(with start) | Units | Outputs |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        here, there = r["here"]["run_s"], r["there"]["run_s"]
        start = r["there"]["cluster_s"]
        lines.append(f"| {r['tool']} | {here:.1f} | {there:.1f} | {start:.1f} | {here / there:.2f}x | "
                     f"{here / (there + start):.2f}x | {len(r['there']['units'])} | {r['same']} |")
    lines += ["", "Measured per unit (the scheduler's task stream of the cluster runs): a unit's compute time is fitted "
              "as `a + b x work` (work = tiles computed, tile rows shared with a neighbouring unit counted for both; "
              "patches for patchraster); *client* = seconds before the first unit starts (connecting, the shared-"
              "storage check, planning); *assembly* = seconds after the last unit ends (copying the parts into the "
              "outputs, overviews, commit); *gap* = median idle seconds between two units on a worker "
              "(scheduling), *transfer* = mean seconds a unit's data moved between processes.", "",
              "| Tool | Median unit (s) | a (s) | b (s per tile/patch) | Client (s) | Assembly (s) | Gap (s) | "
              "Transfer (s) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        m = r["model"]
        lines.append(f"| {r['tool']} | {m['unit_s']:.2f} | {m['a']:.3f} | {m['b']:.4f} | {m['client']:.1f} | "
                     f"{m['assembly']:.1f} | {m['gap']:.3f} | {m['transfer']:.3f} |")
    lines += ["", f"**SIMULATION, not a measurement.** Predicted run time on N workers for the same {args.size} px "
              "raster: client + the units the tool cuts for N workers (4 per worker, as many as the raster allows), "
              "each costing `a + b x work + gap + transfer`, handed in order to the first free worker + assembly. "
              "It assumes workers as fast as one core here and shared storage that keeps up with N readers and "
              f"writers; the first row (N = {w}) checks the model against the measured run.", "",
              "| Tool | N workers | Units | Predicted (s) | Predicted speed-up vs in-process |",
              "|---|---:|---:|---:|---:|"]
    for r in results:
        for n, p in r["model"]["predicted"].items():
            measured = f" (measured {r['there']['run_s']:.1f} s)" if n == w else ""
            lines.append(f"| {r['tool']} | {n} | {p['units']} | {p['s']:.1f}{measured} | {p['speedup']:.2f}x |")
    wanted = [r for r in results if r["tool"] in ("patchraster", "clusterraster")]
    ok = all(r["here"]["run_s"] / r["there"]["run_s"] >= 1.6 for r in wanted)
    same = all(identical(r["same"], rounding=not args.inprocess_threads == 1) for r in results)
    lines += ["", f"**Verdict** (target: local:{w} at least 1.6x the in-process throughput for patchraster and "
              f"clusterraster on this machine, outputs identical): {'PASS' if ok and same else 'FAIL'}: "
              + ", ".join(f"{r['tool']} {r['here']['run_s'] / r['there']['run_s']:.2f}x" for r in results)
              + f"; outputs {'identical' if same else 'NOT identical (see the table)'}"
              + (" (float outputs up to rounding, see above)" if same and not all(identical(r["same"]) for r in
                                                                                    results) else "") + "."]
    return "\n".join(lines)


def main(argv: Sequence[str] = None) -> int:
    parser = add_common_args(new_parser(__doc__), SECTION, note=True, out_dir=DEFAULT_OUT)
    parser.add_argument("--size", type=int, default=10240, help="raster side in pixels (default 10240)")
    parser.add_argument("--workers", type=int, default=2, help="local Dask worker processes (default 2)")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS), help="the tools to measure")
    parser.add_argument("--inprocess-threads", type=int, default=0,
                        help="OpenMP/BLAS threads of the in-process runs (default 0: the libraries' own, as a user "
                             "gets; 1: the workers' setting, under which float outputs are bit-identical too)")
    args = parser.parse_args(argv)
    from clustering_runs import ensure_tiny_clusternet
    from segmentation_runs import ensure_tiny_model

    code = git_state()
    before = os.getloadavg()
    source = ensure_source(args.out_dir, args.size, log)
    models = {"clusterraster": ensure_tiny_clusternet(args.out_dir, ensure_source(args.out_dir, max(
        args.size, MODEL_SOURCE), log)), "segmentraster": ensure_tiny_model(args.out_dir), "patchraster": ""}
    results = [measure(tool, {"source": source, "model": models[tool], "size": args.size,
                              "threads": args.inprocess_threads}, args.workers, args.out_dir) for tool in args.tools]
    text = report(results, args, machine_info(parallel_probe()), load_text(before, os.getloadavg()), code)
    publish_section(text, SECTION, args.write_results)
    with open(os.path.join(args.out_dir, "distributed.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1, default=str)
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        sys.exit(child_main(CHILDREN))
    sys.exit(main())
