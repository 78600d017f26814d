"""Run inside QGIS desktop (``qgis --code tests/qgis/first_run_driver.py``) by test_desktop_first_run.py: open
demo.qgz as a first-time user would, open the SatSeg panel and visit its tabs; record the main window's size,
every modal dialog that appears (and close it), the map's extent, the message log; save a screenshot; write a
JSON report and quit.

Environment:
    SATSEG_FIRST_RUN_PROJECT: the project to open (demo.qgz).
    SATSEG_FIRST_RUN_REPORT: path of the JSON report.
    SATSEG_FIRST_RUN_SHOT: path of the screenshot (PNG).
"""

import json
import os
import time
import traceback

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QAction, QApplication
from qgis.utils import iface, plugins

PROJECT = os.environ["SATSEG_FIRST_RUN_PROJECT"]
REPORT = os.environ["SATSEG_FIRST_RUN_REPORT"]
SHOT = os.environ["SATSEG_FIRST_RUN_SHOT"]
report = {"stage": "start", "errors": [], "modal_dialogs": [], "log": [], "window_sizes": {}}


def log_message(message, tag, level):
    report["log"].append({"tag": tag, "level": int(level), "message": message})


QgsApplication.messageLog().messageReceived.connect(log_message)


def close_modal_dialogs():
    """A modal dialog would block a real user: note its title and close it so that the run goes on."""
    widget = QApplication.activeModalWidget()
    if widget is not None:
        report["modal_dialogs"].append({"stage": report["stage"], "title": widget.windowTitle(),
                                        "class": type(widget).__name__})
        widget.close()


watcher = QTimer()
watcher.timeout.connect(close_modal_dialogs)
watcher.start(100)


def save_report():
    with open(REPORT, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1, default=str)


def quit_qgis():
    save_report()
    QgsProject.instance().clear()
    QgsProject.instance().setDirty(False)
    QTimer.singleShot(300, iface.actionExit().trigger)


def guarded(function):
    def run(*args):
        try:
            function(*args)
        except Exception:  # reported, then QGIS quits
            report["errors"].append(f"{report['stage']}: {traceback.format_exc()}")
            quit_qgis()
    return run


def settle(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QgsApplication.processEvents()
        time.sleep(0.02)


def window_size(name):
    window = iface.mainWindow()
    report["window_sizes"][name] = [window.width(), window.height()]


@guarded
def open_project():
    report["stage"] = "open project"
    report["plugin_loaded"] = "satseg_plugin" in plugins
    window = iface.mainWindow()
    window.showMaximized()
    screen = window.screen().availableGeometry()
    window.setGeometry(screen)  # Xvfb has no window manager to maximise it: the whole 1600 x 1000 screen
    settle(1.0)
    report["canvas_width_before"] = iface.mapCanvas().width()
    window_size("before")
    report["screen"] = [window.screen().geometry().width(), window.screen().geometry().height()]
    report["opened"] = iface.addProject(PROJECT)
    settle(2.0)
    canvas = iface.mapCanvas()
    canvas.waitWhileRendering()
    window_size("project open")
    extent = canvas.extent()
    report["canvas_extent"] = [extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()]
    report["canvas_scale"] = canvas.scale()
    scene = next((layer for layer in QgsProject.instance().mapLayers().values()
                  if isinstance(layer, QgsRasterLayer) and layer.name().startswith("Sample scene")), None)
    if scene is not None:
        box = scene.extent()
        report["scene_extent"] = [box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()]
    image = canvas.grab().toImage()
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    report["canvas_colours"] = len(colours)
    QTimer.singleShot(0, open_panel)


@guarded
def open_panel():
    report["stage"] = "open panel"
    action = iface.mainWindow().findChild(QAction, "mActionSatSegDock")
    report["dock_action"] = action is not None
    action.trigger()
    settle(1.5)
    dock = plugins["satseg_plugin"].dock
    window_size("panel open")
    report["dock_width"] = dock.width()
    report["canvas_width"] = iface.mapCanvas().width()
    report["tabs"] = [dock.tabs.tabText(i) for i in range(dock.tabs.count())]
    annotation = dock.annotate.layer_combo.currentLayer()
    report["annotation_layer"] = annotation.name() if annotation is not None else None
    report["class_field"] = dock.annotate.class_field()
    report["class_buttons"] = [b.text() for b in dock.annotate.picker.group.buttons()]
    report["start_note_visible"] = dock.annotate.start_note.isVisible()
    cluster = dock.label_clusters.raster_combo.currentLayer()
    report["cluster_raster"] = cluster.name() if cluster is not None else None
    report["annotation_choices"] = [dock.annotate.layer_combo.itemText(i)
                                    for i in range(dock.annotate.layer_combo.count())]
    for index in range(dock.tabs.count()):
        dock.tabs.setCurrentIndex(index)
        settle(0.5)
        window_size(f"tab {report['tabs'][index]}")
    dock.tabs.setCurrentIndex(0)
    settle(0.5)
    iface.mapCanvas().waitWhileRendering()
    report["stage"] = "screenshot"
    iface.mainWindow().grab().save(SHOT)
    report["stage"] = "done"
    quit_qgis()


QTimer.singleShot(500, open_project)
