"""satseg:exportrle, satseg:importrle and satseg:evaluatesegmentation in real QGIS (processing.run, qgis_process)."""

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsProcessingException,
    QgsProject,
    QgsRectangle,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

from satseg_plugin.pipelines.segmentation.evaluate import evaluate_masks
from tests.conftest import write_raster
from tests.qgis.conftest import parse_json_output

TRANSFORM = Affine(0.5, 0, 500000.0, 0, -0.5, 5000000.0)
#: Buildings as pixel boxes (col0, row0, col1, row1), exclusive ends, on a 40 x 60 px grid.
BOXES = [(2, 10, 12, 22), (20, 5, 30, 12), (35, 14, 55, 19), (5, 30, 15, 38)]


@pytest.fixture
def rasters(tmp_path):
    """``(prediction path, reference mask path, prediction array, reference array)``."""
    ref = np.zeros((40, 60), np.uint8)
    for c0, r0, c1, r1 in BOXES:
        ref[r0:r1, c0:c1] = 1
    pred = ref.copy()
    pred[5:12, 26:30] = 0  # building 2 at IoU 0.6
    pred[30:38, 5:15] = 0  # building 4 missed
    pred[25:28, 50:55] = 1  # a false building
    return (write_raster(str(tmp_path / "pred.tif"), pred, transform=TRANSFORM),
            write_raster(str(tmp_path / "ref.tif"), ref, transform=TRANSFORM), pred, ref)


def polygon_layer(path, boxes, crs="EPSG:32633"):
    """Write pixel boxes as polygons in ``crs`` (reprojected from the raster's UTM 33N) to a GeoPackage."""
    layer = QgsVectorLayer(f"Polygon?crs={crs}", "polygons", "memory")
    to_crs = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32633"), QgsCoordinateReferenceSystem(crs),
                                    QgsProject.instance())
    features = []
    for c0, r0, c1, r1 in boxes:
        (x0, y0), (x1, y1) = TRANSFORM * (c0, r0), TRANSFORM * (c1, r1)
        geom = QgsGeometry.fromRect(QgsRectangle(x0, y1, x1, y0))
        geom = geom.densifyByDistance(0.1)  # keep edges straight in UTM after the round trip through WGS 84
        geom.transform(to_crs)
        feature = QgsFeature()
        feature.setGeometry(geom)
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    QgsVectorFileWriter.writeAsVectorFormatV3(layer, path, QgsProject.instance().transformContext(),
                                              QgsVectorFileWriter.SaveVectorOptions())
    return path


def test_export_then_import_round_trip(run_alg, rasters, tmp_path):
    pred_path, _ref, pred, _r = rasters
    csv_path = str(tmp_path / "sub.csv")
    result = run_alg("satseg:exportrle", {"INPUT": pred_path, "TILE_SIZE": 16, "PREFIX": "scene", "OUTPUT": csv_path})
    assert result["OUTPUT"] == csv_path and result["TILE_COUNT"] == 3 * 4
    lines = Path(csv_path).read_text().splitlines()
    assert lines[0] == "img_id,mask_rle" and lines[1].startswith("scene_r0000_c0000,") and len(lines) == 13
    assert os.path.exists(csv_path + ".json")

    rebuilt = run_alg("satseg:importrle", {"INPUT": csv_path, "OUTPUT": str(tmp_path / "rebuilt.tif")})["OUTPUT"]
    with rasterio.open(rebuilt) as dst:
        assert dst.transform == TRANSFORM and dst.crs.to_epsg() == 32633 and dst.dtypes[0] == "uint8"
        np.testing.assert_array_equal(dst.read(1), pred)

    os.remove(csv_path + ".json")  # without the sidecar, a reference raster gives the grid
    result = run_alg("satseg:importrle", {"INPUT": csv_path, "REFERENCE": pred_path, "TILE_SIZE": 16,
                                          "OUTPUT": str(tmp_path / "with_ref.tif")})
    with rasterio.open(result["OUTPUT"]) as dst:
        np.testing.assert_array_equal(dst.read(1), pred)


def test_import_loads_the_mask_on_completion(qgis_app, rasters, tmp_path):
    import processing

    project = QgsProject.instance()
    project.clear()
    csv_path = str(tmp_path / "load.csv")
    processing.run("satseg:exportrle", {"INPUT": rasters[0], "TILE_SIZE": 32, "OUTPUT": csv_path})
    result = processing.runAndLoadResults("satseg:importrle", {"INPUT": csv_path, "OUTPUT": str(tmp_path / "l.tif")})
    layers = [lyr for lyr in project.mapLayers().values() if lyr.source() == result["OUTPUT"]]
    assert len(layers) == 1 and layers[0].isValid() and layers[0].crs().authid() == "EPSG:32633"
    assert layers[0].name() == "Building mask" and layers[0].renderer().type() == "paletted"  # mask.qml
    project.clear()


