"""``satseg:evaluatesegmentation``: score a building mask or probability raster against reference buildings."""

from __future__ import annotations

from typing import Any, Dict

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureSink,
    QgsFields,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsWkbTypes,
)

from ...base import SatSegAlgorithm
from ...feedback import QgisFeedback
from ...layers import qgs_field, raster_path, source_to_shapely

__all__ = ["EvaluateSegmentationAlgorithm"]


class EvaluateSegmentationAlgorithm(SatSegAlgorithm):
    """Pixel Dice/IoU/precision/recall, the per-tile Dice score and per-building F1 of a prediction raster."""

    PREDICTION = "PREDICTION"
    REFERENCE_POLYGONS = "REFERENCE_POLYGONS"
    REFERENCE_MASK = "REFERENCE_MASK"
    AOI = "AOI"
    THRESHOLD = "THRESHOLD"
    TILE_SIZE = "TILE_SIZE"
    IOU_THRESHOLD = "IOU_THRESHOLD"
    CONNECTIVITY = "CONNECTIVITY"
    OUTPUT_TABLE = "OUTPUT_TABLE"
    #: Declared numeric outputs -> the :class:`EvaluationResult` field each one returns.
    SCORES = {"DICE": "dice", "IOU": "iou", "PRECISION": "precision", "RECALL": "recall", "TILE_DICE": "tile_dice",
              "OBJECT_F1": "object_f1", "OBJECT_PRECISION": "object_precision", "OBJECT_RECALL": "object_recall"}

    group_id = "segmentation"
    requirements = ("numpy", "rasterio", "affine", "shapely", "scipy")

    def name(self) -> str:
        return "evaluatesegmentation"

    def displayName(self) -> str:
        return self.tr("Evaluate segmentation")

    def tags(self):
        return self.tr("dice,iou,jaccard,f1,precision,recall,accuracy,metric,score,validation,building").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Scores a predicted building mask (or probability raster) against reference buildings, given either "
            "as polygons or as a mask raster on the prediction's pixel grid (exactly one of the two).\n\n"
            "Prediction pixels above the threshold are buildings (0.5 suits probabilities and 0/1 masks); "
            "reference mask pixels above 0 are buildings; nodata counts as background. Polygons are reprojected "
            "into the prediction's CRS and burned with the pixel-centre rule. With an area of interest, only "
            "pixels whose centre lies inside it are scored and buildings are clipped to it.\n\n"
            "Outputs: pixel Dice, IoU, precision and recall; tile Dice, the competition score, the mean Dice "
            "over tiles of the given size, leaving out tiles where both are empty; per-building precision, "
            "recall and F1, where buildings (connected groups of pixels; touching polygons form one) are matched "
            "one-to-one at IoU >= 0.5. Empty against empty scores 1. The optional table lists every score and "
            "count as metric,value rows.\n\n"
            "The rasters are read strip by strip, so any size works.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.PREDICTION,
                                                            self.tr("Prediction (mask or probability)")))
        self.addParameter(QgsProcessingParameterFeatureSource(self.REFERENCE_POLYGONS,
                                                              self.tr("Reference building polygons"),
                                                              [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(self.REFERENCE_MASK,
                                                            self.tr("Reference building mask (instead of polygons)"),
                                                            optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.AOI, self.tr("Area of interest"),
                                                              [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.THRESHOLD, self.tr("Prediction threshold"),
                                                       QgsProcessingParameterNumber.Double, defaultValue=0.5))
        self.addParameter(QgsProcessingParameterNumber(self.TILE_SIZE, self.tr("Tile size of the tile Dice (pixels)"),
                                                       QgsProcessingParameterNumber.Integer, defaultValue=224,
                                                       minValue=1))
        iou = QgsProcessingParameterNumber(self.IOU_THRESHOLD, self.tr("Minimum IoU of a building match"),
                                           QgsProcessingParameterNumber.Double, defaultValue=0.5, minValue=0.01,
                                           maxValue=1.0)
        connectivity = QgsProcessingParameterEnum(self.CONNECTIVITY, self.tr("Building pixels connect through"),
                                                  options=[self.tr("edges (4 neighbours)"),
                                                           self.tr("edges and corners (8 neighbours)")],
                                                  defaultValue=0)
        for param in (iou, connectivity):
            self.add_advanced_parameter(param)
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT_TABLE, self.tr("Metrics table"),
                                                            QgsProcessing.TypeVector, optional=True,
                                                            createByDefault=True))
        for key, label in (("DICE", "Dice"), ("IOU", "IoU"), ("PRECISION", "Precision"), ("RECALL", "Recall"),
                           ("TILE_DICE", "Mean tile Dice"), ("OBJECT_F1", "Building F1"),
                           ("OBJECT_PRECISION", "Building precision"), ("OBJECT_RECALL", "Building recall")):
            self.addOutput(QgsProcessingOutputNumber(key, self.tr(label)))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....pipelines.segmentation.evaluate import evaluate_rasters  # lazy: rasterio, scipy

        layer = self.raster_layer(parameters, self.PREDICTION, context)
        crs = layer.crs()
        has_polygons = parameters.get(self.REFERENCE_POLYGONS) not in (None, "")
        has_mask = parameters.get(self.REFERENCE_MASK) not in (None, "")
        if has_polygons == has_mask:
            raise QgsProcessingException(self.tr(
                "{}, {}: give exactly one reference, either building polygons or a building mask raster on the "
                "prediction's grid ({} given).").format(self.REFERENCE_POLYGONS, self.REFERENCE_MASK,
                                                        self.tr("both") if has_mask else self.tr("neither")))
        if has_mask:
            mask_layer = self.raster_layer(parameters, self.REFERENCE_MASK, context)
            reference = raster_path(mask_layer, self.REFERENCE_MASK)
        else:
            source = self.parameterAsSource(parameters, self.REFERENCE_POLYGONS, context)
            if source is None:
                raise QgsProcessingException(self.invalidSourceError(parameters, self.REFERENCE_POLYGONS))
            # a reference without any building is a valid answer key: every predicted pixel is then wrong
            reference = [] if source.featureCount() == 0 else source_to_shapely(source, crs, context,
                                                                                 self.REFERENCE_POLYGONS)
        aoi = source_to_shapely(self.parameterAsSource(parameters, self.AOI, context), crs, context, self.AOI)
        result = evaluate_rasters(
            raster_path(layer, self.PREDICTION), reference,
            threshold=self.parameterAsDouble(parameters, self.THRESHOLD, context),
            tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context), aoi=aoi,
            iou_threshold=self.parameterAsDouble(parameters, self.IOU_THRESHOLD, context),
            connectivity=(4, 8)[self.parameterAsEnum(parameters, self.CONNECTIVITY, context)], feedback=feedback)
        outputs: Dict[str, Any] = {key: getattr(result, field) for key, field in self.SCORES.items()}

        fields = QgsFields()
        fields.append(qgs_field("metric", "str"))
        fields.append(qgs_field("value", "float"))
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT_TABLE, context, fields, QgsWkbTypes.NoGeometry,
                                             QgsCoordinateReferenceSystem())
        if sink is None and parameters.get(self.OUTPUT_TABLE) not in (None, ""):
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT_TABLE))
        if sink is not None:
            for metric, value in result.metrics().items():
                feature = QgsFeature(fields)
                feature.setAttributes([metric, float(value)])
                sink.addFeature(feature, QgsFeatureSink.FastInsert)
            del sink  # flush and close before Processing loads the table
            outputs[self.OUTPUT_TABLE] = dest_id
        return outputs
