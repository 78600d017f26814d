"""Run inside QGIS desktop (``qgis --code scripts/desktop_check.py``): check that SatSeg loaded, save a
screenshot of the main window with the SatSeg menu open, write a JSON report, and quit.

Environment: SATSEG_CHECK_OUT = folder for ``desktop.png`` and ``desktop.json``.
"""

import json
import os

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication, QDialog
from qgis.utils import iface, plugins

OUT = os.environ.get("SATSEG_CHECK_OUT", os.getcwd())


def check():
    report = {"plugin_loaded": "satseg_plugin" in plugins}
    provider = QgsApplication.processingRegistry().providerById("satseg")
    report["provider"] = provider is not None
    report["algorithms"] = sorted(a.id() for a in provider.algorithms()) if provider else []
    menu_bar = iface.mainWindow().menuBar()
    report["menus"] = [a.text() for a in menu_bar.actions()]
    menu = next((a.menu() for a in menu_bar.actions() if a.text() == "&SatSeg"), None)
    report["satseg_menu"] = [a.text() for a in menu.actions()] if menu else []
    iface.mainWindow().showMaximized()
    if menu is not None:
        menu.popup(menu_bar.mapToGlobal(menu_bar.actionGeometry(menu.menuAction()).bottomLeft()))
    QTimer.singleShot(1500, lambda: finish(report, menu))


def finish(report, menu):
    QgsApplication.primaryScreen().grabWindow(0).save(os.path.join(OUT, "desktop.png"))
    if menu is not None:
        menu.close()
    action = next((a for a in (menu.actions() if menu else []) if a.objectName() == "mActionSatSeg_patchraster"), None)
    report["dialog"] = None
    if action is None:
        return done(report)
    # The Processing dialog is modal: grab and close it from a timer that runs inside its event loop.
    QTimer.singleShot(2500, lambda: grab_dialog(report))
    action.trigger()


def grab_dialog(report):
    # Xvfb has no window manager, so no window is "active": take the visible top-level dialog.
    dialogs = [w for w in QApplication.topLevelWidgets() if isinstance(w, QDialog) and w.isVisible()]
    dialog = dialogs[0] if dialogs else None
    if dialog is not None:
        report["dialog"] = dialog.windowTitle()
        dialog.grab().save(os.path.join(OUT, "patch_dialog.png"))
        dialog.reject() if hasattr(dialog, "reject") else dialog.close()
    QTimer.singleShot(300, lambda: done(report))


def done(report):
    with open(os.path.join(OUT, "desktop.json"), "w") as handle:
        json.dump(report, handle, indent=1)
    QTimer.singleShot(200, iface.actionExit().trigger)


QTimer.singleShot(3000, check)
