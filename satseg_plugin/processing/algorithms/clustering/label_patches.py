"""``satseg:labelpatches``: soft patch labels = the share of each patch covered by each annotated class."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsFields,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterString,
    QgsVectorLayer,
)

from ...base import SatSegAlgorithm
from ...feedback import QgisFeedback
from ...layers import qgs_field, shapely_features
from ...parameters import parse_classes
from ...styling import apply_annotation_style_on_load

__all__ = ["LabelPatchesAlgorithm", "value_map_classes", "fraction_field"]


def fraction_field(name: str) -> str:
    """Field holding the share of class ``name`` in a patch."""
    return f"frac_{name}"


def value_map_classes(layer: Optional[QgsVectorLayer], field: str) -> List[str]:
    """The classes of a value-map edit widget on ``field`` (as ``createannotationlayer`` sets up), else []."""
    if layer is None or not hasattr(layer, "editorWidgetSetup"):
        return []
    index = layer.fields().lookupField(field)
    if index < 0:
        return []
    setup = layer.editorWidgetSetup(index)
    if setup.type() != "ValueMap":
        return []
    entries = setup.config().get("map", [])
    if isinstance(entries, dict):
        return [str(v) for v in entries.values()]
    return [str(v) for entry in entries for v in entry.values()]


class LabelPatchesAlgorithm(SatSegAlgorithm):
    """Give each patch of a patch index the fraction of its area each annotated class covers."""

    PATCH_INDEX = "PATCH_INDEX"
    ANNOTATIONS = "ANNOTATIONS"
    CLASS_FIELD = "CLASS_FIELD"
    CLASSES = "CLASSES"
    OUTPUT = "OUTPUT"
    LABELLED = "LABELLED"

    group_id = "clustering"
    requirements = ("numpy", "shapely")

    def name(self) -> str:
        return "labelpatches"

    def displayName(self) -> str:
        return self.tr("Label patches from annotations")

    def tags(self):
        return self.tr("label,annotate,soft labels,patches,urban,rural,uninhabited,scene").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Turns annotation polygons into patch labels: each patch of a patch index (from 'Cut raster into "
            "patches') gets, per class, the fraction of its area the class's polygons cover (soft labels, as in "
            "siCluster), in fields frac_<class>, plus 'label' (the largest class) and 'labelled' (1/0). Patches no "
            "annotation touches stay unlabelled (all fractions 0); the semi-supervised classifier still learns "
            "from them. The class order comes from 'Classes in order', else from the annotation layer's drop-down (as "
            "'Create annotation layer' makes it), else the sorted class values.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFeatureSource(self.PATCH_INDEX, self.tr("Patch index"),
                                                              [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterFeatureSource(self.ANNOTATIONS, self.tr("Annotation polygons"),
                                                              [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(self.CLASS_FIELD, self.tr("Class field"), "class",
                                                      self.ANNOTATIONS, optional=True))
        self.addParameter(QgsProcessingParameterString(self.CLASSES, self.tr("Classes in order (empty = from the "
                                                                             "layer)"), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, self.tr("Labelled patch index"),
                                                            QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber(self.LABELLED, self.tr("Labelled patches")))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....pipelines.clustering.scene.data import soft_labels

        index = self.parameterAsSource(parameters, self.PATCH_INDEX, context)
        annotations = self.parameterAsSource(parameters, self.ANNOTATIONS, context)
        if index is None or annotations is None:
            raise QgsProcessingException(f"{self.PATCH_INDEX} / {self.ANNOTATIONS}: choose both layers.")
        field = self.parameterAsString(parameters, self.CLASS_FIELD, context) or "class"
        position = annotations.fields().lookupField(field)
        if position < 0:
            raise QgsProcessingException(f"{self.CLASS_FIELD}: the annotation layer has no field '{field}'.")
        crs = index.sourceCrs()
        rows = []
        for feature, geom in shapely_features(annotations, crs, context):
            value = feature.attribute(position)
            if value is not None and str(value).strip() not in ("", "NULL"):
                rows.append((geom, str(value).strip()))
        text = self.parameterAsString(parameters, self.CLASSES, context).strip()
        classes = parse_classes(text, self.CLASSES) if text else \
            value_map_classes(self.parameterAsVectorLayer(parameters, self.ANNOTATIONS, context), field) or \
            sorted({v for _g, v in rows})
        if not classes:
            raise QgsProcessingException(f"{self.ANNOTATIONS}: no polygon has a class in field '{field}'. Draw "
                                         "annotations and set their class.")
        unknown = sorted({v for _g, v in rows} - set(classes))
        if unknown:
            feedback.warning(f"Annotations with classes not in {classes} are ignored: {', '.join(unknown)}.")
        rows = [(g, v) for g, v in rows if v in classes]
        features = list(shapely_features(index, crs, context))
        if not features:
            raise QgsProcessingException(f"{self.PATCH_INDEX}: the patch index holds no patches.")
        fractions = soft_labels([g for _f, g in features], [g for g, _v in rows],
                                [classes.index(v) for _g, v in rows], len(classes))
        fields = QgsFields(index.fields())
        for name in classes:
            fields.append(qgs_field(fraction_field(name), "float"))
        fields.append(qgs_field("label", "str"))
        fields.append(qgs_field("labelled", "int"))
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, fields, index.wkbType(), crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        labelled = 0
        for (source_feature, _g), row in zip(features, fractions):
            out = QgsFeature(fields)
            out.setGeometry(source_feature.geometry())
            has = bool(row.sum() > 0)
            labelled += has
            out.setAttributes(list(source_feature.attributes()) + [round(float(v), 6) for v in row] +
                              [classes[int(row.argmax())] if has else None, int(has)])
            sink.addFeature(out, QgsFeatureSink.FastInsert)
        del sink
        feedback.info(f"{labelled} of {len(features)} patches labelled; classes {', '.join(classes)}.")
        if labelled == 0:
            feedback.warning("No patch is covered by an annotation: draw annotations over the patches.")
        apply_annotation_style_on_load(context, dest_id, "label", classes, self.tr("Labelled patches"))
        return {self.OUTPUT: dest_id, self.LABELLED: labelled}
