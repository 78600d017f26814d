"""The dependency installer dialog: what SatSeg is missing, why, and a button that installs it.

The install runs as a :class:`QgsTask` (visible, with progress, in QGIS's task manager; pip's output is
streamed into the dialog's log), so QGIS stays responsive. The work itself is
:func:`..setup.pip_runner.run_install`; this module only shows it.
"""

from __future__ import annotations

import html
import importlib
import sys
from typing import Callable, Dict, List, Mapping, Optional

from qgis.core import Qgis, QgsApplication, QgsSettings, QgsTask
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QFontDatabase
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...core.deps import OPTIONAL_PACKAGES, activate_deps_dir, deps_dir, find_missing, package_for
from ...setup.installer import (
    LINUX_SOURCE_BUILDS,
    TORCH_INDEX_BASE,
    GpuHint,
    InstallPlan,
    build_tools_missing,
    detect_gpu,
    make_plan,
)
from ...setup.pip_runner import InstallResult, run_install

__all__ = ["InstallerDialog", "InstallTask", "plugin_deps_dir", "activate_plugin_deps", "show_installer",
           "offer_installer", "DONT_ASK_KEY"]

#: QgsSettings key: True when the user asked not to be offered the installer at start-up.
DONT_ASK_KEY = "SatSeg/installer/dontAsk"
_OPEN: List[QDialog] = []  # dialogs shown non-modally, kept alive until closed
_RUNNING: List["InstallTask"] = []  # tasks whose dialog was closed, kept alive until they end


def tr(text: str) -> str:
    """Translate in the SatSeg context."""
    from qgis.PyQt.QtCore import QCoreApplication

    return QCoreApplication.translate("SatSeg", text)


def plugin_deps_dir() -> str:
    """SatSeg's package folder in the current QGIS profile (``$SATSEG_DEPS_DIR`` overrides)."""
    return deps_dir(QgsApplication.qgisSettingsDirPath())


def activate_plugin_deps() -> str:
    """Put the profile's SatSeg package folder on ``sys.path`` (after site-packages); return the folder."""
    folder = plugin_deps_dir()
    activate_deps_dir(folder)
    return folder


class InstallTask(QgsTask):
    """Runs :func:`run_install` in QGIS's task manager; ``line`` carries pip's output to the GUI thread."""

    line = pyqtSignal(str)

    def __init__(self, plan: InstallPlan) -> None:
        super().__init__(tr("SatSeg: installing Python packages"), QgsTask.CanCancel)
        self.plan = plan
        self.result: Optional[InstallResult] = None

    def run(self) -> bool:  # worker thread: no widgets here
        self.result = run_install(self.plan, self.line.emit, self.isCanceled, lambda f: self.setProgress(100.0 * f))
        return self.result.success


