"""k-means: SatSeg's faiss ``kmeans`` vs scikit-learn ``KMeans`` (Lloyd) and ``MiniBatchKMeans``.

Every method clusters the SAME float32 features (default 1,000,000 x 32) for k = 20 and k = 100, with the
same thread count, once per seed (``--seeds``, default 3: k-means ends in a different local minimum for each
seed, several percent apart, so one seed per method would compare luck). Each method's result is scored by
one common function, :func:`inertia`: every point goes to its nearest returned centroid and the squared
distances are summed in float64, so no method is judged by its own (possibly subsampled or stale) number.

Features: a seeded Gaussian mixture of 100 components in 32-D, standing in for per-pixel embeddings.
Component means ~ N(0, 3^2 I); weights ~ Dirichlet(2) (uneven cluster sizes); each component has its own
random rotation and per-axis standard deviations drawn log-uniformly in [0.2, 1.5] (anisotropic,
partly overlapping clusters). With k = 20 the clustering must merge components, with k = 100 it can
roughly recover them.

Methods: SatSeg's ``kmeans`` as ClusterNet training calls it (its defaults: a training sample of 256
points per centroid, 5 restarts seeded by greedy k-means++ from 32 points per centroid, 20 faiss Lloyd
iterations each on the sample, one exact faiss assignment of every point); the same on every point with one restart (Lloyd on all the data, for
information); scikit-learn's ``KMeans()`` with its defaults (greedy k-means++, up to 300 iterations, tol
1e-4), ``KMeans`` stopped at 20 iterations, and ``MiniBatchKMeans()`` with its defaults.

Target (issue): faiss at least 10x faster than scikit-learn at equal or better objective (equal = within
1 %), on the means over the seeds, checked against every scikit-learn row.

    nice -n 10 .venv/bin/python bench/bench_kmeans.py --write-results bench/RESULTS.md
    .venv/bin/python bench/bench_kmeans.py --quick      # 100,000 points, a minute or so
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from harness import (  # bench/ is the script folder
    add_common_args,
    command_line,
    cpu_model,
    load_text,
    log,
    new_parser,
    publish_section,
)

from satseg_plugin.core.kmeans import kmeans, nearest_centroid

ITERATIONS = 20
COMPONENTS = 100
SPEEDUP_TARGET = 10.0
OBJECTIVE_TOLERANCE = 0.01  # "equal" objective: within 1 %
SATSEG = "SatSeg `kmeans(x, k, seed=s)` (its defaults)"
SATSEG_ALL = "SatSeg `kmeans`, every point, 1 restart (`max_points_per_centroid=None, nredo=1`; info)"
SK_DEFAULT = "scikit-learn `KMeans(k, random_state=s)` (its defaults)"
SK_20 = "scikit-learn `KMeans(k, max_iter=20, tol=0, random_state=s)`"
SK_MINI = "scikit-learn `MiniBatchKMeans(k, random_state=s)` (its defaults)"


@dataclass
class Row:
    """One measured run."""

    method: str
    k: int
    seconds: float  # mean over the seeds
    iterations: str
    objective: float  # mean over the seeds
    objectives: Tuple[float, ...]  # per seed


def make_features(n: int, dim: int, components: int = COMPONENTS, seed: int = 0) -> np.ndarray:
    """The seeded anisotropic Gaussian mixture described in the module docstring, float32 ``(n, dim)``."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=3.0, size=(components, dim))
    counts = rng.multinomial(n, rng.dirichlet(np.full(components, 2.0)))
    x = np.empty((n, dim), np.float32)
    start = 0
    for mean, count in zip(means, counts):
        rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        scales = np.exp(rng.uniform(np.log(0.2), np.log(1.5), dim))
        noise = rng.standard_normal((count, dim), dtype=np.float32)
        x[start:start + count] = (noise * scales.astype(np.float32)) @ rotation.T.astype(np.float32) + mean
        start += count
    return x[rng.permutation(n)]


def inertia(x: np.ndarray, centroids: np.ndarray, batch: int = 65536) -> float:
    """Sum over all points of the squared L2 distance to the nearest centroid, in float64.

    The nearest centroid comes from faiss's exhaustive search; the distances are then recomputed from
    the differences in float64, independently of any method's own bookkeeping.
    """
    labels, _ = nearest_centroid(x, centroids, batch=batch)
    c64 = np.asarray(centroids, np.float64)
    total = 0.0
    for start in range(0, x.shape[0], 8192):
        diff = x[start:start + 8192].astype(np.float64) - c64[labels[start:start + 8192]]
        total += float(np.einsum("ij,ij->", diff, diff))
    return total


