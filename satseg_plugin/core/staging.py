"""Outputs are transactions: a run replaces all of its outputs or none of them.

Every output is written under a per-run temporary name next to its final path
(``.satseg-tmp-<pid>-<run id>-<n>-<name>``, keeping the driver's extension so GDAL/OGR recognise it) and
moved into place only when the whole run succeeded. :class:`Transaction` collects a run's outputs;
:meth:`Transaction.commit` first moves the existing outputs aside, then moves every staged output into place,
undoes both on any failure, and only then deletes the old outputs. A failed or canceled run, or a failed
commit, leaves every previous output byte-identical and removes its temporary files.

:class:`StagedFile` and :class:`StagedDirectory` stage one file or folder. Inside :func:`use_transaction`
(Processing opens one per run) they join the run's transaction and their ``commit()`` only hands the output
over; outside one they commit on their own, as a transaction of one output. So engine functions written with
them need no change to take part in a run's transaction.

Temporary names carry the writing process's id: files left by a process that was killed are removed by the
next run that writes into the same folder (a moved-aside old output whose replacement never arrived is moved
back), and the current process's are removed at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import functools
import inspect
import json
import os
import re
import shutil
import threading
import uuid
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from .errors import OutputError
from .geopackage import write_layers

__all__ = ["MARKER_NAME", "TEMP_PREFIX", "VECTOR_COMPANIONS", "StagedDirectory", "StagedFile", "Transaction", "current_transaction", "outputs_of",
           "readable_path", "remove_stale_temporaries", "stages_outputs", "use_transaction", "write_csv_rows"]

#: File SatSeg writes into every output folder; only such folders may be replaced with OVERWRITE.
MARKER_NAME = "satseg_manifest.json"
#: Start of every temporary name SatSeg writes.
TEMP_PREFIX = ".satseg-tmp-"
#: Files a vector driver writes beside the main file, by the main file's extension (moved with it).
VECTOR_COMPANIONS: Dict[str, Tuple[str, ...]] = {".shp": (".shx", ".dbf", ".prj", ".cpg", ".qpj", ".qix")}
#: Files GDAL writes beside a raster, named by appending to its full name; moved (or cleared) with it.
SIDECARS = (".aux.xml", ".ovr")
_TEMP_NAME = re.compile(r"^\.satseg-tmp-(\d+)-([0-9a-f]+)-(old-)?(.+)$")
_CURRENT: "contextvars.ContextVar[Optional[Transaction]]" = contextvars.ContextVar("satseg_transaction",
                                                                                    default=None)
_OPEN: Set["Transaction"] = set()
_OPEN_LOCK = threading.Lock()


def _ensure_parent(path: str, parameter: Optional[str]) -> List[str]:
    """Create the missing parents of ``path``; return those created (deepest last)."""
    parent = os.path.dirname(os.path.abspath(path))
    created: List[str] = []
    probe = parent
    while probe and not os.path.exists(probe):
        created.insert(0, probe)
        probe = os.path.dirname(probe)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder '{parent}' ({exc.strerror}). Choose a folder you can write to.",
                          parameter) from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"folder '{parent}' is not writable. Choose a folder you can write to.", parameter)
    return created


def _remove_created(created: List[str]) -> None:
    for folder in reversed(created):
        try:
            os.rmdir(folder)
        except OSError:
            break


def _remove(path: str) -> None:
    """Delete a file or folder if it is there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        with contextlib.suppress(OSError):
            os.remove(path)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str) -> List[str]:
    """Clean up after SatSeg processes that died in ``folder``: delete their temporary outputs, and move an
    old output they had moved aside back into place when its replacement never arrived.

    Returns:
        The names removed or restored.
    """
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    done = []
    for name in names:
        match = _TEMP_NAME.match(name)
        if not match or _process_alive(int(match.group(1))):
            continue
        path = os.path.join(folder, name)
        final = os.path.join(folder, match.group(4))
        if match.group(3) and not os.path.lexists(final):
            with contextlib.suppress(OSError):
                os.replace(path, final)
        else:
            _remove(path)
        done.append(name)
    return done


