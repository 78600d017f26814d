"""satseg:trainclusternet, clusterraster, clusterstoclasses and evaluateclusters in real QGIS and qgis_process."""

import csv
import os

import numpy as np
import pytest
import rasterio
from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsProcessingException, QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import QVariant

from sample_data.generate import generate_scene, read_buildings
from tests.qgis.conftest import parse_json_output

pytest.importorskip("faiss")
pytest.importorskip("segmentation_models_pytorch")
pytestmark = pytest.mark.slow

FAST = {"NUM_CLUSTERS": 6, "FEATURE_DIM": 8, "ROUNDS": 2, "STEPS_PER_ROUND": 2, "PATCH_SIZE": 64,
        "CROPS_PER_ROUND": 6, "BATCH_SIZE": 3, "SAMPLE_PIXELS": 5000, "DEVICE": 1}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(str(tmp_path_factory.mktemp("cscene")), size=256, seed=7)


@pytest.fixture(scope="module")
def trained(scene, tmp_path_factory, session_plugin):
    import processing

    session_plugin.initProcessing()
    out = tmp_path_factory.mktemp("cmodel")
    result = processing.run("satseg:trainclusternet", dict(
        FAST, INPUT=[scene["scene"]], OUTPUT_MODEL=str(out / "c.satseg"), OUTPUT_LOG=str(out / "rounds.csv")))
    clusters = processing.run("satseg:clusterraster", {
        "INPUT": scene["scene"], "MODEL": result["OUTPUT_MODEL"], "TILE_SIZE": 128, "DEVICE": 1,
        "OUTPUT": str(out / "clusters.tif")})
    return result, clusters["OUTPUT"]


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def annotation_layer(scene, n_buildings=4):
    """A memory layer with a 'class' field: some building footprints and two background squares."""
    layer = QgsVectorLayer("Polygon?crs=EPSG:32633", "annotations", "memory")
    layer.dataProvider().addAttributes([QgsField("class", QVariant.String)])
    layer.updateFields()
    with rasterio.open(scene["scene"]) as src:
        b = src.bounds
    feats = []
    for building in read_buildings(scene["buildings"])[:n_buildings]:
        feats.append((building.polygon.wkt, "building"))
    feats.append((f"POLYGON(({b.left+2} {b.bottom+2},{b.left+8} {b.bottom+2},{b.left+8} {b.bottom+8},"
                   f"{b.left+2} {b.bottom+8},{b.left+2} {b.bottom+2}))", "other"))
    features = []
    for wkt, cls in feats:
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromWkt(wkt))
        f.setAttributes([cls])
        features.append(f)
    layer.dataProvider().addFeatures(features)
    return layer


def test_training_outputs(trained):
    result, _ = trained
    assert os.path.exists(result["OUTPUT_MODEL"])
    rows = read_csv(result["OUTPUT_LOG"])
    assert [int(r["round"]) for r in rows] == [1, 2] and float(rows[1]["nmi_previous"]) == result["FINAL_NMI"]
    assert result["OBJECTIVE"] > 0


def test_a_model_left_temporary_is_kept_beside_the_project(qgis_app, trained, scene, tmp_path):
    """QGIS deletes its temporary folder on exit: a ClusterNet asked for as a temporary file is written to
    satseg_results/models beside the project instead (the same rule as every SatSeg trainer)."""
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback

    project = QgsProject()
    project.setPresetHomePath(str(tmp_path))
    context = QgsProcessingContext()
    context.setProject(project)
    result = processing.run("satseg:trainclusternet", dict(FAST, INPUT=[scene["scene"]],
                                                           OUTPUT_MODEL="TEMPORARY_OUTPUT"),
                            context=context, feedback=QgsProcessingFeedback())
    kept = result["OUTPUT_MODEL"]
    assert os.path.dirname(kept) == str(tmp_path / "satseg_results" / "models")
    assert os.path.basename(kept).startswith("clusternet_") and os.path.getsize(kept) > 0
    assert os.listdir(os.path.dirname(kept)) == [os.path.basename(kept)]


