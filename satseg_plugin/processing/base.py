"""Boilerplate shared by every SatSeg Processing algorithm, written once.

Subclasses set ``group_id`` and ``requirements``, define parameters, and implement :meth:`run_algorithm`, which
parses parameters, makes one engine call and returns the outputs. This base class checks the
Python packages the algorithm needs, adapts the feedback, and turns engine errors into
``QgsProcessingException`` with the engine's message unchanged.

Every run is one transaction (:mod:`~satseg_plugin.core.staging`): before any work, every number must be
finite and every output path must be writable, of the right kind, and neither an input, another output, nor a
folder OVERWRITE would clear that holds an input (checked from the parameter definitions); the algorithm's
outputs, feature sinks included, are staged; they replace the previous outputs together only after
:meth:`run_algorithm` returned without error or cancel.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Dict, List, Optional, Tuple

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
    QgsProcessingUtils,
    QgsRasterLayer,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..core.deps import require
from ..core.errors import CanceledError, OutputError, SatSegError
from ..core.paths import check_destinations, check_outputs
from ..core.staging import Transaction, use_transaction
from .feedback import QgisFeedback
from .layers import destination_layer, destination_path, layer_key, layered, staged_sink
from .parameters import ModelFilesParameter, model_files_value

#: Parameter types whose value names input files (layers are read through their source).
_LAYER_INPUTS = (QgsProcessingParameterRasterLayer, QgsProcessingParameterVectorLayer,
                 QgsProcessingParameterFeatureSource, QgsProcessingParameterMapLayer)
#: Destination types that may name one layer of a GeoPackage (written into it, its other layers kept).
_VECTOR_OUTPUTS = (QgsProcessingParameterFeatureSink, QgsProcessingParameterVectorDestination)

__all__ = ["SatSegAlgorithm", "GROUPS", "ICON_PATH", "PROVIDER_ID", "group_icon_path"]

#: The id of SatSeg's Processing provider: an algorithm's id is ``satseg:<its name()>``.
PROVIDER_ID = "satseg"

ICON_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources", "icons", "satseg.svg")


def group_icon_path(group_id: str) -> str:
    """The icon of a pipeline (``resources/icons/<group id>.svg``), SatSeg's own icon when it has none: the
    toolbox and the SatSeg menu show each tool with its pipeline's icon."""
    path = os.path.join(os.path.dirname(ICON_PATH), f"{group_id}.svg")
    return path if os.path.exists(path) else ICON_PATH


#: Said after a cancel: QGIS (3.22 to 3.40 at least) ends every canceled run with "Execution failed after ..."
#: (``QgsProcessingAlgRunnerTask::run`` returns false once the feedback is canceled, whatever the algorithm
#: returns) and has no canceled state. Scripts get an exception (a trainer that kept its best model returns it,
#: with this warning), so a cancel never reads as a plain success.
CANCEL_NOTE = "(QGIS reports any canceled run as 'Execution failed'; nothing else went wrong.)"

#: Stable group ids -> untranslated display names.
GROUPS: Dict[str, str] = {
    "patching": "Patching",
    "clustering": "Clustering",
    "segmentation": "Segmentation",
    "population": "Population",
    "export": "Export",
}


def kept_model_path(project_home: str, prefix: str = "model", now: Optional[float] = None) -> str:
    """Where a model file asked for as a temporary file is kept instead: ``satseg_results/models/<prefix>_<time>
    .satseg`` beside the project, or under ``~/SatSeg/models`` without a saved project (a trained model is worth
    keeping; QGIS deletes its temporary folder on exit). Never an existing file."""
    base = os.path.join(project_home, "satseg_results") if project_home else os.path.join(
        os.path.expanduser("~"), "SatSeg")
    folder = os.path.join(base, "models")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    path, n = os.path.join(folder, f"{prefix}_{stamp}.satseg"), 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(folder, f"{prefix}_{stamp}_{n}.satseg")
    return path