def _file_pairs(tmp: str, final: str, companions: Sequence[str]) -> List[Tuple[str, str]]:
    """``(temporary, final)`` paths of a file, its companions (``.shx`` ...) and GDAL's sidecars."""
    tmp_root, final_root = os.path.splitext(tmp)[0], os.path.splitext(final)[0]
    return ([(tmp, final)] + [(tmp_root + ext, final_root + ext) for ext in companions]
            + [(tmp + ext, final + ext) for ext in SIDECARS])


class _Entry:
    """One staged output: its (temporary, final) pairs, whether it is a folder, and a check run at commit."""

    def __init__(self, final: str, pairs: List[Tuple[str, str]], is_dir: bool,
                 check: Optional[Callable[[], None]]) -> None:
        self.final, self.pairs, self.is_dir, self.check = final, pairs, is_dir, check


class Transaction:
    """The outputs of one run, moved into place together by :meth:`commit` or all discarded.

    Use as a context manager: leaving the block without :meth:`commit` (an error, a cancel) discards every
    staged output and temporary file and keeps the previous outputs as they were.

    Example::

        with Transaction() as run, use_transaction(run):
            segment_raster(...)            # stages the probability and mask rasters
            polygonize_mask(readable_path(mask_path), ...)   # reads the staged mask
            run.commit()
    """

    def __init__(self) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self._entries: Dict[str, _Entry] = {}
        self._layers: Dict[Tuple[str, str], str] = {}
        self._temporaries: List[str] = []
        self._created: List[str] = []
        self._swept: Set[str] = set()
        self._count = 0

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.rollback()

    def _temporary_name(self, final: str, label: str) -> str:
        folder, base = os.path.split(final)
        return os.path.join(folder, f"{TEMP_PREFIX}{os.getpid()}-{self.run_id}-{label}{base}")

    def _prepare(self, final: str, parameter: Optional[str]) -> str:
        for folder in _ensure_parent(final, parameter):
            if folder not in self._created:
                self._created.append(folder)
        folder = os.path.dirname(final)
        if folder not in self._swept:
            self._swept.add(folder)
            remove_stale_temporaries(folder)
        with _OPEN_LOCK:
            _OPEN.add(self)
        self._count += 1
        return self._temporary_name(final, f"{self._count}-")

    def temporary_file(self, final: str, suffix: str = "", parameter: Optional[str] = None) -> str:
        """A new temporary file name next to ``final`` (its folder created if needed), ending in ``suffix``
        (default: ``final``'s extension). Nothing is staged until :meth:`stage`."""
        final = os.path.abspath(final)
        stem = self._prepare(final, parameter)
        tmp = os.path.splitext(stem)[0] + (suffix or os.path.splitext(final)[1])
        self._temporaries.append(tmp)
        return tmp

    def temporary_folder(self, final: str, parameter: Optional[str] = None) -> str:
        """A new empty temporary folder next to ``final`` (see :meth:`temporary_file`)."""
        final = os.path.abspath(final)
        tmp = self._prepare(final, parameter)
        try:
            os.mkdir(tmp)
        except OSError as exc:
            raise OutputError(f"cannot write in '{os.path.dirname(final)}' ({exc.strerror}). Choose a folder you "
                              "can write to.", parameter) from exc
        self._temporaries.append(tmp)
        return tmp

    def stage(self, final: str, tmp: str, companions: Sequence[str] = (), is_dir: bool = False,
              check: Optional[Callable[[], None]] = None) -> None:
        """Record that ``tmp`` (complete and closed) becomes ``final`` on commit; staging the same final path
        again (a checkpoint saved at every better epoch) replaces the earlier version."""
        final = os.path.abspath(final)
        if not os.path.exists(tmp):
            raise RuntimeError(f"nothing staged at {tmp}")
        earlier = self._entries.pop(final, None)
        if earlier is not None:
            for old_tmp, _final in earlier.pairs:
                if old_tmp != tmp:
                    _remove(old_tmp)
        pairs = [(tmp, final)] if is_dir else _file_pairs(tmp, final, companions)
        self._entries[final] = _Entry(final, pairs, is_dir, check)

    def stage_layer(self, final: str, layer: str, tmp: str) -> None:
        """Record that the first layer of the GeoPackage ``tmp`` (complete and closed) becomes layer ``layer``
        of the GeoPackage ``final`` on commit, as QGIS's "Save to GeoPackage" does: when ``final`` exists its
        other layers stay and a layer of that name is replaced, inside one SQLite transaction (the file is never
        replaced: QGIS may hold it open); else ``tmp`` becomes ``final``."""
        final = os.path.abspath(final)
        if not os.path.exists(tmp):
            raise RuntimeError(f"nothing staged at {tmp}")
        earlier = self._layers.pop((final, layer), None)
        if earlier is not None and earlier != tmp:
            _remove(earlier)
        self._layers[(final, layer)] = tmp

    def staged_path(self, final: str) -> Optional[str]:
        """Where the output ``final`` is staged, or None when it is not (yet)."""
        entry = self._entries.get(os.path.abspath(final))
        return entry.pairs[0][0] if entry else None

    def finals(self) -> List[str]:
        """The final paths of the staged outputs."""
        return list(self._entries)

    def commit(self) -> None:
        """Move every staged output into place, replacing earlier outputs; all or none.

        Raises:
            OutputError: an output could not be moved into place; every earlier output is back as it was.
        """
        entries = list(self._entries.values())
        for entry in entries:
            if entry.check is not None:
                entry.check()  # e.g. the output folder may have changed while the run worked
        aside: List[Tuple[str, str]] = []
        placed: List[Tuple[str, str]] = []
        emptied: List[str] = []
        try:
            for entry in entries:
                for _tmp, final in entry.pairs:
                    if entry.is_dir and os.path.isdir(final) and not os.listdir(final):
                        os.rmdir(final)
                        emptied.append(final)
                    elif os.path.lexists(final):
                        backup = self._temporary_name(final, "old-")
                        os.replace(final, backup)
                        aside.append((final, backup))
            for entry in entries:
                for tmp, final in entry.pairs:
                    if os.path.lexists(tmp):
                        os.replace(tmp, final)
                        placed.append((tmp, final))
            # layers last: a GeoPackage written here cannot be moved back, so nothing may fail after it
            into: Dict[str, List[Tuple[str, str]]] = {}
            for (final, layer), tmp in self._layers.items():
                if not os.path.lexists(final):  # a new GeoPackage: its first layer's file moves into place
                    os.replace(tmp, final)
                    placed.append((tmp, final))
                else:
                    into.setdefault(final, []).append((layer, tmp))
            if into:
                write_layers(into)
        except OSError as exc:
            for tmp, final in reversed(placed):
                with contextlib.suppress(OSError):
                    os.replace(final, tmp)
            for final, backup in reversed(aside):
                with contextlib.suppress(OSError):
                    os.replace(backup, final)
            for final in emptied:
                with contextlib.suppress(OSError):
                    os.mkdir(final)
            self.rollback()
            raise OutputError(f"could not move the outputs into place ({exc.strerror or exc}); the previous "
                              "outputs were left as they were. Check the output folders' permissions and free "
                              "space.") from exc
        for _final, backup in aside:
            _remove(backup)
        for tmp in self._layers.values():
            _remove(tmp)
        self._layers.clear()
        self._entries.clear()
        self._temporaries.clear()
        self._created.clear()
        self._close()

    def rollback(self) -> None:
        """Discard every staged output and temporary file; earlier outputs stay as they were."""
        for entry in self._entries.values():
            for tmp, _final in entry.pairs:
                _remove(tmp)
        for tmp in self._layers.values():
            _remove(tmp)
        self._layers.clear()
        for tmp in self._temporaries:
            for path in _file_pairs(tmp, tmp, ()):
                _remove(path[0])
        self._entries.clear()
        self._temporaries.clear()
        _remove_created(self._created)
        self._created.clear()
        self._close()

    def _close(self) -> None:
        with _OPEN_LOCK:
            _OPEN.discard(self)


