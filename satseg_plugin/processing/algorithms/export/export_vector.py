"""``satseg:exportvector``: building polygons, communities or any layer to GeoPackage, GeoJSON or Shapefile."""

from __future__ import annotations

import os
from typing import Any, Dict

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterVectorLayer,
    QgsVectorFileWriter,
)

from ....core.staging import VECTOR_COMPANIONS, StagedFile
from ...base import SatSegAlgorithm
from ...feedback import QgisFeedback

__all__ = ["ExportVectorAlgorithm", "FORMATS"]

#: (label, OGR driver, extension)
FORMATS = (("GeoPackage", "GPKG", ".gpkg"), ("GeoJSON", "GeoJSON", ".geojson"),
           ("ESRI Shapefile", "ESRI Shapefile", ".shp"))


class ExportVectorAlgorithm(SatSegAlgorithm):
    """Write a vector layer in one of the common exchange formats."""

    INPUT = "INPUT"
    FORMAT = "FORMAT"
    OUTPUT = "OUTPUT"

    group_id = "export"
    requirements = ()

    def name(self) -> str:
        return "exportvector"

    def displayName(self) -> str:
        return self.tr("Export polygons (GeoPackage, GeoJSON, Shapefile)")

    def tags(self):
        return self.tr("export,geopackage,geojson,shapefile,polygons,buildings,communities").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Writes building polygons, communities, tracks or any vector layer to GeoPackage, GeoJSON (always "
            "WGS 84 longitude/latitude, as RFC 7946 asks; the layer is reprojected) or ESRI Shapefile (field "
            "names longer than 10 characters are shortened by the driver: a warning lists them). The file "
            "extension follows the format.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterVectorLayer(self.INPUT, self.tr("Layer")))
        self.addParameter(QgsProcessingParameterEnum(self.FORMAT, self.tr("Format"),
                                                     options=[f[0] for f in FORMATS], defaultValue=0))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, self.tr("Output file"), self.tr(
            "GeoPackage (*.gpkg);;GeoJSON (*.geojson *.json);;ESRI Shapefile (*.shp)")))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        layer = self.parameterAsVectorLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        label, driver, extension = FORMATS[self.parameterAsEnum(parameters, self.FORMAT, context)]
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        root, ext = os.path.splitext(output)
        if ext.lower() not in ((extension, ".json") if driver == "GeoJSON" else (extension,)):
            output = root + extension
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = driver
        options.fileEncoding = "UTF-8"
        options.layerName = os.path.splitext(os.path.basename(output))[0]  # not the temporary file's name
        if driver == "GeoJSON":
            options.ct = QgsCoordinateTransform(layer.crs(), QgsCoordinateReferenceSystem("EPSG:4326"),
                                                context.transformContext())
        if driver == "ESRI Shapefile":
            long_names = [f.name() for f in layer.fields() if len(f.name()) > 10]
            if long_names:
                feedback.warning(self.tr("Shapefile field names are cut to 10 characters: {}.").format(
                    ", ".join(long_names)))
        companions = VECTOR_COMPANIONS.get(extension, ())
        staged = StagedFile(output, parameter=self.OUTPUT, suffix=extension, companions=companions)
        with staged as tmp:  # a failed export leaves no half-written file
            error, message, _path, _layer = QgsVectorFileWriter.writeAsVectorFormatV3(
                layer, tmp, context.transformContext() or QgsCoordinateTransformContext(), options)
            if error != QgsVectorFileWriter.NoError:
                raise QgsProcessingException(self.tr("{}: could not write {}: {}").format(self.OUTPUT, label,
                                                                                         message))
            staged.commit()
        feedback.info(self.tr("Wrote {} features as {}: {}").format(layer.featureCount(), label, output))
        return {self.OUTPUT: output}
