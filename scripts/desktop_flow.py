"""Run inside QGIS desktop (``qgis --code scripts/desktop_flow.py``): drive annotate -> train -> segment, then
cluster -> label clusters by clicking -> classes, through the SatSeg dock as a user would, with simulated clicks
on the map canvas; wait for the background tasks, check the styled results on the map, save screenshots, write
a JSON report, and quit.

Environment:
    SATSEG_FLOW_SCENE: folder with ``scene.tif`` and ``buildings.gpkg`` (``sample_data.generate.generate_scene``).
    SATSEG_FLOW_WORK: scratch folder (annotation layer, results folder).
    SATSEG_FLOW_SHOTS: folder for the screenshots.
    SATSEG_FLOW_REPORT: path of the JSON report.
"""

import faulthandler
import json
import os
import time
import traceback

from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer, QgsRectangle, QgsRenderContext, QgsVectorLayer
from qgis.PyQt.QtCore import QPoint, Qt, QTimer
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QAction
from qgis.utils import iface, plugins

SCENE = os.environ["SATSEG_FLOW_SCENE"]
WORK = os.environ["SATSEG_FLOW_WORK"]
SHOTS = os.environ["SATSEG_FLOW_SHOTS"]
REPORT = os.environ["SATSEG_FLOW_REPORT"]
N_BUILDINGS = 6
report = {"stage": "start", "errors": []}
state = {}


def save_report():
    with open(REPORT, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1, default=str)


def quit_qgis():
    save_report()
    for layer in QgsProject.instance().mapLayers().values():
        if isinstance(layer, QgsVectorLayer) and layer.isEditable():
            layer.commitChanges()
    # Layers under /tmp count as temporary: without this QGIS asks whether to quit and loses them.
    QgsProject.instance().clear()
    QgsProject.instance().setDirty(False)  # no "save the project?" question either
    QTimer.singleShot(300, iface.actionExit().trigger)


def fail(message):
    report["errors"].append(f"{report['stage']}: {message}")
    quit_qgis()


def guarded(function):
    def run(*args):
        try:
            function(*args)
        except Exception:  # reported, then QGIS quits
            fail(traceback.format_exc())
    return run


def wait_until(predicate, then, timeout, what):
    """Poll ``predicate`` on the event loop (QGIS stays responsive), then call ``then``."""
    start = time.monotonic()

    @guarded
    def poll():
        if predicate():
            then()
        elif time.monotonic() - start > timeout:
            fail(f"timed out after {timeout} s waiting for {what}; status: {state['dock'].status.text()}")
        else:
            QTimer.singleShot(200, poll)

    QTimer.singleShot(0, poll)


def shoot(name, widget=None):
    canvas = iface.mapCanvas()
    canvas.waitWhileRendering()
    QgsApplication.processEvents()
    (widget or iface.mainWindow()).grab().save(os.path.join(SHOTS, name))
    report.setdefault("screenshots", []).append(name)


def canvas_pixel(x, y):
    point = iface.mapCanvas().getCoordinateTransform().transform(x, y)
    return QPoint(round(point.x()), round(point.y()))


def click(pos, button=Qt.LeftButton):
    viewport = iface.mapCanvas().viewport()
    QTest.mouseMove(viewport, pos)
    QTest.mouseClick(viewport, button, Qt.NoModifier, pos)


# -- stages -----------------------------------------------------------------------------------------------------

@guarded
def open_dock():
    report["stage"] = "open dock"
    report["plugin_loaded"] = "satseg_plugin" in plugins
    iface.mainWindow().showMaximized()
    action = iface.mainWindow().findChild(QAction, "mActionSatSegDock")
    report["dock_action"] = action is not None
    toolbar = iface.pluginToolBar()  # the panel's button sits in QGIS's Plugins toolbar, not a row of its own
    report["toolbar"] = toolbar is not None and action in toolbar.actions()
    toolbar.widgetForAction(action).click()  # the toolbar button, as a user would
    dock = plugins["satseg_plugin"].dock
    state["dock"] = dock
    report["dock_visible"] = dock is not None and dock.isVisible()
    report["tabs"] = [dock.tabs.tabText(i) for i in range(dock.tabs.count())]
    scene = QgsRasterLayer(os.path.join(SCENE, "scene.tif"), "scene")
    QgsProject.instance().addMapLayer(scene)
    QgsProject.instance().setCrs(scene.crs())
    state["scene"] = scene
    iface.setActiveLayer(scene)
    QTimer.singleShot(1000, create_annotation_layer)


@guarded
def create_annotation_layer():
    report["stage"] = "create annotation layer"
    dock = state["dock"]
    canvas = iface.mapCanvas()
    canvas.setExtent(state["scene"].extent())
    canvas.refresh()
    dock.results_widget.setFilePath(os.path.join(WORK, "results"))
    dock.tabs.setCurrentWidget(dock.annotate)
    dock.annotate.new_button.click()
    dock.annotate.new_classes.setText("building")
    dock.annotate.new_path.setFilePath(os.path.join(WORK, "annotations.gpkg"))
    dock.annotate.create_button.click()
    wait_until(lambda: dock.annotate.layer is not None, draw_buildings, 60, "the annotation layer")