def current_transaction() -> Optional[Transaction]:
    """The transaction of the run in progress in this thread (see :func:`use_transaction`), if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def use_transaction(transaction: Optional[Transaction]) -> Iterator[Optional[Transaction]]:
    """Make ``transaction`` the current one in this block: :class:`StagedFile` and :class:`StagedDirectory`
    created inside stage into it and leave the commit to its owner. None: the current one stays."""
    if transaction is None:
        yield current_transaction()
        return
    token = _CURRENT.set(transaction)
    try:
        yield transaction
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def outputs_of(transaction: Optional[Transaction] = None) -> Iterator[Transaction]:
    """The outputs of an engine function: staged into ``transaction`` (or the current one) and committed by
    its owner, or, without either, into a new transaction committed when the block ends without error."""
    owner = transaction or current_transaction()
    if owner is not None:
        with use_transaction(owner):
            yield owner
        return
    with Transaction() as own, use_transaction(own):
        yield own
        own.commit()


def stages_outputs(function: Callable) -> Callable:
    """Decorator of engine functions that write outputs: the call runs inside :func:`outputs_of` its
    ``transaction`` argument, so everything it stages (itself or through helpers) joins the caller's run, or
    is moved into place together when it returns without error."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def staged_call(*args: Any, **kwargs: Any) -> Any:
        with outputs_of(signature.bind_partial(*args, **kwargs).arguments.get("transaction")):
            return function(*args, **kwargs)

    return staged_call


