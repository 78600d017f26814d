"""QGIS plugin glue: registers the Processing provider and adds the SatSeg menu. Kept thin on purpose."""

from __future__ import annotations

import html
from typing import List, Optional

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QMenu, QMessageBox

from .processing_provider.base import ICON_PATH
from .processing_provider.provider import ALGORITHMS, SatSegProvider

__all__ = ["SatSegPlugin"]


def tr(text: str) -> str:
    """Translate in the SatSeg context."""
    return QCoreApplication.translate("SatSeg", text)


class SatSegPlugin:
    """The object QGIS holds for the plugin (see ``classFactory``)."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: Optional[SatSegProvider] = None
        self.menu: Optional[QMenu] = None
        self.actions: List[QAction] = []

    # Called by QGIS for qgis_process and desktop alike (hasProcessingProvider=yes).
    def initProcessing(self) -> None:  # noqa: N802
        """Register the ``satseg`` provider once."""
        if self.provider is None:
            self.provider = SatSegProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        """Register the provider and build the SatSeg menu in the main menu bar."""
        self.initProcessing()
        if self.iface is None:
            return
        menu_bar = self.iface.mainWindow().menuBar()
        self.menu = QMenu(tr("&SatSeg"), menu_bar)
        self.menu.setObjectName("mSatSegMenu")
        for algorithm_class in ALGORITHMS:
            alg = algorithm_class()
            action = QAction(QIcon(ICON_PATH), alg.displayName() + "…", self.iface.mainWindow())
            action.setObjectName(f"mActionSatSeg_{alg.name()}")
            action.triggered.connect(lambda _checked=False, alg_id=f"satseg:{alg.name()}": self.open_algorithm(alg_id))
            self.menu.addAction(action)
            self.actions.append(action)
        self.menu.addSeparator()
        about = QAction(tr("About SatSeg and diagnostics…"), self.iface.mainWindow())
        about.setObjectName("mActionSatSegAbout")
        about.triggered.connect(self.show_diagnostics)
        self.menu.addAction(about)
        self.actions.append(about)
        help_menu = self.iface.helpMenu() if hasattr(self.iface, "helpMenu") else None
        if help_menu is not None:
            menu_bar.insertMenu(help_menu.menuAction(), self.menu)
        else:
            menu_bar.addMenu(self.menu)

    def open_algorithm(self, algorithm_id: str) -> None:
        """Open the Processing dialog of a SatSeg algorithm."""
        import processing  # noqa: PLC0415  (QGIS's Processing plugin, loaded by then)

        processing.execAlgorithmDialog(algorithm_id, {})

    def show_diagnostics(self) -> None:
        """Show versions, interpreter, devices and any missing package with its install command."""
        from .engine.diagnostics import environment_report, package_report  # noqa: PLC0415

        rows = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>"
                       for k, v in environment_report().items())
        rows += "".join(f"<tr><td>{html.escape(name)}</td><td>{html.escape(version)}"
                        f"{'<br><code>' + html.escape(cmd) + '</code>' if cmd else ''}</td></tr>"
                        for name, version, cmd in package_report())
        QMessageBox.information(self.iface.mainWindow(), tr("SatSeg diagnostics"), f"<table>{rows}</table>")

    def unload(self) -> None:
        """Remove the menu and the provider."""
        for action in self.actions:
            if self.menu is not None:
                self.menu.removeAction(action)
            action.deleteLater()
        self.actions.clear()
        if self.menu is not None:
            self.menu.deleteLater()
            self.menu = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
