"""The scene-clustering chain in real QGIS: annotation layer -> label patches -> pretrain -> deep cluster -> extract."""

import csv
import os

import pytest
from qgis.core import QgsProcessingException, QgsProject, QgsVectorLayer

from sample_data.generate import generate_mosaic
from tests.qgis.conftest import add_model_child

pytest.importorskip("torchvision")
pytest.importorskip("faiss")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain(tmp_path_factory, session_plugin):
    """Run the whole chain once on a small mosaic; return every result."""
    import processing

    session_plugin.initProcessing()
    out = tmp_path_factory.mktemp("scene_chain")
    mosaic = generate_mosaic(str(out / "mosaic"), size=512, seed=2)
    patches = processing.run("satseg:patchraster", {
        "INPUT": mosaic["scene"], "PATCH_WIDTH": 32, "PATCH_HEIGHT": 32, "OUTPUT_DIR": str(out / "patches"),
        "OUTPUT_INDEX": str(out / "index.gpkg")})
    labelled = processing.run("satseg:labelpatches", {
        "PATCH_INDEX": patches["OUTPUT_INDEX"], "ANNOTATIONS": mosaic["regions"] + "|layername=regions",
        "CLASS_FIELD": "class", "CLASSES": "urban,rural,uninhabited", "OUTPUT": str(out / "labelled.gpkg")})
    pretrained = processing.run("satseg:pretrainscene", {
        "PATCH_INDEX": labelled["OUTPUT"], "EPOCHS": 2, "BATCH_SIZE": 32, "RAMPUP": 1, "DEVICE": 1,
        "OUTPUT_MODEL": str(out / "scene.satseg"), "OUTPUT_LOG": str(out / "scene_log.csv"),
        "OUTPUT": str(out / "predicted.gpkg")})
    clustered = processing.run("satseg:deepcluster", {
        "PATCH_INDEX": pretrained["OUTPUT"], "GROUP_FIELD": "label", "MODEL": pretrained["OUTPUT_MODEL"],
        "K": 6, "EPOCHS": 1, "PCA_DIM": 8, "K_MIN": 2, "K_MAX": 4, "DEVICE": 1,
        "OUTPUT_FEATURES": str(out / "features.safetensors"), "OUTPUT_TABLE": str(out / "silhouette.csv"),
        "OUTPUT_PLOT": str(out / "silhouette.png")})
    return {"out": out, "mosaic": mosaic, "patches": patches, "labelled": labelled, "pretrained": pretrained,
            "clustered": clustered}


def test_annotation_layer_is_styled_with_a_drop_down(qgis_app, tmp_path):
    import processing

    project = QgsProject.instance()
    project.clear()
    result = processing.runAndLoadResults("satseg:createannotationlayer", {
        "CLASSES": "urban, rural,uninhabited", "CRS": "EPSG:32633", "OUTPUT": str(tmp_path / "ann.gpkg")})
    layer = [lyr for lyr in project.mapLayers().values()][0]
    assert layer.name() == "Annotations" and layer.crs().authid() == "EPSG:32633"
    setup = layer.editorWidgetSetup(layer.fields().lookupField("class"))
    assert setup.type() == "ValueMap"
    assert [list(e.values())[0] for e in setup.config()["map"]] == ["urban", "rural", "uninhabited"]
    assert layer.renderer().type() == "categorizedSymbol"
    categories = layer.renderer().categories()  # keep the copies alive while reading their symbols
    urban = categories[0].symbol().color()  # urban is #e31a1c, a translucent fill
    assert (urban.red(), urban.green(), urban.blue(), urban.alpha()) == (0xe3, 0x1a, 0x1c, 89)
    reopened = QgsVectorLayer(result["OUTPUT"], "again", "ogr")  # the style lives in the GeoPackage
    assert reopened.renderer().type() == "categorizedSymbol"
    assert reopened.editorWidgetSetup(reopened.fields().lookupField("class")).type() == "ValueMap"
    project.clear()
    with pytest.raises(QgsProcessingException, match="CLASSES"):
        processing.run("satseg:createannotationlayer", {"CLASSES": " , ", "OUTPUT": str(tmp_path / "x.gpkg")})
    # a layer inside an existing GeoPackage ("Save to GeoPackage..."): refused, the GeoPackage left as it was
    before = open(result["OUTPUT"], "rb").read()
    for output in (f"ogr:dbname='{result['OUTPUT']}' table=\"more\" (geom)", f"{result['OUTPUT']}|layername=more"):
        with pytest.raises(QgsProcessingException, match="OUTPUT: an annotation layer is a GeoPackage of its own"):
            processing.run("satseg:createannotationlayer", {"CLASSES": "a", "CRS": "EPSG:32633", "OUTPUT": output})
    assert open(result["OUTPUT"], "rb").read() == before


