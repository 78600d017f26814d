"""A SatSeg run replaces all of its outputs or none of them, and never writes over its inputs (issue 14).

Each test names the data loss it guards against; all of them lost data before runs were transactions.
"""

import glob
import hashlib
import os
import random
import shutil

import pytest
import rasterio
from qgis.core import QgsProcessingException, QgsProcessingFeedback, QgsVectorLayer

from sample_data.generate import generate_scene
from tests.qgis.conftest import train_on_scene

pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("faiss")
pytestmark = pytest.mark.slow

SEG_FAST = {"ENCODER": "resnet18", "PATCH_SIZE": 32, "BATCH_SIZE": 2, "EPOCHS": 1, "BATCHES_PER_EPOCH": 1,
            "DEVICE": 1}
CLUSTER_FAST = {"NUM_CLUSTERS": 4, "FEATURE_DIM": 8, "ROUNDS": 1, "STEPS_PER_ROUND": 1, "PATCH_SIZE": 64,
                "CROPS_PER_ROUND": 3, "BATCH_SIZE": 3, "SAMPLE_PIXELS": 2000, "DEVICE": 1}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(str(tmp_path_factory.mktemp("safety_scene")), size=128, seed=3)


@pytest.fixture(scope="module")
def seg_model(scene, tmp_path_factory, session_plugin):
    session_plugin.initProcessing()
    out = tmp_path_factory.mktemp("safety_model")
    return train_on_scene(scene, SEG_FAST, OUTPUT_MODEL=str(out / "m.satseg"))["OUTPUT_MODEL"]


@pytest.fixture(scope="module")
def cluster_model(scene, tmp_path_factory, session_plugin):
    import processing

    session_plugin.initProcessing()
    out = tmp_path_factory.mktemp("safety_cmodel")
    return processing.run("satseg:trainclusternet", dict(
        CLUSTER_FAST, INPUT=[scene["scene"]], OUTPUT_MODEL=str(out / "c.satseg")))["OUTPUT_MODEL"]


def digest(folder):
    """``{relative path: sha256}`` of every file under ``folder`` (what "byte-identical" compares)."""
    found = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = hashlib.sha256(handle.read()).hexdigest()
    return found


def leftovers(folder):
    return [p for p in glob.glob(os.path.join(str(folder), "**", ".satseg-*"), recursive=True)]


def copy_scene(scene, tmp_path):
    path = str(tmp_path / "a.tif")
    shutil.copyfile(scene["scene"], path)
    return path


def segment_params(scene_path, seg_model, out, **extra):
    params = {"INPUT": scene_path, "MODELS": [seg_model], "TILE_SIZE": 64, "DEVICE": 1,
              "OUTPUT_PROBABILITY": str(out / "p.tif"), "OUTPUT_MASK": str(out / "m.tif"),
              "OUTPUT_POLYGONS": str(out / "b.gpkg")}
    params.update(extra)
    return params


def test_staged_polygons_are_loaded_from_the_final_file_under_its_name(run_alg, scene, seg_model, tmp_path):
    from qgis.core import QgsProcessingContext, QgsProcessingOutputLayerDefinition, QgsProject

    context = QgsProcessingContext()
    params = segment_params(scene["scene"], seg_model, tmp_path, THRESHOLD=0.01)
    params["OUTPUT_POLYGONS"] = QgsProcessingOutputLayerDefinition(str(tmp_path / "b.gpkg"), QgsProject.instance())
    result = run_alg("satseg:segmentraster", params, context=context)
    loaded = context.layersToLoadOnCompletion()
    assert result["OUTPUT_POLYGONS"] == f"{tmp_path / 'b.gpkg'}|layername=b" and result["OUTPUT_POLYGONS"] in loaded
    assert not [key for key in loaded if ".satseg-" in key] and not leftovers(tmp_path)
    layer = QgsVectorLayer(result["OUTPUT_POLYGONS"])
    assert layer.isValid() and layer.featureCount() == result["POLYGON_COUNT"] >= 1


