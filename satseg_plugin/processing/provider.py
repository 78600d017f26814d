"""The ``satseg`` Processing provider: lists SatSeg's algorithms in the toolbox, modeler and qgis_process."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..core.version import __version__
from .algorithms.clustering.cluster_raster import ClusterRasterAlgorithm
from .algorithms.clustering.clusters_to_classes import ClustersToClassesAlgorithm
from .algorithms.clustering.create_annotation_layer import CreateAnnotationLayerAlgorithm
from .algorithms.clustering.deep_cluster import DeepClusterAlgorithm
from .algorithms.clustering.evaluate_clusters import EvaluateClustersAlgorithm
from .algorithms.clustering.extract_clusters import ExtractClustersAlgorithm
from .algorithms.clustering.label_patches import LabelPatchesAlgorithm
from .algorithms.clustering.pretrain_scene import PretrainSceneAlgorithm
from .algorithms.clustering.train_clusternet import TrainClusterNetAlgorithm
from .algorithms.export.export_cog import ExportCogAlgorithm
from .algorithms.export.export_onnx import ExportOnnxAlgorithm
from .algorithms.export.export_vector import ExportVectorAlgorithm
from .algorithms.patching.patch_raster import PatchRasterAlgorithm
from .algorithms.population.optical_flow import OpticalFlowAlgorithm
from .algorithms.population.population_clusters import PopulationClustersAlgorithm
from .algorithms.population.track_communities import TrackCommunitiesAlgorithm
from .algorithms.segmentation.evaluate_segmentation import EvaluateSegmentationAlgorithm
from .algorithms.segmentation.export_rle import ExportRleAlgorithm
from .algorithms.segmentation.import_rle import ImportRleAlgorithm
from .algorithms.segmentation.pretrain_encoder import PretrainEncoderAlgorithm
from .algorithms.segmentation.segment_raster import SegmentRasterAlgorithm
from .algorithms.segmentation.train_segmentation import TrainSegmentationAlgorithm
from .base import ICON_PATH

__all__ = ["SatSegProvider", "ALGORITHMS"]

#: Every algorithm class the provider offers.
ALGORITHMS = (PatchRasterAlgorithm, PretrainEncoderAlgorithm, TrainSegmentationAlgorithm, SegmentRasterAlgorithm,
              ExportRleAlgorithm, ImportRleAlgorithm, EvaluateSegmentationAlgorithm,
              TrainClusterNetAlgorithm, ClusterRasterAlgorithm, ClustersToClassesAlgorithm, EvaluateClustersAlgorithm,
              CreateAnnotationLayerAlgorithm, LabelPatchesAlgorithm, PretrainSceneAlgorithm, DeepClusterAlgorithm,
              ExtractClustersAlgorithm, OpticalFlowAlgorithm, PopulationClustersAlgorithm, TrackCommunitiesAlgorithm,
              ExportCogAlgorithm, ExportVectorAlgorithm, ExportOnnxAlgorithm)


class SatSegProvider(QgsProcessingProvider):
    """Processing provider with id ``satseg``."""

    def id(self) -> str:
        return "satseg"

    def name(self) -> str:
        return "SatSeg"

    def longName(self) -> str:
        return QCoreApplication.translate(
            "SatSeg", "SatSeg {} — segmentation, clustering and population tracking of satellite imagery"
        ).format(__version__)

    def versionInfo(self) -> str:
        return __version__

    def icon(self) -> QIcon:
        return QIcon(ICON_PATH)

    def svgIconPath(self) -> str:
        return ICON_PATH

    def loadAlgorithms(self) -> None:
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