class InstallerDialog(QDialog):
    """Explains what is missing, shows the pip commands, installs in the background and shows the log.

    Args:
        parent: parent widget (QGIS's main window).
        missing: ``{import name: pip name}`` to install; default: what QGIS's Python cannot find.
        target: the folder to install into; default :func:`plugin_deps_dir`.
        gpu: the GPU hint; default :func:`detect_gpu`.

    Attributes:
        plan_hook: optional function applied to each plan before it is shown or run (tests, custom set-ups).
    """

    #: Emitted when an install ends: success, and the result.
    installFinished = pyqtSignal(bool, object)  # Qt naming

    def __init__(self, parent: Optional[QWidget] = None, missing: Optional[Mapping[str, str]] = None,
                 target: Optional[str] = None, gpu: Optional[GpuHint] = None) -> None:
        super().__init__(parent)
        self.setObjectName("SatSegInstallerDialog")
        self.setWindowTitle(tr("SatSeg — install Python packages"))
        self.missing: Dict[str, str] = dict(find_missing() if missing is None else missing)
        self.target = target or plugin_deps_dir()
        self.gpu = gpu or detect_gpu()
        self.plan_hook: Optional[Callable[[InstallPlan], InstallPlan]] = None
        self.task: Optional[InstallTask] = None
        self.result: Optional[InstallResult] = None
        self._build()
        self.refresh()

    # ----------------------------------------------------------------------------------------------- layout
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self.intro = QLabel()
        self.intro.setObjectName("intro")
        self.intro.setWordWrap(True)
        self.intro.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.intro)

        self.table = QTableWidget(0, 3)
        self.table.setObjectName("packages")
        self.table.setHorizontalHeaderLabels([tr("Package"), tr("SatSeg uses it for"), tr("Status")])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        layout.addWidget(self.table)

        options = QGroupBox(tr("Options"))
        box = QVBoxLayout(options)
        self.folder = QLineEdit(self.target)
        self.folder.setObjectName("folder")
        self.folder.setReadOnly(True)
        box.addLayout(self._row(tr("Install into"), self.folder))
        box.addWidget(self._note(tr("A folder that belongs to SatSeg. Packages QGIS's Python already has are used "
                                    "as they are and never changed; this folder only adds what is missing.")))
        self.cpu = QRadioButton(tr("CPU only"))
        self.cpu.setObjectName("buildCpu")
        self.cuda = QRadioButton(tr("NVIDIA GPU (CUDA)"))
        self.cuda.setObjectName("buildCuda")
        self.build_group = QButtonGroup(self)
        for button in (self.cpu, self.cuda):
            self.build_group.addButton(button)
        (self.cuda if self.gpu.suggested_build == "cuda" else self.cpu).setChecked(True)
        box.addLayout(self._row(tr("torch build"), self.cpu, self.cuda, stretch=True))
        self.gpu_label = self._note(self.gpu.description)
        self.gpu_label.setObjectName("gpuHint")
        box.addWidget(self.gpu_label)
        self.index = QComboBox()
        self.index.setObjectName("index")
        self.index.addItem(tr("PyPI (default)"), "pypi")
        self.index.addItem(tr("PyTorch's own index ({})").format(TORCH_INDEX_BASE), "pytorch")
        box.addLayout(self._row(tr("torch from"), self.index))
        self.source = QCheckBox(tr("Build shapely and rasterio against QGIS's own GEOS and GDAL (recommended; "
                                   "needs libgeos-dev, libgdal-dev and a C compiler)"))
        self.source.setObjectName("sourceBuilds")
        self.source.setChecked(not build_tools_missing(LINUX_SOURCE_BUILDS))
        self.source.setVisible(sys.platform.startswith("linux"))
        box.addWidget(self.source)
        layout.addWidget(options)
        self.optional_box = QGroupBox(tr("Optional packages (the tools work without them)"))
        self.optional_box.setObjectName("optionalPackages")
        optional_layout = QVBoxLayout(self.optional_box)
        self.optional_checks: Dict[str, QCheckBox] = {}  # pip name -> its check box
        absent = find_missing([package.module for package in OPTIONAL_PACKAGES])
        for package in OPTIONAL_PACKAGES:
            if package.pip_name in self.optional_checks:  # dask and distributed come together
                continue
            modules = [p.module for p in OPTIONAL_PACKAGES if p.pip_name == package.pip_name]
            here = not any(module in absent for module in modules)
            check = QCheckBox(f"{package.pip_name}: {package.purpose}"
                              + (" " + tr("(installed)") if here else ""))
            check.setObjectName(f"optional_{package.project}")
            check.setChecked(False)
            check.setEnabled(not here)
            check.setProperty("modules", modules)
            check.setProperty("installed", here)
            check.toggled.connect(self.refresh)
            optional_layout.addWidget(check)
            self.optional_checks[package.pip_name] = check
        layout.addWidget(self.optional_box)

        self.warnings = self._note("")
        self.warnings.setObjectName("warnings")
        self.warnings.setStyleSheet("color: #a05a00;")
        layout.addWidget(self.warnings)
        self.command_label = QLabel(tr("Commands:"))
        layout.addWidget(self.command_label)
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        self.command = QPlainTextEdit()
        self.command.setObjectName("command")
        self.command.setReadOnly(True)
        self.command.setFont(mono)
        self.command.setMaximumHeight(110)
        layout.addWidget(self.command)
        self.log_label = QLabel(tr("Log:"))
        layout.addWidget(self.log_label)
        self.log = QPlainTextEdit()
        self.log.setObjectName("log")
        self.log.setReadOnly(True)
        self.log.setFont(mono)
        self.log.setMaximumBlockCount(20000)
        layout.addWidget(self.log, 1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        layout.addWidget(self.progress)
        self.status = QLabel()
        self.status.setObjectName("status")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)

        buttons = QDialogButtonBox()
        self.install_button = buttons.addButton(tr("Install"), QDialogButtonBox.ButtonRole.AcceptRole)
        self.install_button.setObjectName("install")
        self.cancel_button = buttons.addButton(tr("Cancel install"), QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button.setObjectName("cancelInstall")
        self.cancel_button.setEnabled(False)
        self.close_button = buttons.addButton(QDialogButtonBox.StandardButton.Close)
        # Clicks are handled here, not by the box's accepted/rejected (Install must not close the dialog).
        self.install_button.clicked.connect(self.start_install)
        self.cancel_button.clicked.connect(self.cancel_install)
        self.close_button.clicked.connect(self.close)
        layout.addWidget(buttons)

        for button in (self.cpu, self.cuda):
            button.toggled.connect(self.refresh)
        self.index.currentIndexChanged.connect(self.refresh)
        self.source.toggled.connect(self.refresh)
        self.resize(900, 860)

    @staticmethod
    def _row(label: str, *widgets: QWidget, stretch: bool = False) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(QLabel(label))
        for widget in widgets:
            row.addWidget(widget, 0 if stretch else 1)
        if stretch:
            row.addStretch(1)
        return row

    @staticmethod
    def _note(text: str) -> QLabel:
        label = QLabel(text)
        label.setWordWrap(True)
        return label

    # ------------------------------------------------------------------------------------------------ plan
    def chosen_optional(self) -> Dict[str, str]:
        """``{import name: pip name}`` of the optional packages the user ticked."""
        chosen: Dict[str, str] = {}
        for pip_name, check in self.optional_checks.items():
            if check.isChecked() and not check.property("installed"):
                chosen.update({module: pip_name for module in check.property("modules")})
        return chosen

    def plan(self) -> InstallPlan:
        """The plan for the current choices (after :attr:`plan_hook`)."""
        plan = make_plan(self.target, build="cuda" if self.cuda.isChecked() else "cpu",
                         index_source=self.index.currentData() or "pypi",
                         missing={**self.missing, **self.chosen_optional()},
                         source_builds=LINUX_SOURCE_BUILDS if self.source.isChecked() else ())
        return self.plan_hook(plan) if self.plan_hook else plan

    def refresh(self) -> None:
        """Fill the texts from the missing packages and the current choices."""
        plan = self.plan()
        if self.missing:
            # Escaped: "affine<3, ... shapely>=2" would otherwise be read as an HTML tag and vanish.
            names = html.escape(", ".join(sorted(set(self.missing.values()))))
            self.intro.setText(tr("<b>QGIS's Python cannot import {} package(s) SatSeg needs:</b> {}.<br>"
                                  "The installer runs pip for QGIS's own Python (<code>{}</code>) and puts the "
                                  "packages into SatSeg's own folder. No administrator rights are needed.")
                               .format(len(set(self.missing.values())), names, html.escape(plan.interpreter)))
        else:
            self.intro.setText(tr("<b>Nothing is missing: SatSeg has every Python package it needs.</b> "
                                  "Tick an optional package below to add it, or close this window."))
        self.table.setRowCount(len(self.missing))
        for row, (module, pip_name) in enumerate(sorted(self.missing.items())):
            package = package_for(module)
            status = self._status_text(module)
            for col, text in enumerate((pip_name, package.purpose if package else module, status)):
                self.table.setItem(row, col, QTableWidgetItem(text))
        self.table.resizeColumnToContents(0)
        rows_height = sum(self.table.rowHeight(row) for row in range(self.table.rowCount()))
        self.table.setFixedHeight(min(220, self.table.horizontalHeader().height() + rows_height + 6))
        self.table.setVisible(bool(self.missing))
        self.warnings.setText("\n".join("• " + text for text in plan.warnings))
        self.warnings.setVisible(bool(plan.warnings))
        self.command.setPlainText(plan.describe())
        # Nothing to install and nothing run yet: no empty log, no 0 % bar, no "Nothing to install." command.
        idle = plan.is_empty and not self.is_running() and self.result is None
        for widget in (self.command_label, self.command, self.log_label, self.log, self.progress):
            widget.setVisible(not idle)
        running = self.is_running()
        self.install_button.setEnabled(not running and not plan.is_empty)
        for widget in (self.cpu, self.cuda, self.index, self.source, self.optional_box):
            widget.setEnabled(not running)

    def _status_text(self, module: str) -> str:
        if self.result is None or not self.result.installed and not self.result.success:
            return tr("missing")
        return tr("missing") if find_missing([module]) else tr("installed")

    # --------------------------------------------------------------------------------------------- install
    def is_running(self) -> bool:
        """An install task is under way."""
        return self.task is not None

    def start_install(self) -> None:
        """Start the install as a background task (returns at once)."""
        if self.is_running():
            return
        plan = self.plan()
        if plan.is_empty:
            return
        self.result = None
        self.log.clear()
        self.progress.setValue(0)
        self.status.setText(tr("Installing… (QGIS stays usable; the task is also listed in QGIS's task manager)"))
        self.status.setStyleSheet("")
        task = InstallTask(plan)
        task.line.connect(self.append_log)
        task.progressChanged.connect(lambda value: self.progress.setValue(int(value)))
        task.taskCompleted.connect(lambda: self._finished(task))
        task.taskTerminated.connect(lambda: self._finished(task))
        self.task = task
        self.cancel_button.setEnabled(True)
        self.refresh()
        QgsApplication.taskManager().addTask(task)

    def append_log(self, line: str) -> None:
        """Add one line of pip's output to the log view."""
        self.log.appendPlainText(line)

    def cancel_install(self) -> None:
        """Ask the running install to stop (pip is killed)."""
        if self.task is not None:
            self.status.setText(tr("Canceling…"))
            self.task.cancel()

    def _finished(self, task: InstallTask) -> None:
        if task is not self.task:
            return
        result = task.result or InstallResult(False, "", message=tr("The install task stopped unexpectedly."))
        self.task = None
        self.result = result
        self.cancel_button.setEnabled(False)
        if result.success:
            activate_deps_dir(self.target)
            importlib.invalidate_caches()
            still = find_missing(list(self.missing))
            self.progress.setValue(100)
            text = tr("Success. {} The packages can be used now; if a SatSeg tool still reports a missing "
                      "package, restart QGIS.").format(result.message)
            if still:
                text = tr("pip succeeded, but QGIS's Python still cannot find: {}. Restart QGIS and open the "
                          "installer again.").format(", ".join(sorted(still.values())))
            self.status.setStyleSheet("color: #1a7f37;" if not still else "color: #a05a00;")
        elif result.installed:
            activate_deps_dir(self.target)
            importlib.invalidate_caches()
            self.progress.setValue(100)
            text = tr("Partly installed. {} Log: {}").format(result.message, result.log_path)
            self.status.setStyleSheet("color: #a05a00;")
        elif result.canceled:
            text = tr("Canceled. Nothing in QGIS's own Python was changed. Log: {}").format(result.log_path)
            self.status.setStyleSheet("color: #a05a00;")
        else:
            text = tr("Installation failed: {} Log: {}").format(result.message, result.log_path)
            self.status.setStyleSheet("color: #b42318;")
        self.status.setText(text)
        self.refresh()
        self.installFinished.emit(result.success, result)

    def closeEvent(self, event) -> None:
        task, self.task = self.task, None
        if task is not None:  # closing cancels: pip is killed, the log file keeps what happened
            for signal in (task.line, task.progressChanged, task.taskCompleted, task.taskTerminated):
                try:
                    signal.disconnect()  # this dialog may be deleted before the task ends
                except (TypeError, RuntimeError):
                    pass
            _RUNNING.append(task)
            task.taskCompleted.connect(lambda: _RUNNING.remove(task) if task in _RUNNING else None)
            task.taskTerminated.connect(lambda: _RUNNING.remove(task) if task in _RUNNING else None)
            task.cancel()
        super().closeEvent(event)


def show_installer(parent: Optional[QWidget] = None, missing: Optional[Mapping[str, str]] = None,
                   target: Optional[str] = None) -> InstallerDialog:
    """Open the installer without blocking (the dialog stays alive until closed)."""
    dialog = InstallerDialog(parent, missing=missing, target=target)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    _OPEN.append(dialog)
    dialog.destroyed.connect(lambda _obj=None, d=dialog: _OPEN.remove(d) if d in _OPEN else None)
    dialog.show()
    return dialog


def offer_installer(iface, modules: Optional[List[str]] = None) -> bool:
    """At first use: when packages are missing, show a message bar entry with an *Install…* button.

    Nothing modal, nothing when everything is there or when the user chose *Don't ask again*.

    Returns:
        True when the message was shown.
    """
    if iface is None or QgsSettings().value(DONT_ASK_KEY, False, type=bool):
        return False
    missing = find_missing(modules)
    if not missing:
        return False
    bar = iface.messageBar()
    names = html.escape(", ".join(sorted(set(missing.values()))))
    item = bar.createMessage("SatSeg", tr("QGIS's Python cannot import {} ({} package(s)); the deep-learning tools "
                                          "need them.").format(names, len(set(missing.values()))))
    install = QPushButton(tr("Install…"))
    install.setObjectName("satsegOfferInstall")
    install.clicked.connect(lambda: (show_installer(iface.mainWindow(), missing), bar.popWidget(item)))
    never = QPushButton(tr("Don't ask again"))
    never.clicked.connect(lambda: (QgsSettings().setValue(DONT_ASK_KEY, True), bar.popWidget(item)))
    item.layout().addWidget(install)
    item.layout().addWidget(never)
    bar.pushWidget(item, Qgis.Warning)
    return True

