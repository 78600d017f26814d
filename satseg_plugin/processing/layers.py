"""Conversions between QGIS layers and the engine's plain inputs (paths, shapely geometries)."""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Iterator, Optional, Sequence, Tuple

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsFeatureRequest,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSource,
    QgsProviderRegistry,
    QgsRasterLayer,
)

from ..core.paths import LAYER_SEPARATOR
from ..core.progress import Feedback

__all__ = ["raster_path", "raster_paths", "qgis_crs", "source_to_shapely", "source_to_labels", "write_polygons",
           "write_features", "layer_file", "layer_key", "destination_path", "destination_layer", "layered",
           "staged_sink"]


def raster_path(layer: QgsRasterLayer, parameter: str) -> str:
    """The GDAL dataset name of a file-based raster layer (what rasterio opens).

    Raises:
        QgsProcessingException: for layers that are not read by GDAL from a file (WMS, XYZ, ...).
    """
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"{parameter}: layer '{layer.name()}' comes from the '{layer.providerType()}' provider; SatSeg reads "
            "rasters through GDAL files. Save it first (right-click > Export > Save As...) and use the saved file.")
    parts: Dict[str, Any] = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    path = parts.get("path") or layer.source()
    if parts.get("layerName") and path.lower().endswith(".gpkg"):
        return f"GPKG:{path}:{parts['layerName']}"
    if not os.path.exists(path) and ":" not in path:
        raise QgsProcessingException(f"{parameter}: raster file '{path}' does not exist.")
    return path


def layer_key(layer) -> Optional[str]:
    """The file a layer is read from, as ``path|layername=name`` when it is one layer of a GeoPackage (what an
    output may not overwrite; other layers of that GeoPackage may be written)."""
    path = layer_file(layer)
    if not path or not path.lower().endswith(".gpkg") or layer.providerType() != "ogr":
        return path
    parts: Dict[str, Any] = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
    return layered(path, parts.get("layerName") or None)


def layer_file(layer) -> Optional[str]:
    """The file a layer is read from (None for memory, database and web layers)."""
    if layer is None:
        return None
    parts: Dict[str, Any] = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
    path = parts.get("path") or layer.source().split("|")[0]
    return path if path and os.path.exists(path) else None


def _destination_text(value: Any, context: QgsProcessingContext) -> str:
    """A destination parameter's value as the text it names (a path, ``ogr:...`` or ``memory:``)."""
    from qgis.core import QgsProcessingOutputLayerDefinition, QgsProperty

    if isinstance(value, QgsProcessingOutputLayerDefinition):
        value = value.sink
    if isinstance(value, QgsProperty):
        value = value.valueAsString(context.expressionContext(), "")[0]
    return str(value or "")


def destination_path(value: Any, context: QgsProcessingContext) -> Optional[str]:
    """The file or folder a destination parameter's value names; None for temporary and memory outputs, which
    Processing places itself."""
    from qgis.core import QgsDataSourceUri, QgsProcessing

    text = _destination_text(value, context)
    if not text or text == QgsProcessing.TEMPORARY_OUTPUT or text.startswith("memory:"):
        return None
    if text.startswith("ogr:"):
        return QgsDataSourceUri(text[4:]).database() or None
    if ":" in text.split("|")[0] and not os.path.isabs(text):
        return None  # another provider's uri (postgres:, ...): nothing SatSeg stages
    return os.path.abspath(text.split("|")[0])


def destination_layer(value: Any, context: QgsProcessingContext) -> Optional[str]:
    """The layer a vector destination names inside a GeoPackage (``ogr:dbname='a.gpkg' table="b"``, what QGIS's
    "Save to GeoPackage..." gives, or ``a.gpkg|layername=b``); None when it names a whole file."""
    from qgis.core import QgsDataSourceUri

    text = _destination_text(value, context)
    if text.startswith("ogr:"):
        uri = QgsDataSourceUri(text[4:])
        return (uri.table() or None) if uri.database().lower().endswith(".gpkg") else None
    path, _, options = text.partition("|")
    if not path.lower().endswith(".gpkg"):
        return None
    for option in options.split("|"):
        key, _, name = option.partition("=")
        if key.strip().lower() == "layername" and name.strip():
            return name.strip()
    return None


