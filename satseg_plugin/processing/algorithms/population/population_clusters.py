"""``satseg:populationclusters``: communities per population frame (window autoencoder, k-means, DBSCAN)."""

from __future__ import annotations

from typing import Any, Dict, List

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
)

from ....pipelines.population.config import CommunityConfig
from ...base import SatSegAlgorithm
from ...distributed import add_scheduler_parameter, scheduler_value
from ...feedback import QgisFeedback
from ...layers import qgis_crs, raster_paths, write_features
from ...parameters import COMMUNITY_FIELDS, config_defaults
from ...styling import apply_style_on_load, load_raster_on_completion

__all__ = ["PopulationClustersAlgorithm"]

#: The engine's settings class, whose field defaults are the parameters' defaults.
CONFIG = CommunityConfig


class PopulationClustersAlgorithm(SatSegAlgorithm):
    """Community segments of every frame."""

    FRAMES = "FRAMES"
    FLOWS = "FLOWS"
    BAND = "BAND"
    WINDOW = "WINDOW"
    LATENT = "LATENT"
    EPOCHS = "EPOCHS"
    CENTRES_PER_EPOCH = "CENTRES_PER_EPOCH"
    K = "K"
    REPORT_K = "REPORT_K"
    K_MIN = "K_MIN"
    K_MAX = "K_MAX"
    EPS = "EPS"
    MIN_SAMPLES = "MIN_SAMPLES"
    POP_MIN = "POP_MIN"
    SEED = "SEED"
    OVERWRITE = "OVERWRITE"
    OUTPUT_DIR = "OUTPUT_DIR"
    OUTPUT_COMMUNITIES = "OUTPUT_COMMUNITIES"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    SEGMENTS = "SEGMENTS"
    COMMUNITIES = "COMMUNITIES"
    AE_MSE = "AE_MSE"

    group_id = "population"
    requirements = ("numpy", "rasterio", "shapely", "torch", "faiss", "sklearn", "scipy")

    def name(self) -> str:
        return "populationclusters"

    def displayName(self) -> str:
        return self.tr("Population communities")

    def tags(self):
        return self.tr("population,community,autoencoder,kmeans,dbscan,cluster,segment").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Finds communities of population in every frame. Per frame, a window autoencoder (square windows of "
            "'Window (pixels, odd)' of population, flow u, v and two position channels, each clipped and min-max scaled on that "
            "frame) is trained on random populated window centres; every populated pixel gets a code of 'Code length' "
            "(computed in strips), codes are standardised per frame and grouped by k-means ('k-means clusters "
            "(K)', faiss); then DBSCAN ('DBSCAN radius (pixels)', 'DBSCAN minimum samples') on the pixel "
            "positions within each k-means group cuts them into "
            "spatially connected communities with ids unique in the frame.\n\n"
            "The 'Flow rasters, in time order' are the outputs of 'Optical flow between frames' (one per "
            "consecutive pair, in time order); the "
            "last frame uses the flow of the pair before it.\n\n"
            "Outputs: a segment GeoTIFF per frame in the output folder (int32, 0 = no community), community "
            "polygons of all frames with frame, segment_id, kmeans_label, population, area_km2 and the "
            "population-weighted centroid, and a CSV report per frame (autoencoder reconstruction MSE, and with "
            "'Report inertia and silhouette for a range of K' the inertia and silhouette from 'Smallest K of the "
            "report' to 'Largest K of the report').\n\nNext "
            "step: 'Track communities'.")

    def initAlgorithm(self, config=None):
        number, default = QgsProcessingParameterNumber, config_defaults(CONFIG)
        self.addParameter(QgsProcessingParameterMultipleLayers(self.FRAMES, self.tr("Population frames, in time order"),
                                                               QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterMultipleLayers(self.FLOWS, self.tr("Flow rasters, in time order"),
                                                               QgsProcessing.TypeRaster))
        self.addParameter(number(self.K, self.tr("k-means clusters (K)"), number.Integer, default["k"], minValue=2))
        self.addParameter(number(self.EPS, self.tr("DBSCAN radius (pixels)"), number.Double, default["eps"],
                                 minValue=0.1))
        self.addParameter(number(self.MIN_SAMPLES, self.tr("DBSCAN minimum samples"), number.Integer,
                                 default["min_samples"], minValue=1))
        self.addParameter(QgsProcessingParameterBoolean(self.REPORT_K, self.tr("Report inertia and silhouette for "
                                                                                "a range of K"), False))
        self.add_advanced_parameter(number(self.K_MIN, self.tr("Smallest K of the report"), number.Integer,
                                           default["k_min"], minValue=2))
        self.add_advanced_parameter(number(self.K_MAX, self.tr("Largest K of the report"), number.Integer,
                                           default["k_max"], minValue=2))
        self.add_advanced_parameter(number(self.WINDOW, self.tr("Window (pixels, odd)"), number.Integer,
                                           default["window"], minValue=3))
        self.add_advanced_parameter(number(self.LATENT, self.tr("Code length"), number.Integer, default["latent"],
                                           minValue=1))
        self.add_advanced_parameter(number(self.EPOCHS, self.tr("Autoencoder epochs"), number.Integer,
                                           default["epochs"], minValue=1))
        self.add_advanced_parameter(number(self.CENTRES_PER_EPOCH, self.tr("Window centres per epoch"),
                                           number.Integer, default["centres_per_epoch"], minValue=1))
        self.add_advanced_parameter(number(self.POP_MIN, self.tr("Only pixels with population above"),
                                           number.Double, default["pop_min"], minValue=0.0))
        self.add_advanced_parameter(number(self.SEED, self.tr("Random seed"), number.Integer, default["seed"],
                                           minValue=0))
        self.add_advanced_parameter(number(self.BAND, self.tr("Band"), number.Integer, 1, minValue=1))
        self.add_device_parameter()
        add_scheduler_parameter(self)
        self.addParameter(QgsProcessingParameterBoolean(self.OVERWRITE, self.tr("Replace an earlier SatSeg output "
                                                                                 "folder"), False))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_DIR, self.tr("Segment folder")))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT_COMMUNITIES, self.tr("Communities"),
                                                            QgsProcessing.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_REPORT, self.tr("Report (CSV)"),
                                                                self.tr("CSV files (*.csv)"), optional=True,
                                                                createByDefault=False))
        self.addOutput(QgsProcessingOutputMultipleLayers(self.SEGMENTS, self.tr("Segment rasters")))
        self.addOutput(QgsProcessingOutputNumber(self.COMMUNITIES, self.tr("Communities (all frames)")))
        self.addOutput(QgsProcessingOutputNumber(self.AE_MSE, self.tr("Mean autoencoder MSE")))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....core.staging import write_csv_rows
        from ....pipelines.population.communities import CommunityConfig
        from ....pipelines.population.run import run_communities

        def as_int(key: str) -> int:
            return self.parameterAsInt(parameters, key, context)

        config = CommunityConfig(window=as_int(self.WINDOW), latent=as_int(self.LATENT), epochs=as_int(self.EPOCHS),
                                 centres_per_epoch=as_int(self.CENTRES_PER_EPOCH), k=as_int(self.K),
                                 k_min=as_int(self.K_MIN), k_max=as_int(self.K_MAX),
                                 eps=self.parameterAsDouble(parameters, self.EPS, context),
                                 min_samples=as_int(self.MIN_SAMPLES),
                                 pop_min=self.parameterAsDouble(parameters, self.POP_MIN, context),
                                 seed=as_int(self.SEED), device=self.device_spec(parameters, context))
        out_dir = self.parameterAsString(parameters, self.OUTPUT_DIR, context)
        run = run_communities(raster_paths(self, parameters, self.FRAMES, context),
                              raster_paths(self, parameters, self.FLOWS, context), out_dir, config,
                              report_k=self.parameterAsBool(parameters, self.REPORT_K, context),
                              overwrite=self.parameterAsBool(parameters, self.OVERWRITE, context),
                              band=as_int(self.BAND), feedback=feedback,
                              scheduler=scheduler_value(self, parameters, context))
        rows: List = []
        for t, records in enumerate(run.communities):
            for rec in records:
                rows.append((rec.geometry, [t, run.frame_names[t], rec.segment_id, rec.kmeans_label, rec.population,
                                            rec.area_km2, rec.centroid_x, rec.centroid_y, rec.pixels]))
        crs = qgis_crs(run.crs)
        communities = write_features(self, parameters, self.OUTPUT_COMMUNITIES, context, COMMUNITY_FIELDS,
                                     "MultiPolygon", crs, rows)
        outputs: Dict[str, Any] = {self.OUTPUT_DIR: out_dir, self.SEGMENTS: run.segment_paths,
                                   self.COMMUNITIES: len(rows), self.OUTPUT_COMMUNITIES: communities,
                                   self.AE_MSE: sum(r["ae_mse"] for r in run.reports) / len(run.reports)}
        apply_style_on_load(context, communities, "communities", self.tr("Communities"))
        report = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        if report:
            table = []
            for row, k_rows in zip(run.reports, run.k_reports):
                table.append({**row, "k": config.k, "inertia": row["kmeans_objective"], "silhouette": None})
                table += [{"frame": row["frame"], "name": row["name"], **k_row} for k_row in k_rows]
            fields = ["frame", "name", "communities", "ae_mse", "ae_mse_std", "ae_baseline_mse", "kmeans_objective",
                      "clustered_pixels", "k", "inertia", "silhouette"]
            write_csv_rows(report, [{f: r.get(f) for f in fields} for r in table], self.OUTPUT_REPORT, fields)
            outputs[self.OUTPUT_REPORT] = report
        if context.project() is not None:
            for t, path in enumerate(run.segment_paths):
                load_raster_on_completion(context, path, self.tr("Segments {}").format(run.frame_names[t]),
                                          self.SEGMENTS, ids=True)
        return outputs
