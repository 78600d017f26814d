"""opticalflow and populationclusters on a Dask cluster: a frame pair / a frame per work unit, the same outputs.

One LocalCluster of two worker processes serves the module (reached by its address, as an existing cluster
is); the in-process runs use one torch thread, as the workers do.
"""

import glob
import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("faiss")
pytest.importorskip("distributed")
rasterio = pytest.importorskip("rasterio")

from sample_data.population import generate_population_series
from satseg_plugin.core.errors import CanceledError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.core.staging import MARKER_NAME
from satseg_plugin.pipelines.population.communities import CommunityConfig
from satseg_plugin.pipelines.population.flow import FlowConfig
from satseg_plugin.pipelines.population.frames import frame_on_grid, load_frames
from satseg_plugin.pipelines.population.run import run_communities, run_optical_flow

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = CommunityConfig(epochs=5, centres_per_epoch=200, k=4, min_samples=10, pop_min=20.0, device="cpu")
FLOW = FlowConfig(pyramid_levels=2, device="cpu")


@pytest.fixture(scope="module")
def address():
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Three frames; the last on a coarser grid (2 x 2 sums), so it is resampled onto the first frame's grid."""
    out = tmp_path_factory.mktemp("series")
    generate_population_series(str(out), frames=3)
    paths = sorted(glob.glob(str(out / "pop_t*.tif")))
    with rasterio.open(paths[2]) as src:
        data, profile = src.read(1), src.profile
    h, w = data.shape[0] // 2 * 2, data.shape[1] // 2 * 2
    coarse = data[:h, :w].reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
    profile.update(width=w // 2, height=h // 2, transform=profile["transform"] * profile["transform"].scale(2))
    paths[2] = str(out / "pop_t2_coarse.tif")
    with rasterio.open(paths[2], "w", **profile) as dst:
        dst.write(coarse.astype(profile["dtype"]), 1)
    return paths


@pytest.fixture(scope="module")
def flows_here(frames, tmp_path_factory):
    return run_optical_flow(frames, str(tmp_path_factory.mktemp("here") / "flow"), FLOW, vector_step=8)


def _folder(path):
    """Every raster of an output folder (name -> (pixels, tags, profile)) and its manifest."""
    rasters = {}
    for name in sorted(os.listdir(path)):
        if name.endswith(".tif"):
            with rasterio.open(os.path.join(path, name)) as src:
                rasters[name] = (src.read(), src.tags(), repr(src.profile))  # repr: nodata NaN equals NaN
    with open(os.path.join(path, MARKER_NAME)) as handle:
        return rasters, json.load(handle)


def test_a_unit_reads_a_frame_as_load_frames_does(frames):
    series = load_frames(frames)
    assert series.arrays[2].shape == series.arrays[0].shape  # the coarse frame was resampled
    for t in range(3):
        np.testing.assert_array_equal(frame_on_grid(frames, t), series.arrays[t])


def test_flow_pairs_on_the_cluster_give_the_same_flows_and_arrows(frames, flows_here, address, tmp_path):
    fb = RecordingFeedback()
    spread = run_optical_flow(frames, str(tmp_path / "flow"), FLOW, vector_step=8, feedback=fb, scheduler=address)
    assert any("2 frame pairs run as Dask work units" in m for m in fb.infos)
    assert fb.progress == sorted(fb.progress)
    here, there = _folder(os.path.dirname(flows_here.flow_paths[0])), _folder(str(tmp_path / "flow"))
    assert here[1] == there[1]  # the manifest, stats included
    assert here[0].keys() == there[0].keys() and len(here[0]) == 2
    for name, (pixels, tags, profile) in here[0].items():
        np.testing.assert_array_equal(there[0][name][0], pixels)
        assert there[0][name][1:] == (tags, profile)
    assert spread.vectors == flows_here.vectors and spread.stats == flows_here.stats
    assert [os.path.basename(p) for p in spread.flow_paths] == [os.path.basename(p) for p in flows_here.flow_paths]
    assert os.listdir(tmp_path) == ["flow"]


def test_frames_on_the_cluster_give_the_same_communities(frames, flows_here, address, tmp_path):
    here = run_communities(frames, flows_here.flow_paths, str(tmp_path / "here"), FAST, report_k=True)
    fb = RecordingFeedback()
    spread = run_communities(frames, flows_here.flow_paths, str(tmp_path / "spread"), FAST, report_k=True,
                             feedback=fb, scheduler=address)
    assert any("3 frames run as Dask work units" in m for m in fb.infos)
    a, b = _folder(str(tmp_path / "here")), _folder(str(tmp_path / "spread"))
    assert a[1] == b[1] and a[0].keys() == b[0].keys() and len(a[0]) == 3
    for name, (pixels, tags, profile) in a[0].items():
        np.testing.assert_array_equal(b[0][name][0], pixels)
        assert b[0][name][1:] == (tags, profile)
    assert spread.reports == here.reports and spread.k_reports == here.k_reports and all(here.k_reports)
    assert spread.communities == here.communities and all(here.communities)
    assert sorted(os.listdir(tmp_path)) == ["here", "spread"]


def test_cancel_on_the_cluster_leaves_no_folder(frames, flows_here, address, tmp_path):
    with pytest.raises(CanceledError):
        run_communities(frames, flows_here.flow_paths, str(tmp_path / "seg"), FAST,
                        feedback=RecordingFeedback(cancel_after=4), scheduler=address)
    assert os.listdir(tmp_path) == []
