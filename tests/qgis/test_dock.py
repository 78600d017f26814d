"""The SatSeg dock in a real (offscreen) QGIS GUI application: simulated clicks on a real map canvas draw
annotations, click patches and label clusters; workflows run as background tasks and load their outputs."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsEditorWidgetSetup,
    QgsFeature,
    QgsField,
    QgsGeometry,
    QgsPalettedRasterRenderer,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSnappingConfig,
    QgsTolerance,
    QgsVectorLayer,
)
from qgis.gui import QgsMapCanvas
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QPoint, Qt, QVariant
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QApplication, QMainWindow, QToolBar

from tests.conftest import write_raster

CRS = "EPSG:32633"
X0, Y0 = 500000.0, 5000000.0  # top-left corner of the test rasters (0.5 m pixels)


def wait_for(predicate, timeout: float = 60.0) -> bool:
    """Process events until ``predicate()`` is true (background tasks report on the main thread)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        QCoreApplication.processEvents()
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def settle(ms: int = 150) -> None:
    wait_for(lambda: False, ms / 1000.0)


@pytest.fixture
def canvas(qgis_app):
    QgsProject.instance().clear()
    QgsProject.instance().setCrs(QgsCoordinateReferenceSystem(CRS))
    canvas = QgsMapCanvas()
    canvas.resize(400, 400)
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem(CRS))
    canvas.show()
    canvas.setExtent(QgsRectangle(X0, Y0 - 100, X0 + 100, Y0))  # 100 m x 100 m: 4 px per metre
    settle()
    yield canvas
    QgsProject.instance().clear()
    canvas.close()
    canvas.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)


@pytest.fixture
def dock(canvas, tmp_path):
    from satseg_plugin.ui.dock import SatSegDock

    window = QMainWindow()
    dock = SatSegDock(None, canvas)
    window.addDockWidget(Qt.RightDockWidgetArea, dock)
    dock.results_widget.setFilePath(str(tmp_path / "results"))
    window.show()
    settle()
    yield dock
    wait_for(lambda: not dock.running_chains(), 60)
    dock.cleanup()
    QgsProject.instance().clear()
    window.close()
    window.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)


def annotation_layer(classes=("building", "water", "field")) -> QgsVectorLayer:
    """An in-memory annotation layer with a value-map class field, in the project."""
    layer = QgsVectorLayer(f"MultiPolygon?crs={CRS}", "annotations", "memory")
    layer.dataProvider().addAttributes([QgsField("class", QVariant.String), QgsField("note", QVariant.String)])
    layer.updateFields()
    layer.setEditorWidgetSetup(0, QgsEditorWidgetSetup("ValueMap", {"map": [{c: c} for c in classes]}))
    QgsProject.instance().addMapLayer(layer)
    return layer


def pixel(canvas, x: float, y: float) -> QPoint:
    point = canvas.getCoordinateTransform().transform(QgsPointXY(x, y))
    return QPoint(round(point.x()), round(point.y()))


def map_point(canvas, pos: QPoint) -> QgsPointXY:
    return canvas.getCoordinateTransform().toMapCoordinates(pos.x(), pos.y())


def focus(canvas) -> None:
    """Give the canvas the keyboard focus, as a click on the map does in QGIS."""
    canvas.activateWindow()
    QApplication.setActiveWindow(canvas)
    canvas.setFocus()
    QCoreApplication.processEvents()


def click(canvas, pos: QPoint, button=Qt.LeftButton) -> None:
    QTest.mouseMove(canvas.viewport(), pos)
    QTest.mouseClick(canvas.viewport(), button, Qt.NoModifier, pos)
    QCoreApplication.processEvents()


def draw(canvas, corners) -> None:
    """Click the map coordinates ``corners`` on the canvas, then right click to close the polygon."""
    for x, y in corners:
        click(canvas, pixel(canvas, x, y))
    click(canvas, pixel(canvas, *corners[-1]), Qt.RightButton)


# -- Annotate ------------------------------------------------------------------------------------------------------

def test_draw_polygons_by_clicks_with_the_current_class_and_undo(dock, canvas):
    layer = annotation_layer()
    dock.annotate.set_layer(layer)
    picker = dock.annotate.picker
    assert [b.text() for b in picker.group.buttons()] == ["1  building", "2  water", "3  field"]
    assert picker.current_class() == "building"
    QTest.mouseClick(dock.annotate.draw_button, Qt.LeftButton)
    assert canvas.mapTool() is dock.annotate.draw_tool and layer.isEditable()

    square = [(X0 + 10, Y0 - 10), (X0 + 30, Y0 - 10), (X0 + 30, Y0 - 30), (X0 + 10, Y0 - 30)]
    draw(canvas, square)
    # Key 2 on the canvas (it has the focus while drawing) switches to 'water'.
    focus(canvas)
    QTest.keyClick(canvas, Qt.Key_2)
    assert picker.current_class() == "water"
    draw(canvas, [(X0 + 50, Y0 - 50), (X0 + 70, Y0 - 50), (X0 + 60, Y0 - 70)])

    features = sorted(layer.getFeatures(), key=lambda f: -f.geometry().area())
    assert [f["class"] for f in features] == ["building", "water"]
    clicked = [map_point(canvas, pixel(canvas, x, y)) for x, y in square]  # where the clicks landed
    expected = QgsGeometry.fromPolygonXY([clicked + clicked[:1]])
    assert features[0].geometry().isMultipart()
    assert features[0].geometry().symDifference(expected).area() < 1e-6
    assert features[0].geometry().area() == pytest.approx(400.0, rel=0.05)  # 20 m x 20 m, to a pixel
    assert features[1].geometry().area() == pytest.approx(200.0, rel=0.05)

    assert wait_for(lambda: dock.annotate.counts.get("water") is not None, 5)
    table = dock.annotate.table
    rows = {table.item(r, 0).text(): [table.item(r, c).text() for c in (1, 2)] for r in range(table.rowCount())}
    assert rows["building"][0] == "1" and rows["water"][0] == "1" and rows["field"] == ["0", "0 m²"]
    assert rows["building"][1] == f"{expected.area():,.0f} m²"
    assert table.item(0, 2).data(Qt.UserRole) == pytest.approx(expected.area())

    QTest.mouseClick(dock.annotate.undo_button, Qt.LeftButton)  # undo removes the water polygon
    assert [f["class"] for f in layer.getFeatures()] == ["building"]
    assert wait_for(lambda: "water" not in dock.annotate.counts, 5)
    assert dock.annotate.save_edits() and layer.featureCount() == 1 and not layer.isModified()


