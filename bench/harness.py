"""What every bench script shares: paths, common flags, measured child processes, the machine line, RESULTS.md.

Bench scripts import this module (and :mod:`sources` for shared inputs), never each other. Each benchmark owns
one section of ``bench/RESULTS.md`` between HTML comment markers (:func:`write_section`); a child process
runs one measured piece of work and prints its summary as JSON on its last line (:func:`run_json_child`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

__all__ = ["BENCH_DIR", "REPO_ROOT", "DEFAULT_OUT", "THREAD_VARS", "CachePoller", "Measurement", "Run",
           "add_common_args", "child_main", "command_line", "cpu_model", "git_state", "host_info", "load_text", "log",
           "machine_info", "new_parser", "parallel_probe", "publish_section", "ram_gib", "run_json_child",
           "run_measured", "write_section"]

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
#: Cache and scratch folder of every benchmark (git-ignored).
DEFAULT_OUT = os.path.join(BENCH_DIR, "out")
if REPO_ROOT not in sys.path:  # the scripts import satseg_plugin and sample_data from the repository
    sys.path.insert(0, REPO_ROOT)
#: OpenMP/BLAS thread variables set for a child when a thread count is given.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def new_parser(doc: Optional[str]) -> argparse.ArgumentParser:
    """A parser whose description is the first paragraph of the script's docstring."""
    return argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_common_args(parser: argparse.ArgumentParser, section: str, quick: Optional[str] = None,
                    note: bool = False, out_dir: Optional[str] = None) -> argparse.ArgumentParser:
    """The flags the benchmarks share.

    Args:
        parser: the script's parser.
        section: the RESULTS.md section ``--write-results`` replaces.
        quick: help of ``--quick`` (a short run), or None for no such flag.
        note: add ``--note`` (a sentence kept in the section, e.g. about machine load).
        out_dir: default of ``--out-dir`` (cache and scratch folder), or None for no such flag.
    """
    if quick is not None:
        parser.add_argument("--quick", action="store_true", help=quick)
    if note:
        parser.add_argument("--note", default="", help="a sentence about the run (e.g. machine load), kept in "
                                                       "the results section")
    if out_dir is not None:
        parser.add_argument("--out-dir", default=out_dir,
                            help=f"cache and scratch folder (default {os.path.relpath(out_dir, REPO_ROOT)})")
    parser.add_argument("--write-results", metavar="FILE", help=f"update the '{section}' section of this Markdown "
                                                                "file (e.g. bench/RESULTS.md)")
    return parser


def command_line(script: str, argv: Optional[Sequence[str]] = None) -> str:
    """The command that started this run, as a reader would type it again (``nice -n N`` in front when niced).

    Args:
        script: the benchmark script (its ``__file__``).
        argv: its arguments (None: ``sys.argv[1:]``).
    """
    rel = os.path.relpath(sys.executable)
    command = shlex.join([rel if not rel.startswith("..") else sys.executable,
                          os.path.relpath(os.path.abspath(script))] + list(sys.argv[1:] if argv is None else argv))
    niceness = os.nice(0)
    return f"nice -n {niceness} {command}" if niceness else command


def log(message: str) -> None:
    """Print one progress line at once (a benchmark's log)."""
    print(message, flush=True)


# --------------------------------------------------------------------------------------------------
# Measured child processes
# --------------------------------------------------------------------------------------------------

@dataclass
class Measurement:
    """One child process: wall time, peak RSS and what it printed."""

    wall_s: float
    maxrss_mib: float
    returncode: int
    output: str


#: Fallback launcher when /usr/bin/time is missing: a bare interpreter that runs the command and writes
#: that child's own peak RSS (KiB) into the file named by $BENCH_RSS_FILE.
_LAUNCHER = ("import os,sys\n"
             "pid=os.fork()\n"
             "if pid==0:\n os.execvp(sys.argv[1],sys.argv[1:])\n"
             "_,st,ru=os.wait4(pid,0)\n"
             "open(os.environ['BENCH_RSS_FILE'],'w').write(str(ru.ru_maxrss))\n"
             "sys.exit(os.waitstatus_to_exitcode(st))\n")


