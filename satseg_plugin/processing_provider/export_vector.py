"""``satseg:exportvector``: building polygons, communities or any layer to GeoPackage, GeoJSON or Shapefile."""

from __future__ import annotations

import os
from typing import Any, Dict

from qgis.core import (QgsCoordinateTransformContext, QgsProcessingContext, QgsProcessingException,
                       QgsProcessingParameterEnum, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterVectorLayer, QgsVectorFileWriter)

from .base import SatSegAlgorithm
from .feedback import QgisFeedback

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

    def name(self) -> str:  # noqa: D102
        return "exportvector"

    def displayName(self) -> str:  # noqa: N802, D102
        return self.tr("Export polygons (GeoPackage, GeoJSON, Shapefile)")

    def tags(self):  # noqa: D102
        return self.tr("export,geopackage,geojson,shapefile,polygons,buildings,communities").split(",")

    def shortHelpString(self) -> str:  # noqa: N802, D102
        return self.tr(
            "Writes building polygons, communities, tracks or any vector layer to GeoPackage, GeoJSON (always "
            "WGS 84 longitude/latitude, as RFC 7946 asks; the layer is reprojected) or ESRI Shapefile (field "
            "names longer than 10 characters are shortened by the driver: a warning lists them). The file "
            "extension follows the format.")

    def initAlgorithm(self, config=None):  # noqa: N802, D102
        self.addParameter(QgsProcessingParameterVectorLayer(self.INPUT, self.tr("Layer")))
        self.addParameter(QgsProcessingParameterEnum(self.FORMAT, self.tr("Format"),
                                                     options=[f[0] for f in FORMATS], defaultValue=0))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, self.tr("Output file"), self.tr(
            "GeoPackage (*.gpkg);;GeoJSON (*.geojson *.json);;ESRI Shapefile (*.shp)")))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:  # noqa: D102
        from qgis.core import QgsCoordinateReferenceSystem  # noqa: PLC0415

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
        if driver == "GeoJSON":
            options.ct = self._to_wgs84(layer, context, QgsCoordinateReferenceSystem("EPSG:4326"))
        if driver == "ESRI Shapefile":
            long_names = [f.name() for f in layer.fields() if len(f.name()) > 10]
            if long_names:
                feedback.warning(self.tr("Shapefile field names are cut to 10 characters: {}.").format(
                    ", ".join(long_names)))
        # write next to the target, then move: a failed export leaves no half-written file
        folder = os.path.dirname(os.path.abspath(output)) or "."
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".satseg-tmp-{os.path.basename(output)}")
        error, message, _path, _layer = QgsVectorFileWriter.writeAsVectorFormatV3(
            layer, tmp, context.transformContext() or QgsCoordinateTransformContext(), options)
        if error != QgsVectorFileWriter.NoError:
            self._remove(tmp, driver)
            raise QgsProcessingException(self.tr("{}: could not write {}: {}").format(self.OUTPUT, label, message))
        self._move(tmp, output, driver)
        feedback.info(self.tr("Wrote {} features as {}: {}").format(layer.featureCount(), label, output))
        return {self.OUTPUT: output}

    @staticmethod
    def _to_wgs84(layer, context, wgs84):
        from qgis.core import QgsCoordinateTransform  # noqa: PLC0415

        return QgsCoordinateTransform(layer.crs(), wgs84, context.transformContext())

    @staticmethod
    def _parts(path: str, driver: str):
        """The files a dataset consists of (a Shapefile is several)."""
        if driver != "ESRI Shapefile":
            return [path]
        root = os.path.splitext(path)[0]
        return [root + e for e in (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qpj")]

    def _move(self, tmp: str, output: str, driver: str) -> None:
        for src, dst in zip(self._parts(tmp, driver), self._parts(output, driver)):
            if os.path.exists(src):
                os.replace(src, dst)

    def _remove(self, tmp: str, driver: str) -> None:
        for path in self._parts(tmp, driver):
            if os.path.exists(path):
                os.remove(path)
