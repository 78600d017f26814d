"""The dock's *Label clusters* tab: click on a cluster raster to give the clicked pixel's cluster the current
class, see the classes on the map at once, save the table, and make the class raster with
``satseg:clusterstoclasses`` in the background."""

from __future__ import annotations

import math
import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from qgis.core import (
    Qgis,
    QgsMapLayerProxyModel,
    QgsPalettedRasterRenderer,
    QgsPointXY,
    QgsProject,
    QgsRasterBandStats,
    QgsRasterLayer,
)
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...core.errors import SatSegError
from ..tasks import AlgorithmChain, Step, on_map
from ..widgets.class_picker import ClassPicker, swatch
from ..widgets.flow_layout import FlowLayout, fixed_height_for_width
from ..widgets.layer_choice import is_cluster_raster, keep_fitting
from ..widgets.map_tools import PointClickTool
from .annotate import unique_path

__all__ = ["LabelClustersPanel", "mapping_text", "cluster_values", "preview_renderer", "UNASSIGNED"]

#: How clusters nobody has named yet are drawn in the preview.
UNASSIGNED = QColor(150, 150, 150, 80)
#: At most this many cluster values are read from band statistics (rasters without a palette).
MAX_CLUSTERS = 4096


def _runs(ids: Sequence[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3,5"``."""
    parts: List[str] = []
    ids = sorted(ids)
    start = prev = ids[0]
    for value in ids[1:] + [None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        parts.append(str(start) if start == prev else (f"{start},{prev}" if prev == start + 1 else f"{start}-{prev}"))
        if value is not None:
            start = prev = value
    return ",".join(parts)


def mapping_text(mapping: Dict[int, str], order: Iterable[str] = ()) -> str:
    """``{1: 'building', 4: 'building', 2: 'water'}`` -> ``"1,4=building; 2=water"`` (what ``clusterstoclasses``
    reads). Classes come in ``order`` first (their class ids follow it), then in order of first use."""
    names = [n for n in dict.fromkeys(list(order) + list(mapping.values())) if n in mapping.values()]
    return "; ".join(f"{_runs([c for c, n in mapping.items() if n == name])}={name}" for name in names)


def cluster_values(layer: QgsRasterLayer, renderer=None) -> List[int]:
    """The cluster ids of ``layer``: from a paletted ``renderer``, else band 1's colour table, else the integers
    between the band's minimum and maximum (at most :data:`MAX_CLUSTERS`); nodata excluded."""
    provider = layer.dataProvider()
    if isinstance(renderer, QgsPalettedRasterRenderer) and renderer.classes():
        values = [int(c.value) for c in renderer.classes()]
    elif provider.colorTable(1):
        values = [int(c.value) for c in QgsPalettedRasterRenderer.colorTableToClassData(provider.colorTable(1))
                  if c.color.alpha() > 0]
    else:
        stats = provider.bandStatistics(1, QgsRasterBandStats.Min | QgsRasterBandStats.Max)
        low, high = int(math.floor(stats.minimumValue)), int(math.ceil(stats.maximumValue))
        values = list(range(low, min(high, low + MAX_CLUSTERS - 1) + 1))
    if provider.sourceHasNoDataValue(1):
        values = [v for v in values if v != provider.sourceNoDataValue(1)]
    return sorted(set(values))


def preview_renderer(layer: QgsRasterLayer, mapping: Dict[int, str], colour: Callable[[str], QColor],
                     values: Iterable[int]) -> QgsPalettedRasterRenderer:
    """A paletted renderer drawing each named cluster in its class colour and the others in translucent grey."""
    classes = []
    for value in sorted(set(values) | set(mapping)):
        if value in mapping:
            classes.append(QgsPalettedRasterRenderer.Class(value, colour(mapping[value]),
                                                           f"{value}: {mapping[value]}"))
        else:
            classes.append(QgsPalettedRasterRenderer.Class(value, QColor(UNASSIGNED), f"{value}: –"))
    return QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes)


class LabelClustersPanel(QWidget):
    """The *Label clusters* tab. ``host`` is the dock (canvas, ``start_chain``, ``results_dir``, ``message``).

    Signals:
        mappingChanged(dict): ``{cluster id: class}`` after each change.
    """

    mappingChanged = pyqtSignal(object)

    def __init__(self, host, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.host = host
        self.canvas = host.canvas
        self.layer: Optional[QgsRasterLayer] = None
        self.mapping: Dict[int, str] = {}
        self._mappings: Dict[str, Dict[int, str]] = {}
        self._originals: Dict[str, object] = {}  # layer id -> the renderer it had before the preview

        layout = QVBoxLayout(self)
        self.start_note = QLabel(self.tr("<b>No cluster raster yet:</b> make one in the <i>Run</i> tab "
                                         "(<i>Cluster</i>), then click its clusters on the map to name them."), self)
        self.start_note.setObjectName("satsegClustersStartNote")
        self.start_note.setWordWrap(True)
        layout.addWidget(self.start_note)
        form = QFormLayout()
        self.raster_combo = QgsMapLayerComboBox(self)
        self.raster_combo.setObjectName("satsegClusterRaster")
        self.raster_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.raster_combo.setAllowEmptyLayer(True)
        self.raster_combo.setToolTip(self.tr("Integer single-band rasters (what Cluster raster writes)"))
        self.refresh_layer_choices = keep_fitting(self.raster_combo, is_cluster_raster)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        form.addRow(self.tr("Cluster raster"), self.raster_combo)
        self.classes_edit = QLineEdit("building, other", self)
        self.classes_edit.setObjectName("satsegClusterClasses")
        self.classes_edit.setToolTip(self.tr("Class names, comma-separated; their order gives the class ids"))
        form.addRow(self.tr("Classes"), self.classes_edit)
        layout.addLayout(form)
        layout.addWidget(QLabel(self.tr("Class (keys 1–9):"), self))
        self.picker = ClassPicker(self)
        layout.addWidget(self.picker)

        row = QHBoxLayout()
        self.pick_button = QPushButton(self.tr("Label by clicking"), self)
        self.pick_button.setObjectName("satsegPickClusters")
        self.pick_button.setCheckable(True)
        self.pick_button.setToolTip(self.tr("Left click: the clicked pixel's cluster takes the current class. "
                                            "Right click: the cluster loses its class."))
        row.addWidget(self.pick_button)
        self.preview_check = QCheckBox(self.tr("Preview classes on the map"), self)
        self.preview_check.setChecked(True)
        row.addWidget(self.preview_check)
        layout.addLayout(row)

        self.table = QTableWidget(0, 2, self)
        self.table.setObjectName("satsegClusterTable")
        self.table.setHorizontalHeaderLabels([self.tr("Cluster"), self.tr("Class")])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        layout.addWidget(self.table, 1)
        self.mapping_edit = QLineEdit(self)
        self.mapping_edit.setObjectName("satsegMappingText")
        self.mapping_edit.setReadOnly(True)
        self.mapping_edit.setPlaceholderText(self.tr("cluster -> class table, e.g. 1,4,7-9=building; 2=water"))
        layout.addWidget(self.mapping_edit)

        button_row = QWidget(self)
        buttons = FlowLayout(button_row)
        fixed_height_for_width(button_row)
        self.remove_button = QPushButton(self.tr("Remove"), self)
        self.clear_button = QPushButton(self.tr("Clear"), self)
        self.load_button = QPushButton(self.tr("Load…"), self)
        self.save_button = QPushButton(self.tr("Save…"), self)
        self.make_button = QPushButton(self.tr("Make classes"), self)
        self.make_button.setObjectName("satsegMakeClasses")
        self.make_button.setToolTip(self.tr("Run 'Clusters to classes' with this table in the background"))
        for button in (self.remove_button, self.clear_button, self.load_button, self.save_button, self.make_button):
            buttons.addWidget(button)
        layout.addWidget(button_row)

        self.tool = PointClickTool(self.canvas)
        self.tool.setButton(self.pick_button)
        self.tool.clicked.connect(self.click)
        self.tool.classKeyPressed.connect(self.picker.select)
        self.raster_combo.layerChanged.connect(self.set_layer)
        self.classes_edit.editingFinished.connect(self._classes_edited)
        self.pick_button.clicked.connect(self._toggle_pick)
        self.preview_check.toggled.connect(self.update_preview)
        self.remove_button.clicked.connect(self._remove_selected)
        self.clear_button.clicked.connect(self.clear)
        self.load_button.clicked.connect(lambda: self.load_mapping())
        self.save_button.clicked.connect(lambda: self.save_mapping())
        self.make_button.clicked.connect(self.make_classes)
        self._classes_edited()
        self.set_layer(self.raster_combo.currentLayer())

    # -- classes and layer --------------------------------------------------------------------------------------
    def class_names(self) -> List[str]:
        """The classes typed in the Classes box, in order."""
        return list(dict.fromkeys(c.strip() for c in self.classes_edit.text().replace(";", ",").split(",")
                                  if c.strip()))

    def set_classes(self, names: Sequence[str]) -> None:
        """Use ``names`` as the classes (also written into the Classes box)."""
        self.classes_edit.setText(", ".join(names))
        self._classes_edited()

    def _classes_edited(self) -> None:
        self.picker.set_classes(self.class_names())
        self._show()

    def set_layer(self, layer) -> None:
        """Label the clusters of ``layer`` (the previous raster gets its own renderer back)."""
        layer = layer if isinstance(layer, QgsRasterLayer) and layer.isValid() else None
        if self.layer is not None:
            self._restore(self.layer)
        self.layer = layer
        if self.raster_combo.currentLayer() is not layer:
            self.raster_combo.setLayer(layer)
        self.mapping = self._mappings.setdefault(layer.id(), {}) if layer is not None else {}
        self.start_note.setVisible(layer is None)
        self._show()

    def _restore(self, layer: QgsRasterLayer) -> None:
        try:
            original = self._originals.pop(layer.id(), None)
            if original is not None:
                layer.setRenderer(original)
                layer.triggerRepaint()
        except RuntimeError:  # the layer was deleted
            pass

    def _toggle_pick(self, checked: bool) -> None:
        if not checked:
            self.canvas.unsetMapTool(self.tool)
            return
        if self.layer is None:
            self.host.message(self.tr("Choose the cluster raster first."), Qgis.Warning)
            self.pick_button.setChecked(False)
            return
        self.canvas.setMapTool(self.tool)

    # -- labelling ----------------------------------------------------------------------------------------------
    def cluster_at(self, point: QgsPointXY) -> Optional[int]:
        """The cluster id of the pixel at ``point`` (canvas CRS); None outside the raster or on nodata."""
        if self.layer is None:
            return None
        provider = self.layer.dataProvider()
        value, ok = provider.sample(self.tool.toLayerCoordinates(self.layer, point), 1)
        if not ok or value is None or math.isnan(value):
            return None
        if provider.sourceHasNoDataValue(1) and value == provider.sourceNoDataValue(1):
            return None
        return int(round(value))

    def click(self, point: QgsPointXY, button: int) -> Optional[int]:
        """A map click: the clicked cluster takes the current class (left) or loses its class (right)."""
        cluster = self.cluster_at(point)
        if cluster is None:
            self.host.message(self.tr("No cluster there (outside the raster or nodata)."), Qgis.Info)
            return None
        if button == int(Qt.MouseButton.RightButton):
            self.unassign(cluster)
        else:
            name = self.picker.current_class()
            if not name:
                self.host.message(self.tr("Type the class names first."), Qgis.Warning)
                return None
            self.assign(cluster, name)
        return cluster

    def assign(self, cluster: int, name: str) -> None:
        """Give ``cluster`` the class ``name``."""
        self.mapping[int(cluster)] = name
        self._changed()

    def unassign(self, cluster: int) -> None:
        """``cluster`` has no class any more."""
        self.mapping.pop(int(cluster), None)
        self._changed()

    def clear(self) -> None:
        """Forget every assignment of this raster."""
        self.mapping.clear()
        self._changed()

    def _remove_selected(self) -> None:
        rows = {index.row() for index in self.table.selectedIndexes()}
        for row in rows:
            self.mapping.pop(int(self.table.item(row, 0).text()), None)
        self._changed()

    def _changed(self) -> None:
        self._show()
        self.mappingChanged.emit(dict(self.mapping))

    def mapping_text(self) -> str:
        """The table as ``clusterstoclasses`` reads it, classes in the order of the Classes box."""
        return mapping_text(self.mapping, self.class_names())

    def _show(self) -> None:
        self.table.setRowCount(len(self.mapping))
        for row, cluster in enumerate(sorted(self.mapping)):
            name = self.mapping[cluster]
            self.table.setItem(row, 0, QTableWidgetItem(swatch(self.picker.colour(name)), str(cluster)))
            self.table.setItem(row, 1, QTableWidgetItem(name))
        self.mapping_edit.setText(self.mapping_text())
        self.update_preview()

    def update_preview(self, *_args) -> None:
        """Draw the raster by class (named clusters in their class colour, others grey), or as it was."""
        layer = self.layer
        if layer is None:
            return
        if not self.preview_check.isChecked():
            self._restore(layer)
            return
        if layer.id() not in self._originals:
            self._originals[layer.id()] = layer.renderer().clone() if layer.renderer() is not None else None
        values = cluster_values(layer, self._originals[layer.id()])
        layer.setRenderer(preview_renderer(layer, self.mapping, self.picker.colour, values))
        layer.triggerRepaint()

    # -- files and processing -----------------------------------------------------------------------------------
    def save_mapping(self, path: str = "") -> str:
        """Write the table to a text file (asks where when ``path`` is empty); returns the path ('' if none)."""
        if not self.mapping:
            self.host.message(self.tr("No cluster has a class yet."), Qgis.Warning)
            return ""
        if not path:
            path, _filter = QFileDialog.getSaveFileName(self, self.tr("Save cluster -> class table"),
                                                        unique_path(self.host.results_dir(), "cluster_classes", "txt"),
                                                        self.tr("Text files (*.txt)"))
            if not path:
                return ""
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.mapping_text() + "\n")
        self.host.message(self.tr("Table saved to {}.").format(path), Qgis.Info)
        return path

    def load_mapping(self, path: str = "") -> bool:
        """Read a table written by :meth:`save_mapping` (or by hand); asks for the file when ``path`` is empty."""
        if not path:
            path, _filter = QFileDialog.getOpenFileName(self, self.tr("Load cluster -> class table"),
                                                        self.host.results_dir(), self.tr("Text files (*.txt *.csv)"))
            if not path:
                return False
        from ...pipelines.clustering.pixel.classes import parse_mapping  # lazy: it needs rasterio

        try:
            with open(path, encoding="utf-8") as handle:
                mapping = parse_mapping(handle.read())
        except (OSError, SatSegError) as exc:
            self.host.message(self.tr("Cannot read {}: {}").format(path, exc), Qgis.Critical)
            return False
        missing = [n for n in dict.fromkeys(mapping.values()) if n not in self.class_names()]
        if missing:
            self.set_classes(self.class_names() + missing)
        self.mapping.clear()
        self.mapping.update(mapping)
        self._changed()
        return True

    def make_classes(self) -> Optional[AlgorithmChain]:
        """Run ``satseg:clusterstoclasses`` with the table in the background; the class raster and polygons are
        added to the map when it ends."""
        if self.layer is None or not self.mapping:
            self.host.message(self.tr("Choose the cluster raster and give at least one cluster a class."),
                              Qgis.Warning)
            return None
        folder = self.host.results_dir("classes")
        project = QgsProject.instance()
        parameters = {"INPUT": self.layer.id(), "MAPPING": self.mapping_text(),
                      "OUTPUT": on_map(os.path.join(folder, "classes.tif"), project),
                      "OUTPUT_POLYGONS": on_map(os.path.join(folder, "class_polygons.gpkg"), project),
                      "OUTPUT_REPORT": os.path.join(folder, "cluster_decisions.csv"),
                      "OUTPUT_CLUSTERS": None}
        with open(os.path.join(folder, "cluster_classes.txt"), "w", encoding="utf-8") as handle:
            handle.write(self.mapping_text() + "\n")
        chain = AlgorithmChain(self.tr("Clusters to classes"), [Step("satseg:clusterstoclasses",
                                                                     lambda _results: parameters)], project, self)
        self.host.start_chain(chain)
        return chain

    def release_tools(self) -> None:
        """Unset the map tool (when the dock closes)."""
        self.canvas.unsetMapTool(self.tool)

    def cleanup(self) -> None:
        """Release the map tool and give the raster its own renderer back (before the dock is deleted)."""
        self.release_tools()
        if self.layer is not None:
            self._restore(self.layer)
        self.layer = None
