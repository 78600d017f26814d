"""Population tracking in real QGIS: opticalflow -> populationclusters -> trackcommunities through
processing.run, qgis_process and a graphical model, on the generated population series."""

import glob
import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("faiss")
rasterio = pytest.importorskip("rasterio")

from qgis.core import QgsProcessingException, QgsVectorLayer

from sample_data.population import generate_population_series
from tests.qgis.conftest import add_model_child, parse_json_output

FAST = {"EPOCHS": 15, "CENTRES_PER_EPOCH": 300, "K": 6, "MIN_SAMPLES": 20, "DEVICE": 1}


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    out = tmp_path_factory.mktemp("population")
    generate_population_series(str(out))
    return sorted(glob.glob(str(out / "pop_t*.tif")))


@pytest.fixture(scope="module")
def pipeline(series, tmp_path_factory, session_plugin):
    import processing

    out = tmp_path_factory.mktemp("pipeline")
    flow = processing.run("satseg:opticalflow", {"FRAMES": series, "PYRAMID_LEVELS": 2, "VECTOR_STEP": 8,
                                                 "DEVICE": 1, "OUTPUT_DIR": str(out / "flow"),
                                                 "OUTPUT_VECTORS": str(out / "arrows.gpkg")})
    comm = processing.run("satseg:populationclusters", {"FRAMES": series, "FLOWS": flow["FLOWS"], **FAST,
                                                        "REPORT_K": True, "K_MIN": 2, "K_MAX": 4,
                                                        "OUTPUT_DIR": str(out / "segments"),
                                                        "OUTPUT_COMMUNITIES": str(out / "communities.gpkg"),
                                                        "OUTPUT_REPORT": str(out / "report.csv")})
    track = processing.run("satseg:trackcommunities", {
        "SEGMENTS": comm["SEGMENTS"], "FLOWS": flow["FLOWS"], "FRAMES": series,
        "COMMUNITIES": comm["OUTPUT_COMMUNITIES"], "OUTPUT_LINKS": str(out / "links.gpkg"),
        "OUTPUT_TRACKS": str(out / "tracks.gpkg"), "OUTPUT_COMMUNITIES": str(out / "tracked.gpkg")})
    return {"flow": flow, "comm": comm, "track": track, "out": out}


def test_flow_rasters_keep_the_frame_grid(series, pipeline):
    flow = pipeline["flow"]
    assert flow["PAIRS"] == len(series) - 1 == len(flow["FLOWS"])
    with rasterio.open(series[0]) as frame:
        for path in flow["FLOWS"]:
            with rasterio.open(path) as f:
                assert (f.crs, f.transform, f.width, f.height, f.count) == \
                       (frame.crs, frame.transform, frame.width, frame.height, 2)
                assert "u" in f.descriptions[0] and "v" in f.descriptions[1]
                u = f.read(1)
                assert np.isfinite(u).any() and np.nanmax(np.abs(u)) > 0.1
    arrows = QgsVectorLayer(pipeline["flow"]["OUTPUT_VECTORS"])
    assert arrows.featureCount() > 50
    names = arrows.fields().names()
    for field in ("pair", "u_px", "v_px", "dx_map", "dy_map", "magnitude", "direction_deg"):
        assert field in names
    feature = next(arrows.getFeatures())
    assert 0 <= feature["direction_deg"] < 360 and feature["magnitude"] >= 0


def test_communities_segments_and_report(series, pipeline):
    comm = pipeline["comm"]
    assert len(comm["SEGMENTS"]) == len(series)
    layer = QgsVectorLayer(comm["OUTPUT_COMMUNITIES"])
    assert layer.featureCount() == comm["COMMUNITIES"] > 0
    for field in ("frame", "segment_id", "kmeans_label", "population", "area_km2", "centroid_x", "centroid_y"):
        assert field in layer.fields().names()
    with rasterio.open(series[0]) as frame, rasterio.open(comm["SEGMENTS"][0]) as seg:
        assert (seg.crs, seg.transform, seg.shape) == (frame.crs, frame.transform, frame.shape)
        ids = seg.read(1)
    frame0 = [f for f in layer.getFeatures() if f["frame"] == 0]
    assert sorted(f["segment_id"] for f in frame0) == sorted(int(i) for i in np.unique(ids) if i > 0)
    pop = rasterio.open(series[0]).read(1)
    biggest = max(frame0, key=lambda f: f["population"])
    assert biggest["population"] == pytest.approx(float(np.nansum(pop[ids == biggest["segment_id"]])), rel=1e-4)
    report = open(pipeline["comm"]["OUTPUT_REPORT"]).read().splitlines()
    assert report[0].startswith("frame,name,communities,ae_mse")
    assert len(report) == 1 + len(series) * (1 + 3)  # a frame row and k = 2..4 per frame
    import csv

    rows = [r for r in csv.DictReader(open(pipeline["comm"]["OUTPUT_REPORT"])) if r["ae_mse"]]
    assert len(rows) == len(series)
    assert all(0 < float(r["ae_mse"]) < float(r["ae_baseline_mse"]) for r in rows)  # it learned something
    assert comm["AE_MSE"] == pytest.approx(np.mean([float(r["ae_mse"]) for r in rows]))