def readable_path(path: str) -> str:
    """Where to read the output ``path`` now: its staged file while the current run has not committed it,
    else ``path`` itself. Derived outputs (polygons from a mask) are made from this."""
    transaction = current_transaction()
    staged = transaction.staged_path(path) if transaction is not None and path else None
    return staged or path


@atexit.register
def _discard_open_transactions() -> None:
    """At exit, remove the temporary files of runs this process did not finish."""
    with _OPEN_LOCK:
        open_now = list(_OPEN)
    for transaction in open_now:
        transaction.rollback()


class _Staged:
    """What :class:`StagedFile` and :class:`StagedDirectory` share: join the current transaction, or own one."""

    path: str
    parameter: Optional[str]
    transaction: Optional[Transaction]

    def _open(self) -> Transaction:
        joined = self.transaction or current_transaction()
        self._owned = joined is None
        self._run = joined if joined is not None else Transaction()
        return self._run

    def _hand_over(self, tmp: str, **entry: Any) -> None:
        self._run.stage(self.path, tmp, **entry)
        if self._owned:
            self._run.commit()

    def _close(self, leftovers: Sequence[str]) -> None:
        for path in leftovers:
            _remove(path)
        if self._owned:
            self._run.rollback()  # nothing left after a commit; created parents go after a failure