def layered(path: Optional[str], layer: Optional[str]) -> Optional[str]:
    """``path|layername=layer`` (one layer of a GeoPackage, as :mod:`~satseg_plugin.core.paths` compares
    them), or ``path`` when no layer is named."""
    return f"{path}{LAYER_SEPARATOR}{layer}" if path and layer else path


def staged_sink(create_sink, parameters: Dict[str, Any], key: str, context: QgsProcessingContext, *args):
    """``create_sink(parameters, key, context, *args)`` (``parameterAsSink``), writing to a temporary file of
    the current run's transaction (:mod:`~satseg_plugin.core.staging`) that it moves into place on commit.

    A GeoPackage layer is named as the destination asks (:func:`destination_layer`: written into the existing
    file on commit, its other layers kept, as QGIS's own algorithms do), else after the final file, which it
    replaces; the returned id, and the entry Processing loads on completion, name the final file. Temporary and
    memory outputs, appends to existing layers, and calls outside a run are created as asked.
    """
    from qgis.core import QgsProcessingOutputLayerDefinition, QgsProperty

    from ..core.staging import VECTOR_COMPANIONS, current_transaction

    value = parameters.get(key)
    run, final = current_transaction(), destination_path(value, context)
    extension = os.path.splitext(final or "")[1].lower()
    appending = isinstance(value, QgsProcessingOutputLayerDefinition) and value.useRemapping()
    if run is None or not extension or appending:
        return create_sink(parameters, key, context, *args)
    tmp = run.temporary_file(final, extension, key)
    staged = QgsProcessingOutputLayerDefinition(value) if isinstance(value, QgsProcessingOutputLayerDefinition) \
        else QgsProcessingOutputLayerDefinition(tmp)
    staged.sink = QgsProperty.fromValue(tmp)
    layer = destination_layer(value, context)
    if extension in (".gpkg", ".sqlite"):  # the layer inside is named as asked or after the final file
        staged.createOptions = dict(staged.createOptions,
                                    layerName=layer or os.path.splitext(os.path.basename(final))[0])
    sink, dest_id = create_sink(dict(parameters, **{key: staged}), key, context, *args)
    if sink is None:
        return sink, dest_id
    if layer:  # one layer of a GeoPackage: written into it on commit, its other layers kept
        run.stage_layer(final, layer, tmp)
    else:
        run.stage(final, tmp, companions=VECTOR_COMPANIONS.get(extension, ()))
    final_id = dest_id.replace(tmp, final)
    if context.willLoadLayerOnCompletion(dest_id):
        layers = context.layersToLoadOnCompletion()
        layers[final_id] = layers.pop(dest_id)
        context.setLayersToLoadOnCompletion(layers)
    return sink, final_id


def shapely_features(source: QgsProcessingFeatureSource, crs: QgsCoordinateReferenceSystem,
                      context: QgsProcessingContext, request: Optional[QgsFeatureRequest] = None
                      ) -> Iterator[Tuple[QgsFeature, Any]]:
    """``(feature, shapely geometry in crs)`` for each feature with a geometry; invalid ones repaired."""
    import shapely  # lazy: QGIS starts without shapely

    transform = None
    if source.sourceCrs().isValid() and crs.isValid() and source.sourceCrs() != crs:
        transform = QgsCoordinateTransform(source.sourceCrs(), crs, context.transformContext())
    for feature in source.getFeatures(request or QgsFeatureRequest()):
        geom = feature.geometry()
        if geom.isNull() or geom.isEmpty():
            continue
        if transform is not None:
            geom.transform(transform)
        yield feature, shapely.make_valid(shapely.from_wkb(bytes(geom.asWkb())))


def source_to_shapely(source: Optional[QgsProcessingFeatureSource], crs: QgsCoordinateReferenceSystem,
                      context: QgsProcessingContext, parameter: str):
    """Union of a polygon source's geometries, reprojected into ``crs``, as one shapely geometry.

    Returns None when ``source`` is None. Invalid geometries are repaired with ``make_valid``.
    """
    if source is None:
        return None
    import shapely

    parts = [g for _f, g in shapely_features(source, crs, context, QgsFeatureRequest().setNoAttributes())]
    if not parts:
        raise QgsProcessingException(f"{parameter}: the layer holds no geometries. Draw or select polygons, "
                                     "or leave it empty.")
    return shapely.union_all(parts)