def test_staged_shapefile_moves_in_with_its_companions(run_alg, scene, seg_model, tmp_path):
    (tmp_path / "b.qpj").write_text("an earlier output's companion")
    result = run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path, THRESHOLD=0.01,
                                                            OUTPUT_POLYGONS=str(tmp_path / "b.shp")))
    assert {"b.shp", "b.shx", "b.dbf", "b.prj"} <= set(os.listdir(tmp_path)) and not leftovers(tmp_path)
    assert not (tmp_path / "b.qpj").exists()  # it would describe the old file
    assert QgsVectorLayer(result["OUTPUT_POLYGONS"]).featureCount() == result["POLYGON_COUNT"] >= 1


def other_layers_gpkg(path):
    """A GeoPackage holding a user's layer ("roads", one line) that an output layer must leave alone."""
    from osgeo import ogr

    data = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    roads = data.CreateLayer("roads", geom_type=ogr.wkbLineString)
    feature = ogr.Feature(roads.GetLayerDefn())
    feature.SetGeometry(ogr.CreateGeometryFromWkt("LINESTRING (500000 4000000, 500010 4000010)"))
    roads.CreateFeature(feature)
    data = None


def gpkg_layers(path):
    """``{layer name: feature count}`` of a GeoPackage."""
    from osgeo import ogr

    data = ogr.Open(path)
    return {data.GetLayer(i).GetName(): data.GetLayer(i).GetFeatureCount() for i in range(data.GetLayerCount())}


def test_an_output_layer_goes_into_an_existing_geopackage_keeping_its_other_layers(run_alg, scene, seg_model,
                                                                                  tmp_path):
    # "Save to GeoPackage..." in the toolbox gives ogr:dbname=... table=...; before, the staged file replaced the
    # whole GeoPackage: the user's other layers were lost and the layer name ignored
    path = str(tmp_path / "project.gpkg")
    other_layers_gpkg(path)
    result = run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path, THRESHOLD=0.01,
                     OUTPUT_POLYGONS=f"ogr:dbname='{path}' table=\"buildings\" (geom)"))
    assert result["OUTPUT_POLYGONS"] == f"{path}|layername=buildings"
    assert gpkg_layers(path) == {"roads": 1, "buildings": result["POLYGON_COUNT"]} and result["POLYGON_COUNT"] >= 1
    # the same layer again, as a script writes it: replaced, and the other layer still there
    again = run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path, THRESHOLD=0.9,
                    OUTPUT_POLYGONS=f"{path}|layername=buildings"))
    assert again["POLYGON_COUNT"] != result["POLYGON_COUNT"]
    assert gpkg_layers(path) == {"roads": 1, "buildings": again["POLYGON_COUNT"]} and not leftovers(tmp_path)
    # a new GeoPackage named with a layer gets that layer
    fresh = run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path, THRESHOLD=0.01,
                    OUTPUT_POLYGONS=f"{tmp_path / 'new.gpkg'}|layername=houses"))
    assert gpkg_layers(str(tmp_path / "new.gpkg")) == {"houses": fresh["POLYGON_COUNT"]}


def test_a_layer_goes_into_a_geopackage_that_qgis_holds_open_with_unsaved_edits(run_alg, scene, seg_model,
                                                                               tmp_path):
    # the usual desktop case: the project's GeoPackage is on the map, one of its layers in an edit session
    from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsProject

    path = str(tmp_path / "project.gpkg")
    other_layers_gpkg(path)
    roads = QgsVectorLayer(f"{path}|layername=roads", "roads", "ogr")
    QgsProject.instance().addMapLayer(roads)
    try:
        assert roads.startEditing()
        feature = QgsFeature(roads.fields())
        feature.setGeometry(QgsGeometry.fromPolylineXY([QgsPointXY(500000, 4000000), QgsPointXY(500020, 4000005)]))
        assert roads.addFeature(feature)
        result = run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path, THRESHOLD=0.01,
                         OUTPUT_POLYGONS=f"ogr:dbname='{path}' table=\"buildings\" (geom)"))
        assert roads.commitChanges()  # the user's edits still save after SatSeg wrote into the file
        assert gpkg_layers(path) == {"roads": 2, "buildings": result["POLYGON_COUNT"]}
        loaded = QgsVectorLayer(result["OUTPUT_POLYGONS"], "buildings", "ogr")
        assert loaded.isValid() and loaded.featureCount() == result["POLYGON_COUNT"]
        QgsProject.instance().addMapLayer(loaded)  # the result on the map, then the same layer again
        again = run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path, THRESHOLD=0.9,
                        OUTPUT_POLYGONS=f"{path}|layername=buildings"))
        assert gpkg_layers(path) == {"roads": 2, "buildings": again["POLYGON_COUNT"]}
        loaded.reload()
        assert loaded.isValid() and loaded.featureCount() == again["POLYGON_COUNT"]
    finally:
        QgsProject.instance().removeAllMapLayers()


