"""Legends that match the map (issue 18): communities coloured per track show one entry per track in that
colour, flow arrows show their magnitude classes on the Viridis ramp, building outlines stay visible on the
probability ramp, and the bundled styles name no font the system lacks."""

from __future__ import annotations

import re

from qgis.core import (
    QgsExpression,
    QgsExpressionContext,
    QgsExpressionContextUtils,
    QgsFeature,
    QgsField,
    QgsGeometry,
    QgsPointXY,
    QgsRectangle,
    QgsSymbolLayerUtils,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QVariant
from qgis.PyQt.QtGui import QColor, QFontDatabase

from satseg_plugin.processing.styling import MAX_LEGEND_IDS, load_style, style_path


def _layer(geometry: str, fields, rows) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"{geometry}?crs=EPSG:32633", "test", "memory")
    layer.dataProvider().addAttributes([QgsField(name, kind) for name, kind in fields])
    layer.updateFields()
    features = []
    for i, values in enumerate(rows):
        feature = QgsFeature(layer.fields())
        if geometry == "Polygon":
            feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(i * 10, 0, i * 10 + 8, 8)))
        else:
            feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(i * 10, 0)))
        feature.setAttributes(list(values))
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    return layer


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _map_colour(layer: QgsVectorLayer, feature: QgsFeature) -> QColor:
    """The colour communities.qml's own expression gives ``feature`` (what the map draws)."""
    qml = _read(style_path("communities"))
    expression = re.search(r'value="(color_hsla[^"]+)"', qml).group(1).replace("&quot;", '"')
    context = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(layer))
    context.setFeature(feature)
    return QgsSymbolLayerUtils.decodeColor(QgsExpression(expression).evaluate(context))


def test_tracked_communities_legend_has_one_entry_per_track_in_the_map_colour(qgis_app):
    rows = [(1, 7), (2, 7), (3, 12), (4, None)]  # segment_id, track_id (NULL: the segment's id is the colour)
    layer = _layer("Polygon", [("segment_id", QVariant.Int), ("track_id", QVariant.Int)], rows)
    assert load_style(layer, "communities")
    renderer = layer.renderer()
    assert renderer.type() == "categorizedSymbol"
    categories = {int(c.value()): c for c in renderer.categories()}
    assert sorted(categories) == [4, 7, 12] and categories[7].label() == "track 7"
    for feature in layer.getFeatures():
        expected = _map_colour(layer, feature)
        track = feature["track_id"] if feature["track_id"] not in (None,) and str(feature["track_id"]) != "NULL" \
            else feature["segment_id"]
        got = categories[int(track)].symbol().color()
        assert abs(got.hue() - expected.hue()) <= 1 and abs(got.alpha() - expected.alpha()) <= 1, (track, got.name())
    # Too many ids for a legend: the style's own single symbol stays.
    many = _layer("Polygon", [("segment_id", QVariant.Int)], [(i,) for i in range(MAX_LEGEND_IDS + 1)])
    assert load_style(many, "communities") and many.renderer().type() == "singleSymbol"


def test_flow_arrow_legend_shows_magnitude_classes_in_viridis(qgis_app):
    layer = _layer("Point", [("magnitude", QVariant.Double), ("direction_deg", QVariant.Double)],
                   [(m, 45.0) for m in (0.1, 0.5, 1.0, 2.0, 4.0)])
    assert load_style(layer, "flow_arrows")
    renderer = layer.renderer()
    assert renderer.type() == "graduatedSymbol" and renderer.classAttribute() == "magnitude"
    ranges = renderer.ranges()
    assert len(ranges) == 5 and ranges[0].lowerValue() <= 0.1 and ranges[-1].upperValue() >= 4.0
    low, high = ranges[0].symbol().color(), ranges[-1].symbol().color()
    assert low.blue() > low.green() and high.red() > 200 and high.green() > 200  # dark blue -> yellow
    marker = ranges[0].symbol().symbolLayer(0)
    assert marker.layerType() == "SimpleMarker" and marker.properties()["name"] == "arrow"  # with a shaft
    assert marker.dataDefinedProperties().isActive(marker.PropertyAngle)  # still turned along the flow


def test_building_outlines_differ_from_the_probability_ramp_and_styles_need_no_missing_font(qgis_app):
    buildings = _layer("Polygon", [("area_m2", QVariant.Double)], [(10.0,)])
    assert load_style(buildings, "buildings")
    outline = buildings.renderer().symbol().symbolLayer(0).strokeColor()
    ramp = re.findall(r'value="([0-9.]+)" color="(#[0-9a-fA-F]{6})"', _read(style_path("probability")))
    # The polygons outline the mask (probability >= 0.5): their outline must stand out from the ramp there.
    shown = [QColor(c) for value, c in ramp if float(value) >= 0.5]
    assert len(shown) == 3
    for colour in shown:
        distance = abs(outline.hue() - colour.hue()) if outline.hue() >= 0 and colour.hue() >= 0 else 180
        assert min(distance, 360 - distance) > 40, (outline.name(), colour.name())
    families = set(QFontDatabase().families())
    for name in ("patch_index", "communities", "tracks", "flow_arrows", "buildings", "mask", "probability"):
        named = re.findall(r'fontFamily="([^"]+)"', _read(style_path(name)))
        assert all(family in families for family in named), (name, named)
