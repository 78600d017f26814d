"""The dock's *Annotate* tab: pick or create an annotation layer, choose a class, draw polygons or click patch
footprints, and watch the annotated area and patches per class."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional

from qgis.core import (
    Qgis,
    QgsCategorizedSymbolRenderer,
    QgsCoordinateTransform,
    QgsDistanceArea,
    QgsFeature,
    QgsFeatureRequest,
    QgsGeometry,
    QgsMapLayerProxyModel,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
    QgsSpatialIndex,
    QgsUnitTypes,
    QgsVectorLayer,
    QgsVectorLayerUtils,
    QgsWkbTypes,
)
from qgis.gui import QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..tasks import AlgorithmChain, Step, on_map
from ..widgets.class_picker import ClassPicker, swatch
from ..widgets.layer_choice import guess_class_field, is_annotation_layer, keep_fitting
from ..widgets.map_tools import PointClickTool, PolygonCaptureTool

__all__ = ["AnnotatePanel", "ClassCount", "annotation_classes", "class_field_of", "class_statistics",
           "area_text", "unique_path", "CLASS_PRESETS"]

#: Classes a new annotation layer starts with, by task (label, classes); the first is the default: the Run
#: tab's "Train + segment" makes building models.
CLASS_PRESETS = (("Buildings", "building, other"), ("Land use", "urban, rural, uninhabited"),
                 ("Water", "water, land"), ("Custom", ""))


@dataclass
class ClassCount:
    """Annotations of one class: polygons, their area in m² and the patch footprints they overlap."""

    polygons: int = 0
    area_m2: float = 0.0
    patches: int = 0


def class_field_of(layer: QgsVectorLayer) -> str:
    """The layer's class field when one clearly holds classes, else '' (see
    :func:`..widgets.layer_choice.guess_class_field`)."""
    return guess_class_field(layer)[0]


def annotation_classes(layer: QgsVectorLayer, field: str) -> List[str]:
    """Class names of ``field``: its value-map values, else the categories it is drawn by, else its values."""
    index = layer.fields().lookupField(field)
    if index < 0:
        return []
    setup = layer.editorWidgetSetup(index)
    if setup.type() == "ValueMap":
        entries = setup.config().get("map", [])
        values = ([v for item in entries for v in item.values()] if isinstance(entries, list)
                  else list(entries.values()))
        names = [str(v) for v in values if v not in (None, "") and not str(v).startswith("{2839923C")]
        if names:
            return list(dict.fromkeys(names))
    renderer = layer.renderer()
    if isinstance(renderer, QgsCategorizedSymbolRenderer) and renderer.classAttribute() == field:
        names = [str(c.value()) for c in renderer.categories() if c.value() not in (None, "")]
        if names:
            return names
    return sorted(str(v) for v in layer.uniqueValues(index) if v not in (None, "") and str(v) != "NULL")


def renderer_colours(layer: QgsVectorLayer, field: str) -> Dict[str, QColor]:
    """The fill colour of each category when the layer is drawn by categories of ``field``."""
    renderer = layer.renderer()
    if not isinstance(renderer, QgsCategorizedSymbolRenderer) or renderer.classAttribute() != field:
        return {}
    colours = {}
    for category in renderer.categories():
        colour = QColor(category.symbol().color())
        colour.setAlpha(255)
        colours[str(category.value())] = colour
    return colours


def class_statistics(layer: QgsVectorLayer, field: str, patches: Optional[QgsVectorLayer] = None,
                     project: Optional[QgsProject] = None) -> Dict[str, ClassCount]:
    """Per class of ``field``: polygons, area (m², on the project's ellipsoid) and patch footprints of
    ``patches`` they overlap. Features with an empty class are counted under ``""``."""
    project = project or QgsProject.instance()
    index = layer.fields().lookupField(field)
    area = QgsDistanceArea()
    area.setSourceCrs(layer.crs(), project.transformContext())
    area.setEllipsoid(project.ellipsoid() or "NONE")
    spatial, to_patches, patch_ids = None, None, {}
    if patches is not None and patches.isValid():
        spatial = QgsSpatialIndex(patches.getFeatures(QgsFeatureRequest().setNoAttributes()),
                                  flags=QgsSpatialIndex.FlagStoreFeatureGeometries)
        if patches.crs() != layer.crs():
            to_patches = QgsCoordinateTransform(layer.crs(), patches.crs(), project)
    counts: Dict[str, ClassCount] = {}
    for feature in layer.getFeatures():
        geometry = feature.geometry()
        if geometry.isNull() or geometry.isEmpty():
            continue
        value = feature.attribute(index) if index >= 0 else None
        name = "" if value in (None, "") or str(value) == "NULL" else str(value)
        count = counts.setdefault(name, ClassCount())
        count.polygons += 1
        count.area_m2 += area.convertAreaMeasurement(area.measureArea(geometry), QgsUnitTypes.AreaSquareMeters)
        if spatial is not None:
            if to_patches is not None:
                geometry = QgsGeometry(geometry)
                geometry.transform(to_patches)
            for fid in spatial.intersects(geometry.boundingBox()):
                footprint = spatial.geometry(fid)
                if footprint.intersects(geometry) and footprint.intersection(geometry).area() > 0:
                    patch_ids.setdefault(name, set()).add(fid)
    for name, ids in patch_ids.items():
        counts[name].patches = len(ids)
    return counts


def area_text(m2: float) -> str:
    """``761 m²``, ``12.30 ha`` or ``4.20 km²``."""
    if m2 < 1e4:
        return f"{m2:,.0f} m²"
    return f"{m2 / 1e4:,.2f} ha" if m2 < 1e6 else f"{m2 / 1e6:,.2f} km²"


def unique_path(folder: str, stem: str, extension: str) -> str:
    """``folder/stem.ext``, or ``stem_2.ext``, ``stem_3.ext`` ... when it exists."""
    path, n = os.path.join(folder, f"{stem}.{extension}"), 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(folder, f"{stem}_{n}.{extension}")
    return path


class AnnotatePanel(QWidget):
    """The *Annotate* tab. ``host`` is the dock (canvas, ``start_chain``, ``results_dir``, ``message``)."""

    def __init__(self, host, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.host = host
        self.canvas = host.canvas
        self.layer: Optional[QgsVectorLayer] = None
        self.counts: Dict[str, ClassCount] = {}
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(100)
        self._refresh_timer.timeout.connect(self.refresh_counts)

        layout = QVBoxLayout(self)
        self.start_note = QLabel(self.tr("<b>Start here:</b> create an annotation layer with <i>New…</i> (or "
                                         "choose one), pick a class, then <i>Draw polygons</i> on the map. The "
                                         "<i>Run</i> tab trains on these polygons."), self)
        self.start_note.setObjectName("satsegStartNote")
        self.start_note.setWordWrap(True)
        layout.addWidget(self.start_note)
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        row = QHBoxLayout()
        self.layer_combo = QgsMapLayerComboBox(self)
        self.layer_combo.setObjectName("satsegAnnotationLayer")
        self.layer_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.layer_combo.setAllowEmptyLayer(True)
        self.layer_combo.setToolTip(self.tr("Polygon layers with a class field (a value list, or a text field "
                                            "named 'class')"))
        self.refresh_layer_choices = keep_fitting(self.layer_combo, is_annotation_layer)
        row.addWidget(self.layer_combo, 1)
        self.new_button = QToolButton(self)
        self.new_button.setText(self.tr("New…"))
        self.new_button.setCheckable(True)
        self.new_button.setToolTip(self.tr("Create a new GeoPackage annotation layer"))
        row.addWidget(self.new_button)
        form.addRow(self.tr("Annotation layer"), row)
        self.field_combo = QgsFieldComboBox(self)
        self.field_combo.setObjectName("satsegClassField")
        form.addRow(self.tr("Class field"), self.field_combo)
        layout.addLayout(form)
        self.field_note = QLabel(self)
        self.field_note.setObjectName("satsegClassFieldNote")
        self.field_note.setWordWrap(True)
        layout.addWidget(self.field_note)

        self.new_box = QGroupBox(self.tr("New annotation layer"), self)
        new_form = QFormLayout(self.new_box)
        new_form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.task_combo = QComboBox(self.new_box)
        self.task_combo.setObjectName("satsegNewTask")
        for label, classes in CLASS_PRESETS:
            self.task_combo.addItem(self.tr(label), classes)
        new_form.addRow(self.tr("Task"), self.task_combo)
        self.new_classes = QLineEdit(CLASS_PRESETS[0][1], self.new_box)
        self.new_classes.setObjectName("satsegNewClasses")
        self.new_classes.setToolTip(self.tr("Class names, comma-separated (e.g. building, other)"))
        new_form.addRow(self.tr("Classes"), self.new_classes)
        self.new_path = QgsFileWidget(self.new_box)
        self.new_path.setStorageMode(QgsFileWidget.SaveFile)
        self.new_path.setFilter(self.tr("GeoPackage (*.gpkg)"))
        self.new_path.lineEdit().setPlaceholderText(self.tr("[in the results folder]"))
        new_form.addRow(self.tr("File"), self.new_path)
        self.create_button = QPushButton(self.tr("Create layer"), self.new_box)
        self.create_button.setObjectName("satsegCreateLayer")
        new_form.addRow(self.create_button)
        self.new_box.setVisible(False)
        layout.addWidget(self.new_box)

        layout.addWidget(QLabel(self.tr("Class (keys 1–9):"), self))
        self.picker = ClassPicker(self)
        layout.addWidget(self.picker)

        tools = QHBoxLayout()
        self.draw_button = QPushButton(self.tr("Draw polygons"), self)
        self.draw_button.setObjectName("satsegDraw")
        self.draw_button.setCheckable(True)
        self.draw_button.setToolTip(self.tr("Left click adds a vertex (snapping as set in the project), right click "
                                            "or Enter closes the polygon, Backspace removes the last vertex, Esc "
                                            "abandons it."))
        tools.addWidget(self.draw_button)
        self.undo_button = QPushButton(self.tr("Undo"), self)
        self.undo_button.setObjectName("satsegUndo")
        tools.addWidget(self.undo_button)
        self.save_button = QPushButton(self.tr("Save edits"), self)
        self.save_button.setObjectName("satsegSaveEdits")
        tools.addWidget(self.save_button)
        layout.addLayout(tools)

        patch_row = QHBoxLayout()
        self.patch_button = QPushButton(self.tr("Click patches"), self)
        self.patch_button.setObjectName("satsegClickPatches")
        self.patch_button.setCheckable(True)
        self.patch_button.setToolTip(self.tr("Left click on a patch footprint gives the patch the current class (its "
                                             "footprint becomes an annotation); right click removes it."))
        patch_row.addWidget(self.patch_button)
        self.patch_combo = QgsMapLayerComboBox(self)
        self.patch_combo.setObjectName("satsegPatchIndex")
        self.patch_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.patch_combo.setAllowEmptyLayer(True)
        self.patch_combo.setLayer(None)
        self.patch_combo.setToolTip(self.tr("Patch index (footprints from Patch raster)"))
        patch_row.addWidget(self.patch_combo, 1)
        layout.addLayout(patch_row)

        self.table = QTableWidget(0, 4, self)
        self.table.setObjectName("satsegClassCounts")
        self.table.setHorizontalHeaderLabels([self.tr("Class"), self.tr("Polygons"), self.tr("Area"),
                                              self.tr("Patches")])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        layout.addWidget(self.table, 1)

        self.draw_tool = PolygonCaptureTool(self.canvas)
        self.draw_tool.captured.connect(self.add_polygon)
        self.patch_tool = PointClickTool(self.canvas)
        self.patch_tool.clicked.connect(self.click_patch)
        for tool, button in ((self.draw_tool, self.draw_button), (self.patch_tool, self.patch_button)):
            tool.setButton(button)
            tool.classKeyPressed.connect(self.picker.select)

        self.new_button.toggled.connect(self.new_box.setVisible)
        self.task_combo.currentIndexChanged.connect(self._task_changed)
        self.create_button.clicked.connect(self.create_layer)
        self.layer_combo.layerChanged.connect(self.set_layer)
        self.field_combo.fieldChanged.connect(self._field_changed)
        self.patch_combo.layerChanged.connect(self.schedule_refresh)
        self.draw_button.clicked.connect(self._toggle_draw)
        self.patch_button.clicked.connect(self._toggle_patches)
        self.undo_button.clicked.connect(self.undo)
        self.save_button.clicked.connect(self.save_edits)
        self.set_layer(self.layer_combo.currentLayer())

    # -- layer and classes --------------------------------------------------------------------------------------
    def _task_changed(self, index: int) -> None:
        classes = self.task_combo.itemData(index)
        if classes:
            self.new_classes.setText(classes)
        else:
            self.new_classes.clear()
            self.new_classes.setFocus()

    def class_field(self) -> str:
        """The field the current class is written to."""
        return self.field_combo.currentField()

    def set_layer(self, layer) -> None:
        """Use ``layer`` as the annotation layer (also chosen in the combo box)."""
        layer = layer if isinstance(layer, QgsVectorLayer) and layer.isValid() else None
        if self.layer is not None:
            try:
                for signal in self._layer_signals(self.layer):
                    signal.disconnect(self.schedule_refresh)
            except (TypeError, RuntimeError):
                pass  # already disconnected, or the layer was deleted
        self.layer = layer
        if self.layer_combo.currentLayer() is not layer:
            self.layer_combo.setLayer(layer)
        self.field_combo.setLayer(layer)
        self.start_note.setVisible(layer is None)
        if layer is not None:
            field, why = guess_class_field(layer)
            self.field_combo.setField(field)
            self.field_note.setText(
                self.tr("Class field '{}' (picked by {}).").format(field, self.tr(why)) if field else
                self.tr("No field of {} looks like classes: choose the class field above.").format(layer.name()))
            for signal in self._layer_signals(layer):
                signal.connect(self.schedule_refresh)
        self.field_note.setVisible(layer is not None)
        self.draw_tool.layer = layer
        self._field_changed(self.class_field())

    @staticmethod
    def _layer_signals(layer: QgsVectorLayer):
        return (layer.featureAdded, layer.featuresDeleted, layer.geometryChanged, layer.attributeValueChanged,
                layer.afterRollBack, layer.afterCommitChanges, layer.dataChanged, layer.rendererChanged)

    def _field_changed(self, field: str) -> None:
        if self.layer is None or not field:
            self.picker.set_classes([])
        else:
            self.picker.set_classes(annotation_classes(self.layer, field), renderer_colours(self.layer, field))
        self.refresh_counts()

    def create_layer(self) -> Optional[AlgorithmChain]:
        """Run ``satseg:createannotationlayer`` in the background and select the layer it loads."""
        classes = self.new_classes.text().strip()
        if not classes:
            self.host.message(self.tr("Type the class names first, e.g. building, other."), Qgis.Warning)
            return None
        path = self.new_path.filePath().strip()
        if not path:
            path = unique_path(self.host.results_dir(), "annotations", "gpkg")
        if not path.lower().endswith(".gpkg"):
            path += ".gpkg"
        if os.path.exists(path):
            self.host.message(self.tr("{} exists already: choose another file name.").format(path), Qgis.Warning)
            return None
        project = QgsProject.instance()
        parameters = {"CLASSES": classes, "FIELD": "class", "OUTPUT": on_map(path, project)}
        crs = self.canvas.mapSettings().destinationCrs()
        if crs.isValid():
            parameters["CRS"] = crs
        chain = AlgorithmChain(self.tr("Create annotation layer"),
                               [Step("satseg:createannotationlayer", lambda _results: parameters)], project, self)
        chain.layersLoaded.connect(self._created)
        self.host.start_chain(chain)
        return chain

    def _created(self, layers) -> None:
        for layer in layers:
            if isinstance(layer, QgsVectorLayer):
                self.set_layer(layer)
                self.new_button.setChecked(False)
                self.host.message(self.tr("Annotation layer {} created: choose a class and draw.")
                                  .format(layer.source().split("|")[0]), Qgis.Success)
                break

    # -- editing ------------------------------------------------------------------------------------------------
    def _editable_layer(self) -> Optional[QgsVectorLayer]:
        layer = self.layer
        if layer is None:
            self.host.message(self.tr("Choose or create an annotation layer first."), Qgis.Warning)
            return None
        if not self.class_field():
            self.host.message(self.tr("Choose the class field of {}.").format(layer.name()), Qgis.Warning)
            return None
        if not layer.isEditable() and not layer.startEditing():
            self.host.message(self.tr("{} cannot be edited.").format(layer.name()), Qgis.Critical)
            return None
        return layer

    def _toggle_draw(self, checked: bool) -> None:
        if not checked:
            self.canvas.unsetMapTool(self.draw_tool)
            return
        layer = self._editable_layer()
        if layer is None:
            self.draw_button.setChecked(False)
            return
        self.canvas.setCurrentLayer(layer)
        self.draw_tool.layer = layer
        self.canvas.setMapTool(self.draw_tool)

    def _toggle_patches(self, checked: bool) -> None:
        if not checked:
            self.canvas.unsetMapTool(self.patch_tool)
            return
        if self.patch_combo.currentLayer() is None:
            self.host.message(self.tr("Choose the patch index layer (footprints) next to the button."), Qgis.Warning)
            self.patch_button.setChecked(False)
            return
        if self._editable_layer() is None:
            self.patch_button.setChecked(False)
            return
        self.canvas.setMapTool(self.patch_tool)

    def add_polygon(self, geometry: QgsGeometry) -> Optional[int]:
        """Add ``geometry`` (in the layer's CRS) with the current class through the edit buffer (undoable).
        Returns the new feature's id (None when nothing was added)."""
        layer, name = self._editable_layer(), self.picker.current_class()
        if layer is None:
            return None
        if not name:
            self.host.message(self.tr("Choose a class first."), Qgis.Warning)
            return None
        if not geometry.isGeosValid():
            self.host.message(self.tr("The polygon crosses itself; it was added, but check it."), Qgis.Warning)
        index = layer.fields().lookupField(self.class_field())
        layer.beginEditCommand(self.tr("Add '{}' annotation").format(name))
        feature = QgsVectorLayerUtils.createFeature(layer, geometry, {index: name}, layer.createExpressionContext())
        if not layer.addFeature(feature):
            layer.destroyEditCommand()
            self.host.message(self.tr("Could not add the polygon to {}.").format(layer.name()), Qgis.Critical)
            return None
        layer.endEditCommand()
        layer.triggerRepaint()
        self.schedule_refresh()
        return feature.id()

    def click_patch(self, point: QgsPointXY, button: int) -> Optional[QgsFeature]:
        """Give the patch under ``point`` (canvas CRS) the current class (left button) or remove its annotation
        (right button). Returns the patch footprint feature, None when no patch is there."""
        patches, layer = self.patch_combo.currentLayer(), self._editable_layer()
        if patches is None or layer is None:
            return None
        where = self.patch_tool.toLayerCoordinates(patches, point)
        request = QgsFeatureRequest().setFilterRect(QgsRectangle(where, where)).setNoAttributes()
        hits = [f for f in patches.getFeatures(request) if f.geometry().contains(where)]
        if not hits:
            return None
        # Overlapping patches: the one whose centre is nearest the click.
        patch = min(hits, key=lambda f: f.geometry().centroid().asPoint().sqrDist(where))
        footprint = QgsGeometry(patch.geometry())
        if patches.crs() != layer.crs():
            footprint.transform(QgsCoordinateTransform(patches.crs(), layer.crs(), QgsProject.instance()))
        if QgsWkbTypes.isMultiType(layer.wkbType()):
            footprint.convertToMultiType()
        existing = self._same_footprint(layer, footprint)
        index = layer.fields().lookupField(self.class_field())
        name = self.picker.current_class()
        if button == int(Qt.MouseButton.RightButton):
            if existing is not None:
                layer.beginEditCommand(self.tr("Remove patch annotation"))
                layer.deleteFeature(existing.id())
                layer.endEditCommand()
        elif existing is not None:
            layer.beginEditCommand(self.tr("Patch is '{}'").format(name))
            layer.changeAttributeValue(existing.id(), index, name)
            layer.endEditCommand()
        elif self.add_polygon(footprint) is None:
            return None
        layer.triggerRepaint()
        self.schedule_refresh()
        return patch

    @staticmethod
    def _same_footprint(layer: QgsVectorLayer, footprint: QgsGeometry) -> Optional[QgsFeature]:
        box = footprint.boundingBox()
        tolerance = 1e-6 * max(box.width(), box.height(), 1e-9)
        for feature in layer.getFeatures(QgsFeatureRequest().setFilterRect(box)):
            other = feature.geometry().boundingBox()
            corners = zip((other.xMinimum(), other.yMinimum(), other.xMaximum(), other.yMaximum()),
                          (box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()))
            if all(abs(a - b) < tolerance for a, b in corners) and \
                    abs(feature.geometry().area() - footprint.area()) < tolerance * max(box.width(), 1e-9):
                return feature
        return None

    def undo(self) -> None:
        """Undo the last edit of the annotation layer."""
        if self.layer is not None and self.layer.undoStack() is not None:
            self.layer.undoStack().undo()
            self.layer.triggerRepaint()

    def save_edits(self) -> bool:
        """Commit the annotation layer's edits (it stays in edit mode)."""
        if self.layer is None or not self.layer.isEditable():
            return True
        if not self.layer.commitChanges(False):
            self.host.message(self.tr("Could not save {}: {}").format(
                self.layer.name(), "; ".join(self.layer.commitErrors())), Qgis.Critical)
            return False
        self.host.message(self.tr("Annotations saved."), Qgis.Info)
        return True

    # -- counts -------------------------------------------------------------------------------------------------
    def schedule_refresh(self, *_args) -> None:
        """Refresh the counts soon (edits often come in bursts)."""
        self._refresh_timer.start()

    def refresh_counts(self) -> Dict[str, ClassCount]:
        """Recount the annotations per class and fill the table; returns the counts."""
        self._refresh_timer.stop()
        layer, field = self.layer, self.class_field()
        try:
            valid = layer is not None and layer.isValid()
        except RuntimeError:  # the layer was removed from the project
            valid, self.layer = False, None
        self.counts = class_statistics(layer, field, self.patch_combo.currentLayer()) if valid and field else {}
        names = list(self.picker.names) + sorted(n for n in self.counts if n not in self.picker.names)
        self.table.setRowCount(len(names))
        for row, name in enumerate(names):
            count = self.counts.get(name, ClassCount())
            item = QTableWidgetItem(swatch(self.picker.colour(name)), name or self.tr("(no class)"))
            area = QTableWidgetItem(area_text(count.area_m2))
            area.setData(Qt.ItemDataRole.UserRole, count.area_m2)
            cells = [item, QTableWidgetItem(str(count.polygons)), area,
                     QTableWidgetItem(str(count.patches) if self.patch_combo.currentLayer() is not None else "–")]
            for column, cell in enumerate(cells):
                if column:
                    cell.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
                self.table.setItem(row, column, cell)
        return self.counts

    def release_tools(self) -> None:
        """Unset the map tools (when the dock closes)."""
        for tool in (self.draw_tool, self.patch_tool):
            self.canvas.unsetMapTool(tool)

    def cleanup(self) -> None:
        """Release the map tools and stop following the annotation layer (before the dock is deleted)."""
        self.release_tools()
        self.draw_tool.dispose()
        self.set_layer(None)
        self._refresh_timer.stop()
