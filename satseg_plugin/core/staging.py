"""Write outputs under a temporary name and move them into place only when everything succeeded.

A failed or canceled run leaves no half-written output and keeps the previous one intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from typing import Any, List, Mapping, Optional, Sequence

from .errors import OutputError

__all__ = ["MARKER_NAME", "StagedDirectory", "StagedFile", "write_csv_rows"]

#: File SatSeg writes into every output folder; only such folders may be replaced with OVERWRITE.
MARKER_NAME = "satseg_manifest.json"


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


class StagedDirectory:
    """A folder that is built in a sibling temporary folder and moved over ``path`` on commit.

    Use as a context manager: on an exception the temporary folder is deleted and ``path`` is untouched;
    :meth:`commit` moves it into place. An existing non-empty ``path`` is refused unless ``overwrite`` is
    set and it holds :data:`MARKER_NAME` (so OVERWRITE never deletes a folder SatSeg did not write).

    Args:
        path: the final folder.
        overwrite: replace an earlier SatSeg output folder.
        parameter: the Processing parameter named in error messages.
    """

    def __init__(self, path: str, overwrite: bool = False, parameter: Optional[str] = "OUTPUT_DIR") -> None:
        self.path = os.path.abspath(path)
        self.parameter = parameter
        self.overwrite = overwrite
        self.tmp: Optional[str] = None
        self._created: List[str] = []
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
        self._created = _ensure_parent(self.path, self.parameter)
        parent = os.path.dirname(self.path)
        try:
            self.tmp = tempfile.mkdtemp(prefix=f".satseg-tmp-{os.path.basename(self.path)}-", dir=parent)
        except OSError as exc:
            _remove_created(self._created)
            raise OutputError(f"cannot write in '{parent}' ({exc.strerror}). Choose a folder you can write to.",
                              self.parameter) from exc
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
        """Move the staging folder over the final path (replacing an earlier output)."""
        if self.tmp is None:
            raise RuntimeError("nothing staged")
        self._check_target()  # the folder may have changed while we worked
        backup = None
        if os.path.isdir(self.path):
            if os.listdir(self.path):
                backup = f"{self.path}.satseg-old-{uuid.uuid4().hex[:8]}"
                os.replace(self.path, backup)
            else:
                os.rmdir(self.path)
        try:
            os.replace(self.tmp, self.path)
        except OSError:
            if backup:
                os.replace(backup, self.path)
            raise
        self.tmp = None
        if backup:
            shutil.rmtree(backup, ignore_errors=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
            if exc_type is not None:
                _remove_created(self._created)


class StagedFile:
    """A file written to a sibling temporary name and renamed over ``path`` on commit.

    Args:
        path: the final file path.
        overwrite: replace an existing file.
        parameter: the Processing parameter named in error messages.
        suffix: extension kept on the temporary name so drivers recognise it (e.g. ``.tif``).
        companions: extensions of files the driver writes beside the main one (a Shapefile's ``.shx``,
            ``.dbf``, ``.prj``, ...): moved with it on commit and removed with it on failure.
    """

    def __init__(self, path: str, overwrite: bool = True, parameter: Optional[str] = None, suffix: str = "",
                 companions: Sequence[str] = ()) -> None:
        self.path = os.path.abspath(path)
        self.parameter = parameter
        if os.path.exists(self.path) and not overwrite:
            raise OutputError(f"'{self.path}' exists. Choose another name or allow overwriting.", parameter)
        if os.path.isdir(self.path):
            raise OutputError(f"'{self.path}' is a folder. Choose a file name.", parameter)
        self.suffix = suffix or os.path.splitext(self.path)[1]
        self.companions = tuple(companions)
        self.tmp: Optional[str] = None
        self._created: List[str] = []

    def _pairs(self):
        """``(temporary, final)`` paths of the companion files."""
        tmp_root, final_root = os.path.splitext(self.tmp)[0], os.path.splitext(self.path)[0]
        return [(tmp_root + ext, final_root + ext) for ext in self.companions]

    def __enter__(self) -> str:
        self._created = _ensure_parent(self.path, self.parameter)
        folder, base = os.path.split(self.path)
        self.tmp = os.path.join(folder, f".satseg-tmp-{uuid.uuid4().hex[:8]}-{os.path.splitext(base)[0]}{self.suffix}")
        return self.tmp

    def commit(self) -> None:
        """Rename the temporary file over the final path."""
        if self.tmp is None or not os.path.exists(self.tmp):
            raise RuntimeError("nothing staged")
        for tmp, final in self._pairs():
            if os.path.exists(tmp):
                os.replace(tmp, final)
            elif os.path.exists(final):
                os.remove(final)  # a stale companion of an earlier output would not match the new file
        os.replace(self.tmp, self.path)
        self.tmp = None

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp is not None:
            for leftover in (self.tmp, self.tmp + ".aux.xml", self.tmp + ".ovr", *(t for t, _f in self._pairs())):
                if os.path.exists(leftover):
                    os.remove(leftover)
            self.tmp = None
            if exc_type is not None:
                _remove_created(self._created)


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
