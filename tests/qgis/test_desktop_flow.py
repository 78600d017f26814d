"""End to end in QGIS desktop under Xvfb, through the SatSeg dock only: create an annotation layer, draw buildings
by clicks on the map, train + segment in the background and find the styled results on the map; then cluster the
scene, label clusters by clicking on the map and make the class raster (``scripts/desktop_flow.py`` drives QGIS;
screenshots go to test_output/desktop/)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.qgis.conftest import ROOT

pytestmark = [pytest.mark.desktop, pytest.mark.slow]
SHOTS = os.path.join(ROOT, "test_output", "desktop")


@pytest.mark.skipif(not (shutil.which("xvfb-run") and shutil.which("qgis")), reason="needs qgis and xvfb-run")
def test_annotate_train_segment_and_label_clusters_in_qgis_desktop(tmp_path):
    pytest.importorskip("segmentation_models_pytorch")
    pytest.importorskip("faiss")
    from sample_data.generate import generate_scene

    os.makedirs(SHOTS, exist_ok=True)
    scene_dir = tmp_path / "scene"
    generate_scene(str(scene_dir), size=256, seed=3)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    os.symlink(os.path.join(ROOT, "satseg_plugin"), plugins / "satseg_plugin")
    site = [p for p in sys.path if p.endswith("site-packages") and sys.prefix in p]
    report_path = tmp_path / "flow.json"
    env = dict(os.environ, HOME=str(tmp_path), QGIS_PLUGINPATH=str(plugins), XDG_RUNTIME_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join(site + [ROOT]), QGIS_OPTS="", OMP_NUM_THREADS="1",
               SATSEG_FLOW_SCENE=str(scene_dir), SATSEG_FLOW_WORK=str(tmp_path), SATSEG_FLOW_SHOTS=SHOTS,
               SATSEG_FLOW_REPORT=str(report_path))
    env.pop("QT_QPA_PLATFORM", None)
    enable = subprocess.run(["qgis_process.bin", "plugins", "enable", "satseg_plugin"], capture_output=True, text=True,
                            env=dict(env, QT_QPA_PLATFORM="offscreen"), timeout=300)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    out = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--nologo", "--noversioncheck",
                          "--code", os.path.join(ROOT, "scripts", "desktop_flow.py")],
                         capture_output=True, text=True, env=env, timeout=480)
    assert report_path.exists(), out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["errors"] == [], report["errors"]
    assert report["stage"] == "done"

    # The dock opened from the SatSeg toolbar, with its three tabs.
    assert report["plugin_loaded"] and report["dock_action"] and report["toolbar"] and report["dock_visible"]
    assert report["tabs"] == ["Annotate", "Label clusters", "Run"]
    # Annotation layer created through the dock; buildings drawn by clicks, close to their true footprints.
    assert report["annotation_layer"].startswith(str(tmp_path / "annotations.gpkg"))
    assert report["classes"] == ["building"] and report["map_tool"] == "PolygonCaptureTool"
    assert report["features"] == report["drawn"] == 6 and report["feature_classes"] == ["building"]
    assert report["drawn_area_m2"] == pytest.approx(report["true_area_m2"], rel=0.1)
    assert report["saved"] and report["train_labels"]
    # Train + segment ran as a background task and its outputs are on the map, styled.
    assert report["task_in_manager"]
    assert report["chain_error"] == ""
    layers = report["layers"]
    assert layers["Probability"]["renderer"] == "singlebandpseudocolor"
    assert layers["Mask"]["renderer"] == "paletted"
    assert layers["Segmented polygons"]["valid"] and layers["Segmented polygons"]["features"] >= 0
    for name in ("Probability", "Mask", "Segmented polygons"):
        assert layers[name]["source"].startswith(str(tmp_path / "results" / "segmentation_")), layers[name]
    model = report["results"]["satseg:trainsegmentation"]["OUTPUT_MODEL"]
    assert os.path.exists(model)
    order = report["layer_order"]
    assert order.index("Segmented polygons") < order.index("Probability")  # polygons drawn on top
    assert any("Train + segment finished." in text for _level, text in report["messages"])
    # Cluster from the Run tab; the new cluster raster is the one to label; clicks on buildings and on the
    # background name clusters (key 2 switches class on the map), the preview recolours the raster by class.
    assert report["cluster_error"] == "" and report["cluster_layer"] == "Clusters" and report["cluster_tool"]
    assert report["key_2_class"] == "other" and report["mapping_classes"] == ["building", "other"]
    assert report["preview_renderer"] == "paletted"
    # Make classes ran clusterstoclasses in the background with that table: a class raster with a legend.
    assert report["classes_error"] == ""
    assert report["classes_layers"]["Classes"] == "paletted" and report["classes_legend"] == ["building", "other"]
    # Export (Run tab): the segmented building polygons as GeoJSON, every feature written.
    assert report["export_layer"] == "Segmented polygons" and report["export_error"] == ""
    assert report["exported"].endswith(".geojson") and os.path.exists(report["exported"])
    assert report["exported_features"] == layers["Segmented polygons"]["features"]
    for shot in ("flow_annotate.png", "flow_running.png", "flow_results.png", "flow_label_clusters.png",
                 "flow_classes.png", "dock_annotate.png", "dock_run.png", "dock_run_cluster.png",
                 "dock_label_clusters.png", "dock_export.png"):
        assert os.path.getsize(os.path.join(SHOTS, shot)) > 5_000, shot
