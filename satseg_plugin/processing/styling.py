"""Apply SatSeg's bundled .qml styles to outputs that Processing loads onto the map."""

from __future__ import annotations

import os
from typing import Callable, Dict, List

from qgis.core import (
    NULL,
    QgsCategorizedSymbolRenderer,
    QgsClassificationEqualInterval,
    QgsGraduatedSymbolRenderer,
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProperty,
    QgsRendererCategory,
    QgsStyle,
    QgsSymbolLayer,
)
from qgis.PyQt.QtGui import QColor

__all__ = ["STYLE_DIR", "style_path", "apply_style_on_load", "apply_palette_on_load", "palette_renderer", "id_renderer",
           "load_raster_on_completion", "load_style", "legend_renderer", "MAX_LEGEND_IDS"]

#: Above this many communities (tracks) the legend keeps one entry ("colour = track") instead of one per id.
MAX_LEGEND_IDS = 60

STYLE_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources", "styles")


def style_path(name: str) -> str:
    """Path of bundled style ``name`` (without ``.qml``)."""
    path = os.path.join(STYLE_DIR, f"{name}.qml")
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return path


class _PostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Runs ``style(layer, feedback)`` on an output once Processing has added it to the project, then renames
    it to ``name`` (if given) and repaints it."""

    # Processing keeps only a raw pointer to post-processors: keep the Python objects alive here.
    _alive: List["_PostProcessor"] = []

    def __init__(self, style: Callable[[QgsMapLayer, QgsProcessingFeedback], None], name: str = "") -> None:
        super().__init__()
        self.style, self.name = style, name
        _PostProcessor._alive.append(self)

    def postProcessLayer(self, layer: QgsMapLayer, context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> None:
        if layer is None or not layer.isValid():
            return
        self.style(layer, feedback)
        if self.name:
            layer.setName(self.name)
        layer.triggerRepaint()


def _style_on_load(context: QgsProcessingContext, layer_id: str, style, name: str) -> None:
    """Attach a :class:`_PostProcessor` to output ``layer_id`` if Processing will load it."""
    if context.willLoadLayerOnCompletion(layer_id):
        context.layerToLoadOnCompletionDetails(layer_id).setPostProcessor(_PostProcessor(style, name))


def _hue_colour(value: int, alpha: int) -> QColor:
    """The colour communities.qml's expression gives id ``value`` (golden-angle hues)."""
    return QColor.fromHslF(((value * 137.508) % 360) / 360.0, 0.70, 0.55, alpha / 255.0)


def _without_colour_expression(symbol):
    """A copy of ``symbol`` whose symbol layers no longer take their colour from an expression."""
    symbol = symbol.clone()
    for index in range(symbol.symbolLayerCount()):
        properties = symbol.symbolLayer(index).dataDefinedProperties()
        for key in (QgsSymbolLayer.PropertyFillColor, QgsSymbolLayer.PropertyStrokeColor):
            properties.setProperty(key, QgsProperty())
    return symbol


def legend_renderer(layer: QgsMapLayer, style: str):
    """A renderer drawing ``layer`` as bundled style ``style`` does, but with a legend that shows what the map
    shows (None when the style's own legend already does). The styles colour by expression, which a legend
    shows as one square; here:

    * ``communities``: one category per track (or community) id, in the colour the map gives it (up to
      :data:`MAX_LEGEND_IDS` ids);
    * ``flow_arrows``: five magnitude classes on the Viridis ramp, as the map colours the arrows.
    """
    renderer = layer.renderer() if hasattr(layer, "renderer") else None
    if renderer is None or renderer.type() != "singleSymbol":
        return None
    if style == "communities":
        tracked = layer.fields().lookupField("track_id") >= 0
        id_fields = ["track_id", "segment_id"] if tracked else ["segment_id"]
        expression = "coalesce({}, 0)".format(", ".join(f'"{name}"' for name in id_fields))
        values = set()
        for feature in layer.getFeatures():
            ids = [feature.attribute(name) for name in id_fields]
            values.add(int(next((v for v in ids if v not in (None, NULL)), 0)))
        if not values or len(values) > MAX_LEGEND_IDS:
            return None
        values = sorted(values)
        base = _without_colour_expression(renderer.symbol())
        alpha = 150
        label = "track {}" if tracked else "community {}"
        categories = []
        for value in values:
            symbol = base.clone()
            symbol.setColor(_hue_colour(value, alpha))
            categories.append(QgsRendererCategory(value, symbol, label.format(value)))
        return QgsCategorizedSymbolRenderer(expression, categories)
    if style == "flow_arrows" and layer.fields().lookupField("magnitude") >= 0:
        graduated = QgsGraduatedSymbolRenderer("magnitude")
        graduated.setSourceSymbol(_without_colour_expression(renderer.symbol()))
        graduated.setSourceColorRamp(QgsStyle.defaultStyle().colorRamp("Viridis"))
        graduated.setClassificationMethod(QgsClassificationEqualInterval())
        graduated.updateClasses(layer, 5)
        graduated.updateColorRamp(QgsStyle.defaultStyle().colorRamp("Viridis"))
        return graduated if graduated.ranges() else None
    return None