def test_drawing_honours_snapping_and_keys(dock, canvas):
    layer = annotation_layer()
    existing = QgsFeature(layer.fields())
    existing.setGeometry(QgsGeometry.fromWkt(f"MultiPolygon((({X0 + 20.3} {Y0 - 20.3}, {X0 + 40} {Y0 - 20.3}, "
                                             f"{X0 + 40} {Y0 - 40}, {X0 + 20.3} {Y0 - 20.3})))"))
    existing.setAttributes(["field", None])
    layer.dataProvider().addFeatures([existing])
    config = QgsSnappingConfig(QgsProject.instance())
    config.setEnabled(True)
    config.setMode(QgsSnappingConfig.AllLayers)
    config.setTypeFlag(QgsSnappingConfig.VertexFlag)
    config.setTolerance(12)
    config.setUnits(QgsTolerance.Pixels)
    canvas.setLayers([layer])
    canvas.snappingUtils().setConfig(config)
    vertex = QgsPointXY(X0 + 20.3, Y0 - 20.3)
    # The snapping index is built in the background: wait until it answers.
    assert wait_for(lambda: canvas.snappingUtils().snapToMap(vertex).isValid(), 10)
    dock.annotate.set_layer(layer)
    dock.annotate.draw_button.click()

    near = pixel(canvas, X0 + 20.3, Y0 - 20.3) + QPoint(3, -2)  # 3.6 px from the vertex: snaps
    far = pixel(canvas, X0 + 5, Y0 - 5)
    focus(canvas)
    click(canvas, near)
    click(canvas, far)
    click(canvas, pixel(canvas, X0 + 5, Y0 - 15))
    QTest.keyClick(canvas, Qt.Key_Backspace)  # removes the last vertex
    click(canvas, pixel(canvas, X0 + 15, Y0 - 5))
    QTest.keyClick(canvas, Qt.Key_Return)  # Enter closes the polygon
    added = [f for f in layer.getFeatures() if f["class"] == "building"]
    assert len(added) == 1
    ring = added[0].geometry().asMultiPolygon()[0][0]
    assert len(ring) == 4  # three vertices + closing point: the Backspace'd one is gone
    assert (ring[0].x(), ring[0].y()) == (X0 + 20.3, Y0 - 20.3)  # exactly the snapped vertex
    unsnapped = map_point(canvas, far)
    assert (ring[1].x(), ring[1].y()) == (unsnapped.x(), unsnapped.y())

    # Esc abandons a polygon; keys beyond the class count do nothing.
    click(canvas, far)
    QTest.keyClick(canvas, Qt.Key_Escape)
    assert dock.annotate.draw_tool.points == []
    QTest.keyClick(canvas, Qt.Key_9)
    assert dock.annotate.picker.current_class() == "building"


def test_dock_shortcuts_pick_classes_of_the_current_tab(dock):
    dock.annotate.set_layer(annotation_layer(tuple(f"c{i}" for i in range(1, 10))))
    dock.activateWindow()
    QApplication.setActiveWindow(dock.window())
    dock.tabs.setCurrentWidget(dock.annotate)
    dock.annotate.table.setFocus()
    for key, name in ((Qt.Key_7, "c7"), (Qt.Key_3, "c3"), (Qt.Key_9, "c9")):
        QTest.keyClick(dock.annotate.table, key)
        assert dock.annotate.picker.current_class() == name
    dock.label_clusters.set_classes(["building", "water"])
    dock.tabs.setCurrentWidget(dock.label_clusters)
    dock.label_clusters.table.setFocus()
    QTest.keyClick(dock.label_clusters.table, Qt.Key_2)
    assert dock.label_clusters.picker.current_class() == "water"
    assert dock.annotate.picker.current_class() == "c9"
    # A digit typed into a text box is text, not a shortcut.
    dock.label_clusters.classes_edit.setFocus()
    QTest.keyClick(dock.label_clusters.classes_edit, Qt.Key_1)
    assert dock.label_clusters.picker.current_class() == "water"
    assert dock.label_clusters.classes_edit.text().endswith("1")


