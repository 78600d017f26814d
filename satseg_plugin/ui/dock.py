"""The SatSeg dock: tabs *Annotate*, *Label clusters* and *Run*, a results folder, and the status of the work
running in the background (progress, Cancel; the same tasks show in QGIS's task manager)."""

from __future__ import annotations

import os
import tempfile
import time
from typing import List, Optional

from qgis.core import Qgis, QgsProject, QgsSettings
from qgis.gui import QgsDockWidget, QgsFileWidget, QgsMapCanvas
from qgis.PyQt.QtCore import QCoreApplication, Qt
from qgis.PyQt.QtGui import QKeySequence
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QScrollArea,
    QShortcut,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .panels.annotate import AnnotatePanel
from .panels.label_clusters import LabelClustersPanel
from .panels.run_forms import RunPanel
from .tasks import AlgorithmChain

__all__ = ["SatSegDock", "SETTINGS_RESULTS_DIR", "DOCK_WIDTH"]

#: The width the dock opens with (pixels); it never asks for more: its content scrolls instead.
DOCK_WIDTH = 400

#: QgsSettings key of the results folder.
SETTINGS_RESULTS_DIR = "SatSeg/results_dir"
_COLOURS = {Qgis.Info: "", Qgis.Success: "color: #1a7f37;", Qgis.Warning: "color: #9a6700;",
            Qgis.Critical: "color: #cf222e;"}


def in_temp_folder(path: str) -> bool:
    """Whether ``path`` lies in the system's temporary folder, where QGIS counts every layer as temporary
    (``QgsMapLayer.isTemporary``) and asks about it when the project closes."""
    temp, real = os.path.realpath(tempfile.gettempdir()), os.path.realpath(path)
    return os.path.commonpath([temp, real]) == temp


def default_results_dir() -> str:
    """The results folder used until the user picks one: ``satseg_results`` beside a saved project, else (or
    when the project lies in the temporary folder, whose layers QGIS asks about on quit) ``~/SatSeg``."""
    saved = QgsSettings().value(SETTINGS_RESULTS_DIR, "")
    if saved:
        return saved
    home = QgsProject.instance().homePath()
    if home and not in_temp_folder(home):
        return os.path.join(home, "satseg_results")
    return os.path.join(os.path.expanduser("~"), "SatSeg")


