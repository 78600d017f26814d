"""Which project layers fit a dock field: a class field must look like classes, a cluster raster must be an
integer single-band raster. The combo boxes offer only the layers that fit (:func:`keep_fitting`), so the dock
never picks an unrelated layer, and the class field is picked only when it looks like classes."""

from __future__ import annotations

import os
from typing import Callable, Iterable, List, Optional, Tuple

from qgis.core import Qgis, QgsMapLayer, QgsProject, QgsRasterLayer, QgsVectorLayer, QgsWkbTypes
from qgis.gui import QgsMapLayerComboBox

from ...processing.layers import field_type

__all__ = ["CLASS_FIELD_NAMES", "MAX_CLASSES", "MAX_CLASS_NAME", "looks_like_classes", "guess_class_field",
           "is_cluster_raster", "is_annotation_layer", "keep_fitting", "INTEGER_TYPES"]

#: Field names that say "this field holds the class" (the Annotate tab writes ``class``).
CLASS_FIELD_NAMES = ("class", "classes", "label", "labels", "category", "class_name", "classname", "landcover")
#: More distinct values than this, or longer ones, are not classes (ids, paths, free text).
MAX_CLASSES = 30
MAX_CLASS_NAME = 40
#: Raster data types a cluster map can have.
INTEGER_TYPES = (Qgis.Byte, Qgis.UInt16, Qgis.Int16, Qgis.UInt32, Qgis.Int32)


def looks_like_classes(values: Iterable[object]) -> bool:
    """Whether ``values`` read as class names: at most :data:`MAX_CLASSES` distinct short words, none a path.

    Empty values (None, '', NULL) are ignored; a field without values is not a class field."""
    names = {str(v) for v in values if v not in (None, "") and str(v) != "NULL"}
    if not names or len(names) > MAX_CLASSES:
        return False
    return all(len(n) <= MAX_CLASS_NAME and os.sep not in n and "/" not in n and "\\" not in n for n in names)


def guess_class_field(layer: Optional[QgsVectorLayer]) -> Tuple[str, str]:
    """``(field, why)``: the layer's class field and the reason it was picked, ``("", why not)`` when no field
    clearly holds classes. A field qualifies when it has a value-map widget (a SatSeg annotation layer), or is
    a text field named like :data:`CLASS_FIELD_NAMES` whose values look like classes (or that is still
    empty). Other text fields (``roof``, ``path``) are never picked on their own: the user chooses them."""
    if not isinstance(layer, QgsVectorLayer) or not layer.isValid():
        return "", "no layer"
    fields = layer.fields()
    for i in range(fields.count()):
        if layer.editorWidgetSetup(i).type() == "ValueMap":
            return fields.at(i).name(), "its value list"
    for i in range(fields.count()):
        field = fields.at(i)
        if field.name().lower() in CLASS_FIELD_NAMES and field.type() == field_type("str"):
            values = layer.uniqueValues(i, MAX_CLASSES + 1)
            if not any(v not in (None, "") and str(v) != "NULL" for v in values) or looks_like_classes(values):
                return field.name(), "its name"
    return "", "no field named like a class field ({})".format(", ".join(CLASS_FIELD_NAMES[:3]))


def is_cluster_raster(layer: Optional[QgsMapLayer]) -> bool:
    """An integer single-band raster (what Cluster raster and Clusters to classes write)."""
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid() or layer.bandCount() != 1:
        return False
    return layer.dataProvider().dataType(1) in INTEGER_TYPES


def is_annotation_layer(layer: Optional[QgsMapLayer]) -> bool:
    """A polygon layer that has a class field (:func:`guess_class_field`)."""
    return (isinstance(layer, QgsVectorLayer) and layer.isValid()
            and layer.geometryType() == QgsWkbTypes.PolygonGeometry and bool(guess_class_field(layer)[0]))


def keep_fitting(combo: QgsMapLayerComboBox, fits: Callable[[QgsMapLayer], bool],
                 project: Optional[QgsProject] = None) -> Callable[[], List[QgsMapLayer]]:
    """Let ``combo`` offer only the project layers for which ``fits(layer)`` is true, now and whenever layers
    are added or removed. Returns the function that refreshes the list (call it after a layer changed)."""
    project = project or QgsProject.instance()

    def refresh(*_args) -> List[QgsMapLayer]:
        try:
            unfit = [layer for layer in project.mapLayers().values() if not fits(layer)]
            combo.setExceptedLayerList(unfit)
        except RuntimeError:  # the combo box was deleted
            for signal in (project.layersAdded, project.layersRemoved):
                try:
                    signal.disconnect(refresh)
                except (TypeError, RuntimeError):
                    pass
            return []
        return unfit

    project.layersAdded.connect(refresh)
    project.layersRemoved.connect(refresh)
    refresh()
    return refresh
