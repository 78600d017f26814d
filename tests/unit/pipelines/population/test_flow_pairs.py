"""Flow rasters record the frames they go between; communities and tracking refuse flows given out of order."""

import glob
import os

import numpy as np
import pytest

pytest.importorskip("torch")
rasterio = pytest.importorskip("rasterio")

from sample_data.population import generate_population_series
from satseg_plugin.core.errors import InputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.pipelines.population.communities import CommunityConfig
from satseg_plugin.pipelines.population.flow import FlowConfig, FramePair, read_flow_pair
from satseg_plugin.pipelines.population.run import run_communities, run_optical_flow, run_tracking

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = CommunityConfig(epochs=2, centres_per_epoch=100, k=3, min_samples=10, pop_min=20.0, device="cpu")


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """Three generated frames and their flows (few iterations: only the flow files' tags matter here)."""
    out = tmp_path_factory.mktemp("series")
    generate_population_series(str(out / "frames"), frames=3)
    frames = sorted(glob.glob(str(out / "frames" / "pop_t*.tif")))
    config = FlowConfig(iterations=20, device="cpu")
    return frames, run_optical_flow(frames, str(out / "flow"), config, vector_step=16).flow_paths


def test_each_flow_records_its_frame_pair(series):
    frames, flows = series
    names = [os.path.basename(p) for p in frames]
    assert read_flow_pair(flows[0]) == FramePair(0, 1, names[0], names[1], "pop_t0", "pop_t1")
    assert read_flow_pair(flows[1]) == FramePair(1, 2, names[1], names[2], "pop_t1", "pop_t2")


def test_communities_refuse_swapped_flows(series, tmp_path):
    frames, flows = series
    with pytest.raises(InputError, match=r"^FLOWS: flow 'flow_1_pop_t1_pop_t2.tif' was computed for frame 1 "
                                         r"'pop_t1.tif' -> frame 2 'pop_t2.tif', but it is given as flow 1"):
        run_communities(frames, flows[::-1], str(tmp_path / "s"), FAST)
    assert not os.path.exists(tmp_path / "s")


def _segments(frames, folder, tagged):
    paths = []
    for t, frame in enumerate(frames):
        with rasterio.open(frame) as src:
            profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="int32",
                           crs=src.crs, transform=src.transform)
        path = str(folder / f"seg{t}.tif")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.zeros((1, profile["height"], profile["width"]), np.int32))
            if tagged:
                dst.update_tags(FRAME=str(t), FRAME_NAME=f"pop_t{t}")
        paths.append(path)
    return paths


def test_tracking_refuses_swapped_flows_by_segment_tags_or_frame_files(series, tmp_path):
    frames, flows = series
    segments = _segments(frames, tmp_path, tagged=True)
    with pytest.raises(InputError, match="^FLOWS: .*between 'pop_t0' and 'pop_t1'"):
        run_tracking(segments, flows[::-1])
    (tmp_path / "untagged").mkdir()
    untagged = _segments(frames, tmp_path / "untagged", tagged=False)
    with pytest.raises(InputError, match="^FLOWS: .*between 'pop_t0.tif' and 'pop_t1.tif'"):
        run_tracking(untagged, flows[::-1], frames)
    run_tracking(segments, flows)  # in order: accepted


def test_flows_without_pair_tags_are_accepted_with_a_warning(series, tmp_path):
    frames, flows = series
    old = []
    for i, path in enumerate(flows):
        with rasterio.open(path) as src:
            profile, data = src.profile, src.read()
        old.append(str(tmp_path / f"old{i}.tif"))
        with rasterio.open(old[-1], "w", **profile) as dst:
            dst.write(data)
    feedback = RecordingFeedback()
    run_tracking(_segments(frames, tmp_path, tagged=True), old, feedback=feedback)
    assert any("do not record the frames" in w for w in feedback.warnings)