class StagedDirectory(_Staged):
    """A folder that is built in a sibling temporary folder and moved over ``path`` on commit.

    Use as a context manager: on an exception the temporary folder is deleted and ``path`` is untouched;
    :meth:`commit` moves it into place (inside a run's transaction: hands it to the transaction, which moves it
    with the run's other outputs). An existing non-empty ``path`` is refused unless ``overwrite`` is set and it
    holds :data:`MARKER_NAME` (so OVERWRITE never deletes a folder SatSeg did not write).

    Args:
        path: the final folder.
        overwrite: replace an earlier SatSeg output folder.
        parameter: the Processing parameter named in error messages.
        transaction: stage into this transaction (default: the current one, see :func:`use_transaction`).
    """

    def __init__(self, path: str, overwrite: bool = False, parameter: Optional[str] = "OUTPUT_DIR",
                 transaction: Optional[Transaction] = None) -> None:
        self.path = os.path.abspath(path)
        self.parameter = parameter
        self.overwrite = overwrite
        self.transaction = transaction
        self.tmp: Optional[str] = None
        self._check_target()

    def _check_target(self) -> None:
        if os.path.isfile(self.path):
            raise OutputError(f"'{self.path}' is a file, not a folder. Choose a folder.", self.parameter)
        if os.path.isdir(self.path) and os.listdir(self.path):
            if not self.overwrite:
                raise OutputError(f"folder '{self.path}' is not empty. Choose an empty or new folder, "
                                  "or set OVERWRITE to replace an earlier SatSeg output.", self.parameter)
            if not os.path.exists(os.path.join(self.path, MARKER_NAME)):
                raise OutputError(f"folder '{self.path}' is not empty and was not written by SatSeg "
                                  f"(no {MARKER_NAME}); OVERWRITE only replaces SatSeg output folders. "
                                  "Choose an empty or new folder.", self.parameter)

    def __enter__(self) -> "StagedDirectory":
        self.tmp = self._open().temporary_folder(self.path, self.parameter)
        return self

    def final_path(self, name: str) -> str:
        """Where a file written as ``name`` in the staging folder will be after commit."""
        return os.path.join(self.path, name)

    def staged_path(self, name: str) -> str:
        """Where to write ``name`` now."""
        if self.tmp is None:
            raise RuntimeError("StagedDirectory used outside its 'with' block")
        return os.path.join(self.tmp, name)

    def write_manifest(self, manifest: dict) -> None:
        """Write the SatSeg marker/manifest JSON into the staging folder."""
        with open(self.staged_path(MARKER_NAME), "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1, default=str)

    def commit(self) -> None:
        """Move the staging folder over the final path (replacing an earlier output), or hand it to the run's
        transaction."""
        if self.tmp is None:
            raise RuntimeError("nothing staged")
        self._check_target()  # the folder may have changed while we worked
        tmp, self.tmp = self.tmp, None
        self._hand_over(tmp, is_dir=True, check=self._check_target)

    def __exit__(self, exc_type, exc, tb) -> None:
        leftovers, self.tmp = [self.tmp] if self.tmp else [], None
        self._close(leftovers)


class StagedFile(_Staged):
    """A file written to a sibling temporary name and renamed over ``path`` on commit (inside a run's
    transaction: when the run commits).

    Args:
        path: the final file path.
        overwrite: replace an existing file.
        parameter: the Processing parameter named in error messages.
        suffix: extension kept on the temporary name so drivers recognise it (e.g. ``.tif``).
        companions: extensions of files the driver writes beside the main one (a Shapefile's ``.shx``,
            ``.dbf``, ``.prj``, ...): moved with it on commit and removed with it on failure; an earlier
            output's companion the new file lacks is removed.
        transaction: stage into this transaction (default: the current one, see :func:`use_transaction`).
    """

    def __init__(self, path: str, overwrite: bool = True, parameter: Optional[str] = None, suffix: str = "",
                 companions: Sequence[str] = (), transaction: Optional[Transaction] = None) -> None:
        self.path = os.path.abspath(path)
        self.parameter = parameter
        if os.path.exists(self.path) and not overwrite:
            raise OutputError(f"'{self.path}' exists. Choose another name or allow overwriting.", parameter)
        if os.path.isdir(self.path):
            raise OutputError(f"'{self.path}' is a folder. Choose a file name.", parameter)
        self.suffix = suffix or os.path.splitext(self.path)[1]
        self.companions = tuple(companions)
        self.transaction = transaction
        self.tmp: Optional[str] = None

    def __enter__(self) -> str:
        self.tmp = self._open().temporary_file(self.path, self.suffix, self.parameter)
        return self.tmp

    def commit(self) -> None:
        """Rename the temporary file over the final path, or hand it to the run's transaction."""
        if self.tmp is None or not os.path.exists(self.tmp):
            raise RuntimeError("nothing staged")
        tmp, self.tmp = self.tmp, None
        self._hand_over(tmp, companions=self.companions)

    def __exit__(self, exc_type, exc, tb) -> None:
        leftovers = [t for t, _f in _file_pairs(self.tmp, self.path, self.companions)] if self.tmp else []
        self.tmp = None
        self._close(leftovers)


def write_csv_rows(path: str, rows: Sequence[Mapping[str, Any]], parameter: Optional[str] = None,
                   fields: Optional[Sequence[str]] = None) -> str:
    """Write dict rows as a CSV file (header = ``fields`` or the first row's keys), staged; returns the path."""
    import csv

    names = list(fields) if fields is not None else list(rows[0]) if rows else []
    staged = StagedFile(path, parameter=parameter)
    with staged as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=names, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        staged.commit()
    return os.path.abspath(path)