def test_a_canceled_run_leaves_the_geopackage_it_would_write_a_layer_into_unchanged(run_alg, scene, seg_model,
                                                                                    tmp_path):
    path = str(tmp_path / "project.gpkg")
    other_layers_gpkg(path)
    run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path,
                                                   OUTPUT_POLYGONS=f"{path}|layername=buildings"))
    before = digest(tmp_path)
    with pytest.raises(QgsProcessingException, match="Canceled"):
        run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path, TILE_SIZE=32,
                                                       MIN_AREA=5.0, OUTPUT_POLYGONS=f"{path}|layername=buildings"),
                feedback=CancelAt(86))
    assert digest(tmp_path) == before and not leftovers(tmp_path)


# 1. an output equal to the input

@pytest.mark.parametrize("alg,key", [("satseg:segmentraster", "OUTPUT_PROBABILITY"), ("satseg:segmentraster",
                                                                                     "OUTPUT_MASK"),
                                     ("satseg:clusterraster", "OUTPUT"), ("satseg:exportcog", "OUTPUT")])
def test_output_equal_to_the_input_is_refused(run_alg, scene, seg_model, cluster_model, tmp_path, alg, key):
    path = copy_scene(scene, tmp_path)
    before = digest(tmp_path)
    params = {"satseg:segmentraster": segment_params(path, seg_model, tmp_path),
              "satseg:clusterraster": {"INPUT": path, "MODEL": cluster_model, "TILE_SIZE": 64, "DEVICE": 1},
              "satseg:exportcog": {"INPUT": path}}[alg]
    params[key] = path
    with pytest.raises(QgsProcessingException, match=f"{key}: .*is the input INPUT"):
        run_alg(alg, params)
    assert digest(tmp_path) == before


def test_output_through_a_link_to_the_input_is_refused(run_alg, scene, tmp_path):
    path = copy_scene(scene, tmp_path)
    os.symlink(path, tmp_path / "link.tif")
    with pytest.raises(QgsProcessingException, match="OUTPUT: .*is the input INPUT"):
        run_alg("satseg:exportcog", {"INPUT": path, "OUTPUT": str(tmp_path / "link.tif")})


# 2. OVERWRITE of the folder that holds the input

def test_overwrite_of_the_folder_holding_the_input_is_refused(run_alg, scene, tmp_path):
    params = {"INPUT": scene["scene"], "PATCH_WIDTH": 32, "PATCH_HEIGHT": 32, "OVERWRITE": True,
              "OUTPUT_DIR": str(tmp_path / "p"), "OUTPUT_INDEX": str(tmp_path / "p.gpkg")}
    run_alg("satseg:patchraster", params)
    before = digest(tmp_path)
    patch = sorted(glob.glob(str(tmp_path / "p" / "*.tif")))[0]
    with pytest.raises(QgsProcessingException, match="OUTPUT_DIR: .*holds the input INPUT"):
        run_alg("satseg:patchraster", dict(params, INPUT=patch, PATCH_WIDTH=8, PATCH_HEIGHT=8))
    assert digest(tmp_path) == before


# 3. a failed or canceled run keeps every previous output

def test_unwritable_polygons_keep_the_previous_rasters(run_alg, scene, seg_model, tmp_path):
    run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path))
    before = digest(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(QgsProcessingException, match="OUTPUT_POLYGONS"):
        run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path, TILE_SIZE=32,
                                                       OUTPUT_POLYGONS=str(tmp_path / "afile" / "b.gpkg")))
    (tmp_path / "afile").unlink()
    assert digest(tmp_path) == before and not leftovers(tmp_path)


