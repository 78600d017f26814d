"""satseg:exportonnx and satseg:segmentraster with .onnx models, in real QGIS, with plain paths from a script."""

import numpy as np
import pytest
import rasterio
from qgis.core import QgsProcessingException

from sample_data.generate import generate_scene
from tests.qgis.conftest import train_on_scene

pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow

FAST = {"ENCODER": "resnet18", "PATCH_SIZE": 64, "BATCH_SIZE": 4, "EPOCHS": 1, "BATCHES_PER_EPOCH": 2, "DEVICE": 1}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(str(tmp_path_factory.mktemp("scene")), size=256, seed=5)


@pytest.fixture(scope="module")
def model(scene, tmp_path_factory, session_plugin):
    session_plugin.initProcessing()
    out = tmp_path_factory.mktemp("model")
    return train_on_scene(scene, FAST, OUTPUT_MODEL=str(out / "m.satseg"), OUTPUT_LOG=str(out / "log.csv"),
                          OUTPUT_PLOT=str(out / "curve.png"))["OUTPUT_MODEL"]


def _segment(run_alg, scene, models, out, name):
    return run_alg("satseg:segmentraster", {
        "INPUT": scene["scene"], "MODELS": models, "TILE_SIZE": 128, "DEVICE": 1,
        "OUTPUT_PROBABILITY": str(out / f"{name}_p.tif"), "OUTPUT_MASK": str(out / f"{name}_m.tif"),
        "OUTPUT_POLYGONS": str(out / f"{name}.gpkg")})


def test_export_then_segment_with_the_onnx_path(run_alg, model, scene, tmp_path):
    exported = run_alg("satseg:exportonnx", {"MODEL": model, "SAMPLE_RASTER": scene["scene"],
                                             "OUTPUT": str(tmp_path / "m.onnx")})
    assert exported["OUTPUT"] == str(tmp_path / "m.onnx") and 0 <= exported["MAX_DIFFERENCE"] <= 1e-4
    # a plain path string (not a list) from a script, then a ;-separated ensemble of .satseg and .onnx
    from_onnx = _segment(run_alg, scene, exported["OUTPUT"], tmp_path, "onnx")
    from_satseg = _segment(run_alg, scene, [model], tmp_path, "satseg")
    mixed = _segment(run_alg, scene, f"{model};{exported['OUTPUT']}", tmp_path, "mixed")
    arrays = {}
    for name, result in (("onnx", from_onnx), ("satseg", from_satseg), ("mixed", mixed)):
        with rasterio.open(result["OUTPUT_PROBABILITY"]) as p, rasterio.open(result["OUTPUT_MASK"]) as m:
            arrays[name] = p.read(), m.read()
    for name in ("onnx", "mixed"):
        assert np.abs(arrays[name][0] - arrays["satseg"][0]).max() <= 1e-4
        assert np.array_equal(arrays[name][1], arrays["satseg"][1])
    assert from_onnx["POLYGON_COUNT"] == from_satseg["POLYGON_COUNT"]
    assert from_onnx["USED_THRESHOLD"] == from_satseg["USED_THRESHOLD"]


def test_model_files_parameter_is_a_file_filtered_on_model_types(qgis_app):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("satseg:segmentraster")
    models = alg.parameterDefinition("MODELS")
    assert models.type() == "file" and "*.satseg *.onnx" in models.fileFilter()
    advanced = {d.name() for d in alg.parameterDefinitions() if d.flags() & d.FlagAdvanced}
    assert {"WEIGHTS", "TILE_SIZE", "OVERLAP", "TTA"} <= advanced


def test_export_refuses_to_write_over_its_input_and_bad_models(run_alg, model, tmp_path):
    with pytest.raises(QgsProcessingException, match="OUTPUT"):
        run_alg("satseg:exportonnx", {"MODEL": model, "OUTPUT": model})
    not_a_model = tmp_path / "x.satseg"
    not_a_model.write_text("hello")
    with pytest.raises(QgsProcessingException, match="x.satseg"):
        run_alg("satseg:exportonnx", {"MODEL": str(not_a_model), "OUTPUT": str(tmp_path / "x.onnx")})
    assert not (tmp_path / "x.onnx").exists()