@guarded
def draw_buildings():
    report["stage"] = "draw"
    from sample_data.generate import read_buildings

    dock = state["dock"]
    layer = dock.annotate.layer
    report["annotation_layer"] = layer.source()
    report["classes"] = dock.annotate.picker.names
    buildings = sorted(read_buildings(os.path.join(SCENE, "buildings.gpkg")), key=lambda b: -b.polygon.area)
    extent = state["scene"].extent()
    chosen = [b for b in buildings if extent.contains(QgsRectangle(*b.polygon.bounds))][:N_BUILDINGS]
    dock.annotate.draw_button.click()
    report["map_tool"] = type(iface.mapCanvas().mapTool()).__name__
    iface.mapCanvas().setFocus()
    for building in chosen:
        corners = list(building.polygon.exterior.coords)[:-1]
        for x, y in corners:
            click(canvas_pixel(x, y))
        click(canvas_pixel(*corners[-1]), Qt.RightButton)
    state["chosen"] = chosen
    report["drawn"] = len(chosen)
    report["features"] = layer.featureCount()
    report["feature_classes"] = sorted({str(f["class"]) for f in layer.getFeatures()})
    report["drawn_area_m2"] = sum(f.geometry().area() for f in layer.getFeatures())
    report["true_area_m2"] = sum(b.polygon.area for b in chosen)
    QTimer.singleShot(500, guarded(lambda: (shoot("flow_annotate.png"), shoot("dock_annotate.png", dock),
                                            start_training())))


@guarded
def start_training():
    report["stage"] = "train + segment"
    dock = state["dock"]
    dock.annotate.save_button.click()
    report["saved"] = not dock.annotate.layer.isModified()
    dock.annotate.draw_button.click()  # done drawing
    dock.tabs.setCurrentWidget(dock.run_panel)
    form = dock.run_panel.train_form
    form.raster.setLayer(state["scene"])
    report["train_labels"] = form.labels.currentLayer().id() == dock.annotate.layer.id()
    form.encoder.setCurrentText("resnet18")
    form.epochs.setValue(2)
    form.advanced.setCollapsed(False)
    form.patch_size.setValue(64)
    form.batch_size.setValue(4)
    form.batches_per_epoch.setValue(2)
    form.device.setCurrentText("cpu")
    shoot("dock_run.png", dock)
    form.run_button.click()
    chain = form.chain
    state["chain"] = chain
    state["started"] = time.monotonic()
    report["task_in_manager"] = any(t.description().startswith("SatSeg:")
                                    for t in QgsApplication.taskManager().activeTasks())
    QTimer.singleShot(1500, guarded(lambda: shoot("flow_running.png")))
    wait_until(lambda: chain.done, check_results, 240, "train + segment")


@guarded
def check_results():
    report["stage"] = "results"
    chain, dock = state["chain"], state["dock"]
    report["seconds"] = round(time.monotonic() - state["started"], 1)
    report["chain_error"] = chain.error
    report["results"] = {k: {n: str(v) for n, v in r.items()} for k, r in chain.results.items()}
    layers = {}
    for layer in QgsProject.instance().mapLayers().values():
        info = {"source": layer.source(), "valid": layer.isValid()}
        info["renderer"] = layer.renderer().type()
        if isinstance(layer, QgsVectorLayer):
            info["features"] = layer.featureCount()
            symbols = layer.renderer().symbols(QgsRenderContext())
            info["symbol_colour"] = symbols[0].color().name() if symbols else ""
        layers[layer.name()] = info
    report["layers"] = layers
    report["layer_order"] = [layer.name() for layer in QgsProject.instance().layerTreeRoot().layerOrder()]
    report["messages"] = [(int(level), text) for level, text in dock.messages]
    report["message_bar"] = [w.text() for w in iface.messageBar().items()]
    iface.mapCanvas().setExtent(state["scene"].extent())
    iface.mapCanvas().refresh()
    QTimer.singleShot(2500, finish)


@guarded
def finish():
    report["stage"] = "screenshots"
    dock = state["dock"]
    shoot("flow_results.png")
    shoot("dock_status.png", dock)
    start_clustering()


@guarded
def start_clustering():
    report["stage"] = "cluster"
    dock = state["dock"]
    dock.tabs.setCurrentWidget(dock.run_panel)
    form = dock.run_panel.cluster_form
    dock.run_panel.toolbox.setCurrentWidget(form)
    form.raster.setLayer(state["scene"])
    form.clusters.setValue(6)
    form.rounds.setValue(2)
    form.advanced.setCollapsed(False)
    form.steps_per_round.setValue(2)
    form.crop.setValue(64)
    form.device.setCurrentText("cpu")
    form.run_button.click()
    state["started"] = time.monotonic()
    QTimer.singleShot(500, guarded(lambda: shoot("dock_run_cluster.png", dock)))
    wait_until(lambda: form.chain.done, label_clusters, 180, "clustering")


