"""QGIS plugin glue: registers the Processing provider, adds the SatSeg menu, toolbar and dock. Kept thin on
purpose: the dock (``ui.dock``) is imported only when it is first opened."""

from __future__ import annotations

from typing import List, Optional

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QCoreApplication, Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QMenu, QToolBar

try:  # Qt 6 moved QAction to QtGui (qgis.PyQt does not re-export it); Qt 5 has it in QtWidgets
    from qgis.PyQt.QtGui import QAction
except ImportError:
    from qgis.PyQt.QtWidgets import QAction

from .processing.base import GROUPS, ICON_PATH, group_icon_path
from .processing.provider import ALGORITHMS, SatSegProvider

__all__ = ["SatSegPlugin"]


def tr(text: str) -> str:
    """Translate in the SatSeg context."""
    return QCoreApplication.translate("SatSeg", text)


class SatSegPlugin:
    """The object QGIS holds for the plugin (see ``classFactory``)."""

    def __init__(self, iface) -> None:
        # The installer's package folder on sys.path, and triton kept out: it crashes QGIS desktop (see
        # engine.deps.CRASHING_IMPORTS). Pure Python, nothing heavy is imported here.
        from .core.deps import setup_imports

        setup_imports(QgsApplication.qgisSettingsDirPath())
        self.iface = iface
        self.provider: Optional[SatSegProvider] = None
        self.menu: Optional[QMenu] = None
        self.toolbar: Optional[QToolBar] = None
        self.dock = None
        self.dock_action: Optional[QAction] = None
        self.actions: List[QAction] = []

    # Called by QGIS for qgis_process and desktop alike (hasProcessingProvider=yes).
    def initProcessing(self) -> None:
        """Register the ``satseg`` provider once."""
        if self.provider is None:
            self.provider = SatSegProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        """Register the provider and build the SatSeg menu in the main menu bar."""
        self.initProcessing()
        if self.iface is None:
            return
        main_window = self.iface.mainWindow()
        menu_bar = main_window.menuBar()
        self.menu = QMenu(tr("&SatSeg"), menu_bar)
        self.menu.setObjectName("mSatSegMenu")
        self.dock_action = QAction(QIcon(ICON_PATH), tr("SatSeg Panel"), main_window)
        self.dock_action.setObjectName("mActionSatSegDock")
        self.dock_action.setCheckable(True)
        self.dock_action.setToolTip(tr("SatSeg panel: annotate, label clusters, run workflows"))
        self.dock_action.triggered.connect(self.show_dock)
        self.menu.addAction(self.dock_action)
        self.menu.addSeparator()
        self.actions.append(self.dock_action)
        if hasattr(self.iface, "addToolBarIcon"):
            # QGIS desktop: one button in QGIS's Plugins toolbar, not a toolbar row of its own for one button.
            self.iface.addToolBarIcon(self.dock_action)
        else:
            self.toolbar = QToolBar(tr("SatSeg"), main_window)
            self.toolbar.setObjectName("mSatSegToolBar")
            self.toolbar.addAction(self.dock_action)
            main_window.addToolBar(self.toolbar)
        # The algorithms grouped as in the Processing toolbox: a header with the pipeline's icon, then its tools
        # (the same icon). Not submenus: a tool stays one click away, where scripts and tests find it.
        algorithms = sorted((a() for a in ALGORITHMS), key=lambda alg: alg.displayName())
        for group_id, name in GROUPS.items():
            members = [alg for alg in algorithms if alg.groupId() == group_id]
            if not members:
                continue
            icon = QIcon(group_icon_path(group_id))
            header = QAction(icon, tr(name), main_window)
            header.setObjectName(f"mActionSatSegGroup_{group_id}")
            header.setEnabled(False)
            font = header.font()
            font.setBold(True)
            header.setFont(font)
            self.menu.addSeparator()
            self.menu.addAction(header)
            self.actions.append(header)
            for alg in members:
                action = QAction(icon, alg.displayName() + "…", main_window)
                action.setObjectName(f"mActionSatSeg_{alg.name()}")
                action.triggered.connect(
                    lambda _checked=False, alg_id=f"satseg:{alg.name()}": self.open_algorithm(alg_id))
                self.menu.addAction(action)
                self.actions.append(action)
        self.menu.addSeparator()
        install = QAction(tr("Install Python packages…"), self.iface.mainWindow())
        install.setObjectName("mActionSatSegInstall")
        install.triggered.connect(self.show_installer)
        self.menu.addAction(install)
        self.actions.append(install)
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

    def show_dock(self) -> None:
        """Create the SatSeg dock on first use and show it; later the action toggles it."""
        if self.dock is None:
            from .ui.dock import SatSegDock  # lazy: QGIS starts faster

            self.dock = SatSegDock(self.iface, parent=self.iface.mainWindow())
            self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
            main_window = self.iface.mainWindow()
            if hasattr(main_window, "resizeDocks"):  # open at a width that leaves the map its room
                from .ui.dock import DOCK_WIDTH

                main_window.resizeDocks([self.dock], [DOCK_WIDTH], Qt.Orientation.Horizontal)
            # From now on the dock keeps the action's check state and answers it.
            self.dock_action.triggered.disconnect(self.show_dock)
            self.dock.setToggleVisibilityAction(self.dock_action)
            # First use: say in the message bar (with an Install… button) when deep-learning packages are missing.
            from .ui.dialogs.installer import offer_installer

            offer_installer(self.iface)
        self.dock.setUserVisible(True)
        self.dock.raise_()

    def open_algorithm(self, algorithm_id: str) -> None:
        """Open the Processing dialog of a SatSeg algorithm."""
        import processing  # QGIS's Processing plugin, loaded by then

        processing.execAlgorithmDialog(algorithm_id, {})

    def show_diagnostics(self) -> None:
        """Show versions, interpreter, devices, paths and any missing package (not modal)."""
        from .ui.dialogs.diagnostics import show_diagnostics

        show_diagnostics(self.iface.mainWindow())

    def show_installer(self) -> None:
        """Open the dependency installer (not modal)."""
        from .ui.dialogs.installer import show_installer

        show_installer(self.iface.mainWindow())

    def unload(self) -> None:
        """Remove the dock, toolbar, menu and the provider."""
        if self.dock is not None:
            self.dock.cleanup()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.dock_action is not None and hasattr(self.iface, "removeToolBarIcon"):
            self.iface.removeToolBarIcon(self.dock_action)
        if self.toolbar is not None:
            self.toolbar.parent().removeToolBar(self.toolbar)
            self.toolbar.setParent(None)  # Python owns it again: deleted now, not at interpreter exit
            self.toolbar = None
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
