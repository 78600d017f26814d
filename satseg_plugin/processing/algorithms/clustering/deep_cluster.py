"""``satseg:deepcluster``: DeepCluster on the urban and the rural patches, with silhouette scores per k."""

from __future__ import annotations

import os
from typing import Any, Dict

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingOutputHtml,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ....pipelines.clustering.scene.config import DeepClusterConfig
from ...base import SatSegAlgorithm
from ...feedback import QgisFeedback
from ...parameters import config_defaults, parse_classes
from ...scene_inputs import attribute_column, index_features, patch_paths

__all__ = ["DeepClusterAlgorithm"]

#: The engine's settings class, whose field defaults are the parameters' defaults.
CONFIG = DeepClusterConfig


class DeepClusterAlgorithm(SatSegAlgorithm):
    """Deep-cluster each group of patches and report silhouette scores for k = K_MIN..K_MAX."""

    PATCH_INDEX = "PATCH_INDEX"
    PATH_FIELD = "PATH_FIELD"
    GROUP_FIELD = "GROUP_FIELD"
    GROUPS = "GROUPS"
    MODEL = "MODEL"
    K = "K"
    EPOCHS = "EPOCHS"
    PCA_DIM = "PCA_DIM"
    K_MIN = "K_MIN"
    K_MAX = "K_MAX"
    SAMPLE = "SAMPLE"
    BATCH_SIZE = "BATCH_SIZE"
    LEARNING_RATE = "LEARNING_RATE"
    SEED = "SEED"
    OUTPUT_FEATURES = "OUTPUT_FEATURES"
    OUTPUT_TABLE = "OUTPUT_TABLE"
    OUTPUT_PLOT = "OUTPUT_PLOT"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    SUGGESTED = "SUGGESTED"
    SUGGESTED_CITY_K = "SUGGESTED_CITY_K"
    SUGGESTED_RURAL_K = "SUGGESTED_RURAL_K"

    group_id = "clustering"
    requirements = ("numpy", "rasterio", "torch", "torchvision", "safetensors", "faiss", "sklearn", "matplotlib")

    def name(self) -> str:
        return "deepcluster"

    def displayName(self) -> str:
        return self.tr("Deep-cluster patches (silhouette per k)")

    def tags(self):
        return self.tr("deepcluster,cluster,silhouette,scene,urban,rural,kmeans,faiss").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "DeepCluster on each group of patches (default: the urban and the rural ones, from the pred_class "
            "field 'Train scene classifier' wrote), starting from that classifier's backbone (loaded strictly: a "
            "model that does not fit is an error, never silently skipped). Each epoch: features of the group's "
            "patches, PCA-whitening ('PCA dimensions') and L2 normalisation, faiss k-means with 'DeepCluster k' "
            "clusters, a new head, "
            "one training pass on the cluster assignments. Then, on fresh features of the final networks, k-means "
            "and the exact silhouette score (computed in chunks, never an n x n matrix; a 'Silhouette sample' of patches when "
            "set) for k = 'Smallest k'..'Largest k'.\n\n"
            "Outputs: a CSV table (group, k, silhouette, inertia), a silhouette-vs-k plot, the suggested k per "
            "group (the peak) and the features file 'Extract clusters' reads.")

    def initAlgorithm(self, config=None):
        number, default = QgsProcessingParameterNumber, config_defaults(CONFIG)
        self.addParameter(QgsProcessingParameterFeatureSource(self.PATCH_INDEX, self.tr("Patch index with groups"),
                                                              [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(self.GROUP_FIELD, self.tr("Group field"), "pred_class",
                                                      self.PATCH_INDEX, optional=True))
        self.addParameter(QgsProcessingParameterFile(self.MODEL, self.tr("Scene model (from 'Train scene "
                                                                         "classifier')"), extension="satseg"))
        self.addParameter(number(self.K_MIN, self.tr("Smallest k"), number.Integer, default["k_min"], minValue=2))
        self.addParameter(number(self.K_MAX, self.tr("Largest k"), number.Integer, default["k_max"], minValue=2))
        self.addParameter(number(self.SEED, self.tr("Random seed"), number.Integer, default["seed"]))
        self.add_advanced_parameter(QgsProcessingParameterField(self.PATH_FIELD, self.tr("Field with patch file "
                                                                                         "paths"), "path",
                                                                self.PATCH_INDEX, optional=True))
        self.add_advanced_parameter(QgsProcessingParameterString(self.GROUPS, self.tr("Groups to cluster"),
                                                                 "urban,rural"))
        self.add_advanced_parameter(number(self.K, self.tr("DeepCluster k"), number.Integer, default["k"],
                                           minValue=2))
        self.add_advanced_parameter(number(self.EPOCHS, self.tr("DeepCluster epochs"), number.Integer,
                                           default["epochs"],
                                           minValue=0))
        self.add_advanced_parameter(number(self.PCA_DIM, self.tr("PCA dimensions"), number.Integer,
                                           default["pca_dim"], minValue=2))
        self.add_advanced_parameter(number(self.SAMPLE, self.tr("Silhouette sample (0 = every patch)"),
                                           number.Integer, 0, minValue=0))
        self.add_advanced_parameter(number(self.BATCH_SIZE, self.tr("Batch size"), number.Integer,
                                           default["batch_size"], minValue=1))
        self.add_advanced_parameter(number(self.LEARNING_RATE, self.tr("Learning rate"), number.Double,
                                           default["learning_rate"],
                                           minValue=0))
        self.add_device_parameter()
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_FEATURES, self.tr("Features file"),
                                                                self.tr("SatSeg features (*.safetensors)")))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_TABLE, self.tr("Silhouette table"),
                                                                self.tr("CSV files (*.csv)"), optional=True,
                                                                createByDefault=True))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_PLOT, self.tr("Silhouette plot"),
                                                                self.tr("PNG images (*.png)"), optional=True,
                                                                createByDefault=True))
        self.addOutput(QgsProcessingOutputHtml(self.OUTPUT_REPORT, self.tr("Silhouette report")))
        self.addOutput(QgsProcessingOutputString(self.SUGGESTED, self.tr("Suggested k per group")))
        self.addOutput(QgsProcessingOutputNumber(self.SUGGESTED_CITY_K, self.tr("Suggested k of the first group")))
        self.addOutput(QgsProcessingOutputNumber(self.SUGGESTED_RURAL_K, self.tr("Suggested k of the second group")))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....pipelines.clustering.scene.deepcluster import DeepClusterConfig, deep_cluster

        source = self.parameterAsSource(parameters, self.PATCH_INDEX, context)
        features = index_features(source, self.PATCH_INDEX)
        paths = patch_paths(source, features, self.parameterAsString(parameters, self.PATH_FIELD, context) or "path",
                            self.PATH_FIELD)
        groups = [str(v) if v is not None else "" for v in attribute_column(
            source, features, self.parameterAsString(parameters, self.GROUP_FIELD, context) or "pred_class",
            self.GROUP_FIELD)]
        cluster_groups = parse_classes(self.parameterAsString(parameters, self.GROUPS, context), self.GROUPS)
        num = self.parameterAsInt
        config = DeepClusterConfig(
            k=num(parameters, self.K, context), epochs=num(parameters, self.EPOCHS, context),
            pca_dim=num(parameters, self.PCA_DIM, context), k_min=num(parameters, self.K_MIN, context),
            k_max=num(parameters, self.K_MAX, context), sample=num(parameters, self.SAMPLE, context) or None,
            batch_size=num(parameters, self.BATCH_SIZE, context),
            learning_rate=self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
            seed=num(parameters, self.SEED, context))
        features_path = self.parameterAsFileOutput(parameters, self.OUTPUT_FEATURES, context)
        table = self.parameterAsFileOutput(parameters, self.OUTPUT_TABLE, context) or None
        plot = self.parameterAsFileOutput(parameters, self.OUTPUT_PLOT, context) or None
        model = self.parameterAsFile(parameters, self.MODEL, context)
        result = deep_cluster(paths, groups, tuple(cluster_groups), model, features_path, config,
                              self.device_spec(parameters, context), feedback, table, plot,
                              os.path.splitext(features_path)[0] + "_silhouette.html")
        suggested = ", ".join(f"{g}: {k}" for g, k in result.suggested.items())
        feedback.info(f"Suggested k (silhouette peak): {suggested}")
        ks = [result.suggested.get(g) for g in cluster_groups] + [None, None]
        return {self.OUTPUT_FEATURES: features_path, self.OUTPUT_TABLE: table, self.OUTPUT_PLOT: plot,
                self.OUTPUT_REPORT: result.report_path, self.SUGGESTED: suggested, self.SUGGESTED_CITY_K: ks[0],
                self.SUGGESTED_RURAL_K: ks[1]}