def source_to_labels(source: QgsProcessingFeatureSource, crs: QgsCoordinateReferenceSystem,
                     context: QgsProcessingContext, parameter: str, class_field: str = "",
                     default_class: str = "building", feedback: Optional[Feedback] = None):
    """Annotation polygons as ``(geometries, class indices, class names)`` in ``crs``.

    Without ``class_field`` every polygon is ``default_class``. With it, each distinct non-empty value is a
    class (sorted, so the same values always give the same indices); features with an empty (NULL or blank)
    value are skipped, and ``feedback`` is told how many, since their area then
    counts as background.

    Raises:
        QgsProcessingException: naming ``parameter`` for a missing layer, a point or line layer, a missing
            field, or features that all have an empty class.
    """
    from qgis.core import QgsWkbTypes

    if source is None:
        raise QgsProcessingException(f"{parameter}: choose a polygon layer of annotations.")
    kind = QgsWkbTypes.geometryType(source.wkbType())
    if kind != QgsWkbTypes.PolygonGeometry:
        got = {QgsWkbTypes.PointGeometry: "a point", QgsWkbTypes.LineGeometry: "a line"}.get(kind, "a geometry-less")
        raise QgsProcessingException(f"{parameter}: a polygon layer is needed, got {got} layer. Draw the "
                                     "annotations as polygons (or buffer the points or lines first).")
    field_index = source.fields().lookupField(class_field) if class_field else -1
    if class_field and field_index < 0:
        raise QgsProcessingException(f"{parameter}: the layer has no field '{class_field}'.")
    rows, skipped = [], 0
    for feature, geom in shapely_features(source, crs, context):
        value = default_class
        if field_index >= 0:
            raw = feature.attribute(field_index)
            if raw is None or str(raw).strip() in ("", "NULL"):
                skipped += 1
                continue
            value = str(raw).strip()
        rows.append((geom, value))
    if skipped and not rows:
        raise QgsProcessingException(f"{parameter}: none of the {skipped} features has a value in the class field "
                                     f"'{class_field}'. Fill it in, or choose the field that holds the classes.")
    if skipped and feedback is not None:
        feedback.warning(f"{parameter}: {skipped} feature(s) have no value in the class field '{class_field}' and "
                         "were skipped; their area counts as background. Fill in their class to use them.")
    names = sorted({value for _g, value in rows})
    index = {name: i for i, name in enumerate(names, start=1)}
    return [g for g, _v in rows], [index[v] for _g, v in rows], names


def write_polygons(algorithm, parameters: Dict[str, Any], key: str, context: QgsProcessingContext, records,
                   crs: QgsCoordinateReferenceSystem, class_names, value_field: str = "class_id",
                   name_field: str = "class", with_mean_prob: bool = False) -> Optional[str]:
    """Write :class:`~satseg_plugin.core.vectorize.PolygonRecord` s to the feature sink ``key``.

    Fields: ``value_field`` (the raster value), ``name_field`` (``class_names[value - 1]``, or the value when
    out of range), ``area_m2`` and, if asked, ``mean_prob``. Returns the sink's id (None when the optional
    output was skipped).
    """
    fields = [(value_field, "int"), (name_field, "str"), ("area_m2", "float")]
    if with_mean_prob:
        fields.append(("mean_prob", "float"))

    def rows():
        for rec in records:
            name = class_names[rec.class_id - 1] if 0 < rec.class_id <= len(class_names) else str(rec.class_id)
            values = [rec.class_id, name, round(rec.area_m2, 3)]
            if with_mean_prob:
                values.append(rec.mean_prob)
            yield rec.geometry, values

    return write_features(algorithm, parameters, key, context, fields, "Polygon", crs, rows())


