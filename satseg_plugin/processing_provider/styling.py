"""Apply SatSeg's bundled .qml styles to outputs that Processing loads onto the map."""

from __future__ import annotations

import os
from typing import Dict, List

from qgis.core import QgsMapLayer, QgsProcessingContext, QgsProcessingFeedback, QgsProcessingLayerPostProcessorInterface

__all__ = ["STYLE_DIR", "style_path", "apply_style_on_load", "apply_palette_on_load", "palette_renderer"]

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


class _PalettePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Shows a raster's colour table as a categorised (paletted) legend with a label per value."""

    _alive: List["_PalettePostProcessor"] = []

    def __init__(self, labels: Dict[int, str], name: str = "") -> None:
        super().__init__()
        self.labels, self.name = labels, name

    def postProcessLayer(self, layer: QgsMapLayer, context: QgsProcessingContext,  # noqa: N802, D102
                         feedback: QgsProcessingFeedback) -> None:
        if layer is None or not layer.isValid():
            return
        renderer = palette_renderer(layer, self.labels)
        if renderer is None:
            feedback.pushWarning(f"{layer.name()} has no colour table; it keeps QGIS's default style.")
        else:
            layer.setRenderer(renderer)
        if self.name:
            layer.setName(self.name)
        layer.triggerRepaint()


def palette_renderer(layer, labels: Dict[int, str]):
    """A paletted renderer from band 1's colour table, one legend entry per labelled value (None: no table)."""
    from qgis.core import QgsPalettedRasterRenderer  # noqa: PLC0415

    table = layer.dataProvider().colorTable(1)
    if not table:
        return None
    classes = []
    for item in QgsPalettedRasterRenderer.colorTableToClassData(table):
        value = int(item.value)
        if value in labels and item.color.alpha() > 0:
            classes.append(QgsPalettedRasterRenderer.Class(value, item.color, labels[value]))
    return QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes)


def apply_palette_on_load(context: QgsProcessingContext, layer_id: str, labels: Dict[int, str],
                          name: str = "") -> None:
    """Style a categorical raster output (clusters, classes) from its colour table when Processing loads it."""
    if not context.willLoadLayerOnCompletion(layer_id):
        return
    processor = _PalettePostProcessor(dict(labels), name)
    _PalettePostProcessor._alive.append(processor)
    context.layerToLoadOnCompletionDetails(layer_id).setPostProcessor(processor)
