"""Boilerplate shared by every SatSeg Processing algorithm, written once.

Subclasses set ``group_id`` and ``requirements``, define parameters, and implement :meth:`run_algorithm`, which
parses parameters, makes one engine call and returns the outputs. This base class checks the
Python packages the algorithm needs, adapts the feedback, and turns engine errors into
``QgsProcessingException`` with the engine's message unchanged.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Tuple

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsRasterLayer,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..core.deps import require
from ..core.errors import CanceledError, SatSegError
from .feedback import QgisFeedback

__all__ = ["SatSegAlgorithm", "GROUPS", "ICON_PATH", "PROVIDER_ID"]

#: The id of SatSeg's Processing provider: an algorithm's id is ``satseg:<its name()>``.
PROVIDER_ID = "satseg"

ICON_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources", "icons", "satseg.svg")

#: Stable group ids -> untranslated display names.
GROUPS: Dict[str, str] = {
    "patching": "Patching",
    "clustering": "Clustering",
    "segmentation": "Segmentation",
    "population": "Population",
    "export": "Export",
}


class SatSegAlgorithm(QgsProcessingAlgorithm):
    """Base class of SatSeg's Processing algorithms."""

    DEVICE = "DEVICE"
    #: One of :data:`GROUPS`' keys.
    group_id: str = "patching"
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
        return QIcon(ICON_PATH)

    def add_advanced_parameter(self, param: QgsProcessingParameterDefinition) -> None:
        """Add ``param`` under the dialog's "Advanced parameters"."""
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(param)

    def add_device_parameter(self) -> None:
        """Add the advanced DEVICE parameter (auto / cpu / cuda) every model-running algorithm has."""
        from ..core.device import DEVICE_CHOICES  # pure Python, no torch import

        self.add_advanced_parameter(QgsProcessingParameterEnum(self.DEVICE, self.tr("Compute device"),
                                                               options=list(DEVICE_CHOICES), defaultValue=0))

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

    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> Dict[str, Any]:
        """Check requirements, run :meth:`run_algorithm`, translate engine errors for the Processing log."""
        engine_feedback = QgisFeedback(feedback)
        try:
            for module in self.requirements:
                require(module)
            return plain_outputs(self.run_algorithm(parameters, context, engine_feedback))
        except CanceledError as exc:
            raise QgsProcessingException(self.tr("Canceled: previous outputs were left as they were.")) from exc
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