def load_style(layer: QgsMapLayer, style: str) -> bool:
    """Style ``layer`` with bundled style ``style`` and a legend that matches the map (:func:`legend_renderer`).
    Returns False when the style could not be read."""
    _msg, ok = layer.loadNamedStyle(style_path(style))
    if ok:
        renderer = legend_renderer(layer, style)
        if renderer is not None:
            layer.setRenderer(renderer)
    return ok


def apply_style_on_load(context: QgsProcessingContext, layer_id: str, style: str, name: str = "") -> None:
    """Style output ``layer_id`` with bundled style ``style`` when Processing loads it on completion."""
    qml = style_path(style)

    def load_qml(layer: QgsMapLayer, feedback: QgsProcessingFeedback) -> None:
        if not load_style(layer, style):
            feedback.pushWarning(f"Could not apply style {os.path.basename(qml)} to {layer.name()}.")

    _style_on_load(context, layer_id, load_qml, name)


def palette_renderer(layer, labels: Dict[int, str]):
    """A paletted renderer from band 1's colour table, one legend entry per labelled value (None: no table)."""
    from qgis.core import QgsPalettedRasterRenderer

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
    labels = dict(labels)

    def paletted(layer: QgsMapLayer, feedback: QgsProcessingFeedback) -> None:
        renderer = palette_renderer(layer, labels)
        if renderer is None:
            feedback.pushWarning(f"{layer.name()} has no colour table; it keeps QGIS's default style.")
        else:
            layer.setRenderer(renderer)

    _style_on_load(context, layer_id, paletted, name)


#: Colours of well-known annotation classes; other classes take colours from :data:`_CLASS_COLOURS`.
KNOWN_CLASS_COLOURS = {"urban": "#e31a1c", "rural": "#f1c40f", "uninhabited": "#1b7837", "building": "#d7301f",
                       "other": "#6baed6", "background": "#6baed6", "water": "#2171b5"}
_CLASS_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c",
                  "#008080", "#9a6324"]


def class_colour(name: str, index: int) -> str:
    """The colour SatSeg draws class ``name`` (the ``index``-th class) with."""
    return KNOWN_CLASS_COLOURS.get(name.lower(), _CLASS_COLOURS[index % len(_CLASS_COLOURS)])


def style_annotation_layer(layer, field: str, classes, value_map: bool = True) -> None:
    """Draw polygons by the value of ``field`` (semi-transparent fill per class) and, for annotation layers
    (``value_map``), make ``field`` a drop-down of ``classes``."""
    from qgis.core import QgsCategorizedSymbolRenderer, QgsEditorWidgetSetup, QgsFillSymbol, QgsRendererCategory

    index = layer.fields().lookupField(field)
    if value_map:
        layer.setEditorWidgetSetup(index, QgsEditorWidgetSetup("ValueMap", {"map": [{c: c} for c in classes]}))
    categories = []
    for i, name in enumerate(classes):
        colour = class_colour(name, i)
        r, g, b = (int(colour[j:j + 2], 16) for j in (1, 3, 5))
        # "r,g,b,a": a hex string with alpha would be read as #AARRGGBB
        symbol = QgsFillSymbol.createSimple({"color": f"{r},{g},{b},89", "outline_color": colour,
                                             "outline_width": "0.6"})
        categories.append(QgsRendererCategory(name, symbol, name))
    layer.setRenderer(QgsCategorizedSymbolRenderer(field, categories))


def apply_annotation_style_on_load(context: QgsProcessingContext, layer_id: str, field: str, classes,
                                   name: str = "", value_map: bool = False) -> None:
    """Style a layer by the classes of ``field`` when Processing loads it (``value_map``: and make the field a
    drop-down of them, for annotation layers)."""
    classes = list(classes)
    _style_on_load(context, layer_id, lambda layer, _feedback: style_annotation_layer(layer, field, classes, value_map),
                   name)


def id_renderer(layer):
    """A paletted renderer with a distinct colour (golden-angle hues) for every non-zero value of band 1."""
    from qgis.core import QgsPalettedRasterRenderer
    classes = []
    for item in QgsPalettedRasterRenderer.classDataFromRaster(layer.dataProvider(), 1):
        value = int(item.value)
        if value <= 0:
            continue
        colour = QColor.fromHsl(int(value * 137.508) % 360, 170, 120)
        classes.append(QgsPalettedRasterRenderer.Class(value, colour, str(value)))
    return QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes)


def load_raster_on_completion(context: QgsProcessingContext, path: str, name: str, output_name: str,
                              ids: bool = False) -> None:
    """Add a raster SatSeg wrote outside a destination parameter (e.g. into an output folder) to the project
    when the algorithm finishes; ``ids``: style it as an id raster (:func:`id_renderer`)."""
    details = QgsProcessingContext.LayerDetails(name, context.project(), output_name)
    if ids:
        details.setPostProcessor(_PostProcessor(lambda layer, _feedback: layer.setRenderer(id_renderer(layer)), name))
    context.addLayerToLoadOnCompletion(path, details)
