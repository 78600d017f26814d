"""``satseg:createannotationlayer``: a GeoPackage polygon layer ready for drawing annotations by class."""

from __future__ import annotations

import os
from typing import Any, Dict

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFields,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingParameterCrs,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)

from ....core.staging import StagedFile
from ...base import SatSegAlgorithm
from ...feedback import QgisFeedback
from ...layers import destination_layer, qgs_field
from ...parameters import DEFAULT_CLASSES, parse_classes
from ...styling import apply_annotation_style_on_load, style_annotation_layer

__all__ = ["CreateAnnotationLayerAlgorithm"]


class CreateAnnotationLayerAlgorithm(SatSegAlgorithm):
    """Create a styled GeoPackage polygon layer with a value-map ``class`` field."""

    CLASSES = "CLASSES"
    FIELD = "FIELD"
    CRS = "CRS"
    OUTPUT = "OUTPUT"

    group_id = "segmentation"  # annotations train segmentation models (its id and file stay)
    requirements = ()

    def name(self) -> str:
        return "createannotationlayer"

    def displayName(self) -> str:
        return self.tr("Create annotation layer")

    def tags(self):
        return self.tr("annotate,label,draw,class,urban,rural,uninhabited,polygons").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Creates a GeoPackage polygon layer for drawing annotations: a text field (default 'class') whose "
            "edit widget is a drop-down of the given classes (default urban, rural, uninhabited; give your own, "
            "e.g. building,other for 'Clusters to classes'), drawn by class. The style and widget are saved in the "
            "GeoPackage, so the layer opens the same way in any project. It is added to the map ready for "
            "editing: toggle editing and draw polygons; the form asks for the class.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterString(self.CLASSES, self.tr("Classes (comma-separated)"),
                                                       DEFAULT_CLASSES))
        self.addParameter(QgsProcessingParameterString(self.FIELD, self.tr("Class field name"), "class"))
        self.addParameter(QgsProcessingParameterCrs(self.CRS, self.tr("CRS (empty = the project's)"), "ProjectCrs",
                                                    optional=True))
        self.addParameter(QgsProcessingParameterVectorDestination(self.OUTPUT, self.tr("Annotation layer")))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        classes = parse_classes(self.parameterAsString(parameters, self.CLASSES, context), self.CLASSES)
        field = self.parameterAsString(parameters, self.FIELD, context).strip() or "class"
        crs: QgsCoordinateReferenceSystem = self.parameterAsCrs(parameters, self.CRS, context)
        if not crs.isValid() and context.project() is not None:
            crs = context.project().crs()
        if not crs.isValid():
            raise QgsProcessingException(f"{self.CRS}: choose the CRS to draw in (e.g. the raster's); the project "
                                         "has none.")
        if destination_layer(parameters.get(self.OUTPUT), context):
            raise QgsProcessingException(f"{self.OUTPUT}: an annotation layer is a GeoPackage of its own (it keeps "
                                         "its style and drop-down inside); give a new file name ending in .gpkg "
                                         "rather than a layer inside an existing GeoPackage.")
        path = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        if not path.lower().endswith(".gpkg"):
            raise QgsProcessingException(f"{self.OUTPUT}: annotation layers are GeoPackages (they keep their style "
                                         "and drop-down); give a file name ending in .gpkg.")
        layer_name = os.path.splitext(os.path.basename(path))[0]
        fields = QgsFields()
        fields.append(qgs_field(field, "str"))
        fields.append(qgs_field("note", "str"))
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        options.layerName = layer_name
        staged = StagedFile(path, parameter=self.OUTPUT, suffix=".gpkg")  # moves in with the run's commit
        with staged as tmp:
            writer = QgsVectorFileWriter.create(tmp, fields, QgsWkbTypes.MultiPolygon, crs,
                                                context.transformContext(), options)
            if writer.hasError():
                raise QgsProcessingException(f"{self.OUTPUT}: cannot create '{path}': {writer.errorMessage()}")
            del writer
            layer = QgsVectorLayer(f"{tmp}|layername={layer_name}", layer_name, "ogr")
            style_annotation_layer(layer, field, classes)
            message = layer.saveStyleToDatabase("satseg annotation", "SatSeg annotation style", True, "")
            if message:
                feedback.warning(f"The style could not be stored in the GeoPackage ({message}); it is applied on "
                                 "load.")
            del layer
            staged.commit()
        feedback.info(f"Annotation layer '{layer_name}' with classes {', '.join(classes)} in field '{field}'.")
        apply_annotation_style_on_load(context, path, field, classes, self.tr("Annotations"), value_map=True)
        return {self.OUTPUT: path}
