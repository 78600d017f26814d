"""``satseg:exportrle``: write a building mask raster as a competition RLE CSV, one row per tile."""

from __future__ import annotations

from typing import Any, Dict

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ...base import SatSegAlgorithm
from ...feedback import QgisFeedback
from ...layers import raster_path

__all__ = ["ExportRleAlgorithm"]


class ExportRleAlgorithm(SatSegAlgorithm):
    """Cut a mask raster into tiles and write each tile's run-length encoding as a CSV row."""

    INPUT = "INPUT"
    TILE_SIZE = "TILE_SIZE"
    PREFIX = "PREFIX"
    THRESHOLD = "THRESHOLD"
    OUTPUT = "OUTPUT"
    TILE_COUNT = "TILE_COUNT"

    group_id = "segmentation"
    requirements = ("numpy", "rasterio", "affine")

    def name(self) -> str:
        return "exportrle"

    def displayName(self) -> str:
        return self.tr("Export mask to RLE CSV")

    def tags(self):
        return self.tr("rle,run-length,encode,submission,competition,csv,mask,building").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Writes a building mask raster as a competition submission: a CSV with one row per tile, "
            "img_id,mask_rle.\n\n"
            "Each tile is flattened row by row and encoded as 1-based 'start length' pairs separated by "
            "spaces; a tile without buildings is -1. Pixels of band 1 above the threshold are buildings; "
            "0, nodata and NaN are background.\n\n"
            "Tiles form a grid from the top-left corner. Tiles at the right and bottom edges are padded with 0 "
            "to the full tile size. Ids are <prefix>_r<row>_c<col> (prefix: the raster's file name unless "
            "given), the names Patch raster gives the same tiles (edge mode pad).\n\n"
            "A sidecar file <csv>.json records the raster's size, CRS, geotransform and tile size, so "
            "'Import RLE CSV to mask' rebuilds the georeferenced mask exactly.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Building mask raster")))
        self.addParameter(QgsProcessingParameterNumber(self.TILE_SIZE, self.tr("Tile size (pixels)"),
                                                       QgsProcessingParameterNumber.Integer, defaultValue=224,
                                                       minValue=1))
        self.addParameter(QgsProcessingParameterString(self.PREFIX, self.tr("Tile id prefix (empty = file name)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.THRESHOLD, self.tr("Building threshold (values above it are buildings; 0.5 for probabilities)"),
            QgsProcessingParameterNumber.Double, defaultValue=0.0))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, self.tr("RLE CSV"),
                                                                self.tr("CSV files (*.csv)")))
        self.addOutput(QgsProcessingOutputNumber(self.TILE_COUNT, self.tr("Number of tiles written")))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....pipelines.segmentation.rle import export_rle  # lazy: rasterio

        layer = self.raster_layer(parameters, self.INPUT, context)
        result = export_rle(raster_path(layer, self.INPUT),
                            self.parameterAsFileOutput(parameters, self.OUTPUT, context),
                            tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context),
                            prefix=self.parameterAsString(parameters, self.PREFIX, context).strip() or None,
                            threshold=self.parameterAsDouble(parameters, self.THRESHOLD, context), feedback=feedback)
        return {self.OUTPUT: result.csv_path, self.TILE_COUNT: result.tile_count}