def test_unwritable_cluster_polygons_keep_the_previous_raster(run_alg, scene, cluster_model, tmp_path):
    params = {"INPUT": scene["scene"], "MODEL": cluster_model, "TILE_SIZE": 64, "DEVICE": 1,
              "OUTPUT": str(tmp_path / "c.tif"), "OUTPUT_POLYGONS": str(tmp_path / "c.gpkg")}
    run_alg("satseg:clusterraster", params)
    before = digest(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(QgsProcessingException, match="OUTPUT_POLYGONS"):
        run_alg("satseg:clusterraster", dict(params, OUTPUT_POLYGONS=str(tmp_path / "afile" / "c.gpkg")))
    (tmp_path / "afile").unlink()
    assert digest(tmp_path) == before and not leftovers(tmp_path)


def test_unwritable_plot_keeps_the_previous_model_and_log(run_alg, scene, tmp_path):
    params = dict(SEG_FAST, INPUT=scene["scene"], LABELS=scene["buildings"] + "|layername=buildings",
                  OUTPUT_MODEL=str(tmp_path / "m.satseg"), OUTPUT_LOG=str(tmp_path / "log.csv"),
                  OUTPUT_PLOT=str(tmp_path / "curve.png"))
    run_alg("satseg:trainsegmentation", params)
    before = digest(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(QgsProcessingException, match="OUTPUT_PLOT"):
        run_alg("satseg:trainsegmentation", dict(params, SEED=9, OUTPUT_PLOT=str(tmp_path / "afile" / "c.png")))
    (tmp_path / "afile").unlink()
    assert digest(tmp_path) == before and not leftovers(tmp_path)


class CancelAt(QgsProcessingFeedback):
    """Cancels once progress reaches ``percent``."""

    def __init__(self, percent):
        super().__init__()
        self.percent = percent

    def setProgress(self, progress):
        super().setProgress(progress)
        if progress >= self.percent:
            self.cancel()


def test_cancel_in_the_polygon_phase_keeps_every_previous_output(run_alg, scene, seg_model, tmp_path):
    run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path))
    before = digest(tmp_path)
    with pytest.raises(QgsProcessingException, match="Canceled: previous outputs were left as they were"):
        run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path, TILE_SIZE=32,
                                                       MIN_AREA=5.0), feedback=CancelAt(86))
    assert digest(tmp_path) == before and not leftovers(tmp_path)


# 4. two outputs with the same name

def test_probability_and_mask_on_the_same_file_are_refused(run_alg, scene, seg_model, tmp_path):
    with pytest.raises(QgsProcessingException, match="OUTPUT_MASK: .*also given as OUTPUT_PROBABILITY"):
        run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path,
                                                       OUTPUT_MASK=str(tmp_path / "p.tif")))
    assert not os.listdir(tmp_path)


def test_numbers_must_be_finite(run_alg, scene, seg_model, tmp_path):
    with pytest.raises(QgsProcessingException, match="MIN_AREA"):
        run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path, MIN_AREA=float("nan")))


# 5. interleaved runs on the same paths

def test_interleaved_runs_polygonize_their_own_mask(run_alg, scene, seg_model, tmp_path, monkeypatch):
    import satseg_plugin.core.vectorize as vectorize

    with rasterio.open(scene["scene"]) as src:
        b = src.bounds
    left_half = f"{b.left},{(b.left + b.right) / 2},{b.bottom},{b.top} [EPSG:32633]"
    right_half = f"{(b.left + b.right) / 2},{b.right},{b.bottom},{b.top} [EPSG:32633]"
    original, calls = vectorize.polygonize_mask, []

    def polygonize_after_another_run(mask_path, *args, **kwargs):
        calls.append(mask_path)
        if len(calls) == 1:  # run A is between its rasters and its polygons: run B goes through completely
            run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path, EXTENT=right_half,
                                                           THRESHOLD=0.01))
        return original(mask_path, *args, **kwargs)

    monkeypatch.setattr(vectorize, "polygonize_mask", polygonize_after_another_run)
    result = run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path, EXTENT=left_half,
                                                            THRESHOLD=0.01))
    layer = QgsVectorLayer(result["OUTPUT_POLYGONS"])
    extent = layer.extent()
    with rasterio.open(result["OUTPUT_MASK"]) as mask:
        assert mask.bounds.right <= (b.left + b.right) / 2 + 1e-6  # run A committed last: its mask is there
        assert extent.xMaximum() <= mask.bounds.right + 1e-6 and layer.featureCount() >= 1
    assert not leftovers(tmp_path)