def test_click_patch_footprints_assigns_classes_and_counts_patches(dock, canvas):
    layer = annotation_layer()
    patches = QgsVectorLayer(f"Polygon?crs={CRS}&field=patch_id:integer", "patch index", "memory")
    footprints = []
    for i, (col, row) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        f = QgsFeature(patches.fields())
        x, y = X0 + col * 32, Y0 - row * 32
        f.setGeometry(QgsGeometry.fromRect(QgsRectangle(x, y - 32, x + 32, y)))
        f.setAttributes([i])
        footprints.append(f)
    patches.dataProvider().addFeatures(footprints)
    QgsProject.instance().addMapLayer(patches)
    panel = dock.annotate
    panel.set_layer(layer)
    panel.patch_combo.setLayer(patches)
    panel.patch_button.click()
    assert canvas.mapTool() is panel.patch_tool

    click(canvas, pixel(canvas, X0 + 10, Y0 - 10))  # patch 0 -> building
    focus(canvas)
    QTest.keyClick(canvas, Qt.Key_2)
    click(canvas, pixel(canvas, X0 + 40, Y0 - 50))  # patch 3 -> water
    click(canvas, pixel(canvas, X0 + 45, Y0 - 45))  # patch 3 again: still one annotation
    assert sorted(f["class"] for f in layer.getFeatures()) == ["building", "water"]
    water = next(f for f in layer.getFeatures() if f["class"] == "water")
    assert water.geometry().boundingBox() == QgsRectangle(X0 + 32, Y0 - 64, X0 + 64, Y0 - 32)
    QTest.keyClick(canvas, Qt.Key_3)
    click(canvas, pixel(canvas, X0 + 10, Y0 - 10))  # patch 0 changes class to field
    assert sorted(f["class"] for f in layer.getFeatures()) == ["field", "water"]
    click(canvas, pixel(canvas, X0 + 90, Y0 - 90))  # no patch there: nothing happens
    assert layer.featureCount() == 2

    # A drawn building overlapping patches 0 and 1 counts two patches.
    panel.picker.select(1)
    panel.add_polygon(QgsGeometry.fromWkt(f"MultiPolygon((({X0 + 20} {Y0 - 10},{X0 + 40} {Y0 - 10},"
                                          f"{X0 + 40} {Y0 - 20},{X0 + 20} {Y0 - 20},{X0 + 20} {Y0 - 10})))"))
    assert wait_for(lambda: "building" in panel.counts, 5)
    counts = panel.counts
    assert (counts["building"].polygons, counts["building"].patches) == (1, 2)
    assert counts["building"].area_m2 == pytest.approx(200.0)
    assert (counts["field"].polygons, counts["field"].patches) == (1, 1)
    assert (counts["water"].polygons, counts["water"].patches, counts["water"].area_m2) == (1, 1, pytest.approx(1024))

    click(canvas, pixel(canvas, X0 + 40, Y0 - 50), Qt.RightButton)  # right click removes patch 3's annotation
    assert sorted(f["class"] for f in layer.getFeatures()) == ["building", "field"]


def test_create_annotation_layer_from_the_dock(dock, tmp_path):
    panel = dock.annotate
    panel.new_button.click()
    assert panel.new_box.isVisibleTo(dock)
    panel.new_classes.setText("building, water")
    panel.new_path.setFilePath(str(tmp_path / "my_annotations.gpkg"))
    settle()
    QTest.mouseClick(panel.create_button, Qt.LeftButton)
    assert wait_for(lambda: panel.layer is not None, 30), dock.messages
    layer = panel.layer
    assert layer.source().startswith(str(tmp_path / "my_annotations.gpkg"))
    assert layer.id() in QgsProject.instance().mapLayers() and panel.layer_combo.currentLayer() is layer
    assert panel.picker.names == ["building", "water"] and panel.class_field() == "class"
    assert layer.crs().authid() == CRS
    assert dock.run_panel.train_form.labels.currentLayer() is layer  # what Run trains on
    # An existing file is never overwritten.
    panel.create_layer()
    assert "exists already" in dock.messages[-1][1]


# -- Label clusters -------------------------------------------------------------------------------------------------

@pytest.fixture
def cluster_layer(tmp_path):
    """A 200 x 200 px cluster raster (0.5 m pixels): quadrants 1, 2 / 3, 4, nodata 0 in the last 20 rows."""
    data = np.zeros((200, 200), np.uint16)
    data[:100, :100], data[:100, 100:], data[100:, :100], data[100:, 100:] = 1, 2, 3, 4
    data[180:] = 0
    path = write_raster(str(tmp_path / "clusters.tif"), data, nodata=0)
    layer = QgsRasterLayer(path, "clusters")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_label_clusters_by_clicking_updates_table_and_preview(dock, canvas, cluster_layer, tmp_path):
    panel = dock.label_clusters
    original = cluster_layer.renderer().type()
    assert original == "singlebandgray"
    panel.set_classes(["building", "water"])
    panel.set_layer(cluster_layer)
    assert cluster_layer.renderer().type() == "paletted"  # the preview, before any click
    panel.pick_button.click()
    assert canvas.mapTool() is panel.tool

    click(canvas, pixel(canvas, X0 + 10, Y0 - 10))  # quadrant 1 -> building
    click(canvas, pixel(canvas, X0 + 80, Y0 - 30))  # quadrant 2 -> building
    focus(canvas)
    QTest.keyClick(canvas, Qt.Key_2)
    click(canvas, pixel(canvas, X0 + 80, Y0 - 70))  # quadrant 4 -> water
    click(canvas, pixel(canvas, X0 + 10, Y0 - 95))  # nodata: nothing
    assert panel.mapping == {1: "building", 2: "building", 4: "water"}
    assert panel.mapping_edit.text() == "1,2=building; 4=water"
    assert [panel.table.item(r, 1).text() for r in range(panel.table.rowCount())] == ["building", "building", "water"]

    renderer = cluster_layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    colours = {c.value: c.color.name() for c in renderer.classes()}
    assert colours[1] == colours[2] == panel.picker.colour("building").name()
    assert colours[4] == panel.picker.colour("water").name() and colours[3] == "#969696"
    assert {c.value: c.color.alpha() for c in renderer.classes()}[3] < 255

    click(canvas, pixel(canvas, X0 + 80, Y0 - 30), Qt.RightButton)  # right click: cluster 2 loses its class
    assert panel.mapping == {1: "building", 4: "water"}
    assert {c.value: c.color.name() for c in cluster_layer.renderer().classes()}[2] == "#969696"

    saved = panel.save_mapping(str(tmp_path / "table.txt"))
    assert open(saved).read().strip() == "1=building; 4=water"
    panel.clear()
    assert panel.mapping == {} and panel.table.rowCount() == 0
    (tmp_path / "other.txt").write_text("3-4 = road\n1=building")
    assert panel.load_mapping(str(tmp_path / "other.txt"))
    assert panel.mapping == {1: "building", 3: "road", 4: "road"} and panel.class_names()[-1] == "road"

    panel.preview_check.setChecked(False)  # the raster gets its own style back
    assert cluster_layer.renderer().type() == original


