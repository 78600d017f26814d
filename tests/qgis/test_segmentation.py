"""satseg:trainsegmentation and satseg:segmentraster in real QGIS and through qgis_process."""

import os

import numpy as np
import pytest
import rasterio
from qgis.core import QgsProcessingException, QgsProject, QgsVectorLayer

from sample_data.generate import generate_scene
from tests.qgis.conftest import train_on_scene

pytest.importorskip("segmentation_models_pytorch")
pytestmark = pytest.mark.slow

FAST = {"ENCODER": "resnet18", "PATCH_SIZE": 64, "BATCH_SIZE": 4, "EPOCHS": 2, "BATCHES_PER_EPOCH": 2,
        "DEVICE": 1}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(str(tmp_path_factory.mktemp("scene")), size=256, seed=5)


@pytest.fixture(scope="module")
def model(scene, tmp_path_factory, session_plugin):
    session_plugin.initProcessing()
    out = tmp_path_factory.mktemp("model")
    return train_on_scene(scene, FAST, OUTPUT_MODEL=str(out / "m.satseg"), OUTPUT_LOG=str(out / "log.csv"),
                          OUTPUT_PLOT=str(out / "curve.png"))


def test_training_outputs(model):
    assert os.path.exists(model["OUTPUT_MODEL"]) and os.path.exists(model["OUTPUT_LOG"])
    assert open(model["OUTPUT_PLOT"], "rb").read(4) == b"\x89PNG"
    assert 0 <= model["BEST_DICE"] <= 1 and model["EPOCHS_RUN"] >= 1 and model["BEST_EPOCH"] >= 1


def test_segment_outputs_styled_on_the_input_grid(qgis_app, model, scene, tmp_path):
    import processing

    project = QgsProject.instance()
    project.clear()
    result = processing.runAndLoadResults("satseg:segmentraster", {
        "INPUT": scene["scene"], "MODELS": [model["OUTPUT_MODEL"]], "TILE_SIZE": 128, "MIN_AREA": 2.0,
        "DEVICE": 1, "OUTPUT_PROBABILITY": str(tmp_path / "p.tif"), "OUTPUT_MASK": str(tmp_path / "m.tif"),
        "OUTPUT_POLYGONS": str(tmp_path / "b.gpkg")})
    with rasterio.open(scene["scene"]) as src, rasterio.open(result["OUTPUT_PROBABILITY"]) as prob:
        assert (prob.transform, prob.crs, prob.shape) == (src.transform, src.crs, src.shape)
    names = sorted(layer.name() for layer in project.mapLayers().values())
    assert names == ["Mask", "Probability", "Segmented polygons"]
    polygons = QgsVectorLayer(result["OUTPUT_POLYGONS"])
    assert polygons.featureCount() == result["POLYGON_COUNT"]
    assert [f.name() for f in polygons.fields() if f.name() != "fid"] == ["class_id", "class", "area_m2", "mean_prob"]
    assert all(f["area_m2"] >= 2.0 for f in polygons.getFeatures())
    prob_layer = [lyr for lyr in project.mapLayers().values() if lyr.name() == "Probability"][0]
    assert prob_layer.renderer().type() == "singlebandpseudocolor"
    project.clear()


def test_bad_inputs(run_alg, model, scene, tmp_path):
    with pytest.raises(QgsProcessingException, match="WEIGHTS"):
        run_alg("satseg:segmentraster", {"INPUT": scene["scene"], "MODELS": [model["OUTPUT_MODEL"]],
                                         "WEIGHTS": "0.5,abc", "OUTPUT_PROBABILITY": str(tmp_path / "p.tif"),
                                         "OUTPUT_MASK": str(tmp_path / "m.tif"),
                                         "OUTPUT_POLYGONS": str(tmp_path / "b.gpkg")})
    not_a_model = tmp_path / "x.satseg"
    not_a_model.write_text("hello")
    with pytest.raises(QgsProcessingException, match="x.satseg"):
        run_alg("satseg:segmentraster", {"INPUT": scene["scene"], "MODELS": [str(not_a_model)],
                                         "OUTPUT_PROBABILITY": str(tmp_path / "p.tif"),
                                         "OUTPUT_MASK": str(tmp_path / "m.tif"),
                                         "OUTPUT_POLYGONS": str(tmp_path / "b.gpkg")})
    empty = QgsVectorLayer("Polygon?crs=EPSG:32633", "empty", "memory")
    with pytest.raises(QgsProcessingException, match="LABELS: the label layer holds no polygons"):
        run_alg("satseg:trainsegmentation", dict(FAST, INPUT=scene["scene"], LABELS=empty,
                                                 OUTPUT_MODEL=str(tmp_path / "m.satseg")))
    with pytest.raises(QgsProcessingException, match="ENCODER"):
        run_alg("satseg:trainsegmentation", dict(FAST, INPUT=scene["scene"], ENCODER="resnet19",
                                                 LABELS=scene["buildings"] + "|layername=buildings",
                                                 OUTPUT_MODEL=str(tmp_path / "m.satseg")))
    assert sorted(os.listdir(tmp_path)) == ["x.satseg"]


def test_labels_in_another_crs_are_reprojected(run_alg, scene, tmp_path):
    reprojected = run_alg("native:reprojectlayer", {"INPUT": scene["buildings"] + "|layername=buildings",
                                                    "TARGET_CRS": "EPSG:4326",
                                                    "OUTPUT": str(tmp_path / "wgs84.gpkg")})["OUTPUT"]
    assert QgsVectorLayer(reprojected).crs().authid() == "EPSG:4326"
    result = run_alg("satseg:trainsegmentation", dict(FAST, INPUT=scene["scene"], LABELS=reprojected, EPOCHS=1,
                                                      OUTPUT_MODEL=str(tmp_path / "m.satseg")))
    assert os.path.exists(result["OUTPUT_MODEL"])


def test_qgis_process_train_then_segment(qgis_process, scene, tmp_path):
    model = str(tmp_path / "qp.satseg")
    qgis_process("run", "satseg:trainsegmentation", "--", f"INPUT={scene['scene']}",
                 f"LABELS={scene['buildings']}", *[f"{k}={v}" for k, v in FAST.items()], f"OUTPUT_MODEL={model}")
    qgis_process("run", "satseg:segmentraster", "--", f"INPUT={scene['scene']}", f"MODELS={model}", "TILE_SIZE=128",
                 "DEVICE=1", f"OUTPUT_PROBABILITY={tmp_path / 'p.tif'}", f"OUTPUT_MASK={tmp_path / 'm.tif'}",
                 f"OUTPUT_POLYGONS={tmp_path / 'b.gpkg'}")
    with rasterio.open(tmp_path / "m.tif") as mask:
        values = np.unique(mask.read(1))
    assert set(values.tolist()) <= {0, 1, 255}
