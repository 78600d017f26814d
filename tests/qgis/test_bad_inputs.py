"""Label layers that cannot train what the user expects are refused or reported, in real QGIS."""

import os

import pytest
from qgis.core import (
    QgsFeature,
    QgsField,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QVariant

from sample_data.generate import generate_scene

pytest.importorskip("segmentation_models_pytorch")
pytestmark = pytest.mark.slow

FAST = {"ENCODER": "resnet18", "PATCH_SIZE": 64, "BATCH_SIZE": 2, "EPOCHS": 1, "BATCHES_PER_EPOCH": 1,
        "DEVICE": 1}


class Recording(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.warnings = []

    def pushWarning(self, message):  # noqa: N802 (QGIS's name)
        self.warnings.append(message)
        super().pushWarning(message)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(str(tmp_path_factory.mktemp("scene")), size=256, seed=5)


def classed_buildings(scene, value_of):
    """The scene's buildings in a memory layer with a ``cls`` field set to ``value_of(i)`` (None: NULL)."""
    source = QgsVectorLayer(scene["buildings"] + "|layername=buildings", "buildings", "ogr")
    layer = QgsVectorLayer(f"MultiPolygon?crs={source.crs().authid()}", "classed", "memory")
    layer.dataProvider().addAttributes([QgsField("cls", QVariant.String)])
    layer.updateFields()
    features = []
    for i, src in enumerate(source.getFeatures()):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(src.geometry())
        feature.setAttributes([value_of(i)])
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    assert layer.featureCount() >= 4
    return layer


@pytest.mark.parametrize("geometry, kind", [("Point", "point"), ("LineString", "line")])
def test_point_or_line_labels_are_refused_up_front(run_alg, scene, tmp_path, geometry, kind):
    layer = QgsVectorLayer(f"{geometry}?crs=EPSG:32633", "wrong", "memory")
    feature = QgsFeature()
    point = QgsPointXY(500010, 4999990)
    feature.setGeometry(QgsGeometry.fromPointXY(point) if geometry == "Point" else
                        QgsGeometry.fromPolylineXY([point, QgsPointXY(500020, 4999980)]))
    layer.dataProvider().addFeatures([feature])
    with pytest.raises(QgsProcessingException, match=f"LABELS: a polygon layer is needed, got a {kind} layer"):
        run_alg("satseg:trainsegmentation", dict(FAST, INPUT=scene["scene"], LABELS=layer,
                                                 OUTPUT_MODEL=str(tmp_path / "m.satseg")))
    assert not os.path.exists(tmp_path / "m.satseg")


def test_labels_without_a_class_are_reported(run_alg, scene, tmp_path):
    layer = classed_buildings(scene, lambda i: "building" if i % 2 else None)
    feedback = Recording()
    run_alg("satseg:trainsegmentation", dict(FAST, INPUT=scene["scene"], LABELS=layer, CLASS_FIELD="cls",
                                             OUTPUT_MODEL=str(tmp_path / "m.satseg")), feedback)
    skipped = (layer.featureCount() + 1) // 2
    assert any(w.startswith(f"LABELS: {skipped} feature(s) have no value in the class field 'cls'")
               for w in feedback.warnings), feedback.warnings
    assert os.path.exists(tmp_path / "m.satseg")


def test_labels_that_all_lack_a_class_are_refused(run_alg, scene, tmp_path):
    layer = classed_buildings(scene, lambda i: None if i % 2 else "  ")
    with pytest.raises(QgsProcessingException, match=f"LABELS: none of the {layer.featureCount()} features has a "
                                                     "value in the class field 'cls'"):
        run_alg("satseg:trainsegmentation", dict(FAST, INPUT=scene["scene"], LABELS=layer, CLASS_FIELD="cls",
                                                 OUTPUT_MODEL=str(tmp_path / "m.satseg")))
    assert not os.path.exists(tmp_path / "m.satseg")
