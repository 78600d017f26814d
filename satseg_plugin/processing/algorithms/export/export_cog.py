"""``satseg:exportcog``: a raster as a Cloud-Optimised GeoTIFF."""

from __future__ import annotations

from typing import Any, Dict

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterLayer,
)

from ...base import SatSegAlgorithm
from ...feedback import QgisFeedback
from ...layers import raster_path

__all__ = ["ExportCogAlgorithm"]


class ExportCogAlgorithm(SatSegAlgorithm):
    """Copy a raster to a COG (same grid and values, internal overviews)."""

    INPUT = "INPUT"
    COMPRESSION = "COMPRESSION"
    OUTPUT = "OUTPUT"

    group_id = "export"
    requirements = ("numpy", "rasterio")

    def name(self) -> str:
        return "exportcog"

    def displayName(self) -> str:
        return self.tr("Export raster as Cloud-Optimised GeoTIFF")

    def tags(self):
        return self.tr("cog,cloud optimised,cloud optimized,geotiff,export,overviews").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Writes any raster (a probability, mask, cluster, class or segment raster, or the input imagery) as a "
            "Cloud-Optimised GeoTIFF with GDAL's COG driver: 512 px tiles, internal overviews (nearest for "
            "integer rasters with a colour table, so ids never blend; average otherwise), the same CRS, grid, "
            "values, nodata, colour table and band descriptions. Such files stream efficiently from object "
            "storage or a web server.")

    def initAlgorithm(self, config=None):
        from ....core.cog import COG_COMPRESSIONS  # pure Python

        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Raster")))
        self.addParameter(QgsProcessingParameterEnum(self.COMPRESSION, self.tr("Compression"),
                                                     options=list(COG_COMPRESSIONS), defaultValue=0))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, self.tr("Cloud-Optimised GeoTIFF"),
                                                                self.tr("GeoTIFF (*.tif *.tiff)")))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....core.cog import COG_COMPRESSIONS, export_cog

        layer = self.raster_layer(parameters, self.INPUT, context)
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        compression = COG_COMPRESSIONS[self.parameterAsEnum(parameters, self.COMPRESSION, context)]
        return {self.OUTPUT: export_cog(raster_path(layer, self.INPUT), output, compression, feedback)}
