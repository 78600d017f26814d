"""The ``satseg`` Processing provider: lists SatSeg's algorithms in the toolbox, modeler and qgis_process."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..engine.version import __version__
from .base import ICON_PATH
from .cluster_raster import ClusterRasterAlgorithm
from .clusters_to_classes import ClustersToClassesAlgorithm
from .create_annotation_layer import CreateAnnotationLayerAlgorithm
from .deep_cluster import DeepClusterAlgorithm
from .evaluate_clusters import EvaluateClustersAlgorithm
from .evaluate_segmentation import EvaluateSegmentationAlgorithm
from .export_cog import ExportCogAlgorithm
from .export_rle import ExportRleAlgorithm
from .export_vector import ExportVectorAlgorithm
from .extract_clusters import ExtractClustersAlgorithm
from .import_rle import ImportRleAlgorithm
from .label_patches import LabelPatchesAlgorithm
from .optical_flow import OpticalFlowAlgorithm
from .patch_raster import PatchRasterAlgorithm
from .population_clusters import PopulationClustersAlgorithm
from .pretrain_scene import PretrainSceneAlgorithm
from .segment_raster import SegmentRasterAlgorithm
from .track_communities import TrackCommunitiesAlgorithm
from .train_clusternet import TrainClusterNetAlgorithm
from .train_segmentation import TrainSegmentationAlgorithm

__all__ = ["SatSegProvider", "ALGORITHMS"]

#: Every algorithm class the provider offers.
ALGORITHMS = (PatchRasterAlgorithm, TrainSegmentationAlgorithm, SegmentRasterAlgorithm,
              ExportRleAlgorithm, ImportRleAlgorithm, EvaluateSegmentationAlgorithm,
              TrainClusterNetAlgorithm, ClusterRasterAlgorithm, ClustersToClassesAlgorithm, EvaluateClustersAlgorithm,
              CreateAnnotationLayerAlgorithm, LabelPatchesAlgorithm, PretrainSceneAlgorithm, DeepClusterAlgorithm,
              ExtractClustersAlgorithm, OpticalFlowAlgorithm, PopulationClustersAlgorithm, TrackCommunitiesAlgorithm,
              ExportCogAlgorithm, ExportVectorAlgorithm)


class SatSegProvider(QgsProcessingProvider):
    """Processing provider with id ``satseg``."""

    def id(self) -> str:  # noqa: D102
        return "satseg"

    def name(self) -> str:  # noqa: D102
        return "SatSeg"

    def longName(self) -> str:  # noqa: N802, D102
        return QCoreApplication.translate(
            "SatSeg", "SatSeg {} — segmentation, clustering and population tracking of satellite imagery"
        ).format(__version__)

    def versionInfo(self) -> str:  # noqa: N802, D102
        return __version__

    def icon(self) -> QIcon:  # noqa: D102
        return QIcon(ICON_PATH)

    def svgIconPath(self) -> str:  # noqa: N802, D102
        return ICON_PATH

    def loadAlgorithms(self) -> None:  # noqa: N802, D102
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
