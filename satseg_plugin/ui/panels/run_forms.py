"""The dock's *Run* tab: forms for the common workflows, each a chain of SatSeg Processing algorithms run in the
background (see :mod:`.tasks`): train + segment, cluster, and track (when the population algorithms are
installed). Outputs go to a new folder under the dock's results folder and are added to the map, styled."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from qgis.core import (
    Qgis,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.gui import QgsFieldComboBox, QgsFileWidget
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QToolBox,
    QVBoxLayout,
    QWidget,
)

from ...core.deps import find_missing
from ...processing.algorithms.clustering.cluster_raster import ClusterRasterAlgorithm
from ...processing.algorithms.clustering.train_clusternet import TrainClusterNetAlgorithm
from ...processing.algorithms.export.export_cog import ExportCogAlgorithm
from ...processing.algorithms.export.export_vector import FORMATS as VECTOR_FORMATS
from ...processing.algorithms.export.export_vector import ExportVectorAlgorithm
from ...processing.algorithms.population.optical_flow import OpticalFlowAlgorithm
from ...processing.algorithms.population.population_clusters import PopulationClustersAlgorithm
from ...processing.algorithms.population.track_communities import TrackCommunitiesAlgorithm
from ...processing.algorithms.segmentation.export_rle import ExportRleAlgorithm
from ...processing.algorithms.segmentation.segment_raster import SegmentRasterAlgorithm
from ...processing.algorithms.segmentation.train_segmentation import TrainSegmentationAlgorithm
from ...processing.parameters import MODEL_FILE_FILTER
from ..tasks import Step, on_map
from .annotate import annotation_classes, class_field_of
from .form_base import WorkflowForm, algorithm_parameter, combo_box, enum_combo, layer_combo, spin_box

__all__ = ["RunPanel", "WorkflowForm", "TrainSegmentForm", "ClusterForm", "TrackForm", "ExportForm", "SegmentForm",
           "TRACK_ALGORITHMS",
           "algorithm_parameter"]

TRAIN, SEGMENT = TrainSegmentationAlgorithm, SegmentRasterAlgorithm
CLUSTERNET, CLUSTER = TrainClusterNetAlgorithm, ClusterRasterAlgorithm
FLOW, COMMUNITIES, TRACK = OpticalFlowAlgorithm, PopulationClustersAlgorithm, TrackCommunitiesAlgorithm
#: The population tracking chain, in order (the track form appears only when all three are registered).
TRACK_ALGORITHMS = tuple(a.algorithm_id() for a in (FLOW, COMMUNITIES, TRACK))


class TrainSegmentForm(WorkflowForm):
    """Train a segmentation model from annotation polygons, then segment the raster with it."""

    title = "Train + segment"
    algorithms = (TRAIN.algorithm_id(), SEGMENT.algorithm_id())
    prefix = "segmentation"

    def __init__(self, host, parent: Optional[QWidget] = None) -> None:
        super().__init__(host, parent)
        self.raster = layer_combo(QgsMapLayerProxyModel.RasterLayer, "satsegTrainRaster")
        self.labels = layer_combo(QgsMapLayerProxyModel.PolygonLayer, "satsegTrainLabels")
        self.class_field = QgsFieldComboBox()
        self.class_field.setObjectName("satsegTrainClassField")
        self.class_field.setAllowEmptyFieldName(True)
        self.class_field_note = QLabel(self)
        self.class_field_note.setObjectName("satsegTrainClassFieldNote")
        self.class_field_note.setWordWrap(True)
        self.class_field.setToolTip(self.tr("Empty: every polygon is a building (one class). With a field: each "
                                            "value is a class."))
        self.aoi = layer_combo(QgsMapLayerProxyModel.PolygonLayer, "satsegTrainAoi", optional=True)
        self.aoi.setToolTip(self.tr("Where the annotations are complete (unlabelled pixels there are background). "
                                    "Empty: the whole raster."))
        self.architecture = enum_combo(TRAIN, TRAIN.ARCHITECTURE, "satsegArchitecture")
        # The toolbox's drop-down (choices and default from the algorithm); editable, as scripts may pass any
        # smp encoder or tu-<timm name> as ENCODER (the toolbox dialog has ENCODER_NAME for that).
        encoder = algorithm_parameter(TRAIN, TRAIN.ENCODER)
        self.encoder = combo_box(encoder.options(), "satsegEncoder", editable=True)
        self.encoder.setCurrentText(encoder.defaultValue())
        self.encoder.setToolTip(self.tr("Choose an encoder, or type any segmentation-models-pytorch encoder or "
                                        "tu-<timm name>"))
        self.encoder_weights = enum_combo(TRAIN, TRAIN.ENCODER_WEIGHTS, "satsegEncoderWeights")
        self.encoder_weights.setToolTip(self.tr("auto: ImageNet weights when cached or downloadable, else random. "
                                                "A weights file can be chosen in the Processing toolbox."))
        self.init_weights = QgsFileWidget()
        self.init_weights.setObjectName("satsegInitWeights")
        self.init_weights.setFilter(self.tr("SatSeg model (*.satseg)"))
        self.init_weights.setToolTip(self.tr("Optional: a SatSeg model file to start from: a segmentation model "
                                             "(every weight), or a ClusterNet, scene classifier or pretrained "
                                             "encoder (satseg:pretrainencoder) with the same encoder (its "
                                             "encoder). Overrides the encoder weights."))
        self.max_minutes = spin_box(TRAIN, TRAIN.MAX_MINUTES, 100000, name="satsegMaxMinutes")
        self.max_minutes.setSpecialValueText(self.tr("no limit"))
        self.max_minutes.setToolTip(self.tr("Training ends within this time, its learning-rate schedule fitted to "
                                            "it."))
        self.epochs = spin_box(TRAIN, TRAIN.EPOCHS, 1000, name="satsegEpochs")
        self.patch_size = spin_box(TRAIN, TRAIN.PATCH_SIZE, 2048, 32, "satsegPatchSize")
        self.batch_size = spin_box(TRAIN, TRAIN.BATCH_SIZE, 512, name="satsegBatchSize")
        self.batches_per_epoch = spin_box(TRAIN, TRAIN.BATCHES_PER_EPOCH, 100000, name="satsegBatchesPerEpoch")
        self.batches_per_epoch.setSpecialValueText(self.tr("auto"))
        self.min_area = spin_box(SEGMENT, SEGMENT.MIN_AREA, 1000000, name="satsegMinArea")
        self.min_area.setDecimals(0)
        self.device = enum_combo(TRAIN, TRAIN.DEVICE, "satsegDevice")
        for label, widget in ((self.tr("Raster"), self.raster), (self.tr("Annotations"), self.labels),
                              (self.tr("Class field"), self.class_field), (self.tr("Labels complete in"), self.aoi),
                              (self.tr("Architecture"), self.architecture), (self.tr("Encoder"), self.encoder),
                              (self.tr("Encoder weights"), self.encoder_weights),
                              (self.tr("Start from model"), self.init_weights),
                              (self.tr("Time limit (min)"), self.max_minutes), (self.tr("Epochs (max)"), self.epochs)):
            self.form.addRow(label, widget)
        for label, widget in ((self.tr("Patch size (px)"), self.patch_size), (self.tr("Batch size"), self.batch_size),
                              (self.tr("Batches per epoch"), self.batches_per_epoch),
                              (self.tr("Min. polygon area (m²)"), self.min_area), (self.tr("Device"), self.device)):
            self.advanced_form.addRow(label, widget)
        self.form.addRow(self.class_field_note)
        self.labels.layerChanged.connect(self._labels_changed)
        self.class_field.fieldChanged.connect(self._describe_classes)
        self._labels_changed(self.labels.currentLayer())

    def _labels_changed(self, layer) -> None:
        self.class_field.setLayer(layer)
        field = class_field_of(layer) if isinstance(layer, QgsVectorLayer) else ""
        # Several classes in the layer: multi-class by default; one class: the binary 'building' model.
        many = bool(field) and len(annotation_classes(layer, field)) > 1
        self.class_field.setField(field if many else "")
        self._describe_classes(self.class_field.currentField())

    def _describe_classes(self, field: str) -> None:
        """Say what the model will learn: the classes of ``field``, or one class (buildings)."""
        layer = self.labels.currentLayer()
        if not isinstance(layer, QgsVectorLayer):
            self.class_field_note.setText("")
        elif field:
            names = annotation_classes(layer, field)
            shown = ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
            self.class_field_note.setText(self.tr("Trains {} classes from '{}': {}.").format(len(names), field, shown))
        else:
            self.class_field_note.setText(self.tr("Trains one class: every polygon is a building (choose a class "
                                                  "field for one class per value)."))

    def prepare(self) -> None:
        layer = self.labels.currentLayer()
        if isinstance(layer, QgsVectorLayer) and layer.isEditable() and layer.isModified():
            if not layer.commitChanges(False):
                raise ValueError(self.tr("Could not save the edits of {}: {}").format(
                    layer.name(), "; ".join(layer.commitErrors())))
            self.host.message(self.tr("Saved the edits of {} before training.").format(layer.name()), Qgis.Info)

    def steps(self, folder: str) -> List[Step]:
        raster, labels = self.raster.currentLayer(), self.labels.currentLayer()
        if not isinstance(raster, QgsRasterLayer):
            raise ValueError(self.tr("Choose the raster to train on."))
        if not isinstance(labels, QgsVectorLayer) or labels.featureCount() == 0:
            raise ValueError(self.tr("Choose an annotation layer with polygons (draw some in the Annotate tab)."))
        project = QgsProject.instance()
        aoi = self.aoi.currentLayer()
        train = {TRAIN.INPUT: raster.id(), TRAIN.LABELS: labels.id(),
                 TRAIN.CLASS_FIELD: self.class_field.currentField() or None,
                 TRAIN.AOI: aoi.id() if aoi is not None else None, TRAIN.ARCHITECTURE: self.architecture.currentIndex(),
                 TRAIN.ENCODER: self.encoder.currentText().strip(),
                 TRAIN.ENCODER_WEIGHTS: self.encoder_weights.currentIndex(),
                 TRAIN.INIT_WEIGHTS: self.init_weights.filePath().strip() or None,
                 TRAIN.MAX_MINUTES: self.max_minutes.value(), TRAIN.EPOCHS: self.epochs.value(),
                 TRAIN.PATCH_SIZE: self.patch_size.value(), TRAIN.BATCH_SIZE: self.batch_size.value(),
                 TRAIN.BATCHES_PER_EPOCH: self.batches_per_epoch.value(), TRAIN.DEVICE: self.device.currentIndex(),
                 TRAIN.OUTPUT_MODEL: os.path.join(folder, "model.satseg"),
                 TRAIN.OUTPUT_LOG: os.path.join(folder, "training_log.csv"),
                 TRAIN.OUTPUT_PLOT: os.path.join(folder, "training_curves.png")}

        def segment(results: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
            return {SEGMENT.INPUT: raster.id(), SEGMENT.MODELS: [results[TRAIN.algorithm_id()][TRAIN.OUTPUT_MODEL]],
                    SEGMENT.MIN_AREA: float(self.min_area.value()), SEGMENT.DEVICE: self.device.currentIndex(),
                    SEGMENT.OUTPUT_PROBABILITY: on_map(os.path.join(folder, "probability.tif"), project),
                    SEGMENT.OUTPUT_MASK: on_map(os.path.join(folder, "mask.tif"), project),
                    SEGMENT.OUTPUT_POLYGONS: on_map(os.path.join(folder, "polygons.gpkg"), project)}

        return [Step(TRAIN.algorithm_id(), lambda _results: train), Step(SEGMENT.algorithm_id(), segment)]


class ClusterForm(WorkflowForm):
    """Train ClusterNet on a raster without labels, then write its cluster raster.

    Signals:
        clustersReady(QgsRasterLayer): the cluster raster, once on the map.
    """

    title = "Cluster"
    algorithms = (CLUSTERNET.algorithm_id(), CLUSTER.algorithm_id())
    prefix = "clusters"
    clustersReady = pyqtSignal(object)

    def __init__(self, host, parent: Optional[QWidget] = None) -> None:
        super().__init__(host, parent)
        self.raster = layer_combo(QgsMapLayerProxyModel.RasterLayer, "satsegClusterInput")
        self.clusters = spin_box(CLUSTERNET, CLUSTERNET.NUM_CLUSTERS, 1000, name="satsegNumClusters")
        self.rounds = spin_box(CLUSTERNET, CLUSTERNET.ROUNDS, 1000, name="satsegRounds")
        self.steps_per_round = spin_box(CLUSTERNET, CLUSTERNET.STEPS_PER_ROUND, 100000, name="satsegStepsPerRound")
        self.crop = spin_box(CLUSTERNET, CLUSTERNET.PATCH_SIZE, 2048, 32, "satsegCropSize")
        self.device = enum_combo(CLUSTERNET, CLUSTERNET.DEVICE, "satsegClusterDevice")
        self.form.addRow(self.tr("Raster"), self.raster)
        self.form.addRow(self.tr("Clusters"), self.clusters)
        self.form.addRow(self.tr("Rounds"), self.rounds)
        self.advanced_form.addRow(self.tr("Batches per round"), self.steps_per_round)
        self.advanced_form.addRow(self.tr("Crop size (px)"), self.crop)
        self.advanced_form.addRow(self.tr("Device"), self.device)

    def steps(self, folder: str) -> List[Step]:
        raster = self.raster.currentLayer()
        if not isinstance(raster, QgsRasterLayer):
            raise ValueError(self.tr("Choose the raster to cluster."))
        project = QgsProject.instance()
        train = {CLUSTERNET.INPUT: [raster.id()], CLUSTERNET.NUM_CLUSTERS: self.clusters.value(),
                 CLUSTERNET.ROUNDS: self.rounds.value(), CLUSTERNET.STEPS_PER_ROUND: self.steps_per_round.value(),
                 CLUSTERNET.PATCH_SIZE: self.crop.value(), CLUSTERNET.DEVICE: self.device.currentIndex(),
                 CLUSTERNET.OUTPUT_MODEL: os.path.join(folder, "clusternet.satseg"),
                 CLUSTERNET.OUTPUT_LOG: os.path.join(folder, "clusternet_rounds.csv")}

        def cluster(results: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
            model = results[CLUSTERNET.algorithm_id()][CLUSTERNET.OUTPUT_MODEL]
            return {CLUSTER.INPUT: raster.id(), CLUSTER.MODEL: model,
                    CLUSTER.DEVICE: self.device.currentIndex(),
                    CLUSTER.OUTPUT: on_map(os.path.join(folder, "clusters.tif"), project)}

        return [Step(CLUSTERNET.algorithm_id(), lambda _results: train), Step(CLUSTER.algorithm_id(), cluster)]

    def finished(self, ok: bool, results: Dict[str, Any]) -> None:
        rasters = [layer for layer in (self.chain.layers if self.chain else []) if isinstance(layer, QgsRasterLayer)]
        if ok and rasters:
            self.clustersReady.emit(rasters[-1])


class TrackForm(WorkflowForm):
    """Population tracking over time: optical flow between frames, communities per frame, then communities tracked
    across frames (the flow arrows, track lines and tracked communities are added to the map)."""

    title = "Track"
    algorithms = TRACK_ALGORITHMS
    prefix = "tracks"

    def __init__(self, host, parent: Optional[QWidget] = None) -> None:
        super().__init__(host, parent)
        self.frames = QListWidget(self)
        self.frames.setObjectName("satsegTrackFrames")
        self.frames.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.frames.setToolTip(self.tr("Tick the frames, drag them into time order"))
        self.form.addRow(self.tr("Frames (in time order)"), self.frames)
        self.refresh_button = QPushButton(self.tr("Refresh the list"), self)
        self.refresh_button.clicked.connect(self.refresh_frames)
        self.form.addRow("", self.refresh_button)
        self.k = spin_box(COMMUNITIES, COMMUNITIES.K, 1000, name="satsegTrackK")
        self.eps = spin_box(COMMUNITIES, COMMUNITIES.EPS, 10000.0, name="satsegTrackEps")
        self.min_samples = spin_box(COMMUNITIES, COMMUNITIES.MIN_SAMPLES, 1000000, name="satsegTrackMinSamples")
        self.epochs = spin_box(COMMUNITIES, COMMUNITIES.EPOCHS, 100000, name="satsegTrackEpochs")
        self.centres = spin_box(COMMUNITIES, COMMUNITIES.CENTRES_PER_EPOCH, 10000000, name="satsegTrackCentres")
        self.device = enum_combo(COMMUNITIES, COMMUNITIES.DEVICE, "satsegTrackDevice")
        self.form.addRow(self.tr("k-means clusters (K)"), self.k)
        self.form.addRow(self.tr("DBSCAN radius (px)"), self.eps)
        self.form.addRow(self.tr("DBSCAN min. samples"), self.min_samples)
        self.advanced_form.addRow(self.tr("Autoencoder epochs"), self.epochs)
        self.advanced_form.addRow(self.tr("Window centres per epoch"), self.centres)
        self.advanced_form.addRow(self.tr("Device"), self.device)
        self.refresh_frames()

    def refresh_frames(self) -> None:
        """List the project's raster layers (keeping ticks and order of those already listed)."""
        ticked = {self.frames.item(i).data(Qt.ItemDataRole.UserRole): self.frames.item(i).checkState()
                  for i in range(self.frames.count())}
        order = list(ticked)
        layers = [layer for layer in QgsProject.instance().mapLayers().values() if isinstance(layer, QgsRasterLayer)]
        layers.sort(key=lambda layer: (order.index(layer.id()) if layer.id() in order else len(order), layer.name()))
        self.frames.clear()
        for layer in layers:
            item = QListWidgetItem(layer.name())
            item.setData(Qt.ItemDataRole.UserRole, layer.id())
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(ticked.get(layer.id(), Qt.CheckState.Unchecked))
            self.frames.addItem(item)

    def frame_ids(self) -> List[str]:
        """The ticked frames' layer ids, in list order."""
        return [self.frames.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.frames.count())
                if self.frames.item(i).checkState() == Qt.CheckState.Checked]

    def steps(self, folder: str) -> List[Step]:
        frames = self.frame_ids()
        if len(frames) < 2:
            raise ValueError(self.tr("Tick at least two frames (population rasters of the same area at different "
                                     "times)."))
        project = QgsProject.instance()
        device = self.device.currentIndex()
        flow = {FLOW.FRAMES: frames, FLOW.DEVICE: device, FLOW.OUTPUT_DIR: os.path.join(folder, "flow"),
                FLOW.OUTPUT_VECTORS: on_map(os.path.join(folder, "flow_arrows.gpkg"), project)}

        def communities(results: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
            return {COMMUNITIES.FRAMES: frames, COMMUNITIES.FLOWS: results[FLOW.algorithm_id()][FLOW.FLOWS],
                    COMMUNITIES.K: self.k.value(), COMMUNITIES.EPS: self.eps.value(),
                    COMMUNITIES.MIN_SAMPLES: self.min_samples.value(), COMMUNITIES.EPOCHS: self.epochs.value(),
                    COMMUNITIES.CENTRES_PER_EPOCH: self.centres.value(), COMMUNITIES.DEVICE: device,
                    COMMUNITIES.OUTPUT_DIR: os.path.join(folder, "segments"),
                    COMMUNITIES.OUTPUT_COMMUNITIES: os.path.join(folder, "communities.gpkg")}

        def tracks(results: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
            found = results[COMMUNITIES.algorithm_id()]
            return {TRACK.SEGMENTS: found[COMMUNITIES.SEGMENTS], TRACK.FLOWS: results[FLOW.algorithm_id()][FLOW.FLOWS],
                    TRACK.FRAMES: frames, TRACK.COMMUNITIES: found[COMMUNITIES.OUTPUT_COMMUNITIES],
                    TRACK.OUTPUT_LINKS: os.path.join(folder, "links.gpkg"),
                    TRACK.OUTPUT_TRACKS: on_map(os.path.join(folder, "tracks.gpkg"), project),
                    TRACK.OUTPUT_COMMUNITIES: on_map(os.path.join(folder, "tracked_communities.gpkg"), project)}

        return [Step(FLOW.algorithm_id(), lambda _results: flow), Step(COMMUNITIES.algorithm_id(), communities),
                Step(TRACK.algorithm_id(), tracks)]


#: Export choices: (label, algorithm, extension, FORMAT value of exportvector or None)
RASTER_EXPORTS = (("Cloud-Optimised GeoTIFF", ExportCogAlgorithm, ".tif", None),
                  ("Competition RLE CSV (mask, 224 px tiles)", ExportRleAlgorithm, ".csv", None))
VECTOR_EXPORTS = tuple((label, ExportVectorAlgorithm, extension, index)
                       for index, (label, _driver, extension) in enumerate(VECTOR_FORMATS))


class ExportForm(WorkflowForm):
    """Export a result: polygons (buildings, communities, tracks) to GeoPackage / GeoJSON / Shapefile, rasters as
    Cloud-Optimised GeoTIFF, a segmentation mask as competition RLE CSV. The file goes to a new folder under the
    results folder; its path is shown when done."""

    title = "Export"
    algorithms = (ExportCogAlgorithm.algorithm_id(), ExportVectorAlgorithm.algorithm_id(),
                  ExportRleAlgorithm.algorithm_id())
    prefix = "export"

    def __init__(self, host, parent: Optional[QWidget] = None) -> None:
        super().__init__(host, parent)
        self.layer = layer_combo(QgsMapLayerProxyModel.RasterLayer | QgsMapLayerProxyModel.VectorLayer,
                                  "satsegExportLayer")
        self.format = combo_box((), "satsegExportFormat")
        self.form.addRow(self.tr("Layer"), self.layer)
        self.form.addRow(self.tr("Format"), self.format)
        self.advanced.setVisible(False)
        self.run_button.setText(self.tr("Export"))
        self.written = ""
        self.output_key = ExportCogAlgorithm.OUTPUT
        self.layer.layerChanged.connect(self._layer_changed)
        self._layer_changed(self.layer.currentLayer())

    def choices(self):
        """The export choices for the current layer."""
        layer = self.layer.currentLayer()
        if isinstance(layer, QgsRasterLayer):
            return RASTER_EXPORTS
        return VECTOR_EXPORTS if isinstance(layer, QgsVectorLayer) else ()

    def _layer_changed(self, _layer) -> None:
        self.format.clear()
        self.format.addItems([self.tr(label) for label, *_ in self.choices()])

    def steps(self, folder: str) -> List[Step]:
        layer, choices = self.layer.currentLayer(), self.choices()
        if layer is None or not choices:
            raise ValueError(self.tr("Choose a layer to export."))
        _label, algorithm, extension, fmt = choices[max(self.format.currentIndex(), 0)]
        self.output_key = algorithm.OUTPUT
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in layer.name()) or "layer"
        params: Dict[str, Any] = {algorithm.INPUT: layer, algorithm.OUTPUT: os.path.join(folder, name + extension)}
        if fmt is not None:
            params[ExportVectorAlgorithm.FORMAT] = fmt
        return [Step(algorithm.algorithm_id(), lambda _results: params)]

    def finished(self, ok: bool, results: Dict[str, Any]) -> None:
        if ok:
            outputs = next(iter(results.values()), {}) if results else {}
            self.written = outputs.get(self.output_key, "")
            self.host.message(self.tr("Exported to {}").format(self.written), Qgis.Success)


class SegmentForm(WorkflowForm):
    """Segment a raster with a model trained before (a ``.satseg`` file, or an ``.onnx`` model)."""

    title = "Segment with a model"
    algorithms = (SEGMENT.algorithm_id(),)
    prefix = "segmentation"

    def __init__(self, host, parent: Optional[QWidget] = None) -> None:
        super().__init__(host, parent)
        self.raster = layer_combo(QgsMapLayerProxyModel.RasterLayer, "satsegSegmentRaster")
        self.model = QgsFileWidget()
        self.model.setObjectName("satsegSegmentModel")
        self.model.setFilter(MODEL_FILE_FILTER)  # the toolbox's MODELS filter
        self.model.setToolTip(self.tr("A model written by 'Train + segment' (model.satseg in its results folder) "
                                      "or by Train segmentation"))
        self.min_area = spin_box(SEGMENT, SEGMENT.MIN_AREA, 1000000, name="satsegSegmentMinArea")
        self.min_area.setDecimals(0)
        self.device = enum_combo(SEGMENT, SEGMENT.DEVICE, "satsegSegmentDevice")
        self.form.addRow(self.tr("Raster"), self.raster)
        self.form.addRow(self.tr("Model file"), self.model)
        self.advanced_form.addRow(self.tr("Min. polygon area (m²)"), self.min_area)
        self.advanced_form.addRow(self.tr("Device"), self.device)

    def steps(self, folder: str) -> List[Step]:
        raster, model = self.raster.currentLayer(), self.model.filePath().strip()
        if not isinstance(raster, QgsRasterLayer):
            raise ValueError(self.tr("Choose the raster to segment."))
        if not model or not os.path.isfile(model):
            raise ValueError(self.tr("Choose the model file (.satseg or .onnx), e.g. model.satseg in a "
                                     "segmentation_… results folder."))
        project = QgsProject.instance()
        params = {SEGMENT.INPUT: raster.id(), SEGMENT.MODELS: [model], SEGMENT.MIN_AREA: float(self.min_area.value()),
                  SEGMENT.DEVICE: self.device.currentIndex(),
                  SEGMENT.OUTPUT_PROBABILITY: on_map(os.path.join(folder, "probability.tif"), project),
                  SEGMENT.OUTPUT_MASK: on_map(os.path.join(folder, "mask.tif"), project),
                  SEGMENT.OUTPUT_POLYGONS: on_map(os.path.join(folder, "polygons.gpkg"), project)}
        return [Step(SEGMENT.algorithm_id(), lambda _results: params)]


class RunPanel(QWidget):
    """The *Run* tab: one page per workflow, and a note with an *Install…* button while packages are missing."""

    def __init__(self, host, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.host = host
        layout = QVBoxLayout(self)
        self.missing_note = QLabel(self)
        self.missing_note.setObjectName("satsegMissingPackages")
        self.missing_note.setWordWrap(True)
        self.missing_note.setStyleSheet("color: #9a6700;")
        self.install_button = QPushButton(self.tr("Install Python packages…"), self)
        self.install_button.setObjectName("satsegInstallPackages")
        self.install_button.clicked.connect(self._open_installer)
        layout.addWidget(self.missing_note)
        layout.addWidget(self.install_button)
        self.toolbox = QToolBox(self)
        self.train_form = TrainSegmentForm(host, self)
        self.cluster_form = ClusterForm(host, self)
        self.track_form = TrackForm(host, self)
        self.export_form = ExportForm(host, self)
        self.segment_form = SegmentForm(host, self)
        self.forms = [self.train_form, self.cluster_form, self.track_form, self.export_form, self.segment_form]
        self.titles = [self.tr("Train + segment"), self.tr("Cluster"), self.tr("Track populations"), self.tr("Export"),
                       self.tr("Segment with an existing model")]
        for form, title in zip(self.forms, self.titles):
            self.toolbox.addItem(form, title)
        layout.addWidget(self.toolbox)
        self.refresh_availability()
        self.refresh_missing()

    def refresh_missing(self) -> Dict[str, str]:
        """Show which required packages QGIS's Python cannot import (fast: nothing is imported); returns them."""
        missing = find_missing()
        names = ", ".join(sorted(set(missing.values())))
        self.missing_note.setText(self.tr("These tools need Python packages QGIS's Python cannot import: {}. Install "
                                          "them first (no administrator rights needed).").format(names))
        for widget in (self.missing_note, self.install_button):
            widget.setVisible(bool(missing))
        return missing

    def _open_installer(self) -> None:
        from ..dialogs.installer import show_installer  # lazy: the installer dialog is rarely needed

        dialog = show_installer(self.window())
        dialog.installFinished.connect(lambda _ok, _result: self.refresh_missing())

    def refresh_availability(self) -> None:
        """Mark the forms whose algorithms are not registered (the population ones may be missing)."""
        for index, (form, title) in enumerate(zip(self.forms, self.titles)):
            usable = form.refresh_availability()
            self.toolbox.setItemText(index, title if usable else self.tr("{} (not installed)").format(title))
