"""satseg:opticalflow and satseg:populationclusters with SCHEDULER in real QGIS: the in-process outputs.

A unit is a frame pair / a frame. The in-process runs use one torch thread, as every Dask worker does: a sum
over more threads adds in another order, so the flow's last bits would differ.
"""

import glob

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("faiss")
pytest.importorskip("distributed")
rasterio = pytest.importorskip("rasterio")

from sample_data.population import generate_population_series

pytestmark = pytest.mark.slow
FAST = {"EPOCHS": 5, "CENTRES_PER_EPOCH": 200, "K": 4, "MIN_SAMPLES": 10, "POP_MIN": 20.0, "DEVICE": 1}


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    out = tmp_path_factory.mktemp("population")
    generate_population_series(str(out), frames=3)
    return sorted(glob.glob(str(out / "pop_t*.tif")))


@pytest.fixture
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _pixels(paths):
    out = []
    for path in paths:
        with rasterio.open(path) as src:
            out.append(src.read())
    return out


def test_frame_pairs_and_frames_on_a_local_cluster(run_alg, series, tmp_path, one_torch_thread):
    flow = {"FRAMES": series, "PYRAMID_LEVELS": 2, "VECTOR_STEP": 8, "DEVICE": 1}
    here = run_alg("satseg:opticalflow", dict(flow, OUTPUT_DIR=str(tmp_path / "flow_a"),
                                              OUTPUT_VECTORS=str(tmp_path / "arrows_a.gpkg")))
    spread = run_alg("satseg:opticalflow", dict(flow, OUTPUT_DIR=str(tmp_path / "flow_b"),
                                                OUTPUT_VECTORS=str(tmp_path / "arrows_b.gpkg"), SCHEDULER="local:2"))
    assert spread["PAIRS"] == here["PAIRS"] == 2
    for a, b in zip(_pixels(here["FLOWS"]), _pixels(spread["FLOWS"])):
        np.testing.assert_array_equal(b, a)
    segments = dict(FAST, FRAMES=series, FLOWS=here["FLOWS"])
    comm_here = run_alg("satseg:populationclusters", dict(segments, OUTPUT_DIR=str(tmp_path / "seg_a"),
                                                          OUTPUT_COMMUNITIES=str(tmp_path / "comm_a.gpkg")))
    comm_spread = run_alg("satseg:populationclusters", dict(segments, OUTPUT_DIR=str(tmp_path / "seg_b"),
                                                            OUTPUT_COMMUNITIES=str(tmp_path / "comm_b.gpkg"),
                                                            SCHEDULER="local:2"))
    assert comm_spread["COMMUNITIES"] == comm_here["COMMUNITIES"] > 0
    assert comm_spread["AE_MSE"] == comm_here["AE_MSE"]
    for a, b in zip(_pixels(comm_here["SEGMENTS"]), _pixels(comm_spread["SEGMENTS"])):
        np.testing.assert_array_equal(b, a)
