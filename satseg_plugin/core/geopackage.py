"""Writing layers into an existing GeoPackage without replacing the file (what a staged output layer becomes at
commit, :meth:`~satseg_plugin.core.staging.Transaction.stage_layer`)."""

from __future__ import annotations

import contextlib
from typing import Any, Mapping, Sequence, Tuple

__all__ = ["write_layers"]


def write_layers(layers: Mapping[str, Sequence[Tuple[str, str]]]) -> None:
    """Write staged layers into existing GeoPackages: for each GeoPackage path of ``layers``, the first layer of
    each staged GeoPackage ``tmp`` of its ``(layer name, tmp)`` pairs becomes that layer, replacing a layer of
    the same name; the other layers stay as they were.

    Every GeoPackage gets one SQLite transaction, and all of them are written before any is committed: a failed
    open or write rolls every one back, so all files stay as they were. Only a failed commit after an earlier
    GeoPackage's commit went through (the disk filling up in between) leaves that earlier one written.

    Hand-written because GDAL's ``CopyLayer`` opens a transaction of its own (it fails inside ours) and
    ``ogr2ogr -overwrite`` deletes the old layer outside its transaction.

    Works whether or not GDAL's Python exceptions are on (``gdal.UseExceptions()`` is process-wide, and other
    plugins turn it on): either way a failure ends as an OSError.

    Raises:
        OSError: a file could not be opened for writing (busy, read-only) or a write failed.
    """
    from osgeo import gdal, ogr  # lazy: GDAL's own bindings, as QGIS ships them

    gdal.PushErrorHandler("CPLQuietErrorHandler")
    targets = []
    try:
        try:
            for path in sorted(layers):
                target = ogr.Open(path, 1)
                if target is None or target.StartTransaction() != 0:
                    raise OSError(f"cannot open the GeoPackage '{path}' for writing "
                                  f"({gdal.GetLastErrorMsg() or 'busy'}); is a layer of it being edited in QGIS?")
                targets.append(target)
                for name, tmp in layers[path]:
                    source = ogr.Open(tmp)
                    if source is None or source.GetLayerCount() < 1:
                        raise OSError(f"the staged layer '{tmp}' cannot be read")
                    _copy_layer(target, source.GetLayer(0), name)
                    source = None
        except BaseException as exc:
            for target in targets:
                with contextlib.suppress(RuntimeError):
                    target.RollbackTransaction()
            if isinstance(exc, RuntimeError):  # GDAL's exceptions, when the process turned them on
                raise OSError(str(exc)) from exc
            raise
        for path, target in zip(sorted(layers), targets):
            try:
                committed = target.CommitTransaction() == 0
            except RuntimeError:
                committed = False
            if not committed:
                raise OSError(f"could not commit the layers of '{path}' ({gdal.GetLastErrorMsg() or 'GDAL error'})")
    finally:
        targets.clear()  # closes the files
        gdal.PopErrorHandler()


def _copy_layer(target: Any, source: Any, name: str) -> None:
    """Replace (or create) layer ``name`` of the open GeoPackage ``target`` with a copy of layer ``source``."""
    from osgeo import gdal, ogr

    def failed(what: str) -> OSError:
        return OSError(f"could not {what} layer '{name}' ({gdal.GetLastErrorMsg() or 'GDAL error'})")

    for index in range(target.GetLayerCount()):
        if target.GetLayer(index).GetName().lower() == name.lower():  # SQLite's table names ignore case
            if target.DeleteLayer(index) != 0:
                raise failed("replace")
            break
    options = [f"GEOMETRY_NAME={source.GetGeometryColumn() or 'geom'}", f"FID={source.GetFIDColumn() or 'fid'}"]
    layer = target.CreateLayer(name, source.GetSpatialRef(), source.GetGeomType(), options)
    if layer is None:
        raise failed("create")
    definition = source.GetLayerDefn()
    for i in range(definition.GetFieldCount()):
        if layer.CreateField(definition.GetFieldDefn(i)) != 0:
            raise failed("create the fields of")
    copied = 0
    for feature in source:
        out = ogr.Feature(layer.GetLayerDefn())
        out.SetFrom(feature)
        out.SetFID(feature.GetFID())
        if layer.CreateFeature(out) != 0:
            raise failed("write the features of")
        copied += 1
    if copied != source.GetFeatureCount():
        raise failed("copy every feature of")