# fault injection: a run killed at a random point keeps every previous output

def test_runs_killed_at_random_points_keep_previous_outputs(run_alg, scene, seg_model, tmp_path, monkeypatch):
    import rasterio.io

    import satseg_plugin.core.vectorize as vectorize

    run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path))
    before = digest(tmp_path)
    rng = random.Random(14)
    original_write, original_polygonize = rasterio.io.DatasetWriter.write, vectorize.polygonize_mask
    for trial in range(10):
        where, n, cancel = rng.choice(["raster", "polygons"]), rng.randint(1, 6), rng.random() < 0.5
        feedback, count = QgsProcessingFeedback(), [0]

        def hit():
            count[0] += 1
            if count[0] == n:
                if cancel:
                    feedback.cancel()
                else:
                    raise OSError(28, "No space left on device (injected)")

        def write(self, *args, **kwargs):
            hit()
            return original_write(self, *args, **kwargs)

        class Records(list):
            """Polygon records whose iteration (the writing of each feature) hits the fault."""

            def __iter__(self):
                for record in list.__iter__(self):
                    hit()
                    yield record
                hit()

        def polygonize(*args, **kwargs):
            return Records(original_polygonize(*args, **kwargs))

        monkeypatch.setattr(rasterio.io.DatasetWriter, "write", write if where == "raster" else original_write)
        monkeypatch.setattr(vectorize, "polygonize_mask", polygonize if where == "polygons" else original_polygonize)
        try:
            run_alg("satseg:segmentraster", segment_params(scene["scene"], seg_model, tmp_path, TILE_SIZE=32,
                                                           MIN_AREA=float(trial)), feedback=feedback)
        except QgsProcessingException:
            assert digest(tmp_path) == before, (trial, where, n, cancel)
        else:  # the fault came too late to hit this run: it replaced everything; that is the new "before"
            assert count[0] < n, (trial, where, n, cancel)
            before = digest(tmp_path)
        assert not leftovers(tmp_path), (trial, where, n, cancel)
        monkeypatch.undo()


def test_training_killed_while_saving_keeps_previous_model_log_and_plot(run_alg, scene, tmp_path, monkeypatch):
    import csv

    import safetensors.torch
    from matplotlib.figure import Figure

    params = dict(SEG_FAST, INPUT=scene["scene"], LABELS=scene["buildings"] + "|layername=buildings",
                  OUTPUT_MODEL=str(tmp_path / "m.satseg"), OUTPUT_LOG=str(tmp_path / "log.csv"),
                  OUTPUT_PLOT=str(tmp_path / "curve.png"))
    run_alg("satseg:trainsegmentation", params)
    before = digest(tmp_path)

    def after(original):
        def write_then_fail(*args, **kwargs):  # the file is (half) written, then the disk fills up
            original(*args, **kwargs)
            raise OSError(28, "No space left on device (injected)")
        return write_then_fail

    targets = [(safetensors.torch, "save_file"), (csv.DictWriter, "writerows"), (Figure, "savefig")]
    rng = random.Random(7)
    for _trial in range(3):
        owner, name = rng.choice(targets)
        monkeypatch.setattr(owner, name, after(getattr(owner, name)))
        with pytest.raises(QgsProcessingException, match="No space left on device"):
            run_alg("satseg:trainsegmentation", dict(params, SEED=rng.randint(1, 99)))
        monkeypatch.undo()
        assert digest(tmp_path) == before and not leftovers(tmp_path), name
