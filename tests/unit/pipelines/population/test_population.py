"""The staged population runs: outputs on the frame grid, cancel and bad input leave nothing behind."""

import glob
import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("faiss")
rasterio = pytest.importorskip("rasterio")

from affine import Affine
from rasterio.crs import CRS

from sample_data.population import generate_population_series
from satseg_plugin.core.errors import CanceledError, InputError, OutputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.pipelines.population.communities import CommunityConfig
from satseg_plugin.pipelines.population.flow import FlowConfig
from satseg_plugin.pipelines.population.run import (
    flow_index_for_frame,
    pixel_area_m2,
    run_communities,
    run_optical_flow,
    run_tracking,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = CommunityConfig(epochs=5, centres_per_epoch=200, k=4, min_samples=10, pop_min=20.0, device="cpu")


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    out = tmp_path_factory.mktemp("series")
    generate_population_series(str(out), frames=3)
    return sorted(glob.glob(str(out / "pop_t*.tif")))


@pytest.fixture(scope="module")
def flows(frames, tmp_path_factory):
    out = tmp_path_factory.mktemp("flow") / "flow"
    return run_optical_flow(frames, str(out), FlowConfig(pyramid_levels=2, device="cpu"), vector_step=16)


def test_flow_run_writes_one_raster_per_pair_on_the_grid(frames, flows):
    assert len(flows.flow_paths) == 2 and flows.frame_names == ["pop_t0", "pop_t1", "pop_t2"]
    with rasterio.open(frames[0]) as src:
        for path in flows.flow_paths:
            with rasterio.open(path) as flow:
                assert (flow.crs, flow.transform, flow.shape, flow.count) == (src.crs, src.transform, src.shape, 2)
    manifest = json.load(open(os.path.join(os.path.dirname(flows.flow_paths[0]), "satseg_manifest.json")))
    assert manifest["flows"] == [os.path.basename(p) for p in flows.flow_paths]
    assert {pair for pair, _v in flows.vectors} == {0, 1}
    assert all(s["converged"] for s in flows.stats)


def test_flow_run_cancel_and_existing_folder(frames, tmp_path):
    with pytest.raises(CanceledError):
        run_optical_flow(frames, str(tmp_path / "f"), FlowConfig(device="cpu"), feedback=RecordingFeedback(2))
    assert os.listdir(tmp_path) == []
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    with pytest.raises(OutputError, match="OUTPUT_DIR"):
        run_optical_flow(frames, str(tmp_path / "busy"), FlowConfig(device="cpu"))
    assert os.listdir(tmp_path / "busy") == ["mine.txt"]


def test_communities_and_tracks(frames, flows, tmp_path):
    comm = run_communities(frames, flows.flow_paths, str(tmp_path / "seg"), FAST)
    assert len(comm.segment_paths) == 3 and all(comm.communities)
    with rasterio.open(frames[1]) as src, rasterio.open(comm.segment_paths[1]) as seg:
        assert (seg.crs, seg.transform, seg.shape, seg.dtypes[0]) == (src.crs, src.transform, src.shape, "int32")
        ids = seg.read(1)
    assert sorted(r.segment_id for r in comm.communities[1]) == list(range(1, ids.max() + 1))
    run = run_tracking(comm.segment_paths, flows.flow_paths, frames)
    assert len(run.tracking.track_ids) == 3 and run.tracking.links
    for t, records in enumerate(comm.communities):
        assert set(run.tracking.track_ids[t]) == {r.segment_id for r in records}
        for r in records:  # population-weighted centroids agree with the community records
            assert run.centroids[t][r.segment_id] == pytest.approx((r.centroid_x, r.centroid_y))
    # frames of the same size but in another CRS are not the segments' frames
    moved = []
    for path in frames:
        with rasterio.open(path) as src:
            profile, data = src.profile, src.read()
        profile.update(crs=CRS.from_epsg(32633))
        moved.append(str(tmp_path / os.path.basename(path)))
        with rasterio.open(moved[-1], "w", **profile) as dst:
            dst.write(data)
    with pytest.raises(InputError, match="FRAMES"):
        run_tracking(comm.segment_paths, flows.flow_paths, moved)


def test_bad_inputs_name_the_parameter(frames, flows, tmp_path):
    with pytest.raises(InputError, match="FLOWS"):
        run_communities(frames, flows.flow_paths[:1], str(tmp_path / "s"), FAST)
    with pytest.raises(InputError, match="FLOWS"):  # a frame is not a 2-band flow
        run_communities(frames, frames[:2], str(tmp_path / "s"), FAST)
    with pytest.raises(InputError, match="SEGMENTS"):
        run_tracking(frames[:1], [], None)
    assert not os.path.exists(tmp_path / "s")
    with pytest.raises(CanceledError):
        run_communities(frames, flows.flow_paths, str(tmp_path / "c"), FAST, feedback=RecordingFeedback(3))
    assert not os.path.exists(tmp_path / "c")


def test_pixel_area_projected_and_geographic():
    assert pixel_area_m2(CRS.from_epsg(3035), Affine(1000, 0, 0, 0, -1000, 0), 10) == 1e6
    feedback = RecordingFeedback()
    # a 30 arc-second cell at the equator is about 0.86 km²; at 60° N half of that
    equator = pixel_area_m2(CRS.from_epsg(4326), Affine(1 / 120, 0, 0, 0, -1 / 120, 0.5), 120, feedback)
    north = pixel_area_m2(CRS.from_epsg(4326), Affine(1 / 120, 0, 0, 0, -1 / 120, 60.5), 120)
    assert equator / 1e6 == pytest.approx(0.859, abs=0.005) and north / equator == pytest.approx(0.5, abs=0.01)
    assert feedback.warnings and "geographic" in feedback.warnings[0]
    assert [flow_index_for_frame(t, 4) for t in range(4)] == [0, 1, 2, 2]
    assert np.isfinite(equator)
