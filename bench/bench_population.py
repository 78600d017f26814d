"""Population tracking: the whole pipeline (flow, communities, tracks) on generated series, with tracking accuracy.

For each series size (256 x 192 and 1796 x 1105, the size of the original study area; 5 frames each, generated
by ``sample_data/population.py`` with known flow, community ids and links), one child process runs
``run_optical_flow`` (Horn–Schunck, 3 pyramid levels), ``run_communities`` (window autoencoder with the
defaults: 200 epochs of 1000 centres, K = 10, EPS = 10, MIN_SAMPLES = 50; POP_MIN = 20 so the sparse rural
background is not clustered) and ``run_tracking``, and reports the wall time of each stage and its peak RSS
(``VmHWM``). The parent then scores the result against the generator's truth: flow end-point error inside
communities, the share of true links found (recall), predicted links that join the wrong true communities
(false links) and event accuracy (``accuracy.link_accuracy``).

    .venv/bin/python bench/bench_population.py --write-results bench/RESULTS.md
    .venv/bin/python bench/bench_population.py --quick        # 256 x 192 only, 50 epochs
"""

from __future__ import annotations

import argparse
import datetime as _dt
import glob
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Dict, List

import numpy as np
from harness import REPO_ROOT, add_common_args, new_parser, write_section  # bench/ is the script folder

POP_MIN = 20.0


def _vmhwm_mib() -> float:
    with open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Run the whole pipeline once and time each stage."""
    from satseg_plugin.pipelines.population.communities import CommunityConfig
    from satseg_plugin.pipelines.population.flow import FlowConfig
    from satseg_plugin.pipelines.population.run import run_communities, run_optical_flow, run_tracking

    out, frames = spec["out"], spec["frames"]
    times = {}
    started = time.perf_counter()
    flow = run_optical_flow(frames, os.path.join(out, "flow"), FlowConfig(pyramid_levels=3, device="cpu"),
                            overwrite=True)
    times["flow_s"] = time.perf_counter() - started
    started = time.perf_counter()
    comm = run_communities(frames, flow.flow_paths, os.path.join(out, "segments"),
                           CommunityConfig(epochs=spec["epochs"], pop_min=POP_MIN, device="cpu"), overwrite=True)
    times["communities_s"] = time.perf_counter() - started
    started = time.perf_counter()
    track = run_tracking(comm.segment_paths, flow.flow_paths, frames)
    times["tracking_s"] = time.perf_counter() - started
    links = [(lk.frame, lk.segment, lk.next_frame, lk.next_segment, lk.event, lk.score) for lk in track.tracking.links]
    return {**times, "peak_rss_mib": _vmhwm_mib(), "flows": flow.flow_paths, "segments": comm.segment_paths,
            "links": links, "communities": [len(c) for c in comm.communities], "tracks": track.tracking.num_tracks,
            "ae_mse": [r["ae_mse"] for r in comm.reports], "ae_mse_std": [r["ae_mse_std"] for r in comm.reports],
            "iterations": [s["iterations"] for s in flow.stats]}


def score(run: Dict[str, Any], data: str) -> Dict[str, float]:
    """Flow EPE and link accuracy against the generator's truth."""
    import rasterio

    from sample_data.population import population_paths, read_true_links
    from satseg_plugin.pipelines.population.accuracy import link_accuracy

    frames = len(run["segments"])
    truth = population_paths(data, frames)
    epe = []
    for t, path in enumerate(run["flows"]):
        with rasterio.open(path) as est, rasterio.open(truth[f"flow_true_t{t}"]) as true, \
                rasterio.open(truth[f"communities_t{t}"]) as ids:
            inside = np.isfinite(true.read(1)) & (ids.read(1) > 0)
            epe.append(float(np.hypot(*(est.read()[:, inside] - true.read()[:, inside])).mean()))
    acc = link_accuracy([tuple(r) for r in run["links"]], read_true_links(truth["links_true"]),
                        [rasterio.open(p).read(1) for p in run["segments"]],
                        [rasterio.open(truth[f"communities_t{t}"]).read(1) for t in range(frames)])
    return {"epe": float(np.mean(epe)), "found": acc.found, "true_links": acc.true_links,
            "false_links": acc.false_links, "predicted": acc.predicted_links, "recall": acc.recall,
            "events": f"{acc.events_correct}/{acc.events_total}", "event_accuracy": acc.event_accuracy}


def main(argv: List[str] = None) -> int:
    parser = new_parser(__doc__)
    add_common_args(parser, "population", quick='a short run', out_dir=os.path.join(REPO_ROOT, 'bench', 'out', 'population'))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    from sample_data.population import generate_population_series

    sizes = [(256, 192)] if args.quick else [(256, 192), (1796, 1105)]
    epochs = 50 if args.quick else 200
    rows = []
    for width, height in sizes:
        data = os.path.join(args.out_dir, f"series_{width}x{height}")
        generate_population_series(data, size=(width, height))
        frames = sorted(glob.glob(os.path.join(data, "pop_t*.tif")))
        spec = {"out": os.path.join(args.out_dir, f"run_{width}x{height}"), "frames": frames, "epochs": epochs}
        print(f"[population] {width} x {height} x {len(frames)} frames ...", flush=True)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                              text=True, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        scores = score(run, data)
        rows.append((width, height, len(frames), wall, run, scores))
        print(f"[population]   {wall:.0f} s, peak {run['peak_rss_mib']:.0f} MiB, {scores}", flush=True)
    lines = ["## Population tracking: whole pipeline, accuracy, time and memory", "",
             f"- Date: {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; {os.cpu_count()} CPU cores "
             f"({platform.processor() or platform.machine()}), CPU only, Python {platform.python_version()}",
             f"- Command: `.venv/bin/python bench/bench_population.py{' --quick' if args.quick else ''} "
             "--write-results bench/RESULTS.md`",
             f"- Settings: flow Horn–Schunck ALPHA 10, 3 pyramid levels; communities with the tool's defaults "
             f"({epochs} autoencoder epochs of 1000 centres, K 10, EPS 10 px, MIN_SAMPLES 50) and POP_MIN "
             f"{POP_MIN:g}; tracking defaults (COMPARE same, MIN_FRACTION 0.2). One child process per size: its "
             "peak RSS (VmHWM) includes torch, faiss and rasterio.", "",
             "| Series (W x H x frames) | Flow (s) | Communities (s) | Tracking (s) | Process wall (s) | Peak RSS "
             "(MiB) | Communities per frame | AE MSE (mean ± std of frames) | Flow EPE in communities (px) | True "
             "links found | False links | Events right |",
             "|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|"]
    for width, height, n, wall, run, s in rows:
        mse = np.asarray(run["ae_mse"])
        lines.append(f"| {width} x {height} x {n} | {run['flow_s']:.1f} | {run['communities_s']:.1f} | "
                     f"{run['tracking_s']:.1f} | {wall:.0f} | {run['peak_rss_mib']:.0f} | "
                     f"{', '.join(map(str, run['communities']))} | {mse.mean():.1e} ± {mse.std():.0e} | "
                     f"{s['epe']:.2f} | {s['found']}/{s['true_links']} ({s['recall']:.2f}) | "
                     f"{s['false_links']} of {s['predicted']} | {s['events']} |")
    lines += ["", "False links: predicted links between segments whose majority true communities are not linked "
              "in the truth (segments of the background count as community 0). The original study reached an "
              "autoencoder MSE of 2e-4 ± 7e-5 (normalised)."]
    section = "\n".join(lines)
    print(section)
    if args.write_results:
        write_section(args.write_results, "population", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
