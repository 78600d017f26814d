"""Run Processing algorithms one after the other in QGIS's task manager and load their outputs on the map.

A :class:`AlgorithmChain` starts each step as a :class:`QgsProcessingAlgRunnerTask` (progress and Cancel in
QGIS's task manager, the GUI never waits), and on the main thread, when a step ends, loads the layers the
step asked Processing to load (applying the algorithms' SatSeg styles), then builds the next step's
parameters from the results so far. Nothing here touches ``iface``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from qgis.core import (
    QgsApplication,
    QgsMapLayer,
    QgsMapLayerType,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingUtils,
    QgsProject,
)
from qgis.PyQt.QtCore import QCoreApplication, QObject, pyqtSignal

__all__ = ["Step", "AlgorithmChain", "ErrorRecordingFeedback", "load_outputs", "on_map", "algorithm_available"]


def tr(text: str) -> str:
    """Translate in the SatSeg context."""
    return QCoreApplication.translate("SatSeg", text)


def algorithm_available(algorithm_id: str) -> bool:
    """Whether ``algorithm_id`` is in the Processing registry."""
    return QgsApplication.processingRegistry().algorithmById(algorithm_id) is not None


def on_map(path: str, project: Optional[QgsProject] = None) -> QgsProcessingOutputLayerDefinition:
    """An output value that writes ``path`` and adds it to ``project`` when the algorithm ends."""
    return QgsProcessingOutputLayerDefinition(path, project or QgsProject.instance())


class ErrorRecordingFeedback(QgsProcessingFeedback):
    """A Processing feedback that keeps every error it was given, whole: a failure is reported with its cause
    (a missing package's name and the command that installs it), not only the last line of the log."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: List[str] = []

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802, N803 (Qt's names)
        """Record ``error`` and report it as usual."""
        self.errors.append(str(error))
        super().reportError(error, fatalError)


@dataclass
class Step:
    """One algorithm of a chain.

    Attributes:
        algorithm_id: e.g. ``"satseg:trainsegmentation"``.
        parameters: ``f(results)`` -> the parameter dict, where ``results`` maps the ids of the steps done so
            far to their outputs (so a step can use a model file the step before wrote). Called on the main
            thread just before the step starts; outputs to load are given with :func:`on_map`.
    """

    algorithm_id: str
    parameters: Callable[[Dict[str, Dict[str, Any]]], Dict[str, Any]]


def _layer_order(layer: QgsMapLayer) -> int:
    """Rasters first, then polygons, lines, points (each is added on top, so points end up on top)."""
    if layer.type() != QgsMapLayerType.VectorLayer:
        return 0
    return 1 + (2 - int(layer.geometryType()))


def load_outputs(context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                 project: Optional[QgsProject] = None) -> List[QgsMapLayer]:
    """Add the layers ``context`` should load on completion to their project and run their post-processors
    (SatSeg's styles). Main thread only. Returns the layers added; unreadable outputs are reported to
    ``feedback``."""
    layers = []
    for source, details in context.layersToLoadOnCompletion().items():
        layer = QgsProcessingUtils.mapLayerFromString(source, context, typeHint=details.layerTypeHint)
        if layer is None:
            feedback.reportError(tr("Could not load the output {}.").format(source))
            continue
        details.setOutputLayerName(layer)
        taken = context.temporaryLayerStore().takeMapLayer(layer)
        layers.append((taken or layer, details))
    added = []
    for layer, details in sorted(layers, key=lambda item: _layer_order(item[0])):
        target = details.project if details.project is not None else (project or QgsProject.instance())
        target.addMapLayer(layer)
        if details.postProcessor() is not None:
            details.postProcessor().postProcessLayer(layer, context, feedback)
        added.append(layer)
    # Only now: the context owns the post-processors and deletes them with the list.
    context.setLayersToLoadOnCompletion({})
    return added


class AlgorithmChain(QObject):
    """Runs :class:`Step` s one after the other in the background; see the module docstring.

    Signals:
        progressChanged(float): progress of the whole chain, 0..100.
        statusChanged(str): what runs now, or how it ended.
        layersLoaded(list): the layers a step added to the project.
        finished(bool, dict): success, and every step's outputs by algorithm id; emitted once.
    """

    progressChanged = pyqtSignal(float)
    statusChanged = pyqtSignal(str)
    layersLoaded = pyqtSignal(object)
    finished = pyqtSignal(bool, object)

    def __init__(self, title: str, steps: List[Step], project: Optional[QgsProject] = None,
                 parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.title, self.steps = title, list(steps)
        self.project = project or QgsProject.instance()
        self.results: Dict[str, Dict[str, Any]] = {}
        self.layers: List[QgsMapLayer] = []
        self.error = ""
        self.running = False
        self.done = False
        self._index = -1
        # The task keeps raw references to these: they must outlive it.
        self._algorithm = self._context = self._feedback = self._task = None
        self._kept: List[Any] = []

    # -- control ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the first step (returns at once)."""
        if self.running or self.done:
            return
        self.running = True
        self._next()

    def cancel(self) -> None:
        """Cancel the running step (the task manager's Cancel does the same); later steps do not start."""
        if self._task is not None and self.running:
            self._feedback.cancel()
            self._task.cancel()

    def current_algorithm(self) -> str:
        """The id of the running step ('' when none)."""
        return self.steps[self._index].algorithm_id if self.running and 0 <= self._index < len(self.steps) else ""

    # -- internals ----------------------------------------------------------------------------------------------
    def _fail(self, message: str) -> None:
        self.error, self.running, self.done = message, False, True
        self._task = None
        self.statusChanged.emit(message)
        self.finished.emit(False, self.results)

    def _next(self) -> None:
        self._index += 1
        if self._index >= len(self.steps):
            self.running, self.done, self._task = False, True, None
            self.progressChanged.emit(100.0)
            self.statusChanged.emit(tr("{}: done.").format(self.title))
            self.finished.emit(True, self.results)
            return
        step = self.steps[self._index]
        registry = QgsApplication.processingRegistry()
        algorithm = registry.createAlgorithmById(step.algorithm_id)
        if algorithm is None:
            self._fail(tr("{}: the algorithm {} is not available (is the SatSeg provider enabled?).")
                       .format(self.title, step.algorithm_id))
            return
        try:
            parameters = step.parameters(self.results)
        except (ValueError, KeyError) as exc:
            self._fail(tr("{}: {}").format(self.title, exc))
            return
        context = QgsProcessingContext()
        context.setProject(self.project)
        feedback = ErrorRecordingFeedback()
        ok, message = algorithm.checkParameterValues(parameters, context)
        if not ok:
            self._fail(tr("{} — {}: {}").format(self.title, algorithm.displayName(), message))
            return
        task = QgsProcessingAlgRunnerTask(algorithm, parameters, context, feedback)
        task.setDescription(tr("SatSeg: {}").format(algorithm.displayName()))
        task.executed.connect(self._executed)
        task.progressChanged.connect(self._progress)
        self._algorithm, self._context, self._feedback, self._task = algorithm, context, feedback, task
        self._kept += [algorithm, context, feedback]
        self.statusChanged.emit(tr("{} — step {}/{}: {}…").format(self.title, self._index + 1, len(self.steps),
                                                                  algorithm.displayName()))
        self._progress(0.0)
        QgsApplication.taskManager().addTask(task)

    def _progress(self, value: float) -> None:
        share = 100.0 / max(1, len(self.steps))
        self.progressChanged.emit(share * self._index + share * max(0.0, min(100.0, value)) / 100.0)

    def _executed(self, ok: bool, results: Dict[str, Any]) -> None:
        """Main thread: the step ended (QgsProcessingAlgRunnerTask.executed)."""
        step, feedback = self.steps[self._index], self._feedback
        if not ok:
            if feedback.isCanceled():
                self._fail(tr("{}: canceled.").format(self.title))
            else:
                errors = [text.strip() for text in getattr(feedback, "errors", []) if text.strip()]
                log = [line for line in feedback.textLog().splitlines() if line.strip()]
                detail = ("\n".join(dict.fromkeys(errors)) if errors else log[-1] if log
                          else tr("see the Log Messages panel (Processing)."))
                self._fail(tr("{} — {} failed: {}").format(self.title, self._algorithm.displayName(), detail))
            return
        self.results[step.algorithm_id] = dict(results)
        layers = load_outputs(self._context, feedback, self.project)
        if layers:
            self.layers.extend(layers)
            self.layersLoaded.emit(layers)
        self._next()