def test_tracks_links_and_track_ids(series, pipeline):
    track = pipeline["track"]
    links = QgsVectorLayer(track["OUTPUT_LINKS"])
    assert links.featureCount() == track["LINKS"] > 0
    events = {f["event"] for f in links.getFeatures()}
    assert events <= {"continue", "split", "merge", "split+merge", "birth", "death"} and "continue" in events
    lines = QgsVectorLayer(track["OUTPUT_TRACKS"])
    assert lines.featureCount() > 0 and lines.geometryType() == 1  # lines
    tracked = QgsVectorLayer(track["OUTPUT_COMMUNITIES"])
    assert tracked.featureCount() == pipeline["comm"]["COMMUNITIES"]
    track_ids = [f["track_id"] for f in tracked.getFeatures()]
    assert all(t is not None and t >= 1 for t in track_ids)
    assert max(track_ids) == track["TRACKS"]
    # a continue link joins two communities with one track id
    link = next(f for f in links.getFeatures() if f["event"] == "continue")
    by_key = {(f["frame"], f["segment_id"]): f["track_id"] for f in tracked.getFeatures()}
    assert by_key[(link["frame"], link["segment"])] == by_key[(link["next_frame"], link["next_segment"])]


def test_bad_inputs_are_named(run_alg, series, tmp_path):
    with pytest.raises(QgsProcessingException, match="FRAMES"):
        run_alg("satseg:opticalflow", {"FRAMES": series[:1], "OUTPUT_DIR": str(tmp_path / "f")})
    assert not os.path.exists(tmp_path / "f")
    with pytest.raises(QgsProcessingException, match="FLOWS"):
        run_alg("satseg:populationclusters", {"FRAMES": series, "FLOWS": series[:2], **FAST,
                                              "OUTPUT_DIR": str(tmp_path / "s"),
                                              "OUTPUT_COMMUNITIES": str(tmp_path / "c.gpkg")})
    assert not os.path.exists(tmp_path / "s")


def test_qgis_process_optical_flow(qgis_process, series, tmp_path):
    out = qgis_process("run", "satseg:opticalflow", "--json", "--", *[f"FRAMES={p}" for p in series[:3]],
                       "DEVICE=1", f"OUTPUT_DIR={tmp_path / 'flow'}", f"OUTPUT_VECTORS={tmp_path / 'arrows.gpkg'}")
    results = parse_json_output(out.stdout)["results"]
    assert results["PAIRS"] == 2 and len(results["FLOWS"]) == 2
    assert all(os.path.exists(p) for p in results["FLOWS"])
    manifest = json.load(open(tmp_path / "flow" / "satseg_manifest.json"))
    assert manifest["kind"] == "satseg-optical-flow"


def test_pipeline_runs_as_a_graphical_model(qgis_app, series, tmp_path):
    """opticalflow -> populationclusters -> trackcommunities wired as a Processing model."""
    import processing
    from qgis.core import (
        QgsProcessing,
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelParameter,
        QgsProcessingParameterMultipleLayers,
    )

    static = QgsProcessingModelChildParameterSource.fromStaticValue
    parent = QgsProcessingModelChildParameterSource.fromChildOutput
    frames = QgsProcessingModelChildParameterSource.fromModelParameter("frames")
    model = QgsProcessingModelAlgorithm("population chain", "satseg tests")
    model.addModelParameter(QgsProcessingParameterMultipleLayers("frames", "Frames", QgsProcessing.TypeRaster),
                            QgsProcessingModelParameter("frames"))

    def child(child_id, alg_id, sources, outputs=()):
        add_model_child(model, child_id, alg_id, sources, outputs)

    child("flow", "satseg:opticalflow", {"FRAMES": frames, "DEVICE": static(1),
                                         "OUTPUT_DIR": static(str(tmp_path / "flow"))})
    child("comm", "satseg:populationclusters", {"FRAMES": frames, "FLOWS": parent("flow", "FLOWS"),
                                                **{k: static(v) for k, v in FAST.items()},
                                                "OUTPUT_DIR": static(str(tmp_path / "segments"))})
    child("track", "satseg:trackcommunities", {"SEGMENTS": parent("comm", "SEGMENTS"),
                                               "FLOWS": parent("flow", "FLOWS"),
                                               "COMMUNITIES": parent("comm", "OUTPUT_COMMUNITIES")},
          outputs=("OUTPUT_LINKS", "OUTPUT_TRACKS", "OUTPUT_COMMUNITIES"))
    ok, errors = model.validate()
    assert ok, errors
    result = processing.run(model, {"frames": series[:3],
                                    "track:track_OUTPUT_LINKS": str(tmp_path / "links.gpkg"),
                                    "track:track_OUTPUT_TRACKS": str(tmp_path / "tracks.gpkg"),
                                    "track:track_OUTPUT_COMMUNITIES": str(tmp_path / "tracked.gpkg")})
    tracked = QgsVectorLayer(result["track:track_OUTPUT_COMMUNITIES"])
    assert tracked.featureCount() > 0
    assert {f["frame"] for f in tracked.getFeatures()} == {0, 1, 2}
    assert all(f["track_id"] >= 1 for f in tracked.getFeatures())
    assert QgsVectorLayer(result["track:track_OUTPUT_LINKS"]).featureCount() > 0
