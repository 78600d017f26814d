"""satseg:patchraster in real QGIS: processing.run, styling on load, errors, cancel, qgis_process."""

import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from affine import Affine
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsGeometry,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRectangle,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

from tests.conftest import write_raster
from tests.qgis.conftest import ROOT, parse_json_output

TRANSFORM = Affine(0.5, 0, 500000.0, 0, -0.5, 5000000.0)
INDEX_FIELDS = ["patch_id", "row", "col", "x_off", "y_off", "width", "height", "path", "nodata_frac", "pad_frac"]


@pytest.fixture
def scene(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(1, 255, size=(3, 100, 130), dtype="uint8")
    data[:, :32, :32] = 0  # one all-nodata patch at the top-left
    return write_raster(str(tmp_path / "scene.tif"), data, transform=TRANSFORM, nodata=0,
                        descriptions=["red", "green", "blue"])


def check_index_against_files(index_path, crs_authid="EPSG:32633"):
    layer = QgsVectorLayer(index_path, "index", "ogr")
    assert layer.isValid()
    assert layer.crs().authid() == crs_authid
    assert [f.name() for f in layer.fields() if f.name() != "fid"] == INDEX_FIELDS
    features = list(layer.getFeatures())
    for feature in features:
        with rasterio.open(feature["path"]) as patch:
            assert patch.transform == TRANSFORM * Affine.translation(feature["x_off"], feature["y_off"])
            b = patch.bounds
            assert feature.geometry().boundingBox() == QgsRectangle(b.left, b.bottom, b.right, b.top)
    return features


def test_processing_run_writes_patches_and_index(run_alg, scene, tmp_path):
    out_dir, index = str(tmp_path / "patches"), str(tmp_path / "index.gpkg")
    result = run_alg("satseg:patchraster", {"INPUT": scene, "PATCH_WIDTH": 32, "PATCH_HEIGHT": 32,
                                            "OUTPUT_DIR": out_dir, "OUTPUT_INDEX": index})
    # 130/32 -> 5 columns with shift, 100/32 -> 4 rows; the all-nodata top-left patch is skipped
    assert result["PATCH_COUNT"] == 5 * 4 - 1
    assert result["OUTPUT_DIR"] == out_dir
    features = check_index_against_files(result["OUTPUT_INDEX"])
    assert len(features) == result["PATCH_COUNT"]
    assert {(f["row"], f["col"]) for f in features} == {(r, c) for r in range(4) for c in range(5)} - {(0, 0)}
    assert len([n for n in os.listdir(out_dir) if n.endswith(".tif")]) == result["PATCH_COUNT"]


def test_bands_extent_mask_in_another_crs_and_sampling(run_alg, scene, tmp_path):
    # mask polygon drawn in WGS 84 around pixel (40..50, 40..50)
    mask_path = str(tmp_path / "mask.gpkg")
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", "mask", "memory")
    from qgis.core import QgsCoordinateTransform

    to_wgs = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32633"), QgsCoordinateReferenceSystem("EPSG:4326"),
                                    QgsProject.instance())
    x0, y0 = TRANSFORM * (40, 40)
    x1, y1 = TRANSFORM * (50, 50)
    geom = QgsGeometry.fromRect(QgsRectangle(x0, y1, x1, y0))
    geom.transform(to_wgs)
    feature = QgsFeature()
    feature.setGeometry(geom)
    layer.dataProvider().addFeatures([feature])
    QgsVectorFileWriter.writeAsVectorFormatV3(layer, mask_path, QgsProject.instance().transformContext(),
                                              QgsVectorFileWriter.SaveVectorOptions())
    result = run_alg("satseg:patchraster", {"INPUT": scene, "BANDS": [3, 1], "PATCH_WIDTH": 32, "PATCH_HEIGHT": 32,
                                            "MASK": mask_path, "OUTPUT_DIR": str(tmp_path / "m"),
                                            "OUTPUT_INDEX": str(tmp_path / "m.gpkg")})
    features = check_index_against_files(result["OUTPUT_INDEX"])
    assert sorted((f["x_off"], f["y_off"]) for f in features) == [(32, 32)]
    with rasterio.open(features[0]["path"]) as patch, rasterio.open(scene) as src:
        assert patch.descriptions == ("blue", "red")
        np.testing.assert_array_equal(patch.read(), src.read([3, 1], window=((32, 64), (32, 64))))

    extent = f"{500000 + 70 * 0.5},{500000 + 71 * 0.5},{5000000 - 10 * 0.5},{5000000 - 9 * 0.5} [EPSG:32633]"
    result = run_alg("satseg:patchraster", {"INPUT": scene, "PATCH_WIDTH": 32, "PATCH_HEIGHT": 32, "EXTENT": extent,
                                            "OUTPUT_DIR": str(tmp_path / "e"), "OUTPUT_INDEX": str(tmp_path / "e.gpkg")})
    assert [(f["row"], f["col"]) for f in check_index_against_files(result["OUTPUT_INDEX"])] == [(0, 2)]

    picks = [[(f["row"], f["col"]) for f in check_index_against_files(run_alg(
        "satseg:patchraster", {"INPUT": scene, "PATCH_WIDTH": 16, "PATCH_HEIGHT": 16, "SAMPLE_COUNT": 5, "SEED": 7,
                               "OUTPUT_DIR": str(tmp_path / f"s{i}"),
                               "OUTPUT_INDEX": str(tmp_path / f"s{i}.gpkg")})["OUTPUT_INDEX"])] for i in range(2)]
    assert len(picks[0]) == 5 and picks[0] == picks[1]


