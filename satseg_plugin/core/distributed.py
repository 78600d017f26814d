"""Running a tool's work units on a Dask cluster: the SCHEDULER value, the client, shared storage, the futures.

A tool cuts its run into work units (a column band of the shared sweep restricted to a range of rows
(:func:`tile_units`), a group of patch rows, a frame pair, a frame), about :data:`UNITS_PER_WORKER` per
worker where the input allows: each a plain top-level function called with a plain, picklable description
of its unit (paths and config dataclasses: models travel as their ``.satseg`` paths, never as pickled
modules) and a :class:`Feedback`.
In-process the caller runs the units itself; on a cluster :func:`run_units` runs them as Dask futures with
Dask's own ``retries=``, while the caller's thread polls cancel, aggregates progress over finished units and,
on cancel or failure, stops the units still running before the caller removes their staged parts.

SCHEDULER takes three forms (:func:`parse_scheduler`):

* ``""``: in-process, as without a cluster;
* ``local:N``: a :class:`distributed.LocalCluster` of N single-threaded worker processes on this machine,
  started and closed by the run;
* ``tcp://host:port`` or ``tls://host:port``: an existing scheduler (dask-jobqueue, dask-kubernetes, by
  hand), whose workers see the inputs and output folders at the same paths (:func:`check_shared_storage`).

``dask`` and ``distributed`` are imported only here and only when a scheduler is asked for; without them
the tools still run in-process.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, TypeVar

from .deps import python_interpreter, require
from .errors import InputError, OutputError, SatSegError
from .progress import Feedback, SubFeedback, check_canceled

__all__ = ["SCHEDULER_PARAMETER", "CONNECT_TIMEOUT", "DEFAULT_RETRIES", "UNITS_PER_WORKER", "Scheduler",
           "ClusterError", "UnitFeedback", "parse_scheduler", "cluster_client", "check_shared_storage", "run_units",
           "parts_folder", "checked_client", "run_tile_units", "assemble_part", "worker_slots", "unit_count", "tile_units",
           "describe_tile_units"]

#: The Processing parameter every message about the scheduler names.
SCHEDULER_PARAMETER = "SCHEDULER"
#: Seconds to wait for an existing scheduler to answer before the address is refused.
CONNECT_TIMEOUT = 5.0
#: Times Dask runs a failed unit again (on any worker) before the run fails.
DEFAULT_RETRIES = 2
#: Seconds between two looks at cancel and at the futures while units run.
POLL_SECONDS = 0.2
#: Seconds a unit's cancel flag is cached on the worker (each look asks the scheduler).
CANCEL_CHECK_SECONDS = 0.5
#: Seconds the units still running get to notice a cancel before their futures are dropped.
STOP_GRACE_SECONDS = 30.0
#: Work units a run aims at per worker thread: with one unit each, the slowest (a narrow last column band
#: finishes early, a wide one late) sets the run's time; with a few each, Dask evens the load out.
UNITS_PER_WORKER = 4
#: Rows a tiled unit's output rows start on (None: the outputs' block height, ``tiling.ROW_BLOCK``, so that
#: parts fill whole output blocks); tests lower it to cut small rasters into several units.
UNIT_ROW_STEP: Optional[int] = None

T = TypeVar("T")
U = TypeVar("U")

_FORMS = "empty (in-process), local:N (N worker processes on this machine) or tcp://host:port (a running " \
         "Dask scheduler)"


class ClusterError(SatSegError):
    """A work unit failed on the cluster after Dask's retries, or a worker was lost; nothing was written."""


@dataclass(frozen=True)
class Scheduler:
    """Where a run's work units run.

    Attributes:
        address: the scheduler's address (``tcp://host:port``, ``tls://host:port``); empty for local or
            in-process runs.
        workers: worker processes of a local cluster (``local:N``); 0 otherwise.
    """

    address: str = ""
    workers: int = 0

    @property
    def in_process(self) -> bool:
        """Whether the run stays in this process (no cluster)."""
        return not self.address and not self.workers

    def describe(self) -> str:
        """How the run is spread, for the log."""
        if self.in_process:
            return "in-process"
        if self.workers:
            return f"a local Dask cluster of {self.workers} worker processes"
        return f"the Dask scheduler at {self.address}"