def test_make_classes_runs_in_the_background(dock, cluster_layer):
    pytest.importorskip("rasterio")
    panel = dock.label_clusters
    panel.set_classes(["building", "water"])
    panel.set_layer(cluster_layer)
    panel.assign(1, "building")
    panel.assign(4, "water")
    panel.assign(2, "building")
    chain = panel.make_classes()
    assert chain is not None and chain.running and dock.progress.isVisible()
    assert wait_for(lambda: chain.done, 120), dock.messages
    assert chain.error == "" and dock.messages[-1][0] == 3  # Qgis.Success
    names = sorted(layer.name() for layer in chain.layers)
    assert names == ["Classes", "class_polygons"] or "Classes" in names
    classes = next(layer for layer in chain.layers if layer.name() == "Classes")
    assert classes.id() in QgsProject.instance().mapLayers()
    assert isinstance(classes.renderer(), QgsPalettedRasterRenderer)
    assert [c.label for c in classes.renderer().classes()] == ["building", "water"]
    value, ok = classes.dataProvider().sample(QgsPointXY(X0 + 80, Y0 - 70), 1)
    assert ok and value == 2  # cluster 4 -> water, the second class
    assert open(os.path.join(os.path.dirname(classes.source()), "cluster_classes.txt")).read().strip() == \
        "1,2=building; 4=water"


# -- Run ------------------------------------------------------------------------------------------------------------

def test_chain_runs_steps_in_background_passes_results_and_loads_styled_outputs(dock, tmp_path):
    """patchraster then labelpatches: the second step uses the first's index; both load their layers."""
    from satseg_plugin.ui.tasks import AlgorithmChain, Step, on_map

    raster = write_raster(str(tmp_path / "scene.tif"), np.random.default_rng(0).integers(0, 255, (3, 64, 64),
                                                                                          dtype=np.uint8))
    annotations = annotation_layer()
    f = QgsFeature(annotations.fields())
    f.setGeometry(QgsGeometry.fromRect(QgsRectangle(X0, Y0 - 16, X0 + 16, Y0)))
    f.setAttributes(["water", None])
    annotations.dataProvider().addFeatures([f])
    index_path = str(tmp_path / "index.gpkg")
    steps = [Step("satseg:patchraster", lambda r: {"INPUT": raster, "PATCH_WIDTH": 16, "PATCH_HEIGHT": 16,
                                                   "OUTPUT_DIR": str(tmp_path / "patches"),
                                                   "OUTPUT_INDEX": on_map(index_path)}),
             Step("satseg:labelpatches", lambda r: {"PATCH_INDEX": r["satseg:patchraster"]["OUTPUT_INDEX"],
                                                    "ANNOTATIONS": annotations.id(), "CLASS_FIELD": "class",
                                                    "OUTPUT": on_map(str(tmp_path / "labelled.gpkg"))})]
    chain = AlgorithmChain("Patches", steps)
    progress, statuses = [], []
    chain.progressChanged.connect(progress.append)
    chain.statusChanged.connect(statuses.append)
    dock.start_chain(chain)
    assert chain.running and dock.cancel_button.isEnabled()
    assert wait_for(lambda: chain.done, 60), dock.messages
    assert chain.error == "", chain.error
    assert chain.results["satseg:patchraster"]["PATCH_COUNT"] == 16
    assert chain.results["satseg:labelpatches"]["LABELLED"] >= 1
    project_layers = QgsProject.instance().mapLayers()
    assert len(chain.layers) == 2 and all(layer.id() in project_layers for layer in chain.layers)
    index = next(layer for layer in chain.layers if layer.source().startswith(index_path))
    assert index.name() == "Patch index" and index.featureCount() == 16
    assert index.renderer().symbol().symbolLayer(0).strokeColor().name() != "#000000"  # patch_index.qml applied
    assert progress[-1] == 100.0 and progress == sorted(progress)
    assert any("step 2/2" in s for s in statuses) and statuses[-1] == "Patches: done."
    assert not dock.progress.isVisible() and not dock.cancel_button.isEnabled()
    assert dock.messages[-1][1].startswith("Patches finished.")


def test_failed_step_stops_the_chain_with_the_algorithm_message(dock, tmp_path):
    from satseg_plugin.ui.tasks import AlgorithmChain, Step

    second = []
    steps = [Step("satseg:createannotationlayer", lambda r: {"CLASSES": "a", "OUTPUT": str(tmp_path / "x.shp")}),
             Step("satseg:createannotationlayer", lambda r: second.append(1) or {})]
    chain = AlgorithmChain("Broken", steps)
    dock.start_chain(chain)
    assert wait_for(lambda: chain.done, 30)
    assert "annotation layers are GeoPackages" in chain.error and second == []
    assert dock.messages[-1] == (2, chain.error)  # Qgis.Critical
    missing = AlgorithmChain("Missing", [Step("satseg:nosuchalgorithm", lambda r: {})])
    dock.start_chain(missing)
    assert missing.done and "not available" in missing.error


def many_patches_chain(tmp_path):
    """A chain of one long step (8 px patches of a 2048 px raster), for progress and cancel."""
    from satseg_plugin.ui.tasks import AlgorithmChain, Step

    raster = write_raster(str(tmp_path / "big.tif"), np.random.default_rng(1).integers(0, 255, (1, 2048, 2048),
                                                                                        dtype=np.uint8))
    return AlgorithmChain("Many patches", [Step("satseg:patchraster", lambda r: {
        "INPUT": raster, "PATCH_WIDTH": 8, "PATCH_HEIGHT": 8, "OUTPUT_DIR": str(tmp_path / "p"),
        "OUTPUT_INDEX": str(tmp_path / "p.gpkg")})])