class SatSegAlgorithm(QgsProcessingAlgorithm):
    """Base class of SatSeg's Processing algorithms."""

    DEVICE = "DEVICE"
    #: The boolean parameter that lets a run replace an earlier output folder as a whole.
    OVERWRITE = "OVERWRITE"
    #: One of :data:`GROUPS`' keys.
    group_id: str = "patching"
    #: Whether a run that was canceled but returned normally commits its outputs (a trainer that keeps the best
    #: model so far); otherwise the cancel discards them.
    commits_when_canceled: bool = False
    #: Import names of the Python packages :meth:`run_algorithm` needs (checked before it starts).
    requirements: Tuple[str, ...] = ("numpy", "rasterio")

    def tr(self, text: str) -> str:
        return QCoreApplication.translate("SatSeg", text)

    def createInstance(self) -> "SatSegAlgorithm":
        return type(self)()

    @classmethod
    def algorithm_id(cls) -> str:
        """The id Processing knows the algorithm by (``satseg:<name()>``), without the provider loaded."""
        return f"{PROVIDER_ID}:{cls().name()}"

    def group(self) -> str:
        return self.tr(GROUPS[self.group_id])

    def groupId(self) -> str:
        return self.group_id

    def icon(self) -> QIcon:
        return QIcon(group_icon_path(self.groupId()))

    def add_advanced_parameter(self, param: QgsProcessingParameterDefinition) -> None:
        """Add ``param`` under the dialog's "Advanced parameters"."""
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(param)

    def add_device_parameter(self) -> None:
        """Add the advanced DEVICE parameter (auto / cpu / cuda) every model-running algorithm has."""
        from ..core.device import DEVICE_CHOICES  # pure Python, no torch import

        self.add_advanced_parameter(QgsProcessingParameterEnum(self.DEVICE, self.tr("Compute device"),
                                                               options=list(DEVICE_CHOICES), defaultValue=0))

    def add_model_destination(self, key: str, description: str) -> None:
        """Add the model file output ``key`` (``.satseg``); left temporary, it is kept (:meth:`model_destination`)."""
        param = QgsProcessingParameterFileDestination(key, description, self.tr("SatSeg model (*.satseg)"))
        param.setHelp(self.tr("Left as a temporary file, the model is kept in satseg_results/models beside the "
                              "project (or in ~/SatSeg/models), named by the date and time."))
        self.addParameter(param)

    def model_destination(self, parameters: Dict[str, Any], key: str, context: QgsProcessingContext,
                          feedback: QgisFeedback, prefix: str = "model") -> str:
        """The path of model file output ``key``; when it was left as a temporary file (QGIS deletes those on
        exit), a new file in the models folder beside the project (:func:`kept_model_path`), said in the log."""
        path = self.parameterAsFileOutput(parameters, key, context)
        temp = os.path.realpath(QgsProcessingUtils.tempFolder())
        if path and not os.path.realpath(path).startswith(temp + os.sep):
            return path
        project = context.project()
        path = kept_model_path(project.homePath() if project is not None else "", prefix)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        feedback.info(self.tr("Model file: {} (kept; choose the model file output to write it elsewhere).")
                      .format(path))
        return path

    def raster_layer(self, parameters: Dict[str, Any], key: str, context: QgsProcessingContext) -> QgsRasterLayer:
        """The raster layer parameter ``key``, or QGIS's own "invalid raster" error naming it."""
        layer = self.parameterAsRasterLayer(parameters, key, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, key))
        return layer

    def optional_value(self, parameters: Dict[str, Any], key: str, context: QgsProcessingContext, cast):
        """``cast(parameters, key, context)`` (e.g. ``self.parameterAsInt``), or None when ``key`` was left empty."""
        return None if parameters.get(key) in (None, "") else cast(parameters, key, context)

    def extent_bounds(self, parameters: Dict[str, Any], key: str, context: QgsProcessingContext, crs):
        """An extent parameter as ``(xmin, ymin, xmax, ymax)`` in ``crs``, or None when left empty."""
        if parameters.get(key) in (None, ""):
            return None
        extent = self.parameterAsExtent(parameters, key, context, crs)
        if extent.isNull():
            return None
        return extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()

    def device_spec(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> str:
        """The DEVICE choice (``auto``/``cpu``/``cuda``); the engine resolves it and logs the device used."""
        from ..core.device import DEVICE_CHOICES

        return DEVICE_CHOICES[self.parameterAsEnum(parameters, self.DEVICE, context)]

    def parameterAsSink(self, parameters: Dict[str, Any], name: str, context: QgsProcessingContext, *args):
        """QGIS's ``parameterAsSink``, staged in the run's transaction (see :func:`.layers.staged_sink`)."""
        return staged_sink(super().parameterAsSink, parameters, name, context, *args)

    def input_files(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> Dict[str, List[str]]:
        """Parameter name -> the files its layers or file values read (what no output may overwrite); a layer of
        a GeoPackage as ``path|layername=name`` (:func:`.layers.layer_key`)."""
        inputs: Dict[str, List[str]] = {}
        for definition in self.parameterDefinitions():
            name = definition.name()
            if definition.isDestination() or parameters.get(name) in (None, "", []):
                continue
            if isinstance(definition, ModelFilesParameter):  # a path, a list or ;-separated paths
                paths = model_files_value(self, parameters, name, context)
            elif isinstance(definition, QgsProcessingParameterFile):
                paths = [self.parameterAsFile(parameters, name, context)]
            elif isinstance(definition, QgsProcessingParameterMultipleLayers):
                if definition.layerType() == QgsProcessing.TypeFile:
                    paths = self.parameterAsFileList(parameters, name, context)
                else:
                    paths = [layer_key(layer) for layer in self.parameterAsLayerList(parameters, name, context)]
            elif isinstance(definition, _LAYER_INPUTS):
                paths = [layer_key(self.parameterAsLayer(parameters, name, context))]
            else:
                continue
            inputs[name] = [p for p in paths if p]
        return inputs

    def check_parameters(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> None:
        """Refuse, before any work, numbers that are not finite and output paths that would lose data.

        Raises:
            QgsProcessingException: naming the parameter and what to change.
        """
        files: Dict[str, str] = {}
        folders: Dict[str, str] = {}
        for definition in self.parameterDefinitions():
            name = definition.name()
            if isinstance(definition, QgsProcessingParameterNumber) and parameters.get(name) not in (None, ""):
                value = self.parameterAsDouble(parameters, name, context)
                if not math.isfinite(value):
                    raise QgsProcessingException(self.tr("{}: {} is not a finite number. Give a number such as "
                                                         "{}.").format(name, value, definition.defaultValue() or 1))
            elif definition.isDestination():
                path = destination_path(parameters.get(name), context)
                if isinstance(definition, _VECTOR_OUTPUTS):  # one layer of a GeoPackage: its other layers stay
                    path = layered(path, destination_layer(parameters.get(name), context))
                if path:
                    is_folder = isinstance(definition, QgsProcessingParameterFolderDestination)
                    (folders if is_folder else files)[name] = path
        overwrite = self.parameterDefinition(self.OVERWRITE) is not None and \
            self.parameterAsBoolean(parameters, self.OVERWRITE, context)
        try:
            check_destinations(files, folders)
            check_outputs(self.input_files(parameters, context), {**files, **folders},
                          cleared_folders=list(folders) if overwrite else ())
        except OutputError as exc:
            raise QgsProcessingException(str(exc)) from exc

    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> Dict[str, Any]:
        """Check requirements and parameters, run :meth:`run_algorithm` in one transaction and commit it,
        translate engine errors for the Processing log."""
        engine_feedback = QgisFeedback(feedback)
        try:
            for module in self.requirements:
                require(module)
            self.check_parameters(parameters, context)
            with Transaction() as run, use_transaction(run):
                outputs = plain_outputs(self.run_algorithm(parameters, context, engine_feedback))
                if feedback.isCanceled() and not self.commits_when_canceled:
                    raise CanceledError()
                run.commit()
            if feedback.isCanceled():  # a trainer that kept its best model so far
                feedback.pushWarning(self.tr("Canceled: the outputs written so far were kept.") + " " + self.tr(
                    CANCEL_NOTE))
            return outputs
        except CanceledError as exc:
            raise QgsProcessingException(self.tr("Canceled: previous outputs were left as they were.") + " " +
                                         self.tr(CANCEL_NOTE)) from exc
        except SatSegError as exc:
            raise QgsProcessingException(str(exc)) from exc

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
            feedback: QgisFeedback) -> Dict[str, Any]:
        """Parse parameters, make one engine call, return the outputs. Implemented by each algorithm."""
        raise QgsProcessingException(self.tr("Algorithm {} does not implement run_algorithm().").format(self.id()))


def plain_outputs(outputs: Dict[str, Any]) -> Dict[str, Any]:
    """Numpy scalars -> Python numbers: Qt wraps them as opaque objects, which ``qgis_process``, the modeler and
    expressions cannot read (a numpy float output came out of ``qgis_process --json`` as an empty string)."""
    import numpy as np

    return {key: value.item() if isinstance(value, np.generic) else value for key, value in outputs.items()}
