"""``satseg:evaluateclusters``: how well clusters can match reference polygons (best Dice/IoU, purity, NMI)."""

from __future__ import annotations

from typing import Any, Dict

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from ...base import SatSegAlgorithm
from ...feedback import QgisFeedback
from ...layers import raster_path, source_to_labels, source_to_shapely

__all__ = ["EvaluateClustersAlgorithm"]


class EvaluateClustersAlgorithm(SatSegAlgorithm):
    """Score a cluster raster against reference polygons."""

    INPUT = "INPUT"
    REFERENCE = "REFERENCE"
    CLASS_FIELD = "CLASS_FIELD"
    AOI = "AOI"
    KEEP_THRESHOLD = "KEEP_THRESHOLD"
    OUTPUT_TABLE = "OUTPUT_TABLE"
    DICE = "DICE"
    IOU = "IOU"
    BEST_DICE = "BEST_DICE"
    BEST_IOU = "BEST_IOU"
    PURITY = "PURITY"
    NMI = "NMI"
    POSITIVE_CLUSTERS = "POSITIVE_CLUSTERS"

    group_id = "clustering"
    requirements = ("numpy", "rasterio", "shapely")

    def name(self) -> str:
        return "evaluateclusters"

    def displayName(self) -> str:
        return self.tr("Evaluate clusters")

    def tags(self):
        return self.tr("cluster,evaluate,dice,iou,purity,nmi,accuracy").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Compares a cluster raster with reference polygons (e.g. building footprints). A cluster counts as a "
            "class when at least the keep threshold (default 0.4) of its pixels are of that class; Dice and IoU "
            "of the clusters so chosen are reported, and the best Dice/IoU any choice of clusters reaches. Also "
            "cluster purity and the normalised mutual information (NMI) between clusters and classes. Pixels "
            "outside the AOI (when given) are left out; inside it, unlabelled pixels are background. The first "
            "class's scores are the algorithm's outputs; the CSV holds the per-cluster pixel counts.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Cluster raster")))
        self.addParameter(QgsProcessingParameterFeatureSource(self.REFERENCE, self.tr("Reference polygons"),
                                                              [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(self.CLASS_FIELD, self.tr("Class field (empty = one class)"),
                                                      parentLayerParameterName=self.REFERENCE, optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.AOI, self.tr("Area where the reference is "
                                                                                "complete"),
                                                              [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.KEEP_THRESHOLD, self.tr("Keep threshold"),
                                                       QgsProcessingParameterNumber.Double, 0.4, minValue=0.01,
                                                       maxValue=1.0))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_TABLE, self.tr("Per-cluster table"),
                                                                self.tr("CSV files (*.csv)"), optional=True,
                                                                createByDefault=True))
        for key, label in ((self.DICE, "Dice at the keep threshold"), (self.IOU, "IoU at the keep threshold"),
                           (self.BEST_DICE, "Best reachable Dice"), (self.BEST_IOU, "Best reachable IoU"),
                           (self.PURITY, "Cluster purity"), (self.NMI, "NMI")):
            self.addOutput(QgsProcessingOutputNumber(key, self.tr(label)))
        self.addOutput(QgsProcessingOutputString(self.POSITIVE_CLUSTERS, self.tr("Clusters counted as the class")))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....core.labels import LabelSet
        from ....core.staging import write_csv_rows
        from ....pipelines.clustering.pixel.evaluate import evaluate_clusters

        layer = self.raster_layer(parameters, self.INPUT, context)
        crs = layer.crs()
        geoms, classes, names = source_to_labels(self.parameterAsSource(parameters, self.REFERENCE, context), crs,
                                                 context, self.REFERENCE,
                                                 self.parameterAsString(parameters, self.CLASS_FIELD, context),
                                                 feedback=feedback)
        aoi = source_to_shapely(self.parameterAsSource(parameters, self.AOI, context), crs, context, self.AOI)
        reference = LabelSet(geoms, classes, names or ["building"], aoi)
        scores = evaluate_clusters(raster_path(layer, self.INPUT), reference,
                                   self.parameterAsDouble(parameters, self.KEEP_THRESHOLD, context), feedback)
        first = scores.class_names[0]
        for name in scores.class_names:
            feedback.info(f"{name}: Dice {scores.dice[name]:.4f} / IoU {scores.iou[name]:.4f} at keep threshold "
                          f"{scores.keep_threshold:g} (clusters {scores.positive_clusters[name]}); best reachable "
                          f"Dice {scores.best_dice[name]:.4f}, IoU {scores.best_iou[name]:.4f}")
        feedback.info(f"Purity {scores.purity:.4f}, NMI {scores.nmi:.4f} over {scores.pixels} pixels.")
        outputs: Dict[str, Any] = {
            self.DICE: scores.dice[first], self.IOU: scores.iou[first], self.BEST_DICE: scores.best_dice[first],
            self.BEST_IOU: scores.best_iou[first], self.PURITY: scores.purity, self.NMI: scores.nmi,
            self.POSITIVE_CLUSTERS: ",".join(str(c) for c in scores.positive_clusters[first])}
        table_path = self.parameterAsFileOutput(parameters, self.OUTPUT_TABLE, context)
        if table_path:
            names, rows = scores.class_names, []
            for cluster in range(1, scores.table.shape[0]):
                counts = scores.table[cluster]
                total = int(counts.sum())
                if total:
                    rows.append({"cluster": cluster, "pixels": total, "background": int(counts[0]),
                                 **{n: int(v) for n, v in zip(names, counts[1:])},
                                 **{f"share_{n}": round(float(v) / total, 4) for n, v in zip(names, counts[1:])}})
            write_csv_rows(table_path, rows, self.OUTPUT_TABLE, ["cluster", "pixels", "background"] + list(names) +
                           [f"share_{n}" for n in names])
            outputs[self.OUTPUT_TABLE] = table_path
        return outputs