def test_cluster_raster_styled_on_the_input_grid(qgis_app, trained, scene, tmp_path):
    import processing

    result, _ = trained
    project = QgsProject.instance()
    project.clear()
    out = processing.runAndLoadResults("satseg:clusterraster", {
        "INPUT": scene["scene"], "MODEL": result["OUTPUT_MODEL"], "TILE_SIZE": 128, "DEVICE": 1,
        "OUTPUT": str(tmp_path / "c.tif"), "OUTPUT_POLYGONS": str(tmp_path / "c.gpkg")})
    with rasterio.open(scene["scene"]) as src, rasterio.open(out["OUTPUT"]) as dst:
        assert (dst.transform, dst.crs, dst.shape, dst.dtypes[0]) == (src.transform, src.crs, src.shape, "uint16")
        ids = dst.read(1)
    assert set(np.unique(ids).tolist()) <= set(range(1, 7)) and out["CLUSTERS_USED"] == len(np.unique(ids))
    layers = {layer.name(): layer for layer in project.mapLayers().values()}
    assert "Clusters" in layers
    renderer = layers["Clusters"].renderer()
    assert renderer.type() == "paletted"
    assert {c.label for c in renderer.classes()} == {f"cluster {i}" for i in np.unique(ids)}
    polygons = QgsVectorLayer(out["OUTPUT_POLYGONS"])
    assert polygons.featureCount() > 0
    assert {f["cluster"] for f in polygons.getFeatures()} == set(np.unique(ids).tolist())
    project.clear()


def test_clusters_to_classes_from_table_and_from_annotations(run_alg, trained, scene, tmp_path):
    result, clusters = trained
    out = run_alg("satseg:clusterstoclasses", {"INPUT": clusters, "MAPPING": "1,2=a; 3-6=b",
                                               "OUTPUT": str(tmp_path / "t.tif"), "OUTPUT_POLYGONS": "TEMPORARY_OUTPUT",
                                               "OUTPUT_REPORT": str(tmp_path / "t.csv")})
    with rasterio.open(clusters) as c, rasterio.open(out["OUTPUT"]) as k:
        ids, cls = c.read(1), k.read(1)
        assert k.transform == c.transform
    expected = np.where(np.isin(ids, [1, 2]), 1, 2)
    assert np.array_equal(cls, expected)
    layer = annotation_layer(scene)
    out = run_alg("satseg:clusterstoclasses", {
        "INPUT": clusters, "ANNOTATIONS": layer, "CLASS_FIELD": "class", "RASTER": scene["scene"],
        "MODEL": result["OUTPUT_MODEL"], "DEVICE": 1, "OUTPUT": str(tmp_path / "a.tif"),
        "OUTPUT_CLUSTERS": str(tmp_path / "split.tif"), "OUTPUT_REPORT": str(tmp_path / "a.csv")})
    rows = read_csv(out["OUTPUT_REPORT"])
    assert rows and {"cluster", "annotated_building", "annotated_other", "decision"} <= set(rows[0])
    assert out["CLASSES_ASSIGNED"] == len(rows)
    with rasterio.open(out["OUTPUT"]) as k:
        assert set(np.unique(k.read(1)).tolist()) <= {0, 1, 2} and k.tags()["classes"] == "building;other"
    if out["SPLITS"]:
        with rasterio.open(out["OUTPUT_CLUSTERS"]) as s:
            assert s.read(1).max() > 6


def test_evaluate_clusters(run_alg, trained, scene, tmp_path):
    _, clusters = trained
    out = run_alg("satseg:evaluateclusters", {"INPUT": clusters, "REFERENCE": scene["buildings"],
                                              "OUTPUT_TABLE": str(tmp_path / "e.csv")})
    assert 0 <= out["DICE"] <= out["BEST_DICE"] <= 1 and 0 <= out["NMI"] <= 1 and 0.5 <= out["PURITY"] <= 1
    rows = read_csv(out["OUTPUT_TABLE"])
    with rasterio.open(clusters) as c:
        assert sum(int(r["pixels"]) for r in rows) == c.width * c.height


