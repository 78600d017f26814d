"""``satseg:clusterstoclasses``: name clusters (from a table or a few annotation polygons) -> class raster."""

from __future__ import annotations

from typing import Any, Dict

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ....core.staging import readable_path
from ...base import SatSegAlgorithm
from ...feedback import QgisFeedback
from ...layers import raster_path, source_to_labels, write_polygons
from ...styling import apply_annotation_style_on_load, apply_palette_on_load

__all__ = ["ClustersToClassesAlgorithm"]


class ClustersToClassesAlgorithm(SatSegAlgorithm):
    """Turn a cluster raster into a class raster and class polygons."""

    INPUT = "INPUT"
    MAPPING = "MAPPING"
    ANNOTATIONS = "ANNOTATIONS"
    CLASS_FIELD = "CLASS_FIELD"
    SPLIT_SHARE = "SPLIT_SHARE"
    RASTER = "RASTER"
    MODEL = "MODEL"
    MIN_AREA = "MIN_AREA"
    OUTPUT = "OUTPUT"
    OUTPUT_CLUSTERS = "OUTPUT_CLUSTERS"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    CLASSES_ASSIGNED = "CLASSES_ASSIGNED"
    SPLITS = "SPLITS"

    group_id = "clustering"
    requirements = ("numpy", "rasterio", "shapely")

    def name(self) -> str:
        return "clusterstoclasses"

    def displayName(self) -> str:
        return self.tr("Clusters to classes")

    def tags(self):
        return self.tr("cluster,classes,label,annotate,classify,interactive").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Names the clusters of a cluster raster, either from a table such as '1,4,7-9=building; 2=water' or "
            "from a few polygons you draw with a class field (e.g. 'building' and 'other'). With polygons, each "
            "cluster takes the class that covers most of its annotated pixels. A cluster two classes share (each "
            "at least the split share of its annotated pixels) is split when the raster and the model are given: "
            "its centroid is replaced by each class's mean feature and its pixels go to the nearest one (the new "
            "cluster raster is written too). Clusters nobody named stay unassigned (0).\n\n"
            "Outputs: a class raster (0 unassigned, 1..C classes, 255 nodata; categorised legend), class polygons, "
            "and a CSV report with the annotated pixels per class and the decision for each cluster.")

    def initAlgorithm(self, config=None):
        number = QgsProcessingParameterNumber
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Cluster raster")))
        self.addParameter(QgsProcessingParameterString(self.MAPPING, self.tr(
            "Cluster -> class table, e.g. 1,4,7-9=building; 2=water"), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.ANNOTATIONS, self.tr("Or annotation polygons"),
                                                              [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterField(self.CLASS_FIELD, self.tr("Annotation class field"), "class",
                                                      self.ANNOTATIONS, optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(self.RASTER, self.tr(
            "Raster the clusters came from (to split shared clusters)"), optional=True))
        self.addParameter(QgsProcessingParameterFile(self.MODEL, self.tr("ClusterNet model (to split shared clusters)"),
                                                     extension="satseg", optional=True))
        self.add_advanced_parameter(number(self.SPLIT_SHARE, self.tr("Split a cluster when a second class has this "
                                                                     "share"), number.Double, 0.3, minValue=0.01,
                                           maxValue=1.0))
        self.add_advanced_parameter(number(self.MIN_AREA, self.tr("Minimum polygon area (m²)"), number.Double, 0.0,
                                           minValue=0.0))
        self.add_device_parameter()
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Classes")))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_CLUSTERS, self.tr(
            "Clusters after splits"), optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT_POLYGONS, self.tr("Class polygons"),
                                                            QgsProcessing.TypeVectorPolygon, optional=True,
                                                            createByDefault=True))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_REPORT, self.tr("Per-cluster report"),
                                                                self.tr("CSV files (*.csv)"), optional=True,
                                                                createByDefault=True))
        self.addOutput(QgsProcessingOutputNumber(self.CLASSES_ASSIGNED, self.tr("Clusters given a class")))
        self.addOutput(QgsProcessingOutputNumber(self.SPLITS, self.tr("Clusters split")))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....core.labels import LabelSet
        from ....core.progress import SubFeedback
        from ....core.staging import write_csv_rows
        from ....core.vectorize import polygonize_mask
        from ....pipelines.clustering.pixel.classes import clusters_to_classes, parse_mapping

        layer = self.raster_layer(parameters, self.INPUT, context)
        crs = layer.crs()
        text = self.parameterAsString(parameters, self.MAPPING, context).strip()
        source = self.parameterAsSource(parameters, self.ANNOTATIONS, context)
        if bool(text) == (source is not None):
            raise QgsProcessingException(f"{self.MAPPING} / {self.ANNOTATIONS}: give either a cluster -> class table "
                                         "or annotation polygons (one of the two).")
        mapping = parse_mapping(text) if text else None
        labels = None
        if source is not None:
            geoms, classes, names = source_to_labels(source, crs, context, self.ANNOTATIONS,
                                                     self.parameterAsString(parameters, self.CLASS_FIELD, context),
                                                     feedback=feedback)
            labels = LabelSet(geoms, classes, names)
        raster = self.parameterAsRasterLayer(parameters, self.RASTER, context)
        model = self.parameterAsFile(parameters, self.MODEL, context) or None
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        cluster_output = self.parameterAsOutputLayer(parameters, self.OUTPUT_CLUSTERS, context) or None
        result = clusters_to_classes(raster_path(layer, self.INPUT), output, mapping, labels,
                                     self.parameterAsDouble(parameters, self.SPLIT_SHARE, context),
                                     raster_path(raster, self.RASTER) if raster is not None else None, model,
                                     cluster_output, self.device_spec(parameters, context),
                                     SubFeedback(feedback, 0, 85))
        splits = [d for d in result.decisions if d.new_clusters]
        outputs: Dict[str, Any] = {self.OUTPUT: output, self.CLASSES_ASSIGNED: sum(
            1 for d in result.decisions if d.class_id or d.new_clusters), self.SPLITS: len(splits)}
        for name, count in result.pixel_counts.items():
            feedback.info(f"{name}: {count} px")
        if parameters.get(self.OUTPUT_POLYGONS) is not None:
            # the run's own staged raster: another run may have replaced the file at ``output`` meanwhile
            records = polygonize_mask(readable_path(output),
                                      min_area=self.parameterAsDouble(parameters, self.MIN_AREA, context),
                                      feedback=SubFeedback(feedback, 85, 100))
            outputs[self.OUTPUT_POLYGONS] = write_polygons(self, parameters, self.OUTPUT_POLYGONS, context, records,
                                                           crs, result.class_names)
            apply_annotation_style_on_load(context, outputs[self.OUTPUT_POLYGONS], "class", result.class_names,
                                           self.tr("Class polygons"))
        report = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        if report:
            names = result.class_names
            write_csv_rows(report, [
                {"cluster": d.cluster, **{f"annotated_{n}": d.annotated.get(n, 0) for n in names},
                 "class": names[d.class_id - 1] if d.class_id else "", "decision": d.decision,
                 "new_clusters": ";".join(f"{i}={n}" for n, i in d.new_clusters.items())} for d in result.decisions],
                self.OUTPUT_REPORT, ["cluster"] + [f"annotated_{n}" for n in names] + ["class", "decision",
                                                                                       "new_clusters"])
            outputs[self.OUTPUT_REPORT] = report
        if result.cluster_path and cluster_output:
            outputs[self.OUTPUT_CLUSTERS] = cluster_output
            apply_palette_on_load(context, cluster_output, {i: f"cluster {i}" for i in range(1, 65535)},
                                  self.tr("Clusters after splits"))
        labels_by_value = {i: n for i, n in enumerate(result.class_names, start=1)}
        apply_palette_on_load(context, output, labels_by_value, self.tr("Classes"))
        return outputs
