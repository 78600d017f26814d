"""Write the bundled population styles (flow arrows, communities, tracks) with QGIS's own API.

The .qml files in ``satseg_plugin/resources/styles`` are what users get; this script documents how they were made and
remakes them after a change:

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/make_population_styles.py
"""

from __future__ import annotations

import os
import sys

from qgis.core import (
    QgsApplication,
    QgsArrowSymbolLayer,
    QgsCategorizedSymbolRenderer,
    QgsFillSymbol,
    QgsLineSymbol,
    QgsMarkerSymbol,
    QgsProperty,
    QgsRendererCategory,
    QgsSimpleMarkerSymbolLayer,
    QgsSimpleMarkerSymbolLayerBase,
    QgsSingleSymbolRenderer,
    QgsSymbolLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

STYLE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "satseg_plugin", "resources", "styles")

#: Track-line colours per event (also the legend order).
EVENT_COLOURS = {"continue": "#3b6fb6", "split": "#f28e2b", "merge": "#9c4fb8", "split+merge": "#8c564b", "birth": "#2ca02c",
                 "death": "#d62728"}


def flow_arrows(path: str) -> None:
    """Points with ``magnitude`` and ``direction_deg``: an arrow head pointing along the flow, sized and coloured
    by the magnitude relative to the layer's largest."""
    layer = QgsVectorLayer("Point?field=magnitude:double&field=direction_deg:double", "flow", "memory")
    arrow = QgsSimpleMarkerSymbolLayer(QgsSimpleMarkerSymbolLayerBase.ArrowHeadFilled, 2.5)
    arrow.setStrokeStyle(0)
    scaled = 'scale_linear("magnitude", 0, maximum("magnitude"), 0, 1)'
    arrow.setDataDefinedProperty(QgsSymbolLayer.PropertyAngle, QgsProperty.fromExpression('"direction_deg"'))
    arrow.setDataDefinedProperty(QgsSymbolLayer.PropertySize,
                                 QgsProperty.fromExpression(f"1.2 + 4 * {scaled}"))
    arrow.setDataDefinedProperty(QgsSymbolLayer.PropertyFillColor,
                                 QgsProperty.fromExpression(f"ramp_color('Viridis', {scaled})"))
    symbol = QgsMarkerSymbol()
    symbol.changeSymbolLayer(0, arrow)
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    _save(layer, path)


def communities(path: str) -> None:
    """Community polygons: one colour per track (golden-angle hues, any number of tracks; the segment id before
    tracking), translucent fill and a dark outline."""
    layer = QgsVectorLayer("Polygon?field=segment_id:integer&field=track_id:integer", "communities", "memory")
    symbol = QgsFillSymbol.createSimple({"color": "200,200,200,150", "outline_color": "40,40,40,255",
                                         "outline_width": "0.3"})
    fill = symbol.symbolLayer(0)
    key = 'coalesce("track_id", "segment_id", 0)'
    fill.setDataDefinedProperty(QgsSymbolLayer.PropertyFillColor, QgsProperty.fromExpression(
        f"color_hsla(({key} * 137.508) % 360, 70, 55, 150)"))
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    _save(layer, path)


def tracks(path: str) -> None:
    """Lines between community centroids along tracks: arrows coloured by ``event``."""
    layer = QgsVectorLayer("LineString?field=event:string", "tracks", "memory")
    categories = []
    for event, colour in EVENT_COLOURS.items():
        arrow = QgsArrowSymbolLayer()
        arrow.setIsCurved(False)
        arrow.setIsRepeated(False)
        arrow.setArrowWidth(0.6)
        arrow.setArrowStartWidth(0.6)
        arrow.setHeadLength(2.5)
        arrow.setHeadThickness(1.5)
        arrow.subSymbol().setColor(QColor(colour))
        symbol = QgsLineSymbol()
        symbol.changeSymbolLayer(0, arrow)
        categories.append(QgsRendererCategory(event, symbol, event))
    layer.setRenderer(QgsCategorizedSymbolRenderer("event", categories))
    _save(layer, path)


def _save(layer: QgsVectorLayer, path: str) -> None:
    message, ok = layer.saveNamedStyle(path)
    if not ok:
        raise RuntimeError(f"could not write {path}: {message}")
    print(f"wrote {path}")


def main() -> int:
    app = QgsApplication([], False)
    app.initQgis()
    flow_arrows(os.path.join(STYLE_DIR, "flow_arrows.qml"))
    communities(os.path.join(STYLE_DIR, "communities.qml"))
    tracks(os.path.join(STYLE_DIR, "tracks.qml"))
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