def test_bad_inputs(run_alg, trained, scene, tmp_path):
    result, clusters = trained
    with pytest.raises(QgsProcessingException, match="MAPPING"):
        run_alg("satseg:clusterstoclasses", {"INPUT": clusters, "MAPPING": "1,x=a", "OUTPUT": str(tmp_path / "x.tif")})
    with pytest.raises(QgsProcessingException, match="either"):
        run_alg("satseg:clusterstoclasses", {"INPUT": clusters, "OUTPUT": str(tmp_path / "x.tif")})
    assert not os.path.exists(tmp_path / "x.tif")
    with pytest.raises(QgsProcessingException, match="NUM_CLUSTERS"):
        run_alg("satseg:trainclusternet", dict(FAST, INPUT=[scene["scene"]], NUM_CLUSTERS=500, SAMPLE_PIXELS=400,
                                               OUTPUT_MODEL=str(tmp_path / "m.satseg")))
    assert not os.path.exists(tmp_path / "m.satseg")
    with pytest.raises(QgsProcessingException, match="INPUT"):
        run_alg("satseg:trainclusternet", dict(FAST, OUTPUT_MODEL=str(tmp_path / "m.satseg")))
    far = QgsVectorLayer("Polygon?crs=EPSG:32633&field=class:string", "far", "memory")
    f = QgsFeature(far.fields())
    f.setGeometry(QgsGeometry.fromWkt("POLYGON((0 0,10 0,10 10,0 10,0 0))"))
    f.setAttributes(["building"])
    far.dataProvider().addFeatures([f])
    with pytest.raises(QgsProcessingException, match="ANNOTATIONS"):
        run_alg("satseg:clusterstoclasses", {"INPUT": clusters, "ANNOTATIONS": far, "CLASS_FIELD": "class",
                                             "OUTPUT": str(tmp_path / "y.tif")})
    with pytest.raises(QgsProcessingException, match="missing.satseg' does not exist"):
        run_alg("satseg:clusterraster", {"INPUT": scene["scene"], "MODEL": str(tmp_path / "missing.satseg"),
                                         "OUTPUT": str(tmp_path / "z.tif")})


def test_qgis_process_all_four_algorithms(qgis_process, scene, tmp_path):
    """Train, cluster, name and evaluate, each through qgis_process."""
    qgis_process("run", "satseg:trainclusternet", "--", f"INPUT={scene['scene']}",
                 *[f"{key}={value}" for key, value in FAST.items()], f"OUTPUT_MODEL={tmp_path / 'm.satseg'}",
                 f"OUTPUT_LOG={tmp_path / 'rounds.csv'}")
    assert len(read_csv(tmp_path / "rounds.csv")) == FAST["ROUNDS"]
    qgis_process("run", "satseg:clusterraster", "--", f"INPUT={scene['scene']}", f"MODEL={tmp_path / 'm.satseg'}",
                 "TILE_SIZE=128", "DEVICE=1", f"OUTPUT={tmp_path / 'c.tif'}")
    qgis_process("run", "satseg:clusterstoclasses", "--", f"INPUT={tmp_path / 'c.tif'}", "MAPPING=1-3=a;4-6=b",
                 f"OUTPUT={tmp_path / 'k.tif'}")
    with rasterio.open(tmp_path / "c.tif") as c, rasterio.open(tmp_path / "k.tif") as k:
        assert np.array_equal(k.read(1), np.where(c.read(1) <= 3, 1, 2))
        assert (c.crs, c.transform) == (k.crs, k.transform)
    out = qgis_process("run", "satseg:evaluateclusters", "--json", "--", f"INPUT={tmp_path / 'c.tif'}",
                       f"REFERENCE={scene['buildings']}", f"OUTPUT_TABLE={tmp_path / 'e.csv'}")
    results = parse_json_output(out.stdout)["results"]
    assert isinstance(results["BEST_DICE"], float) and isinstance(results["DICE"], float)  # numbers, not text
    assert 0.0 < results["BEST_DICE"] <= 1.0 and results["DICE"] <= results["BEST_DICE"] + 1e-9
    assert len(read_csv(tmp_path / "e.csv")) >= 2
