"""``satseg:extractclusters``: reproducible cluster ids per patch from the deep-cluster features."""

from __future__ import annotations

from typing import Any, Dict

from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsFields,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ...base import SatSegAlgorithm
from ...feedback import QgisFeedback
from ...layers import qgs_field
from ...parameters import parse_classes
from ...scene_inputs import index_features, patch_paths
from ...styling import apply_annotation_style_on_load

__all__ = ["ExtractClustersAlgorithm"]


class ExtractClustersAlgorithm(SatSegAlgorithm):
    """Give every patch a group and a cluster id with the k chosen per group."""

    PATCH_INDEX = "PATCH_INDEX"
    PATH_FIELD = "PATH_FIELD"
    FEATURES = "FEATURES"
    CITY_K = "CITY_K"
    RURAL_K = "RURAL_K"
    GROUPS = "GROUPS"
    SEED = "SEED"
    COPY_TO = "COPY_TO"
    OUTPUT = "OUTPUT"

    group_id = "clustering"
    requirements = ("numpy", "faiss", "safetensors")

    def name(self) -> str:
        return "extractclusters"

    def displayName(self) -> str:
        return self.tr("Extract patch clusters")

    def tags(self):
        return self.tr("cluster,extract,scene,urban,rural,kmeans,patches").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "With the k you chose per group from the silhouette table ('k of the first group (urban)' = k1, 'k of "
            "the second group (rural)' = k2), runs seeded k-means on the features 'Deep-cluster patches' wrote "
            "and writes group, cluster and distance to centroid onto a copy of the patch index, styled by "
            "cluster. Ids: the first group 1..k1, the second k1+1..k1+k2, every other patch (e.g. uninhabited) "
            "k1+k2+1. Ids are reproducible: the same seed and features give the same ids, ordered by "
            "cluster size. Optionally copies the patch files into one folder per cluster (names are unique, so "
            "patches from different rasters or years never overwrite each other).")

    def initAlgorithm(self, config=None):
        number = QgsProcessingParameterNumber
        self.addParameter(QgsProcessingParameterFeatureSource(self.PATCH_INDEX, self.tr("Patch index (the one "
                                                                                        "deep-clustered)"),
                                                              [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterFile(self.FEATURES, self.tr("Features file from 'Deep-cluster "
                                                                            "patches'"), extension="safetensors"))
        self.addParameter(number(self.CITY_K, self.tr("k of the first group (urban)"), number.Integer, 5, minValue=1))
        self.addParameter(number(self.RURAL_K, self.tr("k of the second group (rural)"), number.Integer, 5,
                                 minValue=1))
        self.addParameter(number(self.SEED, self.tr("Random seed"), number.Integer, 0))
        self.add_advanced_parameter(QgsProcessingParameterString(self.GROUPS, self.tr("Groups"), "urban,rural"))
        self.add_advanced_parameter(QgsProcessingParameterField(self.PATH_FIELD, self.tr("Field with patch file "
                                                                                         "paths"), "path",
                                                                self.PATCH_INDEX, optional=True))
        self.addParameter(QgsProcessingParameterFolderDestination(self.COPY_TO, self.tr(
            "Copy patches into per-cluster folders"), optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, self.tr("Patches with clusters"),
                                                            QgsProcessing.TypeVectorPolygon))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....pipelines.clustering.scene.deepcluster import copy_cluster_patches, extract_clusters

        source = self.parameterAsSource(parameters, self.PATCH_INDEX, context)
        features = index_features(source, self.PATCH_INDEX)
        groups = parse_classes(self.parameterAsString(parameters, self.GROUPS, context), self.GROUPS)
        if len(groups) != 2:
            raise QgsProcessingException(f"{self.GROUPS}: give the two groups CITY_K and RURAL_K refer to, e.g. "
                                         "urban,rural.")
        result = extract_clusters(self.parameterAsFile(parameters, self.FEATURES, context),
                                  self.parameterAsInt(parameters, self.CITY_K, context),
                                  self.parameterAsInt(parameters, self.RURAL_K, context), tuple(groups),
                                  self.parameterAsInt(parameters, self.SEED, context))
        if len(result.clusters) != len(features):
            raise QgsProcessingException(f"{self.FEATURES}: the features file describes {len(result.clusters)} "
                                         f"patches but the index holds {len(features)}; give the index that was "
                                         "deep-clustered.")
        fields = QgsFields(source.fields())
        for name, kind in (("group", "str"), ("cluster", "int"), ("distance", "float")):
            fields.append(qgs_field(name, kind))
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, fields, source.wkbType(),
                                             source.sourceCrs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        for feature, group, cluster, distance in zip(features, result.groups, result.clusters, result.distances):
            out = QgsFeature(fields)
            out.setGeometry(feature.geometry())
            dist = None if distance != distance else round(float(distance), 6)  # NaN -> NULL
            out.setAttributes(list(feature.attributes()) + [group, int(cluster), dist])
            sink.addFeature(out, QgsFeatureSink.FastInsert)
        del sink
        outputs: Dict[str, Any] = {self.OUTPUT: dest_id}
        copy_to = self.parameterAsString(parameters, self.COPY_TO, context)
        if parameters.get(self.COPY_TO) not in (None, "") and copy_to:
            paths = patch_paths(source, features, self.parameterAsString(parameters, self.PATH_FIELD, context)
                                or "path", self.PATH_FIELD)
            copy_cluster_patches(paths, result.clusters, copy_to)
            outputs[self.COPY_TO] = copy_to
        ids = sorted({int(c) for c in result.clusters})
        apply_annotation_style_on_load(context, dest_id, "cluster", [str(i) for i in ids], self.tr("Patch clusters"))
        return outputs