def run_all(x: np.ndarray, ks: Sequence[int], threads: int, seeds: int, log: Callable[[str], None]) -> List[Row]:
    """Run every method at every k, once per seed; return the rows in table order."""
    import faiss
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(threads)

    def satseg(k: int, seed: int) -> Tuple[np.ndarray, str]:
        result = kmeans(x, k, seed=seed)
        return result.centroids, str(result.iterations)

    def satseg_all(k: int, seed: int) -> Tuple[np.ndarray, str]:
        result = kmeans(x, k, niter=ITERATIONS, seed=seed, nredo=1, max_points_per_centroid=None)
        return result.centroids, str(result.iterations)

    def sk_default(k: int, seed: int) -> Tuple[np.ndarray, str]:
        model = KMeans(n_clusters=k, random_state=seed).fit(x)
        return model.cluster_centers_, str(model.n_iter_)

    def sk_20(k: int, seed: int) -> Tuple[np.ndarray, str]:
        model = KMeans(n_clusters=k, max_iter=ITERATIONS, tol=0.0, random_state=seed).fit(x)
        return model.cluster_centers_, str(model.n_iter_)

    def minibatch(k: int, seed: int) -> Tuple[np.ndarray, str]:
        model = MiniBatchKMeans(n_clusters=k, random_state=seed).fit(x)
        return model.cluster_centers_, f"{model.n_iter_} epochs"

    methods: Dict[str, Callable[[int, int], Tuple[np.ndarray, str]]] = {
        SATSEG: satseg, SATSEG_ALL: satseg_all, SK_DEFAULT: sk_default, SK_20: sk_20, SK_MINI: minibatch}
    rows = []
    with threadpool_limits(limits=threads):
        for k in ks:
            for name, fit in methods.items():
                times, objectives, iterations = [], [], []
                for seed in range(seeds):
                    started = time.perf_counter()
                    centroids, its = fit(k, seed)
                    times.append(time.perf_counter() - started)
                    objectives.append(inertia(x, np.asarray(centroids, np.float32)))
                    iterations.append(its)
                    log(f"[kmeans] k={k} seed {seed} {name}: {times[-1]:.2f} s, {its} iterations, objective "
                        f"{objectives[-1]:.6g}")
                rows.append(Row(name, k, float(np.mean(times)), "/".join(dict.fromkeys(iterations)),
                                float(np.mean(objectives)), tuple(objectives)))
    return rows


def table(rows: List[Row]) -> Tuple[List[str], List[str], bool]:
    """The Markdown table, the verdict lines and whether every comparison passed."""
    lines = [("| Method | k | Mean wall time (s) | Iterations | Mean objective | Objective per seed / mean | "
              "Time / SatSeg | Mean objective / SatSeg |"),
             "|---|---:|---:|---|---:|---|---:|---:|"]
    verdicts, ok = [], True
    for k in sorted({row.k for row in rows}):
        by_method = {row.method: row for row in rows if row.k == k}
        base = by_method[SATSEG]
        for row in by_method.values():
            spread = ", ".join(f"{o / row.objective:.3f}" for o in row.objectives)
            lines.append(f"| {row.method} | {k} | {row.seconds:.2f} | {row.iterations} | {row.objective:.6e} | "
                         f"{spread} | {row.seconds / base.seconds:.1f}x | {row.objective / base.objective:.4f} |")
            if not row.method.startswith("scikit-learn"):
                continue
            speedup = row.seconds / base.seconds
            equal_or_better = base.objective <= row.objective * (1 + OBJECTIVE_TOLERANCE)
            passed = speedup >= SPEEDUP_TARGET and equal_or_better
            ok &= passed
            relative = base.objective / row.objective
            verdicts.append(f"- k={k}, SatSeg vs {row.method}: speed-up {speedup:.1f}x (scikit-learn time / SatSeg "
                            f"time; target >= {SPEEDUP_TARGET:.0f}x), mean objective {relative:.4f} of "
                            f"scikit-learn's ({'equal or better' if equal_or_better else 'worse by more than 1 %'}): "
                            f"{'PASS' if passed else 'FAIL'}")
    return lines, verdicts, ok


def per_iteration(rows: List[Row]) -> List[str]:
    """One line per k: wall time per Lloyd iteration on every point, faiss against scikit-learn."""
    lines = []
    for k in sorted({row.k for row in rows}):
        pair = {row.method: row for row in rows if row.k == k and row.method in (SATSEG_ALL, SK_20)}
        if len(pair) == 2 and all(row.iterations.isdigit() for row in pair.values()):
            ours, theirs = pair[SATSEG_ALL], pair[SK_20]
            lines.append(f"Per Lloyd iteration on every point at k={k} (greedy k-means++ seeding and the final "
                         f"assignment included): faiss {1000 * ours.seconds / int(ours.iterations):.0f} ms, "
                         f"scikit-learn {1000 * theirs.seconds / int(theirs.iterations):.0f} ms.")
    return lines


