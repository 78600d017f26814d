"""``satseg:opticalflow``: Horn–Schunck flow between consecutive population frames."""

from __future__ import annotations

from typing import Any, Dict, List

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
)

from ....pipelines.population.config import FlowConfig
from ...base import SatSegAlgorithm
from ...distributed import add_scheduler_parameter, scheduler_value
from ...feedback import QgisFeedback
from ...layers import qgis_crs, raster_paths, write_features
from ...parameters import config_defaults
from ...styling import apply_style_on_load

__all__ = ["OpticalFlowAlgorithm"]

#: The engine's settings class, whose field defaults are the parameters' defaults.
CONFIG = FlowConfig

#: Fields of the flow-arrow layer.
VECTOR_FIELDS = (("pair", "int"), ("from_frame", "str"), ("to_frame", "str"), ("u_px", "float"), ("v_px", "float"),
                 ("dx_map", "float"), ("dy_map", "float"), ("magnitude", "float"), ("direction_deg", "float"))


class OpticalFlowAlgorithm(SatSegAlgorithm):
    """Flow (u, v) between every pair of consecutive frames."""

    FRAMES = "FRAMES"
    BAND = "BAND"
    ALPHA = "ALPHA"
    ITERATIONS = "ITERATIONS"
    TOLERANCE = "TOLERANCE"
    PYRAMID_LEVELS = "PYRAMID_LEVELS"
    VECTOR_STEP = "VECTOR_STEP"
    MIN_MAGNITUDE = "MIN_MAGNITUDE"
    OVERWRITE = "OVERWRITE"
    OUTPUT_DIR = "OUTPUT_DIR"
    OUTPUT_VECTORS = "OUTPUT_VECTORS"
    FLOWS = "FLOWS"
    PAIRS = "PAIRS"

    group_id = "population"
    requirements = ("numpy", "rasterio", "torch")

    def name(self) -> str:
        return "opticalflow"

    def displayName(self) -> str:
        return self.tr("Optical flow between frames")

    def tags(self):
        return self.tr("optical flow,horn-schunck,population,motion,velocity,time series").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Horn–Schunck optical flow between consecutive population-count frames (e.g. GPWv4 2000, 2005, ..., "
            "2020), listed in time order. The equations are solved to convergence ('Maximum iterations', "
            "'Convergence tolerance'), optionally coarse to fine ('Pyramid levels (1 = none)' > 1) for motions "
            "of more than a few pixels per frame; on "
            "the GPU when one is present. Frames must share a CRS; frames on another grid are resampled to the "
            "first frame's grid (keeping population totals) with a warning. NaN and nodata pixels (seas) count "
            "as empty.\n\n"
            "Outputs: one 2-band GeoTIFF per frame pair in the output folder (band 1 u = +column, band 2 v = "
            "+row, in pixels per frame; NaN where either frame is nodata) and a point layer of flow arrows on a "
            "'Arrow spacing (pixels)' grid with the displacement in map units, its magnitude and its azimuth (degrees "
            "clockwise from north), styled as arrows.\n\nNext step: 'Population communities'.")

    def initAlgorithm(self, config=None):
        number, default = QgsProcessingParameterNumber, config_defaults(CONFIG)
        self.addParameter(QgsProcessingParameterMultipleLayers(self.FRAMES, self.tr("Population frames, in time order"),
                                                               QgsProcessing.TypeRaster))
        self.addParameter(number(self.ALPHA, self.tr("Smoothness (alpha)"), number.Double, default["alpha"],
                                 minValue=1e-6))
        self.addParameter(number(self.ITERATIONS, self.tr("Maximum iterations"), number.Integer, default["iterations"],
                                 minValue=1))
        self.addParameter(number(self.TOLERANCE, self.tr("Convergence tolerance (pixels per iteration)"),
                                 number.Double, default["tolerance"], minValue=0.0))
        self.addParameter(number(self.PYRAMID_LEVELS, self.tr("Pyramid levels (1 = none)"), number.Integer, 3,
                                 minValue=1, maxValue=10))
        self.addParameter(number(self.VECTOR_STEP, self.tr("Arrow spacing (pixels)"), number.Integer, 10, minValue=1))
        self.add_advanced_parameter(number(self.MIN_MAGNITUDE, self.tr("Leave out arrows shorter than (pixels/frame)"),
                                           number.Double, 0.05, minValue=0.0))
        self.add_advanced_parameter(number(self.BAND, self.tr("Band"), number.Integer, 1, minValue=1))
        self.add_device_parameter()
        add_scheduler_parameter(self)
        self.addParameter(QgsProcessingParameterBoolean(self.OVERWRITE, self.tr("Replace an earlier SatSeg output "
                                                                                 "folder"), False))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_DIR, self.tr("Flow folder")))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT_VECTORS, self.tr("Flow arrows"),
                                                            QgsProcessing.TypeVectorPoint, optional=True))
        self.addOutput(QgsProcessingOutputMultipleLayers(self.FLOWS, self.tr("Flow rasters")))
        self.addOutput(QgsProcessingOutputNumber(self.PAIRS, self.tr("Frame pairs")))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....pipelines.population.flow import FlowConfig
        from ....pipelines.population.run import run_optical_flow

        frames = raster_paths(self, parameters, self.FRAMES, context)
        config = FlowConfig(alpha=self.parameterAsDouble(parameters, self.ALPHA, context),
                            iterations=self.parameterAsInt(parameters, self.ITERATIONS, context),
                            tolerance=self.parameterAsDouble(parameters, self.TOLERANCE, context),
                            pyramid_levels=self.parameterAsInt(parameters, self.PYRAMID_LEVELS, context),
                            device=self.device_spec(parameters, context))
        out_dir = self.parameterAsString(parameters, self.OUTPUT_DIR, context)
        run = run_optical_flow(frames, out_dir, config,
                               vector_step=self.parameterAsInt(parameters, self.VECTOR_STEP, context),
                               min_magnitude=self.parameterAsDouble(parameters, self.MIN_MAGNITUDE, context),
                               overwrite=self.parameterAsBool(parameters, self.OVERWRITE, context),
                               band=self.parameterAsInt(parameters, self.BAND, context), feedback=feedback,
                               scheduler=scheduler_value(self, parameters, context))
        crs = qgis_crs(run.crs)
        rows: List = []
        import shapely

        for pair, vec in run.vectors:
            rows.append((shapely.Point(vec.x, vec.y),
                         [pair, run.frame_names[pair], run.frame_names[pair + 1], vec.u_px, vec.v_px, vec.dx_map,
                          vec.dy_map, vec.magnitude, vec.direction_deg]))
        outputs: Dict[str, Any] = {self.OUTPUT_DIR: out_dir, self.FLOWS: run.flow_paths,
                                   self.PAIRS: len(run.flow_paths)}
        vectors = write_features(self, parameters, self.OUTPUT_VECTORS, context, VECTOR_FIELDS, "Point", crs, rows)
        if vectors is not None:
            outputs[self.OUTPUT_VECTORS] = vectors
            apply_style_on_load(context, vectors, "flow_arrows", self.tr("Flow arrows"))
        for stat in run.stats:
            if not stat["converged"]:
                feedback.warning(self.tr("{} → {}: not converged after {} iterations; raise ITERATIONS or "
                                         "TOLERANCE.").format(stat["from"], stat["to"], stat["iterations"]))
        return outputs
