"""``satseg:clusterraster``: apply a ClusterNet model: a cluster-id raster (and optional polygons)."""

from __future__ import annotations

from typing import Any, Dict

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingOutputNumber,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ....core.staging import readable_path
from ....pipelines.clustering.pixel.config import ClusterMapConfig
from ...base import SatSegAlgorithm
from ...distributed import add_scheduler_parameter, scheduler_value
from ...feedback import QgisFeedback
from ...layers import raster_path, source_to_shapely, write_polygons
from ...parameters import config_defaults
from ...styling import apply_palette_on_load

__all__ = ["ClusterRasterAlgorithm"]

#: The engine's settings class, whose field defaults are the parameters' defaults.
CONFIG = ClusterMapConfig


class ClusterRasterAlgorithm(SatSegAlgorithm):
    """Write each pixel's cluster id with a ClusterNet model."""

    INPUT = "INPUT"
    MODEL = "MODEL"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    EXTENT = "EXTENT"
    MASK = "MASK"
    MIN_AREA = "MIN_AREA"
    OUTPUT = "OUTPUT"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
    CLUSTERS_USED = "CLUSTERS_USED"

    group_id = "clustering"
    requirements = ("numpy", "rasterio", "shapely", "torch", "segmentation_models_pytorch", "safetensors", "faiss")

    def name(self) -> str:
        return "clusterraster"

    def displayName(self) -> str:
        return self.tr("Cluster raster")

    def tags(self):
        return self.tr("cluster,clustering,unsupervised,clusternet,faiss,classify").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Applies a model from 'Train pixel clustering model': per-pixel features are computed tile by tile "
            "and each pixel gets the id (1..K) of the nearest centroid (faiss). Tiles lie on one grid anchored at "
            "the raster's origin and overlap; each tile owns the pixels nearest its centre, and across a band "
            "of half the overlap around each border the features of the two tiles are blended linearly, so ids "
            "show no tile seams, never come from a tile's outer border, and a pixel gets the same cluster "
            "whatever extent is asked for. Output: a uint16 GeoTIFF on the input's grid (nodata 0, nodata input pixels stay "
            "nodata) with a colour table and a categorised legend; optionally polygons per cluster.\n\n"
            "Next step: 'Clusters to classes' names the clusters.")

    def initAlgorithm(self, config=None):
        number, default = QgsProcessingParameterNumber, config_defaults(CONFIG)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Input raster")))
        self.addParameter(QgsProcessingParameterFile(self.MODEL, self.tr("ClusterNet model file (.satseg)"),
                                                     extension="satseg"))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, self.tr("Only this extent"), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.MASK, self.tr("Only inside these polygons"),
                                                              [QgsProcessing.TypeVectorPolygon], optional=True))
        self.add_advanced_parameter(number(self.TILE_SIZE, self.tr("Tile size (pixels)"), number.Integer,
                                           default["tile_size"], minValue=32))
        self.add_advanced_parameter(number(self.OVERLAP, self.tr("Tile overlap (pixels, empty = a quarter tile)"),
                                           number.Integer, optional=True, minValue=0))
        self.add_advanced_parameter(number(self.BATCH_SIZE, self.tr("Tiles per batch"), number.Integer,
                                           default["batch_size"], minValue=1))
        self.add_advanced_parameter(number(self.MIN_AREA, self.tr("Minimum polygon area (m²)"), number.Double, 0.0,
                                           minValue=0.0))
        self.add_device_parameter()
        add_scheduler_parameter(self)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Clusters")))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT_POLYGONS, self.tr("Cluster polygons"),
                                                            QgsProcessing.TypeVectorPolygon, optional=True,
                                                            createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber(self.CLUSTERS_USED, self.tr("Clusters that occur")))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....core.progress import SubFeedback
        from ....pipelines.clustering.pixel.cluster_map import ClusterMapConfig, cluster_raster

        layer = self.raster_layer(parameters, self.INPUT, context)
        crs = layer.crs()
        config = ClusterMapConfig(
            tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context),
            overlap=self.optional_value(parameters, self.OVERLAP, context, self.parameterAsInt),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            bounds=self.extent_bounds(parameters, self.EXTENT, context, crs),
            mask=source_to_shapely(self.parameterAsSource(parameters, self.MASK, context), crs, context, self.MASK))
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        want_polygons = parameters.get(self.OUTPUT_POLYGONS) is not None
        result = cluster_raster(raster_path(layer, self.INPUT), self.parameterAsFile(parameters, self.MODEL, context),
                                output, config, self.device_spec(parameters, context),
                                SubFeedback(feedback, 0, 80 if want_polygons else 100),
                                scheduler=scheduler_value(self, parameters, context))
        names = [f"cluster {i}" for i in range(1, result.num_clusters + 1)]
        outputs: Dict[str, Any] = {self.OUTPUT: output,
                                   self.CLUSTERS_USED: sum(1 for c in result.pixel_counts if c)}
        if want_polygons:
            from ....core.vectorize import polygonize_mask

            # the run's own staged raster: another run may have replaced the file at ``output`` meanwhile
            records = polygonize_mask(readable_path(output),
                                      min_area=self.parameterAsDouble(parameters, self.MIN_AREA, context),
                                      feedback=SubFeedback(feedback, 80, 100))
            outputs[self.OUTPUT_POLYGONS] = write_polygons(self, parameters, self.OUTPUT_POLYGONS, context, records,
                                                           crs, names, "cluster", "name")
        apply_palette_on_load(context, output, dict(enumerate(names, start=1)), self.tr("Clusters"))
        return outputs