def background_points(n):
    """Map points of the scene at least 4 m from every building."""
    from shapely.geometry import Point

    extent = state["scene"].extent()
    buildings = [b.polygon for b in state["all_buildings"]]
    points = []
    for i in range(1, 10):
        for j in range(1, 10):
            x = extent.xMinimum() + extent.width() * i / 10
            y = extent.yMinimum() + extent.height() * j / 10
            if all(p.distance(Point(x, y)) > 4 for p in buildings):
                points.append((x, y))
    return points[:: max(1, len(points) // n)][:n]


@guarded
def label_clusters():
    report["stage"] = "label clusters"
    from sample_data.generate import read_buildings

    dock, canvas = state["dock"], iface.mapCanvas()
    chain = dock.run_panel.cluster_form.chain
    report["cluster_seconds"] = round(time.monotonic() - state["started"], 1)
    report["cluster_error"] = chain.error
    panel = dock.label_clusters
    report["cluster_layer"] = panel.layer.name() if panel.layer is not None else None
    root = QgsProject.instance().layerTreeRoot()
    for name in ("Probability", "Mask", "Segmented polygons"):  # out of the way of the clusters
        for layer in QgsProject.instance().mapLayersByName(name):
            root.findLayer(layer.id()).setItemVisibilityChecked(False)
    dock.tabs.setCurrentWidget(panel)
    panel.set_classes(["building", "other"])
    panel.pick_button.click()
    report["cluster_tool"] = canvas.mapTool() is panel.tool
    state["all_buildings"] = read_buildings(os.path.join(SCENE, "buildings.gpkg"))
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key_1)
    for building in state["chosen"][:3]:
        point = building.polygon.representative_point()
        click(canvas_pixel(point.x, point.y))
    QTest.keyClick(canvas, Qt.Key_2)
    report["key_2_class"] = panel.picker.current_class()
    for x, y in background_points(3):
        click(canvas_pixel(x, y))
    report["mapping"] = panel.mapping_text()
    report["mapping_classes"] = sorted(set(panel.mapping.values()))
    report["preview_renderer"] = panel.layer.renderer().type() if panel.layer is not None else None
    QTimer.singleShot(1000, guarded(lambda: (shoot("flow_label_clusters.png"),
                                             shoot("dock_label_clusters.png", dock), make_classes())))


@guarded
def make_classes():
    report["stage"] = "make classes"
    panel = state["dock"].label_clusters
    panel.make_button.click()
    chains = [c for c in state["dock"].chains if c.title == "Clusters to classes"]  # the one just started
    chain = chains[-1] if chains else None
    state["classes_chain"] = chain
    wait_until(lambda: chain is not None and chain.done, classes_done, 120, "clusters to classes")


@guarded
def classes_done():
    report["stage"] = "classes"
    chain = state["classes_chain"]
    report["classes_error"] = chain.error
    report["classes_layers"] = {layer.name(): layer.renderer().type() for layer in chain.layers}
    classes = [layer for layer in chain.layers if layer.name() == "Classes"]
    report["classes_legend"] = [c.label for c in classes[0].renderer().classes()] if classes else []
    state["dock"].label_clusters.pick_button.click()  # done labelling
    root = QgsProject.instance().layerTreeRoot()
    for layer in QgsProject.instance().mapLayersByName("Class polygons"):  # show the class raster itself
        root.findLayer(layer.id()).setItemVisibilityChecked(False)
    iface.mapCanvas().refresh()
    QTimer.singleShot(2500, guarded(lambda: (shoot("flow_classes.png"), start_export())))


@guarded
def start_export():
    """Run tab > Export: the building polygons of train + segment as GeoJSON, in the background."""
    report["stage"] = "export"
    dock = state["dock"]
    dock.tabs.setCurrentWidget(dock.run_panel)
    form = dock.run_panel.export_form
    dock.run_panel.toolbox.setCurrentWidget(form)
    polygons = [layer for layer in state["chain"].layers if isinstance(layer, QgsVectorLayer)]
    report["export_layer"] = polygons[0].name() if polygons else None
    form.layer.setLayer(polygons[0] if polygons else None)
    form.format.setCurrentIndex([form.format.itemText(i) for i in range(form.format.count())].index("GeoJSON"))
    form.run_button.click()
    QTimer.singleShot(300, guarded(lambda: shoot("dock_export.png", dock)))
    wait_until(lambda: form.chain is not None and form.chain.done, export_done, 60, "export")


@guarded
def export_done():
    form = state["dock"].run_panel.export_form
    report["export_error"] = form.chain.error
    report["exported"] = form.written
    exported = QgsVectorLayer(form.written) if form.written else None
    report["exported_features"] = exported.featureCount() if exported is not None and exported.isValid() else -1
    done()


def done():
    report["stage"] = "done"
    quit_qgis()


def watchdog():
    if report["stage"] != "done":
        fail("the flow did not finish within 380 s")


report["qgis"] = Qgis.QGIS_VERSION
# A crash in a worker thread (e.g. inside a background task) leaves its Python stacks here.
FAULTS = open(os.path.join(WORK, "faulthandler.txt"), "w")  # open while QGIS runs
faulthandler.enable(FAULTS, all_threads=True)
QTimer.singleShot(380000, watchdog)
QTimer.singleShot(3000, open_dock)
