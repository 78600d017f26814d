"""What every form of the dock's *Run* tab shares: :class:`WorkflowForm` (a form that runs a chain of SatSeg
Processing algorithms in the background) and the widget helpers that take their choices and defaults from the
algorithms' own parameter definitions, so the dock and the Processing toolbox offer the same."""

from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional, Sequence, Type, Union

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterNumber,
    QgsProject,
)
from qgis.gui import QgsCollapsibleGroupBox, QgsMapLayerComboBox
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...processing.base import SatSegAlgorithm
from ..tasks import AlgorithmChain, algorithm_available

__all__ = ["WorkflowForm", "algorithm_parameter", "spin_box", "combo_box", "enum_combo", "layer_combo"]


@functools.lru_cache(maxsize=None)
def _unregistered(algorithm: Type[SatSegAlgorithm]) -> SatSegAlgorithm:
    """A fresh, initialised instance (kept alive here) for when the provider is not registered."""
    instance = algorithm()
    instance.initAlgorithm({})
    return instance


def algorithm_parameter(algorithm: Type[SatSegAlgorithm], key: str) -> QgsProcessingParameterDefinition:
    """The definition of parameter ``key`` of ``algorithm`` as Processing has it: the forms take their choices and
    defaults from it, so the dock and the toolbox offer the same."""
    registered = QgsApplication.processingRegistry().algorithmById(algorithm.algorithm_id())
    return (registered or _unregistered(algorithm)).parameterDefinition(key)


def spin_box(algorithm: Type[SatSegAlgorithm], key: str, high: float, step: float = 1,
          name: str = "") -> Union[QSpinBox, QDoubleSpinBox]:
    """A spin box for a number parameter: its minimum and default from the algorithm, ``high`` from the form."""
    definition = algorithm_parameter(algorithm, key)
    integer = definition.dataType() == QgsProcessingParameterNumber.Integer
    box = QSpinBox() if integer else QDoubleSpinBox()
    cast = int if integer else float
    box.setRange(cast(definition.minimum()), cast(min(high, definition.maximum())))
    box.setSingleStep(cast(step))
    box.setValue(cast(definition.defaultValue()))
    if name:
        box.setObjectName(name)
    return box


def combo_box(items: Sequence[str], name: str = "", editable: bool = False) -> QComboBox:
    box = QComboBox()
    box.addItems(list(items))
    box.setEditable(editable)
    if name:
        box.setObjectName(name)
    return box


def enum_combo(algorithm: Type[SatSegAlgorithm], key: str, name: str) -> QComboBox:
    """A drop-down of an enum parameter's options, at its default: the index is the parameter's value."""
    definition = algorithm_parameter(algorithm, key)
    box = combo_box(definition.options(), name)
    box.setCurrentIndex(int(definition.defaultValue() or 0))
    return box


def layer_combo(filters, name: str, optional: bool = False) -> QgsMapLayerComboBox:
    box = QgsMapLayerComboBox()
    box.setFilters(filters)
    box.setObjectName(name)
    if optional:
        box.setAllowEmptyLayer(True)
        box.setLayer(None)
    return box


class WorkflowForm(QWidget):
    """A form that runs a chain of algorithms. Subclasses set :attr:`title`, :attr:`algorithms` and
    :attr:`prefix`, add their fields to :attr:`form`, and define ``steps(folder) -> List[Step]``: the chain's
    steps writing into ``folder`` (raising ValueError with a message for the user when the form is incomplete).

    Signals:
        chainStarted(object): the :class:`AlgorithmChain` just started.
    """

    title = ""
    algorithms: Sequence[str] = ()
    prefix = "run"
    chainStarted = pyqtSignal(object)

    def __init__(self, host, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.host = host
        self.chain: Optional[AlgorithmChain] = None
        self.last_folder = ""
        layout = QVBoxLayout(self)
        self.note = QLabel(self)
        self.note.setWordWrap(True)
        self.note.setVisible(False)
        layout.addWidget(self.note)
        self.form = QFormLayout()
        self.form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        layout.addLayout(self.form)
        self.advanced = QgsCollapsibleGroupBox(self.tr("Advanced"), self)
        self.advanced.setCollapsed(True)
        self.advanced_form = QFormLayout(self.advanced)
        self.advanced_form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        layout.addWidget(self.advanced)
        self.run_button = QPushButton(self.tr("Run"), self)
        self.run_button.setObjectName(f"satsegRun_{self.prefix}")
        self.run_button.clicked.connect(self.run)
        layout.addWidget(self.run_button)
        layout.addStretch(1)

    def missing_algorithms(self) -> List[str]:
        """The ids of :attr:`algorithms` the Processing registry does not have."""
        return [a for a in self.algorithms if not algorithm_available(a)]

    def refresh_availability(self) -> bool:
        """Disable the form (with a note) when one of its algorithms is not registered; True when usable."""
        missing = self.missing_algorithms()
        self.note.setText(self.tr("Needs the algorithms {} (not in this SatSeg installation).")
                          .format(", ".join(missing)) if missing else "")
        self.note.setVisible(bool(missing))
        for widget in (self.run_button, self.advanced):
            widget.setEnabled(not missing and not self.running())
        return not missing

    def running(self) -> bool:
        """Whether this form's chain is still running."""
        return self.chain is not None and self.chain.running

    def run(self) -> Optional[AlgorithmChain]:
        """Check the form and start its chain in the background; returns the chain (None when refused)."""
        if self.running() or not self.refresh_availability():
            return None
        try:
            self.prepare()
            folder = self.host.results_dir(self.prefix)
            steps = self.steps(folder)
        except ValueError as exc:
            self.host.message(str(exc), Qgis.Warning)
            return None
        self.last_folder = folder
        self.chain = AlgorithmChain(self.title, steps, QgsProject.instance(), self)
        self.chain.finished.connect(lambda _ok, _results: self.refresh_availability())
        self.chain.finished.connect(self.finished)
        self.run_button.setEnabled(False)
        self.host.start_chain(self.chain)
        self.chainStarted.emit(self.chain)
        return self.chain

    def prepare(self) -> None:
        """Called before :meth:`steps` on the main thread (e.g. to save edits)."""

    def finished(self, ok: bool, results: Dict[str, Any]) -> None:
        """Called when the chain ends."""
