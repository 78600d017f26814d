"""``satseg:segmentraster``: seamless tiled inference with one model or a weighted ensemble."""

from __future__ import annotations

from typing import Any, Dict

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ....core.staging import readable_path
from ....pipelines.segmentation.config import InferenceConfig
from ...base import SatSegAlgorithm
from ...distributed import add_scheduler_parameter, scheduler_value
from ...feedback import QgisFeedback
from ...layers import raster_path, source_to_shapely, write_polygons
from ...parameters import ModelFilesParameter, config_defaults, model_files_value
from ...styling import apply_style_on_load

__all__ = ["SegmentRasterAlgorithm"]

#: The engine's settings class, whose field defaults are the parameters' defaults (TILE_SIZE keeps 512:
#: the engine's 0 means "512, rounded up to what the models need", which a Processing minimum of 32 cannot show).
CONFIG = InferenceConfig


class SegmentRasterAlgorithm(SatSegAlgorithm):
    """Predict probability and mask rasters and building polygons with SatSeg model(s)."""

    INPUT = "INPUT"
    MODELS = "MODELS"
    WEIGHTS = "WEIGHTS"
    THRESHOLD = "THRESHOLD"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    TTA = "TTA"
    EXTENT = "EXTENT"
    MASK = "MASK"
    MIN_AREA = "MIN_AREA"
    MIN_OBJECT_PIXELS = "MIN_OBJECT_PIXELS"
    SIMPLIFY = "SIMPLIFY"
    OUTPUT_PROBABILITY = "OUTPUT_PROBABILITY"
    OUTPUT_MASK = "OUTPUT_MASK"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
    POLYGON_COUNT = "POLYGON_COUNT"
    USED_THRESHOLD = "USED_THRESHOLD"

    group_id = "segmentation"
    requirements = ("numpy", "rasterio", "shapely", "torch", "torchvision", "segmentation_models_pytorch",
                    "safetensors")

    def name(self) -> str:
        return "segmentraster"

    def displayName(self) -> str:
        return self.tr("Segment raster")

    def tags(self):
        return self.tr("predict,inference,ensemble,buildings,segmentation,mask,polygons,deep learning").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Runs one or more SatSeg segmentation models over a raster of any size. Tiles overlap and are "
            "blended with a Hann window, so there are no seams. Several models form an ensemble: their "
            "probabilities are averaged with the given weights (e.g. 0.7,0.15,0.15; default equal); they must "
            "use the same bands and classes.\n\n"
            "Model files: SatSeg models (.satseg) and ONNX models (.onnx), alone or mixed in an ensemble: SatSeg's "
            "own exports ('Export model to ONNX') and Deepness 'Segmentor' models, whose metadata give the "
            "classes, normalisation and threshold. An ONNX model with a fixed input size is run on tiles of that "
            "size. Several files: a list from scripts, or paths separated by ; in the dialog.\n\n"
            "Outputs: a probability raster (one band per class, nodata -1, with overviews), a mask raster "
            "(0/1, or the class index; nodata 255) and polygons (holes kept; smaller than the minimum area "
            "dropped; optionally simplified) with area_m2 and mean_prob. All keep the input's CRS and grid "
            "(cropped to the extent when one is given); nodata input pixels stay nodata.\n\n"
            "The threshold defaults to the models' own. Flip TTA averages 4 flipped predictions (4x slower).\n\n"
            "Small objects: regions of the mask smaller than the given number of pixels take the value of their "
            "largest neighbour, so isolated specks vanish and small holes inside objects fill (GDAL's sieve "
            "filter). Empty: the model's own value, a quarter of the area of the smallest objects it was trained "
            "on; 0 keeps every pixel as predicted.")

    def initAlgorithm(self, config=None):
        number, default = QgsProcessingParameterNumber, config_defaults(CONFIG)

        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Input raster")))
        models = ModelFilesParameter(self.MODELS, self.tr("Model file(s) (.satseg or .onnx; several separated by ;)"))
        models.setHelp(self.tr("One SatSeg model (.satseg), an ONNX model (.onnx: SatSeg's export or a Deepness "
                               "'Segmentor'), or several for an ensemble: a list from scripts, or paths separated "
                               "by ; in the dialog."))
        self.addParameter(models)
        self.add_advanced_parameter(QgsProcessingParameterString(
            self.WEIGHTS, self.tr("Ensemble weights (comma-separated)"), optional=True))
        self.addParameter(number(self.THRESHOLD, self.tr("Probability threshold (empty = the models')"),
                                 number.Double, optional=True, minValue=0.0, maxValue=1.0))
        self.add_advanced_parameter(number(self.TILE_SIZE, self.tr("Tile size (pixels)"), number.Integer, 512,
                                           minValue=32))
        self.add_advanced_parameter(number(self.OVERLAP, self.tr("Tile overlap (pixels, empty = a quarter tile)"),
                                           number.Integer, optional=True, minValue=0))
        self.add_advanced_parameter(QgsProcessingParameterBoolean(self.TTA, self.tr("Flip test-time augmentation"),
                                                                  default["tta"]))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, self.tr("Only this extent"), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.MASK, self.tr("Only inside these polygons"),
                                                              [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(number(self.MIN_OBJECT_PIXELS, self.tr("Remove mask objects smaller than (pixels; empty = "
                                                                 "the model's, 0 = keep all)"),
                                 number.Integer, optional=True, minValue=0))
        self.addParameter(number(self.MIN_AREA, self.tr("Minimum polygon area (m²)"), number.Double, 0.0,
                                 minValue=0.0))
        self.addParameter(number(self.SIMPLIFY, self.tr("Simplify tolerance (map units, 0 = none)"), number.Double,
                                 0.0, minValue=0.0))
        self.add_advanced_parameter(number(self.BATCH_SIZE, self.tr("Tiles per batch"), number.Integer,
                                           default["batch_size"], minValue=1))
        self.add_device_parameter()
        add_scheduler_parameter(self)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_PROBABILITY, self.tr("Probability")))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_MASK, self.tr("Mask")))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT_POLYGONS, self.tr("Polygons"),
                                                            QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber(self.POLYGON_COUNT, self.tr("Number of polygons")))
        self.addOutput(QgsProcessingOutputNumber(self.USED_THRESHOLD, self.tr("Threshold used")))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....core.progress import SubFeedback
        from ....core.vectorize import polygonize_mask
        from ....pipelines.segmentation.segment import InferenceConfig, segment_raster

        layer = self.raster_layer(parameters, self.INPUT, context)
        crs = layer.crs()
        models = model_files_value(self, parameters, self.MODELS, context)
        weights_text = self.parameterAsString(parameters, self.WEIGHTS, context).strip()
        try:
            weights = tuple(float(w) for w in weights_text.replace(";", ",").split(",") if w.strip()) or None
        except ValueError as exc:
            raise QgsProcessingException(f"{self.WEIGHTS}: '{weights_text}' is not a comma-separated list of "
                                         "numbers, e.g. 0.7,0.15,0.15.") from exc
        bounds = self.extent_bounds(parameters, self.EXTENT, context, crs)

        config = InferenceConfig(
            tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context),
            overlap=self.optional_value(parameters, self.OVERLAP, context, self.parameterAsInt),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            weights=weights, threshold=self.optional_value(parameters, self.THRESHOLD, context, self.parameterAsDouble),
            tta=self.parameterAsBoolean(parameters, self.TTA, context), bounds=bounds,
            min_object_pixels=self.optional_value(parameters, self.MIN_OBJECT_PIXELS, context, self.parameterAsInt),
            mask=source_to_shapely(self.parameterAsSource(parameters, self.MASK, context), crs, context, self.MASK))
        prob_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_PROBABILITY, context)
        mask_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_MASK, context)
        result = segment_raster(raster_path(layer, self.INPUT), models, prob_path, mask_path, config,
                                self.device_spec(parameters, context), SubFeedback(feedback, 0, 85),
                                scheduler=scheduler_value(self, parameters, context))
        # the run's own staged rasters: another run may have replaced the files at these paths meanwhile
        records = polygonize_mask(readable_path(mask_path), readable_path(prob_path),
                                  self.parameterAsDouble(parameters, self.MIN_AREA, context),
                                  self.parameterAsDouble(parameters, self.SIMPLIFY, context),
                                  feedback=SubFeedback(feedback, 85, 100))
        dest_id = write_polygons(self, parameters, self.OUTPUT_POLYGONS, context, records, crs, result.classes,
                                 with_mean_prob=True)
        feedback.info(self.tr("{} polygons; {} foreground pixels at threshold {:.3f}.").format(
            len(records), result.positive_pixels, result.threshold))
        apply_style_on_load(context, prob_path, "probability", self.tr("Probability"))
        apply_style_on_load(context, mask_path, "mask", self.tr("Mask"))
        apply_style_on_load(context, dest_id, "buildings", self.tr("Segmented polygons"))
        return {self.OUTPUT_PROBABILITY: prob_path, self.OUTPUT_MASK: mask_path, self.OUTPUT_POLYGONS: dest_id,
                self.POLYGON_COUNT: len(records), self.USED_THRESHOLD: result.threshold}
