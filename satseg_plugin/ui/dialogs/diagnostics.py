"""SatSeg diagnostics: versions, interpreter, compute devices, SatSeg's package folder and ``sys.path``.

The rows come from :mod:`..engine.diagnostics` plus what only QGIS knows; they are collected in a
background thread (importing torch to ask for its devices takes seconds) and can be copied for a bug
report. *Install missing…* opens the installer for what is missing.
"""

from __future__ import annotations

import glob
import importlib
import os
import sys
import threading
from typing import Callable, List, Optional, Tuple

from qgis.core import Qgis
from qgis.PyQt.QtCore import PYQT_VERSION_STR, QT_VERSION_STR, Qt, pyqtSignal
from qgis.PyQt.QtGui import QFont, QGuiApplication
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QProgressBar,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...core.deps import CRASHING_IMPORTS, PIP_NAMES, block_crashing_imports, package_for
from ...setup.diagnostics import environment_report, optional_package_report, package_report
from ...setup.installer import detect_gpu
from .installer import InstallerDialog, plugin_deps_dir, tr

__all__ = ["DiagnosticsDialog", "collect_rows", "show_diagnostics", "Row"]

#: ``(section, item, value)``.
Row = Tuple[str, str, str]


def _module_details(module: str, folder: str) -> Tuple[str, bool]:
    """Extra facts about an imported module (the native library it links, where it was loaded from) and
    whether it was loaded from SatSeg's folder ``folder``."""
    mod = sys.modules.get(module)
    if mod is None:
        return "", False
    details = []
    if module == "torch":
        cuda = getattr(getattr(mod, "version", None), "cuda", None)
        details.append(f"CUDA build {cuda}" if cuda else "CPU-only build")
    elif module == "rasterio" and getattr(mod, "__gdal_version__", None):
        details.append(f"GDAL {mod.__gdal_version__}")
    elif module == "shapely" and getattr(mod, "geos_version_string", None):
        details.append(f"GEOS {mod.geos_version_string}")
    where = getattr(mod, "__file__", None) or ""
    if where:
        details.append(os.path.dirname(where))
    return "; ".join(details), bool(where) and os.path.abspath(where).startswith(folder + os.sep)


def collect_rows(folder: Optional[str] = None) -> List[Row]:
    """Everything the dialog shows (slow: imports every package SatSeg uses). Safe off the GUI thread."""
    folder = os.path.abspath(folder or plugin_deps_dir())
    env = environment_report()
    rows: List[Row] = [("SatSeg", "SatSeg", env.get("SatSeg", "")),
                       ("SatSeg", "QGIS", f"{Qgis.version()}"),
                       ("SatSeg", "Qt / PyQt", f"{QT_VERSION_STR} / {PYQT_VERSION_STR}"),
                       ("SatSeg", "Python", env.get("Python", "")),
                       ("SatSeg", "Interpreter", env.get("Interpreter", "")),
                       ("SatSeg", "Platform", env.get("Platform", ""))]
    try:
        gdal = importlib.import_module("osgeo.gdal")
        rows.append(("SatSeg", "GDAL (QGIS)", gdal.__version__))
    except ImportError:
        rows.append(("SatSeg", "GDAL (QGIS)", "osgeo not importable"))
    rows.append(("Devices", "torch devices", env.get("Devices", "")))
    rows.append(("Devices", "GPU hint", detect_gpu().description))
    modules = {pip_name: module for module, pip_name in PIP_NAMES.items()}
    for pip_name, version, _command in package_report():
        module = modules.get(pip_name, pip_name)
        if version == "missing":
            package = package_for(module)
            purpose = f" (needed for {package.purpose})" if package else ""
            rows.append(("Packages", pip_name, f"missing{purpose}"))
        else:
            details, from_folder = _module_details(module, folder)
            in_folder = " [SatSeg folder]" if from_folder else ""
            rows.append(("Packages", pip_name, f"{version}{in_folder}" + (f" — {details}" if details else "")))
    for module, value, _command in optional_package_report():
        rows.append(("Optional packages", module, value))
    for name, reason in CRASHING_IMPORTS.items():
        if name in sys.modules and sys.modules[name] is None:
            rows.append(("Packages", name, f"kept from loading in QGIS: {reason}"))
    exists = os.path.isdir(folder)
    on_path = folder in sys.path
    rows.append(("SatSeg folder", "Path", folder))
    rows.append(("SatSeg folder", "Exists", "yes" if exists else "no (created by the first install)"))
    rows.append(("SatSeg folder", "On sys.path",
                 f"yes, entry {sys.path.index(folder)} of {len(sys.path)}" if on_path else "no"))
    logs = sorted(glob.glob(os.path.join(folder, "satseg-install-*.log"))) if exists else []
    rows.append(("SatSeg folder", "Last install log", logs[-1] if logs else "none"))
    for i, entry in enumerate(sys.path):
        rows.append(("sys.path", str(i), entry))
    return rows


def rows_as_text(rows: List[Row]) -> str:
    """The rows as plain text, one ``item: value`` a line under each section (for bug reports)."""
    lines, section = [], None
    for sec, item, value in rows:
        if sec != section:
            lines.append(f"[{sec}]")
            section = sec
        lines.append(f"{item}: {value}")
    return "\n".join(lines)