def run_measured(cmd: Sequence[str], env: Optional[Dict[str, str]] = None) -> Measurement:
    """Run ``cmd`` and measure its wall time and its own peak RSS.

    The peak RSS is taken by ``/usr/bin/time`` (or a minimal launcher), not by ``wait4`` here: on Linux
    a child's ``ru_maxrss`` includes the RSS of the process it was forked from, so a child forked from
    this (numpy/rasterio-loaded) interpreter would report at least our own size.

    Raises:
        RuntimeError: the command failed.
    """
    env = dict(os.environ if env is None else env)
    fd, rss_file = tempfile.mkstemp(prefix="bench-rss-")
    os.close(fd)
    if os.access("/usr/bin/time", os.X_OK):
        wrapped = ["/usr/bin/time", "-f", "%M", "-o", rss_file, *cmd]
    else:
        env["BENCH_RSS_FILE"] = rss_file
        wrapped = ["/usr/bin/python3", "-S", "-c", _LAUNCHER, *cmd]
    try:
        with tempfile.TemporaryFile() as out:
            start = time.perf_counter()
            proc = subprocess.run(wrapped, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
            wall = time.perf_counter() - start
            out.seek(0)
            text = out.read().decode("utf-8", errors="replace")
        with open(rss_file, encoding="utf-8") as handle:
            lines = [ln for ln in handle.read().split() if ln.strip().isdigit()]
    finally:
        os.remove(rss_file)
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"command failed ({proc.returncode}): {shlex.join(cmd)}\n{text[-3000:]}")
    return Measurement(wall, int(lines[-1]) / 1024.0, proc.returncode, text)  # KiB on Linux


def run_json_child(script: str, mode: str, spec: Dict[str, Any],
                   threads: int = 0) -> Tuple[Dict[str, Any], Measurement]:
    """Run ``script --child MODE JSON`` measured (:func:`run_measured`); its summary (last output line) too.

    With ``threads``, the child's OpenMP and BLAS pools get that many threads (:data:`THREAD_VARS`).
    """
    cmd = [sys.executable, os.path.abspath(script), "--child", mode, json.dumps(spec)]
    env = dict(os.environ)
    if threads:
        env.update({var: str(threads) for var in THREAD_VARS})
    m = run_measured(cmd, env)
    return json.loads(m.output.strip().splitlines()[-1]), m


def child_main(children: Mapping[str, Callable[[Dict[str, Any]], Dict[str, Any]]],
               argv: Optional[Sequence[str]] = None) -> int:
    """The entry point of a measured child: ``--child MODE JSON`` runs ``children[MODE](spec)``.

    Prints the summary as JSON on the last output line, where :func:`run_json_child` reads it.
    """
    parser = argparse.ArgumentParser(description="one measured child of a benchmark")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "JSON"), required=True)
    mode, spec = parser.parse_args(argv).child
    print(json.dumps(children[mode](json.loads(spec))))
    return 0


@dataclass
class Run:
    """One measured child: its summary (the JSON it printed), wall time and peak RSS."""

    label: str
    summary: Dict[str, Any]
    wall_s: float
    maxrss_mib: float

    @property
    def engine_s(self) -> float:
        """Seconds of the measured work inside the child (``engine_s``, or ``forward_s`` of a bare forward)."""
        return float(self.summary.get("engine_s", self.summary.get("forward_s", 0.0)))

    @property
    def mpx_s(self) -> float:
        """Output megapixels (the child's ``width`` x ``height``) per second of :attr:`engine_s`."""
        return self.summary["width"] * self.summary["height"] / 1e6 / self.engine_s

    def _peak_mib(self, key: str) -> float:
        peak = self.summary.get(key, -1)
        return peak / 2**20 if peak is not None and peak >= 0 else float("nan")

    @property
    def cache_mib(self) -> float:
        """Peak GDAL block cache in the child (MiB; NaN when not measured, :class:`CachePoller`)."""
        return self._peak_mib("gdal_cache_peak")

    @property
    def heap_mib(self) -> float:
        """Peak heap in use in the child (MiB; NaN when not measured, :func:`heap_in_use`)."""
        return self._peak_mib("heap_peak")


def spread(values: Sequence[float]) -> float:
    """Largest minus smallest of at least two values; NaN for fewer."""
    return max(values) - min(values) if len(values) >= 2 else float("nan")


@functools.lru_cache(maxsize=1)
def _mallinfo2() -> Optional[Callable[[], Any]]:
    """glibc's ``mallinfo2`` through ctypes, or None (not glibc, or glibc < 2.33)."""
    import ctypes

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                          "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        function = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = Mallinfo2
    return function


def heap_in_use() -> int:
    """Bytes malloc has handed out and not got back (glibc's ``mallinfo2``: ``uordblks + hblkhd``, every arena),
    or -1 where that is not available. Unlike RSS it leaves out memory the allocator keeps after it was freed."""
    mallinfo2 = _mallinfo2()
    if mallinfo2 is None:
        return -1
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