def machine(threads: int, load_before: Tuple[float, ...], load_after: Tuple[float, ...]) -> str:
    import faiss
    import sklearn
    import threadpoolctl

    model = cpu_model()
    libraries = ", ".join(sorted({f"{info['internal_api']} ({info.get('user_api')})"
                                  for info in threadpoolctl.threadpool_info()}))
    return (f"{model}, {os.cpu_count()} cores; {platform.platform()}; Python {platform.python_version()}, "
            f"numpy {np.__version__}, faiss {faiss.__version__} (CPU, {faiss.get_num_gpus()} GPU), "
            f"scikit-learn {sklearn.__version__}; {threads} thread(s) for every method "
            f"(`faiss.omp_set_num_threads({threads})` and `threadpoolctl.threadpool_limits({threads})` around all "
            f"runs; thread pools seen: {libraries}). " + load_text(load_before, load_after, " the runs"))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = new_parser(__doc__)
    parser.add_argument("--n", type=int, default=1_000_000, help="number of points (default 1,000,000)")
    parser.add_argument("--dim", type=int, default=32, help="feature dimension (default 32)")
    parser.add_argument("--ks", type=int, nargs="+", default=[20, 100], help="cluster counts (default 20 100)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every method")
    parser.add_argument("--seed", type=int, default=0, help="seed of the features")
    parser.add_argument("--seeds", type=int, default=3, help="runs per method, seeds 0..N-1; means are reported")
    add_common_args(parser, "kmeans", quick='100,000 points (overrides --n)', note=True)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; return 0 on PASS, 1 on FAIL."""
    args = parse_args(argv)
    n = 100_000 if args.quick else args.n

    command = command_line(__file__)
    started = time.time()
    x = make_features(n, args.dim, seed=args.seed)
    log(f"[kmeans] features {x.shape} float32, {x.nbytes / 2**20:.0f} MiB, made in {time.time() - started:.1f} s")
    load_before = os.getloadavg()
    rows = run_all(x, args.ks, args.threads, args.seeds, log)
    load_after = os.getloadavg()
    lines, verdicts, ok = table(rows)
    minutes = (time.time() - started) / 60
    body = [
        "## k-means: SatSeg's faiss `kmeans` vs scikit-learn",
        "",
        f"- Date: {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Machine: {machine(args.threads, load_before, load_after)}",
        f"- Command: `{command}` ({minutes:.0f} min)" if minutes >= 1 else f"- Command: `{command}`",
        *([f"- Note: {args.note}"] if args.note else []),
        (f"- Features: {n:,} x {args.dim} float32 (the same array for every method), a seeded Gaussian mixture "
         f"of {COMPONENTS} components (means ~ N(0, 3^2 I), Dirichlet(2) weights, per-component random rotation "
         f"and log-uniform axis standard deviations in [0.2, 1.5]), feature seed {args.seed}."),
        ("- Settings: SatSeg `kmeans` with its defaults, as ClusterNet training, DeepCluster and the population "
         "communities call it: a seeded training sample of 256 points per centroid (faiss's default), 5 restarts "
         "each seeded by greedy k-means++ (`sklearn.cluster.kmeans_plusplus`) from 32 random points per centroid "
         "of the sample and run for 20 faiss Lloyd iterations on the sample, the lowest sample objective kept, then one exact faiss nearest-centroid pass "
         "over every point. The info row runs faiss Lloyd on every point (20 iterations, one greedy k-means++ "
         "seeding). scikit-learn `KMeans()` defaults: greedy k-means++ (2 + log k candidates per step), Lloyd, "
         "one initialisation, up to 300 iterations with tol 1e-4; the 20-iteration row sets `max_iter=20, tol=0`. "
         "`MiniBatchKMeans()` defaults: batches of 1024, greedy k-means++ on a 3072-point sample, up to 100 "
         "epochs with its early stop."),
        (f"- Wall time: the fit call (sampling, seeding, iterations and each method's final assignment of every "
         f"point), the mean over seeds 0..{args.seeds - 1}. Objective: one common function for all methods "
         "(nearest returned centroid for every point, squared L2 summed in float64), the mean over the seeds; "
         "lower is better. Ratios are relative to the SatSeg row of the same k."),
        "",
        *lines,
        "",
        *per_iteration(rows),
        "",
        (f"Target: faiss at least {SPEEDUP_TARGET:.0f}x faster than scikit-learn at equal (within "
         f"{OBJECTIVE_TOLERANCE:.0%}) or better objective, checked against every scikit-learn row (means over the "
         "seeds):"),
        "",
        *verdicts,
        "",
        (f"**Verdict**: {'PASS' if ok else 'FAIL'}"
         + ("" if ok else f" ({sum('FAIL' in v for v in verdicts)} of {len(verdicts)} comparisons failed)")),
    ]
    publish_section("\n".join(body), "kmeans", args.write_results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