def test_cancel_stops_a_running_step(dock, tmp_path):
    chain = many_patches_chain(tmp_path)
    progress = []
    chain.progressChanged.connect(progress.append)
    dock.start_chain(chain)
    tasks = QgsApplication.taskManager().activeTasks()
    assert any(t.description() == "SatSeg: Patch raster" for t in tasks)  # in QGIS's task manager
    assert wait_for(lambda: any(0 < p < 100 for p in progress), 60)
    QTest.mouseClick(dock.cancel_button, Qt.LeftButton)
    assert wait_for(lambda: chain.done, 60)
    assert chain.error == "Many patches: canceled." and chain.layers == []
    assert dock.messages[-1] == (1, chain.error)  # Qgis.Warning
    assert not os.path.exists(tmp_path / "p" / "satseg_manifest.json")


def test_train_form_builds_the_train_then_segment_chain(dock, tmp_path):

    raster = QgsRasterLayer(write_raster(str(tmp_path / "r.tif"), np.zeros((3, 32, 32), np.uint8)), "scene")
    QgsProject.instance().addMapLayer(raster)
    layer = annotation_layer(("building", "other"))
    dock.annotate.set_layer(layer)
    form = dock.run_panel.train_form
    assert form.labels.currentLayer() is layer and form.raster.currentLayer() is raster
    assert form.class_field.currentField() == "class"  # two classes: multi-class by default
    # No polygons yet: refused with a message, nothing started.
    assert form.run() is None and "annotation layer with polygons" in dock.messages[-1][1]
    f = QgsFeature(layer.fields())
    f.setGeometry(QgsGeometry.fromRect(QgsRectangle(X0, Y0 - 5, X0 + 5, Y0)))
    layer.dataProvider().addFeatures([f])
    form.encoder.setCurrentText("resnet18")
    form.epochs.setValue(2)
    form.batches_per_epoch.setValue(3)
    assert form.steps(str(tmp_path))[0].parameters({})["INIT_WEIGHTS"] is None  # no start file: none passed
    form.init_weights.setFilePath(str(tmp_path / "encoder.satseg"))
    form.max_minutes.setValue(3)
    steps = form.steps(str(tmp_path))
    assert [s.algorithm_id for s in steps] == ["satseg:trainsegmentation", "satseg:segmentraster"]
    train = steps[0].parameters({})
    assert (train["INPUT"], train["LABELS"], train["CLASS_FIELD"]) == (raster.id(), layer.id(), "class")
    assert (train["ENCODER"], train["EPOCHS"], train["BATCHES_PER_EPOCH"]) == ("resnet18", 2, 3)
    assert (train["INIT_WEIGHTS"], train["MAX_MINUTES"]) == (str(tmp_path / "encoder.satseg"), 3)
    segment = steps[1].parameters({"satseg:trainsegmentation": {"OUTPUT_MODEL": "/m.satseg"}})
    assert segment["MODELS"] == ["/m.satseg"] and segment["INPUT"] == raster.id()
    assert segment["OUTPUT_PROBABILITY"].destinationProject is QgsProject.instance()


def test_run_forms_offer_the_algorithms_choices_and_defaults(dock):
    """The dock's forms read choices and defaults from the registered algorithms: nothing is declared twice."""
    from satseg_plugin.models.registry import ENCODER_CHOICES
    from satseg_plugin.processing.algorithms.clustering.train_clusternet import TrainClusterNetAlgorithm as Net
    from satseg_plugin.processing.algorithms.population.population_clusters import PopulationClustersAlgorithm as Pop
    from satseg_plugin.processing.algorithms.segmentation.segment_raster import SegmentRasterAlgorithm as Segment
    from satseg_plugin.processing.algorithms.segmentation.train_segmentation import TrainSegmentationAlgorithm as Train

    registry = QgsApplication.processingRegistry()

    def definition(algorithm, key):
        return registry.algorithmById(algorithm.algorithm_id()).parameterDefinition(key)

    panel = dock.run_panel
    train, cluster, track = panel.train_form, panel.cluster_form, panel.track_form
    spins = [(train.epochs, Train, Train.EPOCHS), (train.patch_size, Train, Train.PATCH_SIZE),
             (train.max_minutes, Train, Train.MAX_MINUTES),
             (train.batch_size, Train, Train.BATCH_SIZE), (train.batches_per_epoch, Train, Train.BATCHES_PER_EPOCH),
             (train.min_area, Segment, Segment.MIN_AREA), (cluster.clusters, Net, Net.NUM_CLUSTERS),
             (cluster.rounds, Net, Net.ROUNDS), (cluster.steps_per_round, Net, Net.STEPS_PER_ROUND),
             (cluster.crop, Net, Net.PATCH_SIZE), (track.k, Pop, Pop.K), (track.eps, Pop, Pop.EPS),
             (track.min_samples, Pop, Pop.MIN_SAMPLES), (track.epochs, Pop, Pop.EPOCHS),
             (track.centres, Pop, Pop.CENTRES_PER_EPOCH)]
    for box, algorithm, key in spins:
        assert box.value() == definition(algorithm, key).defaultValue(), key
        assert box.minimum() == definition(algorithm, key).minimum(), key
    combos = [(train.architecture, Train, Train.ARCHITECTURE), (train.device, Train, Train.DEVICE),
              (cluster.device, Net, Net.DEVICE), (track.device, Pop, Pop.DEVICE)]
    for box, algorithm, key in combos:
        assert [box.itemText(i) for i in range(box.count())] == definition(algorithm, key).options(), key
        assert box.currentIndex() == definition(algorithm, key).defaultValue(), key
    assert [train.encoder.itemText(i) for i in range(train.encoder.count())] == list(ENCODER_CHOICES) \
        == definition(Train, Train.ENCODER).options()  # the toolbox's drop-down, from the registry's one list
    assert train.encoder.currentText() == definition(Train, Train.ENCODER).defaultValue() == "resnet34"
    assert train.epochs.value() == 60 and train.architecture.currentText() == "U-Net"


