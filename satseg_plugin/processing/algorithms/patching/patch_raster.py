"""``satseg:patchraster``: cut a raster into georeferenced patches plus a footprint index layer."""

from __future__ import annotations

from typing import Any, Dict

from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsWkbTypes,
)

from ....core.grid import EDGE_MODES
from ....pipelines.patching.config import PatchConfig
from ...base import SatSegAlgorithm
from ...distributed import add_scheduler_parameter, scheduler_value
from ...feedback import QgisFeedback
from ...layers import qgs_field, raster_path, source_to_shapely
from ...parameters import config_defaults
from ...styling import apply_style_on_load

__all__ = ["PatchRasterAlgorithm"]

#: The engine's settings class, whose field defaults are the parameters' defaults.
CONFIG = PatchConfig


class PatchRasterAlgorithm(SatSegAlgorithm):
    """Cut any raster into georeferenced GeoTIFF patches and write their footprints as a polygon layer."""

    INPUT = "INPUT"
    BANDS = "BANDS"
    PATCH_WIDTH = "PATCH_WIDTH"
    PATCH_HEIGHT = "PATCH_HEIGHT"
    STRIDE_X = "STRIDE_X"
    STRIDE_Y = "STRIDE_Y"
    EDGE = "EDGE"
    MAX_NODATA_FRACTION = "MAX_NODATA_FRACTION"
    SAMPLE_COUNT = "SAMPLE_COUNT"
    SEED = "SEED"
    EXTENT = "EXTENT"
    MASK = "MASK"
    OVERWRITE = "OVERWRITE"
    OUTPUT_DIR = "OUTPUT_DIR"
    OUTPUT_INDEX = "OUTPUT_INDEX"
    PATCH_COUNT = "PATCH_COUNT"

    group_id = "patching"
    requirements = ("numpy", "rasterio", "affine", "shapely")

    def name(self) -> str:
        return "patchraster"

    def displayName(self) -> str:
        return self.tr("Patch raster")

    def tags(self):
        return self.tr("patch,tile,chip,retile,split,grid,sample,dataset,training").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Cuts a raster into patches (tiled, compressed GeoTIFFs named by grid row and column) and writes a "
            "polygon layer of their footprints.\n\n"
            "Each patch keeps the raster's CRS, nodata value and band descriptions; its geotransform is the "
            "raster's shifted by the patch's pixel offset, exactly.\n\n"
            "Stride: step between patches (empty = patch size; smaller = overlapping patches).\n"
            "Edge handling: shift = the last patch moves inward so the edge is covered; pad = the last patch "
            "runs past the edge, padded with nodata; drop = patches that do not fit are left out.\n"
            "Maximum nodata fraction: patches with more nodata pixels (or, when the raster has no nodata value, "
            "pixels that are 0 in every band) are skipped.\n"
            "Sample count: keep only this many patches, drawn at random (reproducibly, with the seed) among "
            "the valid ones; 0 keeps all.\n"
            "Extent / mask: only patch that area, or only patches that touch the mask polygons.\n\n"
            "The output folder must be new or empty; Overwrite replaces a folder SatSeg wrote earlier. The "
            "patches are written to a temporary folder and moved into place at the end, so a failed or "
            "canceled run leaves the previous output as it was.")

    def initAlgorithm(self, config=None):
        default = config_defaults(CONFIG)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Input raster")))
        self.addParameter(QgsProcessingParameterBand(self.BANDS, self.tr("Bands (empty = all, order kept)"),
                                                     parentLayerParameterName=self.INPUT, optional=True,
                                                     allowMultiple=True))
        for key, label, field in ((self.PATCH_WIDTH, "Patch width (pixels)", "patch_width"),
                                  (self.PATCH_HEIGHT, "Patch height (pixels)", "patch_height")):
            self.addParameter(QgsProcessingParameterNumber(key, self.tr(label), QgsProcessingParameterNumber.Integer,
                                                           defaultValue=default[field], minValue=1))
        for key, label in ((self.STRIDE_X, "Horizontal stride (pixels, empty = patch width)"),
                           (self.STRIDE_Y, "Vertical stride (pixels, empty = patch height)")):
            self.addParameter(QgsProcessingParameterNumber(key, self.tr(label), QgsProcessingParameterNumber.Integer,
                                                           optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.EDGE, self.tr("Edge handling"),
                                                     options=[self.tr("shift (cover the edge, default)"),
                                                              self.tr("pad with nodata"), self.tr("drop")],
                                                     defaultValue=EDGE_MODES.index(default["edge"])))
        self.addParameter(QgsProcessingParameterNumber(self.MAX_NODATA_FRACTION, self.tr("Maximum nodata fraction"),
                                                       QgsProcessingParameterNumber.Double,
                                                       defaultValue=default["max_nodata_fraction"],
                                                       minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterNumber(self.SAMPLE_COUNT, self.tr("Sample count (0 = all patches)"),
                                                       QgsProcessingParameterNumber.Integer,
                                                       defaultValue=default["sample_count"], minValue=0))
        self.add_advanced_parameter(QgsProcessingParameterNumber(self.SEED, self.tr("Random seed of the sample"),
                                                                 QgsProcessingParameterNumber.Integer,
                                                                 defaultValue=default["seed"]))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, self.tr("Only patch this extent"), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.MASK, self.tr("Only patches touching these polygons"),
                                                              [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterBoolean(self.OVERWRITE,
                                                        self.tr("Overwrite an earlier SatSeg patch folder"),
                                                        defaultValue=default["overwrite"]))
        add_scheduler_parameter(self)
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_DIR, self.tr("Patch folder")))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT_INDEX, self.tr("Patch index"),
                                                            QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber(self.PATCH_COUNT, self.tr("Number of patches written")))

    @staticmethod
    def index_fields() -> QgsFields:
        """Fields of the patch index layer."""
        fields = QgsFields()
        for name in ("patch_id", "row", "col", "x_off", "y_off", "width", "height"):
            fields.append(qgs_field(name, "int"))
        fields.append(qgs_field("path", "str"))
        fields.append(qgs_field("nodata_frac", "float"))
        fields.append(qgs_field("pad_frac", "float"))
        return fields

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
            feedback: QgisFeedback) -> Dict[str, Any]:
        from ....pipelines.patching.patches import PatchConfig, write_patches  # lazy: rasterio

        layer = self.raster_layer(parameters, self.INPUT, context)
        source = raster_path(layer, self.INPUT)
        crs = layer.crs()
        bounds = self.extent_bounds(parameters, self.EXTENT, context, crs)
        mask = source_to_shapely(self.parameterAsSource(parameters, self.MASK, context), crs, context, self.MASK)

        config = PatchConfig(
            patch_width=self.parameterAsInt(parameters, self.PATCH_WIDTH, context),
            patch_height=self.parameterAsInt(parameters, self.PATCH_HEIGHT, context),
            stride_x=self.optional_value(parameters, self.STRIDE_X, context, self.parameterAsInt),
            stride_y=self.optional_value(parameters, self.STRIDE_Y, context, self.parameterAsInt),
            edge=EDGE_MODES[self.parameterAsEnum(parameters, self.EDGE, context)],
            bands=tuple(self.parameterAsInts(parameters, self.BANDS, context)) or None,
            max_nodata_fraction=self.parameterAsDouble(parameters, self.MAX_NODATA_FRACTION, context),
            sample_count=self.parameterAsInt(parameters, self.SAMPLE_COUNT, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            bounds=bounds, mask=mask,
            overwrite=self.parameterAsBoolean(parameters, self.OVERWRITE, context),
        )
        out_dir = self.parameterAsString(parameters, self.OUTPUT_DIR, context)
        result = write_patches(source, out_dir, config, feedback, scheduler=scheduler_value(self, parameters, context))

        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT_INDEX, context, self.index_fields(),
                                             QgsWkbTypes.Polygon, crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT_INDEX))
        for record in result.records:
            feature = QgsFeature()
            feature.setGeometry(QgsGeometry.fromPolygonXY([[QgsPointXY(x, y) for x, y in record.footprint]]))
            feature.setAttributes([record.patch_id, record.row, record.col, record.x_off, record.y_off,
                                   record.width, record.height, record.path, record.nodata_frac, record.pad_frac])
            sink.addFeature(feature, QgsFeatureSink.FastInsert)
        del sink  # flush and close before Processing loads the layer
        apply_style_on_load(context, dest_id, "patch_index", self.tr("Patch index"))
        return {self.OUTPUT_DIR: result.output_dir, self.OUTPUT_INDEX: dest_id, self.PATCH_COUNT: len(result.records)}
