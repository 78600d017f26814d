"""Output paths checked against a run's inputs and against each other before any work starts.

A user who types the input's name as an output, gives two outputs the same name, or points an output folder
that will be cleared at the folder holding an input, would otherwise lose data. Paths are compared after
resolving links, ``..`` and, on case-insensitive file systems, case (GDAL ``/vsi...`` names and URLs are
compared as written).
"""

from __future__ import annotations

import os
import tempfile
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

from .errors import OutputError

__all__ = ["LAYER_SEPARATOR", "nearest_existing", "same_file_key", "check_outputs", "check_destinations"]

PathsLike = Union[str, Sequence[str], None]


def nearest_existing(path: str) -> str:
    """``path`` (made absolute) or its nearest parent that exists: where a new file under it would land."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    return probe


def _case_insensitive(folder: str) -> bool:
    """Whether the file system holding ``folder`` (or its nearest existing parent) ignores case."""
    probe = nearest_existing(folder)
    swapped = probe.swapcase()
    return swapped != probe and os.path.exists(swapped) and os.path.samefile(probe, swapped)


def _is_local(path: str) -> bool:
    """Whether ``path`` names a file on a local disk (not ``/vsi...``, a URL or ``DRIVER:"file":subset``)."""
    return bool(path) and not (path.startswith("/vsi") or "://" in path or (
        ":" in path and not os.path.splitdrive(path)[0] and not path.startswith("/")))


#: How a path names one layer of a GeoPackage (``a.gpkg|layername=b``, as QGIS writes layer sources).
LAYER_SEPARATOR = "|layername="


def _split_layer(key: str) -> Tuple[str, Optional[str]]:
    path, _, layer = key.partition(LAYER_SEPARATOR)
    return path, (layer or None)


def same_file_key(path: str) -> str:
    """A key equal for two paths that name the same file: links, ``..`` and (where the disk ignores it) case
    resolved. Paths GDAL reads virtually (``/vsizip/...``, ``http://...``) and ``NETCDF:"a.nc":var``-style
    names are keyed as written, since they cannot be an output file. One layer of a GeoPackage
    (``a.gpkg|layername=b``) keeps its layer name, lower-cased as SQLite compares table names."""
    path, layer = _split_layer(path)
    if layer:
        return same_file_key(path) + LAYER_SEPARATOR + layer.lower()
    if not _is_local(path):
        return path
    resolved = os.path.realpath(os.path.abspath(os.path.expanduser(path)))
    if _case_insensitive(os.path.dirname(resolved)):
        resolved = os.path.normcase(resolved).lower()
    return resolved


def _as_list(paths: PathsLike) -> Tuple[str, ...]:
    if paths is None:
        return ()
    if isinstance(paths, str):
        return (paths,) if paths else ()
    return tuple(p for p in paths if p)


def _collide(a: str, b: str) -> bool:
    """Whether two keys name the same data: the same file, unless both name different layers of it."""
    (file_a, layer_a), (file_b, layer_b) = _split_layer(a), _split_layer(b)
    return file_a == file_b and (layer_a is None or layer_b is None or layer_a == layer_b)


def _inside(path_key: str, folder_key: str) -> bool:
    return path_key == folder_key or path_key.startswith(folder_key.rstrip(os.sep) + os.sep)


def check_outputs(inputs: Mapping[str, PathsLike], outputs: Mapping[str, PathsLike],
                  cleared_folders: Iterable[str] = ()) -> None:
    """Refuse outputs that would overwrite an input or each other.

    Args:
        inputs: parameter name -> the input path(s) it names (layers' files, model files, ...).
        outputs: parameter name -> the output path(s) it names (files or folders); empty ones are skipped.
            ``a.gpkg|layername=b`` (in both) names one layer of a GeoPackage: an output layer may go into a
            GeoPackage holding an input or another output as long as the layer names differ.
        cleared_folders: output parameter names whose folder the run replaces as a whole (OVERWRITE): any
            input inside such a folder is refused too.

    Raises:
        OutputError: naming the output parameter, the input or other output it collides with, and the fix.
    """
    input_keys: Dict[str, Tuple[str, str]] = {}
    for name, paths in inputs.items():
        for path in _as_list(paths):
            input_keys.setdefault(same_file_key(path), (name, path))
    cleared = set(cleared_folders)
    seen: Dict[str, str] = {}
    for name, paths in outputs.items():
        for path in _as_list(paths):
            key = same_file_key(path)
            hit = next((value for k, value in input_keys.items() if _collide(key, k)), None)
            if hit is not None:
                other, other_path = hit
                what = "file or layer name" if _split_layer(key)[1] else "file name"
                raise OutputError(f"the output '{path}' is the input {other} ('{other_path}'); SatSeg never writes "
                                  f"over its inputs. Choose another output {what}.", name)
            twin = next((n for k, n in seen.items() if n != name and _collide(key, k)), None)
            if twin is not None:
                raise OutputError(f"the output '{path}' is also given as {twin}; each output needs its own "
                                  "file. Choose another file name.", name)
            seen[key] = name
            if name in cleared:
                inside = [(n, p) for k, (n, p) in input_keys.items() if _inside(_split_layer(k)[0], key)]
                if inside:
                    other, other_path = inside[0]
                    raise OutputError(f"the folder '{path}' holds the input {other} ('{other_path}'), and "
                                      "OVERWRITE would delete it. Choose another output folder, or move the input "
                                      "out of it.", name)



def _check_parent(path: str, name: str) -> None:
    """Refuse ``path`` when its nearest existing parent is a file or a folder this user cannot write to."""
    probe = nearest_existing(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(probe):
        raise OutputError(f"'{probe}' is a file, so '{path}' cannot be created inside it. Choose a path in a "
                          "folder.", name)
    try:  # a real probe: permission bits say nothing for root, read-only mounts or sysfs
        handle, probe_file = tempfile.mkstemp(prefix=".satseg-probe-", dir=probe)
    except OSError as exc:
        raise OutputError(f"the folder '{probe}' is not writable ({exc.strerror}), so '{path}' cannot be written. "
                          "Choose a folder you can write to.", name) from exc
    os.close(handle)
    os.remove(probe_file)


def check_destinations(files: Mapping[str, PathsLike], folders: Optional[Mapping[str, PathsLike]] = None) -> None:
    """Refuse outputs of the wrong kind or where nothing can be written, before any work starts.

    Args:
        files: parameter name -> output file path(s).
        folders: parameter name -> output folder path(s).

    Raises:
        OutputError: naming the parameter: a file output that is a folder, a folder output that is a file,
            or a path whose nearest existing parent is a file or not writable.
    """
    for kind, named in (("file", files), ("folder", folders or {})):
        for name, paths in named.items():
            for path in filter(_is_local, (_split_layer(p)[0] for p in _as_list(paths))):
                if kind == "file" and os.path.isdir(path):
                    raise OutputError(f"'{path}' is a folder. Choose a file name.", name)
                if kind == "folder" and os.path.lexists(path) and not os.path.isdir(path):
                    raise OutputError(f"'{path}' is a file, not a folder. Choose a folder.", name)
                _check_parent(path, name)