def test_track_form_is_disabled_when_an_algorithm_is_missing(dock):
    form = dock.run_panel.track_form
    assert form.refresh_availability() and form.run_button.isEnabled() and not form.note.isVisible()
    form.algorithms = ("satseg:opticalflow", "satseg:nosuchalgorithm")
    dock.run_panel.refresh_availability()
    assert not form.run_button.isEnabled() and "satseg:nosuchalgorithm" in form.note.text()
    assert form.run() is None and dock.run_panel.toolbox.itemText(2) == "Track populations (not installed)"


@pytest.mark.slow
def test_track_form_runs_flow_communities_and_tracks(dock, tmp_path):
    pytest.importorskip("faiss")
    import glob

    from sample_data.population import generate_population_series

    generate_population_series(str(tmp_path / "pop"))
    for path in sorted(glob.glob(str(tmp_path / "pop" / "pop_t*.tif"))):
        QgsProject.instance().addMapLayer(QgsRasterLayer(path, os.path.basename(path)[:-4]))
    form = dock.run_panel.track_form
    items = [form.frames.item(i) for i in range(form.frames.count())]
    assert [i.text() for i in items] == [f"pop_t{t}" for t in range(5)]  # listed as they were added
    assert form.run() is None and "at least two frames" in dock.messages[-1][1]
    for item in items:
        item.setCheckState(Qt.Checked)
    form.k.setValue(6)
    form.min_samples.setValue(20)
    form.epochs.setValue(15)
    form.centres.setValue(300)
    form.device.setCurrentText("cpu")
    chain = form.run()
    assert chain is not None and not form.run_button.isEnabled()
    assert wait_for(lambda: chain.done, 240), dock.messages
    assert chain.error == "", chain.error
    assert [s.algorithm_id for s in chain.steps] == list(form.algorithms)
    assert chain.results["satseg:trackcommunities"]["TRACKS"] >= 1
    names = {layer.name(): layer for layer in chain.layers}
    assert all(layer.id() in QgsProject.instance().mapLayers() for layer in chain.layers)
    assert {"Flow arrows", "Tracks", "Tracked communities"} <= set(names), sorted(names)
    assert sum(name.startswith("Segments pop_t") for name in names) == 5
    assert names["Tracks"].renderer().type() == "categorizedSymbol"  # tracks.qml: lines by event
    assert names["Tracked communities"].fields().lookupField("track_id") >= 0
    assert form.run_button.isEnabled()


# -- Plugin wiring --------------------------------------------------------------------------------------------------

def test_dock_opens_without_the_heavy_packages():
    """With rasterio, torch, faiss, shapely and numpy unimportable, the dock still builds and draws annotations."""
    import subprocess
    import sys

    from tests.qgis.conftest import ROOT

    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('rasterio', 'torch', 'faiss', 'shapely', 'numpy', 'sklearn', 'torchvision'):
            raise ImportError('No module named ' + name)
sys.meta_path.insert(0, Block())
sys.path[:0] = [{ROOT!r}, '/usr/share/qgis/python/plugins']
from qgis.core import QgsApplication, QgsGeometry, QgsProject, QgsVectorLayer
app = QgsApplication([], True); app.initQgis()
import satseg_plugin
from qgis.gui import QgsMapCanvas
plugin = satseg_plugin.classFactory(None); plugin.initProcessing()
from satseg_plugin.ui.dock import SatSegDock
layer = QgsVectorLayer('Polygon?crs=EPSG:32633&field=class:string', 'a', 'memory')
QgsProject.instance().addMapLayer(layer)
dock = SatSegDock(None, QgsMapCanvas())
dock.annotate.set_layer(layer)
dock.annotate.picker.set_classes(['building'])
fid = dock.annotate.add_polygon(QgsGeometry.fromWkt('Polygon((0 0, 1 0, 1 1, 0 0))'))
print('FEATURES', layer.featureCount(), [m for m in ('rasterio', 'torch', 'faiss') if m in sys.modules])
dock.cleanup()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, QT_QPA_PLATFORM="offscreen"), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "FEATURES 1 []" in out.stdout



def test_plugin_menu_and_toolbar_open_the_dock(qgis_app, session_plugin, canvas):
    from qgis.gui import QgsMessageBar

    import satseg_plugin

    class Iface:
        def __init__(self):
            self.window = QMainWindow()
            self.bar = QgsMessageBar(self.window)

        def mainWindow(self):
            return self.window

        def mapCanvas(self):
            return canvas

        def messageBar(self):
            return self.bar

        def addDockWidget(self, area, dock):
            self.window.addDockWidget(area, dock)

        def removeDockWidget(self, dock):
            self.window.removeDockWidget(dock)

    iface = Iface()
    session_plugin.unload()
    plugin = satseg_plugin.classFactory(iface)
    plugin.initGui()
    registry = QgsApplication.processingRegistry()
    try:
        iface.window.show()
        assert plugin.menu.actions()[0] is plugin.dock_action
        entries = [a.objectName() for a in plugin.menu.actions()]
        assert "mActionSatSegInstall" in entries and "mActionSatSegAbout" in entries
        # Grouped as in the toolbox: a header per pipeline (with its icon), then that pipeline's tools.
        headers = [a for a in plugin.menu.actions() if a.objectName().startswith("mActionSatSegGroup_")]
        assert [h.text() for h in headers] == ["Patching", "Clustering", "Segmentation", "Population", "Export"]
        assert all(not h.isEnabled() and not h.icon().isNull() for h in headers)
        first = {group: entries.index(f"mActionSatSegGroup_{group}") for group in ("segmentation", "population")}
        for name in ("trainsegmentation", "createannotationlayer"):
            assert first["segmentation"] < entries.index(f"mActionSatSeg_{name}") < first["population"], name
        assert plugin.toolbar.actions() == [plugin.dock_action] and plugin.dock is None  # created on first use
        plugin.toolbar.widgetForAction(plugin.dock_action).click()
        settle()
        dock = plugin.dock
        assert dock is not None and dock.isVisible() and plugin.dock_action.isChecked()
        assert [dock.tabs.tabText(i) for i in range(3)] == ["Annotate", "Label clusters", "Run"]
        plugin.dock_action.trigger()  # the same action hides it ...
        settle()
        assert not dock.isVisible() and not plugin.dock_action.isChecked()
        plugin.dock_action.trigger()  # ... and shows it again
        settle()
        assert dock.isVisible() and plugin.dock is dock
        dock.message("Boom", 2)
        assert [w.text() for w in iface.bar.items()] == ["Boom"]
        plugin.unload()
        QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
        assert registry.providerById("satseg") is None and plugin.dock is None and plugin.toolbar is None
        assert iface.window.findChild(QToolBar, "mSatSegToolBar") is None
    finally:
        plugin.unload()
        session_plugin.initProcessing()
        iface.window.deleteLater()  # while the application still exists
        QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    assert registry.providerById("satseg") is not None