def parse_scheduler(text: Optional[str]) -> Scheduler:
    """The SCHEDULER value as a :class:`Scheduler`, or an :class:`InputError` naming SCHEDULER.

    Args:
        text: ``""``/None, ``local:N`` (N >= 1) or ``tcp://host:port`` / ``tls://host:port``.
    """
    value = (text or "").strip()
    if not value:
        return Scheduler()
    if value.lower().startswith("local:"):
        count = value.split(":", 1)[1].strip()
        if not count.isdigit() or int(count) < 1:
            raise InputError(f"'{value}': give the number of local worker processes, e.g. local:2.",
                             SCHEDULER_PARAMETER)
        return Scheduler(workers=int(count))
    scheme, sep, rest = value.partition("://")
    if sep and scheme.lower() in ("tcp", "tls") and rest and ":" in rest and rest.rsplit(":", 1)[1].isdigit():
        return Scheduler(address=value)
    raise InputError(f"'{value}' is not a scheduler: leave it {_FORMS}.", SCHEDULER_PARAMETER)


def _distributed() -> Any:
    """The ``distributed`` package (with ``dask``), or a :class:`MissingDependencyError` naming them."""
    require("dask")
    return require("distributed")


@contextlib.contextmanager
def cluster_client(scheduler: Scheduler, feedback: Feedback) -> Iterator[Any]:
    """A :class:`distributed.Client` on ``scheduler``, closed (with the local cluster it started) on exit.

    Raises:
        InputError: naming SCHEDULER, when the address does not answer within :data:`CONNECT_TIMEOUT` s.
        MissingDependencyError: when dask or distributed cannot be imported.
    """
    if scheduler.in_process:
        raise ValueError("an in-process run has no cluster client")
    distributed = _distributed()
    with contextlib.ExitStack() as stack:
        if scheduler.workers:
            # Workers are spawned with sys.executable, which inside QGIS may be the QGIS binary or another
            # Python on PATH (qgis_process: a pyenv shim): spawn this interpreter instead.
            if python_interpreter() != sys.executable:
                multiprocessing.set_executable(python_interpreter())
            try:
                target: Any = stack.enter_context(distributed.LocalCluster(
                    n_workers=scheduler.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                    silence_logs=logging.ERROR))
            except RuntimeError as exc:  # "Nanny failed to start": the worker processes' own error is logged
                raise ClusterError(f"could not start {scheduler.workers} local Dask worker processes with "
                                   f"{python_interpreter()} ({exc}); see the log above. Run in-process (empty "
                                   "SCHEDULER) meanwhile.") from exc
        else:
            target = scheduler.address
        try:
            client = distributed.Client(target, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise InputError(f"no Dask scheduler answered at '{scheduler.address}' within {CONNECT_TIMEOUT:g} s "
                             f"({exc}). Start the scheduler (dask scheduler, dask-jobqueue, dask-kubernetes) and give "
                             f"its address, or leave it {_FORMS}.", SCHEDULER_PARAMETER) from exc
        stack.enter_context(client)
        if not client.scheduler_info().get("workers"):
            try:
                client.wait_for_workers(1, timeout=CONNECT_TIMEOUT * 6)
            except TimeoutError as exc:
                raise InputError(f"the Dask scheduler at '{scheduler.address}' has no workers (waited "
                                 f"{CONNECT_TIMEOUT * 6:g} s). Start workers for it (dask worker "
                                 f"{scheduler.address}, or scale the cluster up), then run again.",
                                 SCHEDULER_PARAMETER) from exc
        feedback.info(f"Running on {scheduler.describe()} "
                      f"({len(client.scheduler_info().get('workers', {}))} workers).")
        yield client


def _probe_storage(paths: Sequence[str], folder: str) -> Optional[Tuple[str, str]]:
    """On a worker: ``(path, problem)`` of the first input it cannot read or of ``folder`` if it cannot write
    there; None when it can do both."""
    for path in paths:
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as exc:
            return path, exc.strerror or str(exc)
    probe = os.path.join(folder, f".probe-{uuid.uuid4().hex}")
    try:
        with open(probe, "wb") as handle:
            handle.write(b"satseg")
        os.remove(probe)
    except OSError as exc:
        return folder, exc.strerror or str(exc)
    return None


def check_shared_storage(client: Any, inputs: Sequence[Tuple[str, str]], folder: str,
                         folder_parameter: str) -> None:
    """Check up front that every worker reads each input and writes into ``folder`` (shared storage).

    Args:
        client: the cluster's client.
        inputs: ``(path, parameter)`` of every file the units read (the raster, the model files).
        folder: where the units write their parts.
        folder_parameter: the output parameter whose folder ``folder`` is.

    Raises:
        ClusterError: when the workers cannot import SatSeg.
        InputError: naming the input's parameter, when a worker cannot read an input.
        OutputError: naming ``folder_parameter``, when a worker cannot write into ``folder``.
    """
    paths = [os.path.abspath(p) for p, _ in inputs]
    try:
        answers = client.run(_probe_storage, paths, folder)
    except ImportError as exc:
        raise ClusterError(f"the Dask workers cannot import SatSeg ({exc}). Install the same SatSeg version on the "
                           "workers (put the plugin folder on their PYTHONPATH) and restart them.") from exc
    parameters = dict(zip(paths, (p for _, p in inputs)))
    for worker, answer in sorted(answers.items()):
        if answer is None:
            continue
        path, problem = answer
        advice = ("The workers must see the same files at the same paths as QGIS (a shared file system); "
                  "mount it on every worker or choose files on shared storage.")
        if path in parameters:
            raise InputError(f"Dask worker {worker} cannot read '{path}' ({problem}). {advice}", parameters[path])
        raise OutputError(f"Dask worker {worker} cannot write into '{path}' ({problem}). {advice}", folder_parameter)


@contextlib.contextmanager
def parts_folder(transaction: Any, final: str, parameter: str) -> Iterator[str]:
    """A temporary folder beside ``final`` for the units' parts, removed when the block ends either way.

    It is one of ``transaction``'s temporaries, so a run that dies also leaves it to be cleaned up
    (:func:`~.staging.remove_stale_temporaries`).
    """
    folder = transaction.temporary_folder(final, parameter)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def checked_client(scheduler: Scheduler, feedback: Feedback, inputs: Sequence[Tuple[str, str]], folder: str,
                   parameter: str) -> Iterator[Any]:
    """A client (:func:`cluster_client`) whose every worker was checked to read ``inputs`` and write into
    ``folder`` (:func:`check_shared_storage`); it closes when the block ends."""
    with cluster_client(scheduler, feedback) as client:
        check_shared_storage(client, inputs, folder, parameter)
        yield client


def run_tile_units(scheduler: Scheduler, feedback: Feedback, inputs: Sequence[Tuple[str, str]], final: str,
                   parameter: str, transaction: Any, grid: Any, band_columns: int,
                   make_unit: Callable[[Tuple[int, int], Tuple[int, int], str], U],
                   function: Callable[[U, Feedback], T], assemble: Callable[[Sequence[U]], None]) -> List[T]:
    """Run a tiled sweep's work units (column bands x row ranges, :func:`tile_units`) on a cluster.

    The units write parts into a folder beside the output ``final`` (:func:`parts_folder`), which every worker
    must read ``inputs`` for and write into; ``make_unit(band, rows, folder)`` builds a unit, ``function`` runs
    it on a worker (progress 0..90 %), and ``assemble(units)`` copies the parts into the output before the folder
    goes. Returns ``function``'s results, in the units' order.
    """
    with parts_folder(transaction, final, parameter) as folder, \
            checked_client(scheduler, feedback, inputs, folder, parameter) as client:
        cells = tile_units(grid, band_columns, unit_count(client))
        units = [make_unit(band, rows, folder) for band, rows in cells]
        feedback.info(describe_tile_units(cells, band_columns))
        results = run_units(client, function, units, SubFeedback(feedback, 0, 90), what="work unit")
        assemble(units)
    return results


def assemble_part(part_path: str, dst: Any, col_off: int, row_off: int = 0, rows: int = 256) -> None:
    """Copy a unit's part raster into the open output ``dst`` at ``(col_off, row_off)``, ``rows`` rows at a time.

    Parts lie on the output's grid (same CRS, pixel size, bands and data type), so this is a plain window
    copy: with the parts' columns starting on the output's block edges, whole output blocks are written.
    """
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(part_path) as part:
        for r in range(0, part.height, rows):
            window = Window(0, r, part.width, min(rows, part.height - r))
            dst.write(part.read(window=window), window=Window(col_off, row_off + r, part.width, window.height))


def worker_slots(client: Any) -> int:
    """Units the cluster runs at once: its workers' threads (at least 1)."""
    return max(1, sum(client.nthreads().values()))


def unit_count(client: Any) -> int:
    """How many units a run aims at on ``client``'s cluster: :data:`UNITS_PER_WORKER` per worker thread."""
    return UNITS_PER_WORKER * worker_slots(client)


def tile_units(grid: Any, band_columns: int, units: int) -> List[Tuple[Tuple[int, int], Tuple[int, int]]]:
    """A tiled sweep's work units: ``(column band, output rows)``, about ``units`` of them (at least one per band).

    The column bands are the in-process sweep's (``grid.column_bands(band_columns)``), so every tile row is
    batched as in-process and the outputs are bit for bit the same; each band is cut into the same row
    ranges (:meth:`~.tiling.grid.TileGrid.row_ranges`: multiples of :data:`UNIT_ROW_STEP` rows, at least a
    tile tall, since the tile rows crossing a range's borders are computed by both units).

    Args:
        grid: the run's :class:`~.tiling.grid.TileGrid`.
        band_columns: widest column band.
        units: how many units to aim at (:func:`unit_count`).
    """
    from .tiling.writing import ROW_BLOCK

    bands = grid.column_bands(band_columns)
    parts = -(-int(units) // len(bands))
    rows = grid.row_ranges(parts, UNIT_ROW_STEP or ROW_BLOCK, grid.tile)
    # the narrow band is the last one: its short units fill the workers' gaps at the end of the run
    return [(band, span) for band in bands for span in rows]


def describe_tile_units(units: Sequence[Tuple[Tuple[int, int], Tuple[int, int]]], band_columns: int) -> str:
    """What :func:`tile_units` made, for the log."""
    bands, rows = len({band for band, _ in units}), len({span for _, span in units})
    return (f"{len(units)} Dask work units: {bands} column bands of at most {band_columns} px, each in {rows} "
            f"{'range' if rows == 1 else 'ranges'} of rows.")


class UnitFeedback:
    """The feedback a unit gets on a worker: canceled once the run's Dask event is set; progress and log
    stay on the worker (the client reports progress per finished unit)."""

    def __init__(self, event_name: Optional[str]) -> None:
        self.event_name = event_name
        self._event: Any = None
        self._checked = float("-inf")
        self._canceled = False

    def set_progress(self, percent: float) -> None:
        pass

    def is_canceled(self) -> bool:
        if self.event_name is None or self._canceled:
            return self._canceled
        now = time.monotonic()
        if now - self._checked >= CANCEL_CHECK_SECONDS:
            self._checked = now
            if self._event is None:
                self._event = _distributed().Event(self.event_name)
            self._canceled = bool(self._event.is_set())
        return self._canceled

    def info(self, message: str) -> None:
        logging.getLogger("satseg").info(message)

    def warning(self, message: str) -> None:
        logging.getLogger("satseg").warning(message)


def _run_unit(function: Callable[[U, Feedback], T], unit: U, event_name: str) -> T:
    """On a worker: run one unit with a feedback that sees the run's cancel event (checked first)."""
    feedback = UnitFeedback(event_name)
    check_canceled(feedback)
    return function(unit, feedback)


def _failure(future: Any, name: str, retries: int) -> SatSegError:
    """The error a failed future (the unit ``name``) ends the run with."""
    exc = future.exception()
    if isinstance(exc, SatSegError):
        return exc
    if type(exc).__name__ == "KilledWorker":
        return ClusterError(f"the Dask workers running {name} died repeatedly (out of memory, or "
                            "killed); nothing was written. Give the workers more memory, lower TILE_SIZE or "
                            "BATCH_SIZE, or run in-process (empty SCHEDULER).")
    return ClusterError(f"{name} failed on the Dask cluster after {retries} retries "
                        f"({type(exc).__name__}: {exc}); nothing was written. See the worker's log.")


def run_units(client: Any, function: Callable[[U, Feedback], T], units: Sequence[U], feedback: Feedback,
              retries: int = DEFAULT_RETRIES, span: Tuple[float, float] = (0.0, 100.0),
              what: str = "work unit") -> List[T]:
    """Run ``function(unit, feedback)`` for every unit as Dask futures; their results in the units' order.

    The caller's thread polls cancel every :data:`POLL_SECONDS` and sets progress over ``span`` as units
    finish. On cancel or on a unit that failed after ``retries`` retries, the run's cancel event is set,
    the units still running get up to :data:`STOP_GRACE_SECONDS` to stop (they poll it per tile row and
    batch) and the remaining futures are canceled, so the caller can remove the units' parts safely.

    Args:
        client: the cluster's client.
        function: a top-level function (pickled by reference: workers import it).
        units: plain, picklable unit descriptions (paths and config dataclasses).
        feedback: progress and cancel of the run.
        retries: Dask's retries of a failed unit.
        span: the percent range the units cover.
        what: what a unit is, for error messages.

    Raises:
        CanceledError: when ``feedback`` is canceled.
        ClusterError: when a unit failed after its retries or its workers died (a unit's own
            :class:`~.errors.SatSegError` is raised as it is).
    """
    distributed = _distributed()
    run_id = uuid.uuid4().hex[:8]
    event_name = f"satseg-cancel-{run_id}"
    event = distributed.Event(event_name, client=client)
    futures = [client.submit(_run_unit, function, unit, event_name, key=f"satseg-{run_id}-{i}", retries=retries,
                             pure=False) for i, unit in enumerate(units)]
    lo, hi = span
    finished = 0
    try:
        while finished < len(futures):
            check_canceled(feedback)
            time.sleep(POLL_SECONDS)  # futures' states are kept current by the client's own thread
            for i, future in enumerate(futures):
                if future.status == "error":
                    raise _failure(future, f"{what} {i + 1} of {len(futures)}", retries)
                if future.status in ("cancelled", "lost"):  # the scheduler went away, or canceled it
                    raise ClusterError(f"the Dask scheduler dropped {what} {i + 1} of {len(futures)} ("
                                       f"{future.status}): was the cluster stopped? Nothing was written.")
            done = sum(future.status == "finished" for future in futures)
            if done != finished:
                finished = done
                feedback.set_progress(lo + (hi - lo) * finished / max(len(futures), 1))
        return [future.result() for future in futures]
    except BaseException:
        event.set()
        stop = time.monotonic() + STOP_GRACE_SECONDS
        while any(f.status == "pending" for f in futures) and time.monotonic() < stop:
            time.sleep(POLL_SECONDS)
        client.cancel(futures, force=True)
        raise
    finally:
        with contextlib.suppress(Exception):
            event.clear()