@pytest.mark.parametrize("params, message", [
    ({"STRIDE_X": -4}, "STRIDE_X: stride must be a positive"),
    ({"EDGE": 2, "PATCH_WIDTH": 4096}, "PATCH_WIDTH: .*larger than"),
    ({"MAX_NODATA_FRACTION": 0.0, "BANDS": [1], "EXTENT": "500000,500010,4999990,5000000 [EPSG:32633]"},
     "MAX_NODATA_FRACTION: every one"),
])
def test_bad_parameters_raise_processing_exception(run_alg, scene, tmp_path, params, message):
    with pytest.raises(QgsProcessingException, match=message):
        run_alg("satseg:patchraster", {"INPUT": scene, "PATCH_WIDTH": 32, "PATCH_HEIGHT": 32,
                                       "OUTPUT_DIR": str(tmp_path / "out"), "OUTPUT_INDEX": str(tmp_path / "i.gpkg"),
                                       **params})
    assert not (tmp_path / "out").exists() and not (tmp_path / "i.gpkg").exists()


def test_unreadable_input_and_non_empty_folder(run_alg, scene, tmp_path):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"garbage")
    with pytest.raises(QgsProcessingException):
        run_alg("satseg:patchraster", {"INPUT": str(broken), "OUTPUT_DIR": str(tmp_path / "o"),
                                       "OUTPUT_INDEX": str(tmp_path / "o.gpkg")})
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(QgsProcessingException, match="OUTPUT_DIR: .*not empty.*OVERWRITE"):
        run_alg("satseg:patchraster", {"INPUT": scene, "OUTPUT_DIR": str(busy), "OUTPUT_INDEX": str(tmp_path / "b.gpkg")})
    assert os.listdir(busy) == ["notes.txt"]


def test_cancel_keeps_previous_outputs(run_alg, scene, tmp_path):
    params = {"INPUT": scene, "PATCH_WIDTH": 8, "PATCH_HEIGHT": 8, "OVERWRITE": True,
              "OUTPUT_DIR": str(tmp_path / "p"), "OUTPUT_INDEX": str(tmp_path / "p.gpkg")}
    first = run_alg("satseg:patchraster", params)
    before = sorted(os.listdir(tmp_path / "p"))

    class CancelSoon(QgsProcessingFeedback):
        def setProgress(self, progress):
            super().setProgress(progress)
            if progress > 10:
                self.cancel()

    with pytest.raises(QgsProcessingException, match="Canceled"):
        run_alg("satseg:patchraster", dict(params, PATCH_WIDTH=16, PATCH_HEIGHT=16), feedback=CancelSoon())
    assert sorted(os.listdir(tmp_path / "p")) == before
    assert QgsVectorLayer(str(tmp_path / "p.gpkg")).featureCount() == first["PATCH_COUNT"]


