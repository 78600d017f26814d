"""``satseg:importrle``: rebuild a georeferenced building mask GeoTIFF from a competition RLE CSV."""

from __future__ import annotations

from typing import Any, Dict

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ...base import SatSegAlgorithm
from ...feedback import QgisFeedback
from ...layers import raster_path
from ...styling import apply_style_on_load

__all__ = ["ImportRleAlgorithm"]


class ImportRleAlgorithm(SatSegAlgorithm):
    """Decode an ``img_id,mask_rle`` CSV back into a 0/1 mask raster on its original grid."""

    INPUT = "INPUT"
    REFERENCE = "REFERENCE"
    TILE_SIZE = "TILE_SIZE"
    OUTPUT = "OUTPUT"

    group_id = "segmentation"
    requirements = ("numpy", "rasterio", "affine")

    def name(self) -> str:
        return "importrle"

    def displayName(self) -> str:
        return self.tr("Import RLE CSV to mask")

    def tags(self):
        return self.tr("rle,run-length,decode,submission,competition,csv,mask,building").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Rebuilds a building mask GeoTIFF (0 = background, 1 = building) from a CSV of img_id,mask_rle rows, "
            "as written by 'Export mask to RLE CSV' or a competition.\n\n"
            "The raster's size, CRS and geotransform come from the reference raster when one is given, else "
            "from the sidecar <csv>.json the export wrote. Tiles are placed by the _r<row>_c<col> ending of "
            "their ids; padding past the raster's edge is cropped. Tiles missing from the CSV are written as 0.\n\n"
            "Tile size: only needed without a sidecar (empty = 224).")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFile(self.INPUT, self.tr("RLE CSV"), extension="csv"))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.REFERENCE, self.tr("Reference raster for the grid (empty = use the CSV's sidecar)"), optional=True))
        tile = QgsProcessingParameterNumber(self.TILE_SIZE, self.tr("Tile size without sidecar (pixels, empty = 224)"),
                                            QgsProcessingParameterNumber.Integer, optional=True, minValue=1)
        self.add_advanced_parameter(tile)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Building mask")))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....pipelines.segmentation.rle import import_rle  # lazy: rasterio

        reference = None
        if parameters.get(self.REFERENCE) not in (None, ""):
            layer = self.raster_layer(parameters, self.REFERENCE, context)
            reference = raster_path(layer, self.REFERENCE)
        tile_size = None
        if parameters.get(self.TILE_SIZE) not in (None, ""):
            tile_size = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        destination = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        import_rle(self.parameterAsFile(parameters, self.INPUT, context), destination, reference=reference,
                   tile_size=tile_size, feedback=feedback)
        apply_style_on_load(context, destination, "mask", self.tr("Building mask"))
        return {self.OUTPUT: destination}