class SatSegDock(QgsDockWidget):
    """SatSeg's dock widget.

    Args:
        iface: QGIS's ``QgisInterface`` (None in tests: then give ``canvas``); used only on the main thread,
            for the message bar.
        canvas: the map canvas the tools work on (default: ``iface.mapCanvas()``).
    """

    def __init__(self, iface=None, canvas: Optional[QgsMapCanvas] = None, parent: Optional[QWidget] = None) -> None:
        super().__init__(QCoreApplication.translate("SatSeg", "SatSeg"), parent)
        self.setObjectName("SatSegDock")
        self.iface = iface
        self.canvas = canvas if canvas is not None else iface.mapCanvas()
        self.chains: List[AlgorithmChain] = []
        self.messages: List[tuple] = []  # (level, text), newest last

        body = QWidget(self)
        layout = QVBoxLayout(body)
        self.tabs = QTabWidget(body)
        self.tabs.setObjectName("satsegTabs")
        self.tabs.setUsesScrollButtons(True)
        self.tabs.setElideMode(Qt.TextElideMode.ElideRight)
        self.annotate = AnnotatePanel(self, body)
        self.label_clusters = LabelClustersPanel(self, body)
        self.run_panel = RunPanel(self, body)
        self.tabs.addTab(self.annotate, self.tr("Annotate"))
        self.tabs.addTab(self.label_clusters, self.tr("Label clusters"))
        self.tabs.addTab(self.run_panel, self.tr("Run"))
        layout.addWidget(self.tabs, 1)

        folder_row = QHBoxLayout()
        folder_row.addWidget(QLabel(self.tr("Results folder"), body))
        self.results_widget = QgsFileWidget(body)
        self.results_widget.setObjectName("satsegResultsDir")
        self.results_widget.setStorageMode(QgsFileWidget.GetDirectory)
        self.results_widget.setFilePath(default_results_dir())
        self.results_widget.fileChanged.connect(lambda path: QgsSettings().setValue(SETTINGS_RESULTS_DIR, path))
        folder_row.addWidget(self.results_widget, 1)
        layout.addLayout(folder_row)

        status_row = QHBoxLayout()
        self.status = QLabel(self.tr("Ready."), body)
        self.status.setObjectName("satsegStatus")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        status_row.addWidget(self.status, 1)
        self.progress = QProgressBar(body)
        self.progress.setRange(0, 100)
        self.progress.setObjectName("satsegProgress")
        self.progress.setFormat("%p %")  # a percentage, not only a busy bar
        self.progress.setTextVisible(True)
        self.progress.setMaximumWidth(120)
        self.progress.setVisible(False)
        status_row.addWidget(self.progress)
        self.cancel_button = QToolButton(body)
        self.cancel_button.setText(self.tr("Cancel"))
        self.cancel_button.setObjectName("satsegCancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        status_row.addWidget(self.cancel_button)
        layout.addLayout(status_row)
        # The content scrolls inside the dock: however wide a form or a class name, the dock never asks QGIS's
        # main window for more width (issue 18: a 1,471 px dock pushed the window off the screen).
        self.scroll = QScrollArea(self)
        self.scroll.setObjectName("satsegScroll")
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.scroll.setWidget(body)
        self.scroll.setMinimumWidth(200)
        self.setWidget(self.scroll)
        for combo in body.findChildren(QComboBox):  # long layer names must not widen the dock either
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)

        self.shortcuts = []
        for number in range(1, 10):
            shortcut = QShortcut(QKeySequence(str(number)), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(lambda n=number: self.select_class(n))
            self.shortcuts.append(shortcut)

        # The tabs work together: the annotation layer is what Run trains on; a new cluster raster is labelled.
        self.annotate.layer_combo.layerChanged.connect(self._annotation_layer_changed)
        self.run_panel.cluster_form.clustersReady.connect(self._clusters_ready)
        self.closedStateChanged.connect(lambda closed: closed and self.release_tools())
        QgsProject.instance().layersAdded.connect(self._layers_added)
        self._annotation_layer_changed(self.annotate.layer)

    # -- host API used by the tabs ------------------------------------------------------------------------------
    def results_dir(self, prefix: str = "") -> str:
        """The results folder (created); with ``prefix``, a new ``prefix_YYYYmmdd-HHMMSS`` folder inside it."""
        base = self.results_widget.filePath().strip() or default_results_dir()
        if not prefix:
            os.makedirs(base, exist_ok=True)
            return base
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder, n = os.path.join(base, f"{prefix}_{stamp}"), 1
        while os.path.exists(folder):
            n += 1
            folder = os.path.join(base, f"{prefix}_{stamp}_{n}")
        os.makedirs(folder)
        return folder

    def message(self, text: str, level=Qgis.Info) -> None:
        """Show ``text`` in the dock's status line and, in QGIS desktop, in the message bar."""
        self.messages.append((level, text))
        self.status.setText(text)
        self.status.setStyleSheet(_COLOURS.get(level, ""))
        if self.iface is not None and level != Qgis.Info:
            self.iface.messageBar().pushMessage(self.tr("SatSeg"), text, level,
                                                0 if level == Qgis.Critical else 6)

    def start_chain(self, chain: AlgorithmChain) -> None:
        """Start ``chain`` in the background and follow it in the status line."""
        self.chains.append(chain)
        chain.statusChanged.connect(self._show_status)
        chain.progressChanged.connect(lambda value: self.progress.setValue(int(value)))
        chain.finished.connect(lambda ok, _results, c=chain: self._chain_finished(c, ok))
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.cancel_button.setEnabled(True)
        chain.start()

    def _show_status(self, text: str) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("")

    def running_chains(self) -> List[AlgorithmChain]:
        """The chains still running."""
        return [c for c in self.chains if c.running]

    def cancel(self) -> None:
        """Cancel everything SatSeg runs in the background from this dock; the status says so at once (the step
        stops at its next check and the chain then reports "canceled")."""
        running = self.running_chains()
        for chain in running:
            chain.cancel()
        if running:
            self._show_status(self.tr("Canceling…"))
            self.cancel_button.setEnabled(False)

    def _chain_finished(self, chain: AlgorithmChain, ok: bool) -> None:
        running = self.running_chains()
        self.progress.setVisible(bool(running))
        self.cancel_button.setEnabled(bool(running))
        if ok:
            names = ", ".join(layer.name() for layer in chain.layers)
            self.message(self.tr("{} finished.").format(chain.title) + (
                " " + self.tr("Added: {}.").format(names) if names else ""), Qgis.Success)
        else:
            self.message(chain.error, Qgis.Warning if chain.error.endswith(self.tr("canceled.")) else Qgis.Critical)
        self.chains = [c for c in self.chains if c.running]

    # -- classes and cross-tab wiring ---------------------------------------------------------------------------
    def select_class(self, number: int) -> bool:
        """Keys 1..9: choose class ``number`` of the tab whose map tool is active, else of the current tab (the
        Annotate tab's on the Run tab)."""
        tool = self.canvas.mapTool()
        if tool is self.label_clusters.tool:
            panel = self.label_clusters
        elif tool in (self.annotate.draw_tool, self.annotate.patch_tool):
            panel = self.annotate
        else:
            panel = self.label_clusters if self.tabs.currentWidget() is self.label_clusters else self.annotate
        return panel.picker.select(number)

    def _annotation_layer_changed(self, layer) -> None:
        if layer is not None:
            self.run_panel.train_form.labels.setLayer(layer)

    def _clusters_ready(self, layer) -> None:
        self.label_clusters.set_layer(layer)

    def _layers_added(self, _layers) -> None:
        self.run_panel.track_form.refresh_frames()

    def release_tools(self) -> None:
        """Unset the dock's map tools (the dock was closed)."""
        self.annotate.release_tools()
        self.label_clusters.release_tools()

    def cleanup(self) -> None:
        """Before the plugin unloads: cancel running work, release tools, restore the cluster raster's style."""
        self.cancel()
        self.annotate.cleanup()
        self.label_clusters.cleanup()
        try:
            QgsProject.instance().layersAdded.disconnect(self._layers_added)
        except TypeError:
            pass