def test_export_form_writes_cog_and_polygons_in_the_background(dock, cluster_layer, tmp_path):
    """Export from the dock: a raster as Cloud-Optimised GeoTIFF, polygons as GeoJSON (lon/lat)."""
    rasterio = pytest.importorskip("rasterio")
    form = dock.run_panel.export_form
    form.layer.setLayer(cluster_layer)
    assert [form.format.itemText(i) for i in range(form.format.count())][0] == "Cloud-Optimised GeoTIFF"
    chain = form.run()
    assert chain is not None
    assert wait_for(lambda: chain.done, 120) and chain.error == "", dock.messages
    assert form.written.endswith("clusters.tif") and "export_" in form.written
    with rasterio.open(form.written) as cog, rasterio.open(cluster_layer.source()) as src:
        assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and cog.transform == src.transform
        assert (cog.read() == src.read()).all()
    polygons = QgsVectorLayer(f"Polygon?crs={CRS}&field=class:string", "buildings", "memory")
    feature = QgsFeature(polygons.fields())
    feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(X0 + 10, Y0 - 20, X0 + 20, Y0 - 10)))
    feature.setAttributes(["building"])
    polygons.dataProvider().addFeatures([feature])
    QgsProject.instance().addMapLayer(polygons)
    form.layer.setLayer(polygons)
    form.format.setCurrentIndex(1)  # GeoJSON
    chain = form.run()
    assert wait_for(lambda: chain.done, 120) and chain.error == "", dock.messages
    assert form.written.endswith("buildings.geojson")
    out = QgsVectorLayer(form.written)
    assert out.featureCount() == 1 and out.crs().authid() == "EPSG:4326"
    assert 14 < out.extent().xMinimum() < 16 and 45 < out.extent().yMinimum() < 46  # UTM 33N 500 km E -> 15° E


# -- A panel that fits (issue 18) ---------------------------------------------------------------------------------

def _vector(name: str, fields, rows, geometry: str = "Polygon") -> QgsVectorLayer:
    """A memory layer in the project with text ``fields`` and one small square per row of values."""
    spec = "&".join(f"field={field}:string" for field in fields)
    layer = QgsVectorLayer(f"{geometry}?crs={CRS}&{spec}", name, "memory")
    features = []
    for i, values in enumerate(rows):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(X0 + i, Y0 - 1, X0 + i + 1, Y0)))
        feature.setAttributes(list(values))
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_class_fields_are_picked_only_when_they_look_like_classes(dock):
    from satseg_plugin.ui.widgets.layer_choice import guess_class_field, looks_like_classes

    assert looks_like_classes(["red", "grey", "red", None]) and not looks_like_classes([])
    assert not looks_like_classes(["/data/patches/p_0001.tif", "/data/patches/p_0002.tif"])
    assert not looks_like_classes([f"c{i}" for i in range(31)])
    sample = _vector("Annotation sample", ["path", "patch_id"], [(f"/tmp/x/p_{i}.tif", str(i)) for i in range(6)])
    footprints = _vector("Building footprints", ["roof"], [("red",), ("grey",), ("brown",)])
    drawn = annotation_layer(("building", "other"))
    named = _vector("classes by name", ["class"], [("water",), ("field",)])
    assert guess_class_field(sample)[0] == "" and guess_class_field(footprints)[0] == ""
    assert guess_class_field(drawn) == ("class", "its value list") and guess_class_field(named)[0] == "class"
    # The Annotate tab offers only layers with a class field, and says what it picked.
    combo = dock.annotate.layer_combo
    offered = {combo.layer(i) for i in range(combo.count())} - {None}
    assert offered == {drawn, named}
    dock.annotate.set_layer(drawn)
    assert "'class'" in dock.annotate.field_note.text() and not dock.annotate.start_note.isVisible()
    # Train + segment: the footprints' roof colours are not taken as classes; the form says so.
    form = dock.run_panel.train_form
    form.labels.setLayer(footprints)
    assert form.class_field.currentField() == "" and "one class" in form.class_field_note.text()
    form.labels.setLayer(drawn)
    assert form.class_field.currentField() == "class" and "2 classes" in form.class_field_note.text()