def test_index_is_styled_when_loaded(run_alg, scene, tmp_path):
    import processing
    from qgis.core import QgsProject

    project = QgsProject.instance()
    project.clear()
    result = processing.runAndLoadResults("satseg:patchraster", {
        "INPUT": scene, "PATCH_WIDTH": 32, "PATCH_HEIGHT": 32, "OUTPUT_DIR": str(tmp_path / "s"),
        "OUTPUT_INDEX": str(tmp_path / "styled.gpkg")})
    layers = [lyr for lyr in project.mapLayers().values() if lyr.source().startswith(str(tmp_path / "styled.gpkg"))]
    assert len(layers) == 1 and layers[0].name() == "Patch index"
    symbol = layers[0].renderer().symbol()
    assert symbol.symbolLayer(0).brushStyle() == 0  # Qt.NoBrush: outlines only
    assert symbol.symbolLayer(0).strokeColor().name() == "#ff8c00"
    assert result["PATCH_COUNT"] > 0
    project.clear()


def test_plugin_loads_and_explains_missing_packages(tmp_path):
    """With rasterio and torch unimportable, QGIS loads the plugin and the algorithm names the fix."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('rasterio', 'torch', 'faiss'):
            raise ImportError('No module named ' + name)
sys.meta_path.insert(0, Block())
sys.path[:0] = [{ROOT!r}, '/usr/share/qgis/python/plugins']
from qgis.core import QgsApplication, QgsProcessingException
app = QgsApplication([], False); app.initQgis()
from processing.core.Processing import Processing; Processing.initialize()
import satseg_plugin, processing
plugin = satseg_plugin.classFactory(None); plugin.initProcessing()
assert QgsApplication.processingRegistry().algorithmById('satseg:patchraster') is not None
try:
    processing.run('satseg:patchraster', {{'INPUT': {str(tmp_path / 'x.tif')!r}, 'OUTPUT_DIR': 'x', 'OUTPUT_INDEX': 'x.gpkg'}})
except QgsProcessingException as exc:
    print('MESSAGE:', exc)
"""
    write_raster(str(tmp_path / "x.tif"), np.ones((1, 8, 8), "uint8"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, QT_QPA_PLATFORM="offscreen"), timeout=300)
    assert out.returncode == 0, out.stderr
    assert "MESSAGE: SatSeg needs the Python package 'rasterio'" in out.stdout
    assert "-m pip install --user rasterio" in out.stdout


def test_qgis_process_lists_and_runs(qgis_process, scene, tmp_path):
    listed = qgis_process("list").stdout
    assert "satseg:patchraster" in listed and "SatSeg" in listed
    help_text = qgis_process("help", "satseg:patchraster").stdout
    assert "PATCH_WIDTH" in help_text and "OUTPUT_INDEX" in help_text
    out_dir, index = str(tmp_path / "qp"), str(tmp_path / "qp.gpkg")
    run = qgis_process("--json", "run", "satseg:patchraster", "--", f"INPUT={scene}", "PATCH_WIDTH=32",
                       "PATCH_HEIGHT=32", "EDGE=1", f"OUTPUT_DIR={out_dir}", f"OUTPUT_INDEX={index}")
    results = parse_json_output(run.stdout)["results"]
    assert results["PATCH_COUNT"] == 19  # pad: 5 x 4 grid, top-left all nodata
    features = check_index_against_files(results["OUTPUT_INDEX"])
    assert max(f["pad_frac"] for f in features) > 0
    failed = qgis_process("run", "satseg:patchraster", "--", f"INPUT={scene}", "STRIDE_Y=0",
                          f"OUTPUT_DIR={tmp_path / 'bad'}", f"OUTPUT_INDEX={tmp_path / 'bad.gpkg'}", check=False)
    assert failed.returncode != 0 and "STRIDE_Y" in failed.stdout + failed.stderr
