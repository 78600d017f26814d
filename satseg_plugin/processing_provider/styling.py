"""Apply SatSeg's bundled .qml styles to outputs that Processing loads onto the map."""

from __future__ import annotations

import os
from typing import List

from qgis.core import QgsMapLayer, QgsProcessingContext, QgsProcessingFeedback, QgsProcessingLayerPostProcessorInterface

__all__ = ["STYLE_DIR", "style_path", "apply_style_on_load"]

STYLE_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "ui", "styles")


def style_path(name: str) -> str:
    """Path of bundled style ``name`` (without ``.qml``)."""
    path = os.path.join(STYLE_DIR, f"{name}.qml")
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return path


class _StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Loads a .qml style onto a layer once Processing has added it to the project."""

    # Processing keeps only a raw pointer to post-processors: keep the Python objects alive here.
    _alive: List["_StylePostProcessor"] = []

    def __init__(self, qml: str, name: str = "") -> None:
        super().__init__()
        self.qml, self.name = qml, name

    def postProcessLayer(self, layer: QgsMapLayer, context: QgsProcessingContext,  # noqa: N802, D102
                         feedback: QgsProcessingFeedback) -> None:
        if layer is None or not layer.isValid():
            return
        _msg, ok = layer.loadNamedStyle(self.qml)
        if not ok:
            feedback.pushWarning(f"Could not apply style {os.path.basename(self.qml)} to {layer.name()}.")
        if self.name:
            layer.setName(self.name)
        layer.triggerRepaint()


def apply_style_on_load(context: QgsProcessingContext, layer_id: str, style: str, name: str = "") -> None:
    """Style output ``layer_id`` with bundled style ``style`` when Processing loads it on completion."""
    if not context.willLoadLayerOnCompletion(layer_id):
        return
    processor = _StylePostProcessor(style_path(style), name)
    _StylePostProcessor._alive.append(processor)
    context.layerToLoadOnCompletionDetails(layer_id).setPostProcessor(processor)