def test_empty_state_and_new_layer_classes_follow_the_task(qgis_app, canvas):
    from satseg_plugin.ui.dock import SatSegDock

    QgsProject.instance().clear()
    dock = SatSegDock(None, canvas)
    try:
        panel = dock.annotate
        assert panel.layer is None and not panel.start_note.isHidden() and "New…" in panel.start_note.text()
        assert not dock.label_clusters.start_note.isHidden()
        assert panel.new_classes.text() == "building, other"  # the Run tab trains building models
        panel.task_combo.setCurrentIndex(panel.task_combo.findText("Land use"))
        assert panel.new_classes.text() == "urban, rural, uninhabited"
    finally:
        dock.cleanup()
        dock.deleteLater()


def test_cluster_raster_choices_are_integer_single_band_rasters(dock, cluster_layer, tmp_path):
    probability = QgsRasterLayer(write_raster(str(tmp_path / "p.tif"), np.zeros((1, 8, 8), np.float32)), "prob")
    rgb = QgsRasterLayer(write_raster(str(tmp_path / "rgb.tif"), np.zeros((3, 8, 8), np.uint8)), "rgb")
    QgsProject.instance().addMapLayers([probability, rgb])
    combo = dock.label_clusters.raster_combo
    offered = {combo.layer(i) for i in range(combo.count())} - {None}
    assert offered == {cluster_layer}


def test_long_class_names_wrap_and_never_widen_the_window(dock):
    window = dock.parent()
    window.resize(1200, 700)
    settle()
    before = window.size()
    names = [f"/very/long/path/to/some/patch/file_number_{i}_with_a_long_name.tif" for i in range(6)]
    dock.annotate.picker.set_classes(names)
    settle(300)
    assert window.size() == before
    assert dock.minimumSizeHint().width() <= 420 and dock.widget().minimumSizeHint().width() <= 420
    buttons = dock.annotate.picker.group.buttons()
    assert all("…" in b.text() and b.toolTip().startswith("Class '/very") for b in buttons)
    assert len({b.y() for b in buttons if b.isVisible()}) > 1  # wrapped onto several rows


def test_run_tab_says_when_packages_are_missing(dock, monkeypatch):
    from satseg_plugin.ui.panels import run_forms

    panel = dock.run_panel
    monkeypatch.setattr(run_forms, "find_missing", lambda: {"torch": "torch", "affine": "affine<3"})
    assert panel.refresh_missing() and not panel.missing_note.isHidden() and not panel.install_button.isHidden()
    assert "affine<3, torch" in panel.missing_note.text()
    monkeypatch.setattr(run_forms, "find_missing", lambda: {})
    assert panel.refresh_missing() == {} and panel.missing_note.isHidden() and panel.install_button.isHidden()


def test_segment_form_runs_segmentraster_with_a_chosen_model(dock, tmp_path):
    raster = QgsRasterLayer(write_raster(str(tmp_path / "r.tif"), np.zeros((3, 16, 16), np.uint8)), "scene")
    QgsProject.instance().addMapLayer(raster)
    form = dock.run_panel.segment_form
    form.raster.setLayer(raster)
    with pytest.raises(ValueError, match="model file"):
        form.steps(str(tmp_path))
    model = tmp_path / "model.satseg"
    model.write_bytes(b"x")
    form.model.setFilePath(str(model))
    steps = form.steps(str(tmp_path))
    assert [s.algorithm_id for s in steps] == ["satseg:segmentraster"]
    params = steps[0].parameters({})
    assert params["MODELS"] == [str(model)] and params["INPUT"] == raster.id()
    assert params["OUTPUT_MASK"].destinationProject is QgsProject.instance()


def test_a_failed_run_reports_the_whole_error_and_cancel_says_canceling(dock, tmp_path):
    from satseg_plugin.ui.tasks import ErrorRecordingFeedback

    feedback = ErrorRecordingFeedback()
    feedback.reportError("SatSeg needs the Python package 'rasterio' (No module named 'rasterio').\nthen restart.")
    assert feedback.errors == ["SatSeg needs the Python package 'rasterio' (No module named 'rasterio').\n"
                               "then restart."]
    chain = many_patches_chain(tmp_path)
    progress = []
    chain.progressChanged.connect(progress.append)
    dock.start_chain(chain)
    assert wait_for(lambda: any(0 < p < 100 for p in progress), 60)
    assert dock.progress.text().endswith("%")  # a percentage, not only a busy bar
    dock.cancel()
    assert dock.status.text() == "Canceling…" and not dock.cancel_button.isEnabled()
    assert wait_for(lambda: chain.done, 60) and chain.error == "Many patches: canceled."


def test_results_stay_out_of_the_temporary_folder_whose_layers_qgis_asks_about(qgis_app, tmp_path):
    """QGIS asks on quit about every layer under the system's temporary folder (issue 18: after demo runs): the
    panel's default results folder is beside the project only when the project is not in that folder."""
    import tempfile

    from qgis.core import QgsSettings

    from satseg_plugin.ui.dock import SETTINGS_RESULTS_DIR, default_results_dir, in_temp_folder

    settings, project = QgsSettings(), QgsProject.instance()
    saved = settings.value(SETTINGS_RESULTS_DIR, "")
    settings.remove(SETTINGS_RESULTS_DIR)
    try:
        project.setFileName(str(tmp_path / "demo.qgz"))
        assert in_temp_folder(str(tmp_path)) and tmp_path.is_relative_to(tempfile.gettempdir())
        assert default_results_dir() == os.path.join(os.path.expanduser("~"), "SatSeg")
        layer = QgsRasterLayer(write_raster(str(tmp_path / "r.tif"), np.zeros((1, 4, 4), np.uint8)), "r")
        assert layer.isTemporary()  # what QGIS asks about when the project closes
        kept = os.path.join(os.path.expanduser("~"), "maps", "demo.qgz")
        project.setFileName(kept)
        assert not in_temp_folder(os.path.dirname(kept))
        assert default_results_dir() == os.path.join(os.path.dirname(kept), "satseg_results")
    finally:
        project.clear()
        if saved:
            settings.setValue(SETTINGS_RESULTS_DIR, saved)