class DiagnosticsDialog(QDialog):
    """A table of what SatSeg sees, with *Copy to clipboard* and *Install missing…*.

    Args:
        parent: parent widget.
        folder: SatSeg's package folder (default: the current profile's).
        collect: the function that makes the rows (default :func:`collect_rows`); runs in a thread.
    """

    #: Emitted (in the GUI thread) once the rows are shown.
    collected = pyqtSignal()
    _rows_ready = pyqtSignal(object)

    def __init__(self, parent: Optional[QWidget] = None, folder: Optional[str] = None,
                 collect: Optional[Callable[[str], List[Row]]] = None) -> None:
        super().__init__(parent)
        self.setObjectName("SatSegDiagnosticsDialog")
        self.setWindowTitle(tr("SatSeg diagnostics"))
        self.folder = os.path.abspath(folder or plugin_deps_dir())
        self.rows: List[Row] = []
        self.installer: Optional[InstallerDialog] = None
        layout = QVBoxLayout(self)
        self.status = QLabel(tr("Collecting versions and devices…"))
        self.status.setObjectName("status")
        layout.addWidget(self.status)
        # Collecting takes seconds (importing torch): a busy bar instead of an empty table meanwhile.
        self.busy = QProgressBar()
        self.busy.setObjectName("collecting")
        self.busy.setRange(0, 0)
        self.busy.setTextVisible(False)
        layout.addWidget(self.busy)
        self.table = QTableWidget(0, 2)
        self.table.setObjectName("diagnostics")
        self.table.setHorizontalHeaderLabels([tr("Item"), tr("Value")])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(True)
        self.table.setVisible(False)
        layout.addWidget(self.table, 1)
        buttons = QDialogButtonBox()
        self.copy_button = buttons.addButton(tr("Copy to clipboard"), QDialogButtonBox.ButtonRole.ActionRole)
        self.copy_button.setObjectName("copy")
        self.install_button = buttons.addButton(tr("Install missing…"), QDialogButtonBox.ButtonRole.ActionRole)
        self.install_button.setObjectName("installMissing")
        close = buttons.addButton(QDialogButtonBox.StandardButton.Close)
        for button in (self.copy_button, self.install_button):
            button.setEnabled(False)
        self.copy_button.clicked.connect(self.copy_to_clipboard)
        self.install_button.clicked.connect(self.open_installer)
        close.clicked.connect(self.close)
        layout.addWidget(buttons)
        self.resize(900, 700)
        self._rows_ready.connect(self._show_rows)
        block_crashing_imports()  # package_report imports torchvision, which would load triton (see deps)
        collect = collect or collect_rows
        threading.Thread(target=self._collect, args=(collect,), name="satseg-diagnostics", daemon=True).start()

    def _collect(self, collect: Callable[[str], List[Row]]) -> None:
        try:
            rows = collect(self.folder)
        except Exception as exc:  # shown in the dialog instead of lost in a thread
            rows = [("Error", "collecting diagnostics failed", repr(exc))]
        try:
            self._rows_ready.emit(rows)  # queued to the GUI thread
        except RuntimeError:  # the dialog was closed and deleted meanwhile
            pass

    def _show_rows(self, rows: List[Row]) -> None:
        self.rows = list(rows)
        self.busy.setVisible(False)
        self.table.setVisible(True)
        bold = QFont()
        bold.setBold(True)
        self.table.setRowCount(0)
        section = None
        for sec, item, value in self.rows:
            if sec != section:
                section = sec
                row = self.table.rowCount()
                self.table.insertRow(row)
                header = QTableWidgetItem(sec)
                header.setFont(bold)
                self.table.setItem(row, 0, header)
                self.table.setSpan(row, 0, 1, 2)
            row = self.table.rowCount()
            self.table.insertRow(row)
            self.table.setItem(row, 0, QTableWidgetItem(item))
            cell = QTableWidgetItem(value)
            cell.setToolTip(value)
            if value.startswith("missing"):
                cell.setForeground(Qt.red)
            self.table.setItem(row, 1, cell)
        self.table.resizeColumnToContents(0)
        missing = self.missing()
        self.status.setText(tr("{} package(s) missing: {}").format(len(missing), ", ".join(sorted(missing.values())))
                            if missing else tr("Every package SatSeg uses is installed."))
        self.copy_button.setEnabled(True)
        self.install_button.setEnabled(bool(missing))
        self.collected.emit()

    def missing(self) -> dict:
        """``{import name: pip name}`` of the packages the rows show as missing."""
        modules = {pip_name: module for module, pip_name in PIP_NAMES.items()}
        return {modules.get(item, item): item for sec, item, value in self.rows
                if sec == "Packages" and value.startswith("missing")}

    def as_text(self) -> str:
        """What *Copy to clipboard* copies."""
        return rows_as_text(self.rows)

    def copy_to_clipboard(self) -> None:
        """Copy the report as plain text."""
        QGuiApplication.clipboard().setText(self.as_text())
        self.status.setText(tr("Copied to the clipboard."))

    def open_installer(self) -> InstallerDialog:
        """Open the installer for the missing packages (not modal)."""
        self.installer = InstallerDialog(self, missing=self.missing(), target=self.folder)
        self.installer.show()
        return self.installer


_OPEN: List[DiagnosticsDialog] = []


def show_diagnostics(parent: Optional[QWidget] = None) -> DiagnosticsDialog:
    """Open the diagnostics dialog without blocking (kept alive until closed)."""
    dialog = DiagnosticsDialog(parent)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    _OPEN.append(dialog)
    dialog.destroyed.connect(lambda _obj=None, d=dialog: _OPEN.remove(d) if d in _OPEN else None)
    dialog.show()
    return dialog