#: Python types -> (QVariant type, QMetaType type) names of :func:`write_features` field specs.
_FIELD_TYPES = {"int": ("Int", "Int"), "float": ("Double", "Double"), "str": ("String", "QString"),
                "bool": ("Bool", "Bool")}


def field_type(kind: str) -> Any:
    """The QgsField type of ``kind`` (``int``, ``float``, ``str``, ``bool``): ``QVariant.<Type>`` on Qt 5 (every
    QGIS 3 release up to 3.40 LTR takes it), ``QMetaType.Type.<Type>`` on Qt 6, whose PyQt has no QVariant types."""
    from qgis.PyQt.QtCore import QVariant

    qvariant, qmetatype = _FIELD_TYPES[kind]
    if hasattr(QVariant, qvariant):
        return getattr(QVariant, qvariant)
    from qgis.PyQt.QtCore import QMetaType

    return getattr(QMetaType.Type, qmetatype)


def qgs_field(name: str, kind: str) -> Any:
    """A ``QgsField`` named ``name`` of :func:`field_type` ``kind``."""
    from qgis.core import QgsField

    return QgsField(name, field_type(kind))


def write_features(algorithm, parameters: Dict[str, Any], key: str, context: QgsProcessingContext,
                   fields: Sequence[Tuple[str, str]], geometry_type: str, crs: QgsCoordinateReferenceSystem,
                   rows: Iterable[Tuple[Any, Sequence[Any]]]) -> Optional[str]:
    """Write rows to the feature sink ``key``.

    Args:
        algorithm: the running algorithm (for ``parameterAsSink``).
        parameters: its parameters.
        key: the sink parameter.
        context: the processing context.
        fields: ``(name, type)`` pairs, type one of ``int``, ``float``, ``str``, ``bool``.
        geometry_type: ``Point``, ``LineString``, ``Polygon``, ``MultiPolygon`` or ``None`` (a table).
        crs: the layer's CRS.
        rows: ``(shapely geometry or None, values)`` per feature, values in ``fields`` order.

    Returns:
        The sink's id, or None when the optional output was skipped.
    """
    from qgis.core import QgsFeatureSink, QgsFields, QgsGeometry, QgsWkbTypes

    qfields = QgsFields()
    for name, kind in fields:
        qfields.append(qgs_field(name, kind))
    wkb = {"Point": QgsWkbTypes.Point, "LineString": QgsWkbTypes.LineString, "Polygon": QgsWkbTypes.Polygon,
           "MultiPolygon": QgsWkbTypes.MultiPolygon, "None": QgsWkbTypes.NoGeometry}[geometry_type]
    sink, dest_id = algorithm.parameterAsSink(parameters, key, context, qfields, wkb, crs)
    if sink is None:
        if parameters.get(key) is None:
            return None
        raise QgsProcessingException(algorithm.invalidSinkError(parameters, key))
    for geometry, values in rows:
        feature = QgsFeature(qfields)
        if geometry is not None:
            geom = QgsGeometry()
            geom.fromWkb(geometry.wkb)
            if geometry_type == "MultiPolygon":
                geom.convertToMultiType()
            feature.setGeometry(geom)
        feature.setAttributes(list(values))
        sink.addFeature(feature, QgsFeatureSink.FastInsert)
    del sink
    return dest_id


def raster_paths(algorithm, parameters: Dict[str, Any], key: str, context: QgsProcessingContext) -> list:
    """The GDAL paths of a multiple-raster parameter, in the order given (raises when a layer is not a file)."""
    layers = algorithm.parameterAsLayerList(parameters, key, context)
    if not layers:
        raise QgsProcessingException(f"{key}: choose the rasters.")
    paths = []
    for layer in layers:
        if not isinstance(layer, QgsRasterLayer):
            raise QgsProcessingException(f"{key}: '{layer.name()}' is not a raster layer.")
        paths.append(raster_path(layer, key))
    return paths


def qgis_crs(crs) -> QgsCoordinateReferenceSystem:
    """A rasterio CRS as a QGIS CRS (an invalid one for None)."""
    if crs is None:
        return QgsCoordinateReferenceSystem()
    return QgsCoordinateReferenceSystem.fromWkt(crs.to_wkt())