def test_evaluate_against_polygons_in_another_crs(run_alg, rasters, tmp_path):
    pred_path, _ref, pred, ref = rasters
    polygons = polygon_layer(str(tmp_path / "buildings.gpkg"), BOXES, crs="EPSG:4326")
    table = str(tmp_path / "metrics.gpkg")
    result = run_alg("satseg:evaluatesegmentation", {"PREDICTION": pred_path, "REFERENCE_POLYGONS": polygons,
                                                     "TILE_SIZE": 16, "OUTPUT_TABLE": table})
    expected = evaluate_masks(pred, ref, tile_size=16)
    assert (expected.object_tp, expected.object_fp, expected.object_fn) == (3, 1, 1)
    for key, field in (("DICE", "dice"), ("IOU", "iou"), ("PRECISION", "precision"), ("RECALL", "recall"),
                       ("TILE_DICE", "tile_dice"), ("OBJECT_F1", "object_f1"),
                       ("OBJECT_PRECISION", "object_precision"), ("OBJECT_RECALL", "object_recall")):
        assert result[key] == pytest.approx(getattr(expected, field)), key
    layer = QgsVectorLayer(result["OUTPUT_TABLE"], "metrics", "ogr")
    assert layer.isValid() and not layer.isSpatial()
    rows = {f["metric"]: f["value"] for f in layer.getFeatures()}
    assert rows["dice"] == pytest.approx(expected.dice) and rows["object_tp"] == 3 and rows["tile_size"] == 16


def test_evaluate_against_mask_with_aoi(run_alg, rasters, tmp_path):
    pred_path, ref_path, pred, ref = rasters
    aoi = polygon_layer(str(tmp_path / "aoi.gpkg"), [(0, 0, 30, 40)])
    result = run_alg("satseg:evaluatesegmentation", {"PREDICTION": pred_path, "REFERENCE_MASK": ref_path,
                                                     "AOI": aoi, "TILE_SIZE": 16})
    valid = np.zeros(pred.shape, bool)
    valid[:, :30] = True
    expected = evaluate_masks(pred, ref, valid, tile_size=16)
    assert result["DICE"] == pytest.approx(expected.dice) and result["OBJECT_F1"] == pytest.approx(expected.object_f1)
    assert result["RECALL"] < 1.0 and result["PRECISION"] == 1.0  # the false building lies outside the AOI
    same = run_alg("satseg:evaluatesegmentation", {"PREDICTION": ref_path, "REFERENCE_MASK": ref_path})
    assert same["DICE"] == same["TILE_DICE"] == same["OBJECT_F1"] == 1.0


@pytest.mark.parametrize("alg, params, message", [
    ("satseg:evaluatesegmentation", {"REFERENCE_MASK": "{ref}", "REFERENCE_POLYGONS": "{polygons}"},
     "REFERENCE_POLYGONS, REFERENCE_MASK: give exactly one reference.*both"),
    ("satseg:evaluatesegmentation", {}, "REFERENCE_POLYGONS, REFERENCE_MASK: .*neither"),
    ("satseg:evaluatesegmentation", {"REFERENCE_MASK": "{small}"}, "REFERENCE_MASK: .*must share one pixel grid"),
    ("satseg:exportrle", {"PREFIX": "a,b", "OUTPUT": "{tmp}/x.csv"}, "PREFIX: .*comma"),
    ("satseg:importrle", {"INPUT": "{tmp}/orphan.csv", "OUTPUT": "{tmp}/x.tif"}, "REFERENCE: no sidecar"),
])
def test_bad_inputs_name_the_parameter(run_alg, rasters, tmp_path, alg, params, message):
    pred_path, ref_path, _p, ref = rasters
    (tmp_path / "orphan.csv").write_text("img_id,mask_rle\nx_r0000_c0000,-1\n")
    values = {"ref": ref_path, "tmp": str(tmp_path),
              "polygons": polygon_layer(str(tmp_path / "p.gpkg"), BOXES),
              "small": write_raster(str(tmp_path / "small.tif"), ref[:20], transform=TRANSFORM)}
    params = {k: v.format(**values) for k, v in params.items()}
    key = "INPUT" if alg != "satseg:evaluatesegmentation" else "PREDICTION"
    params.setdefault(key, pred_path)
    with pytest.raises(QgsProcessingException, match=message):
        run_alg(alg, params)
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.tif").exists()


def test_qgis_process_runs_exportrle(qgis_process, rasters, tmp_path):
    csv_path = str(tmp_path / "qp.csv")
    run = qgis_process("--json", "run", "satseg:exportrle", "--", f"INPUT={rasters[0]}", "TILE_SIZE=16",
                       "PREFIX=qp", f"OUTPUT={csv_path}")
    results = parse_json_output(run.stdout)["results"]
    assert results["TILE_COUNT"] == 12 and results["OUTPUT"] == csv_path
    assert Path(csv_path).read_text().splitlines()[1].startswith("qp_r0000_c0000,")


def test_a_table_may_go_into_the_reference_geopackage_but_never_over_the_reference_layer(run_alg, rasters,
                                                                                          tmp_path):
    from qgis.core import QgsProcessingException

    pred_path = rasters[0]
    path = str(tmp_path / "buildings.gpkg")
    polygon_layer(path, BOXES)
    reference = f"{path}|layername=buildings"
    before = QgsVectorLayer(reference, "ref", "ogr").featureCount()
    params = {"PREDICTION": pred_path, "REFERENCE_POLYGONS": reference, "TILE_SIZE": 16}
    result = run_alg("satseg:evaluatesegmentation", dict(params, OUTPUT_TABLE=f"{path}|layername=metrics"))
    assert QgsVectorLayer(result["OUTPUT_TABLE"], "m", "ogr").featureCount() > 0
    assert QgsVectorLayer(reference, "ref", "ogr").featureCount() == before == len(BOXES)
    for table in (f"{path}|layername=Buildings", path):  # the reference layer itself, or the whole file
        with pytest.raises(QgsProcessingException, match="OUTPUT_TABLE.*never writes over its inputs"):
            run_alg("satseg:evaluatesegmentation", dict(params, OUTPUT_TABLE=table))
    assert QgsVectorLayer(reference, "ref", "ogr").featureCount() == before