def test_labelled_patches_carry_soft_labels(chain):
    layer = QgsVectorLayer(chain["labelled"]["OUTPUT"])
    names = [f.name() for f in layer.fields()]
    assert {"frac_urban", "frac_rural", "frac_uninhabited", "label", "labelled"} <= set(names)
    for feature in layer.getFeatures():  # the regions cover the raster: every patch is labelled, shares sum to 1
        total = feature["frac_urban"] + feature["frac_rural"] + feature["frac_uninhabited"]
        assert abs(total - 1) < 1e-4 and feature["labelled"] == 1
    assert chain["labelled"]["LABELLED"] == layer.featureCount() == chain["patches"]["PATCH_COUNT"]


def test_pretrain_and_deep_cluster_outputs(chain):
    pre, clu = chain["pretrained"], chain["clustered"]
    assert 0 <= pre["VAL_ACCURACY"] <= 1 and os.path.exists(pre["OUTPUT_MODEL"])
    predicted = QgsVectorLayer(pre["OUTPUT"])
    values = {f["pred_class"] for f in predicted.getFeatures()}
    assert values <= {"urban", "rural", "uninhabited"}
    with open(clu["OUTPUT_TABLE"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["group"], int(r["k"])) for r in rows} == {(g, k) for g in ("urban", "rural") for k in (2, 3, 4)}
    assert all(-1 <= float(r["silhouette"]) <= 1 for r in rows)
    best_urban = max((r for r in rows if r["group"] == "urban"), key=lambda r: float(r["silhouette"]))
    assert clu["SUGGESTED_CITY_K"] == int(best_urban["k"])
    assert open(clu["OUTPUT_PLOT"], "rb").read(4) == b"\x89PNG"
    report = open(clu["OUTPUT_REPORT"], encoding="utf-8").read()  # shown in QGIS's Results Viewer
    assert os.path.basename(clu["OUTPUT_PLOT"]) in report and report.count("<tr>") == 1 + len(rows)
    assert report.count("peak") == 2  # one peak marked per group


def test_extract_clusters_ids_and_copies(run_alg, chain, tmp_path):
    params = {"PATCH_INDEX": chain["pretrained"]["OUTPUT"], "FEATURES": chain["clustered"]["OUTPUT_FEATURES"],
              "CITY_K": 3, "RURAL_K": 2, "OUTPUT": str(tmp_path / "clusters.gpkg"), "COPY_TO": str(tmp_path / "by")}
    first = run_alg("satseg:extractclusters", params)
    layer = QgsVectorLayer(first["OUTPUT"])
    rows = [(f["group"], f["cluster"]) for f in layer.getFeatures()]
    assert all(1 <= c <= 3 for g, c in rows if g == "urban") and all(4 <= c <= 5 for g, c in rows if g == "rural")
    assert all(c == 6 for g, c in rows if g not in ("urban", "rural"))
    copied = sum(len(files) for _d, _s, files in os.walk(tmp_path / "by") if _d != str(tmp_path / "by"))
    assert copied == len(rows)  # one folder per id, the uninhabited id included
    again = run_alg("satseg:extractclusters", dict(params, OUTPUT=str(tmp_path / "again.gpkg"), COPY_TO=None))
    assert [(f["group"], f["cluster"]) for f in QgsVectorLayer(again["OUTPUT"]).getFeatures()] == rows
    with pytest.raises(QgsProcessingException, match="CITY_K"):
        run_alg("satseg:extractclusters", dict(params, CITY_K=10000, OUTPUT=str(tmp_path / "x.gpkg"), COPY_TO=None))