class CachePoller:
    """Samples GDAL's block-cache usage and the heap in use (bytes, :func:`heap_in_use`) in a background thread
    and keeps their peaks (``peak``, ``heap_peak``; -1 where not measured).

    The cache is read when ``osgeo.gdal`` loads the same libgdal as rasterio (then the cache is one and the same).
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.peak = -1
        self.heap_peak = -1
        self._gdal = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        try:
            import rasterio
            from osgeo import gdal

            if gdal.__version__ == rasterio.__gdal_version__:
                self._gdal = gdal
        except ImportError:
            pass

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            if self._gdal is not None:
                self.peak = max(self.peak, int(self._gdal.GetCacheUsed()))
            self.heap_peak = max(self.heap_peak, heap_in_use())
            self._stop.wait(interval)

    def __enter__(self) -> "CachePoller":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------------

_PROBE = "import zlib\nd = bytes(range(256)) * 16384\nfor _ in range(40): zlib.compress(d, 9)\n"


def parallel_probe() -> float:
    """How much CPU work this machine really does in parallel.

    Runs one fixed compression workload alone, then one per core at the same time.

    Returns:
        Throughput of ``os.cpu_count()`` concurrent processes relative to one (ideally the core count).
    """
    cmd = [sys.executable, "-S", "-c", _PROBE]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    single = time.perf_counter() - start
    cores = os.cpu_count() or 1
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd) for _ in range(cores)]
    for proc in procs:
        proc.wait()
    together = time.perf_counter() - start
    return cores * single / together


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def ram_gib() -> float:
    """Total RAM in GiB (``/proc/meminfo``; 0 when unknown)."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def load_text(before: Sequence[float], after: Sequence[float], when: str = "") -> str:
    """The load averages before and after a run, and a warning when the machine was busy with other jobs.

    ``"Load average (1/5/15 min) 0.10/0.20/0.30 before and 0.40/0.50/0.60 after<when>"``.
    """
    shared = max(before[0], after[0]) > 0.5
    return (f"Load average (1/5/15 min) {'/'.join(f'{v:.2f}' for v in before)} before and "
            f"{'/'.join(f'{v:.2f}' for v in after)} after{when}"
            + ("; the machine was shared with other jobs, so absolute times carry noise" if shared else ""))


def host_info() -> str:
    """CPU model, core count, RAM, OS and Python in one line: what can be known without GDAL's tools or a probe."""
    return (f"{cpu_model()}, {os.cpu_count()} cores, {ram_gib():.1f} GiB RAM; {platform.platform()}; Python "
            f"{platform.python_version()}")


def git_state(paths: Sequence[str] = ("satseg_plugin/core", "satseg_plugin/pipelines", "satseg_plugin/models")) -> str:
    """The commit, and which of ``paths`` have uncommitted changes (other work goes on in the same tree)."""
    try:
        head = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain", "--", *paths], capture_output=True,
                               text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    files = [line[3:] for line in dirty if line.strip()]
    return f"commit {head}" + (f", with uncommitted changes in {', '.join(files)}" if files else "")


def machine_info(parallel: float) -> str:
    """CPU model, core count, measured parallel throughput, RAM, OS and library versions, in one line."""
    import rasterio

    sys_gdal = subprocess.run(["gdalinfo", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{cpu_model()}, {os.cpu_count()} cores ({os.cpu_count()} concurrent processes measured at "
            f"{parallel:.2f}x the throughput of one), {ram_gib():.1f} GiB RAM; {platform.platform()}; Python "
            f"{platform.python_version()}, rasterio {rasterio.__version__} (GDAL {rasterio.__gdal_version__}) "
            f"for SatSeg; Debian {sys_gdal.split(',')[0]} for the GDAL tools")


# --------------------------------------------------------------------------------------------------
# RESULTS.md
# --------------------------------------------------------------------------------------------------

def write_section(path: str, name: str, body: str) -> None:
    """Replace (or append) section ``name`` of the results file, keeping everything else.

    Args:
        path: the results Markdown file (created if missing).
        name: section name; its markers are ``<!-- name:start -->`` and ``<!-- name:end -->``.
        body: the section's Markdown, without markers.
    """
    start_marker, end_marker = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start_marker}\n{body.strip()}\n{end_marker}"
    text = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    start, end = text.find(start_marker), text.find(end_marker)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(end_marker):]
    else:
        text = (text.rstrip("\n") or "# SatSeg benchmark results") + "\n\n" + section + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def publish_section(text: str, name: str, path: Optional[str]) -> None:
    """Print a finished section and, with ``path`` (``--write-results``), write it there (:func:`write_section`)."""
    log("")
    log(text)
    if path:
        write_section(path, name, text)
        log(f"\nWrote the {name} section of {path}")