def test_qgis_process_label_patches(qgis_process, chain, tmp_path):
    out = tmp_path / "qp_labelled.gpkg"
    qgis_process("run", "satseg:labelpatches", "--", f"PATCH_INDEX={chain['patches']['OUTPUT_INDEX']}",
                 f"ANNOTATIONS={chain['mosaic']['regions']}", "CLASS_FIELD=class", f"OUTPUT={out}")
    assert QgsVectorLayer(str(out)).featureCount() == chain["patches"]["PATCH_COUNT"]


def test_chain_runs_as_a_graphical_model(qgis_app, tmp_path):
    """patchraster -> labelpatches -> pretrainscene -> deepcluster -> extractclusters wired as a Processing model."""
    import processing
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
        QgsProcessingParameterVectorLayer,
    )

    static = QgsProcessingModelChildParameterSource.fromStaticValue
    parent = QgsProcessingModelChildParameterSource.fromChildOutput
    model = QgsProcessingModelAlgorithm("scene chain", "satseg tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("raster", "Raster"), QgsProcessingModelParameter("raster"))
    model.addModelParameter(QgsProcessingParameterVectorLayer("annotations", "Annotations"),
                            QgsProcessingModelParameter("annotations"))

    def child(child_id, alg_id, sources, outputs=()):
        add_model_child(model, child_id, alg_id, sources, outputs)

    child("patch", "satseg:patchraster", {
        "INPUT": QgsProcessingModelChildParameterSource.fromModelParameter("raster"), "PATCH_WIDTH": static(32),
        "PATCH_HEIGHT": static(32), "OUTPUT_DIR": static(str(tmp_path / "patches"))})
    child("label", "satseg:labelpatches", {
        "PATCH_INDEX": parent("patch", "OUTPUT_INDEX"),
        "ANNOTATIONS": QgsProcessingModelChildParameterSource.fromModelParameter("annotations"),
        "CLASS_FIELD": static("class"), "CLASSES": static("urban,rural,uninhabited")})
    child("pretrain", "satseg:pretrainscene", {
        "PATCH_INDEX": parent("label", "OUTPUT"), "EPOCHS": static(1), "DEVICE": static(1),
        "OUTPUT_MODEL": static(str(tmp_path / "scene.satseg"))})
    child("cluster", "satseg:deepcluster", {
        "PATCH_INDEX": parent("pretrain", "OUTPUT"), "GROUP_FIELD": static("label"),
        "MODEL": parent("pretrain", "OUTPUT_MODEL"), "K": static(4), "EPOCHS": static(0), "PCA_DIM": static(4),
        "K_MIN": static(2), "K_MAX": static(3), "DEVICE": static(1),
        "OUTPUT_FEATURES": static(str(tmp_path / "features.safetensors"))})
    child("extract", "satseg:extractclusters", {
        "PATCH_INDEX": parent("pretrain", "OUTPUT"), "FEATURES": parent("cluster", "OUTPUT_FEATURES"),
        "CITY_K": static(2), "RURAL_K": static(2)}, outputs=("OUTPUT",))
    ok, errors = model.validate()
    assert ok, errors
    mosaic = generate_mosaic(str(tmp_path / "mosaic"), size=256, seed=4)
    result = processing.run(model, {"raster": mosaic["scene"], "annotations": mosaic["regions"] + "|layername=regions",
                                    "extract:extract_OUTPUT": str(tmp_path / "clusters.gpkg")})
    layer = QgsVectorLayer(result["extract:extract_OUTPUT"])
    assert layer.featureCount() == 64
    assert {f["cluster"] for f in layer.getFeatures()} <= set(range(1, 6))

