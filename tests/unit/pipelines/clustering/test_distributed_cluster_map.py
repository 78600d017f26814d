"""cluster_raster on a Dask cluster: column bands as work units, the same ids and counts as in-process."""

import os

import numpy as np
import pytest
import rasterio

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("faiss")
pytest.importorskip("distributed")

from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.core.staging import TEMP_PREFIX
from satseg_plugin.pipelines.clustering.pixel import cluster_map
from satseg_plugin.pipelines.clustering.pixel.cluster_map import ClusterMapConfig, cluster_raster

# the module's own copies of test_cluster_map's scene and tiny trained model (module-scoped fixtures)
from .test_cluster_map import GRID, model, scene  # noqa: E402,F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_local_cluster_gives_the_same_ids_and_counts(scene, model, tmp_path, monkeypatch):  # noqa: F811 (fixtures)
    from shapely.geometry import box

    with rasterio.open(scene) as src:
        mask = box(*(src.transform * (20, 240)), *(src.transform * (230, 10)))
    config = ClusterMapConfig(mask=mask, **GRID)
    whole = cluster_raster(scene, model, str(tmp_path / "whole.tif"), config, "cpu")
    monkeypatch.setattr(cluster_map, "CLUSTER_BAND_COLUMNS", 96)
    fb = RecordingFeedback()
    spread = cluster_raster(scene, model, str(tmp_path / "spread.tif"), config, "cpu", fb, scheduler="local:2")
    assert any("3 column bands" in m for m in fb.infos)
    with rasterio.open(whole.path) as a, rasterio.open(spread.path) as b:
        np.testing.assert_array_equal(b.read(1), a.read(1))
        assert a.profile == b.profile and a.tags() == b.tags() and a.colormap(1) == b.colormap(1)
        assert a.overviews(1) == b.overviews(1)
        np.testing.assert_array_equal(b.read(1, out_shape=(64, 64)), a.read(1, out_shape=(64, 64)))
    assert spread.pixel_counts == whole.pixel_counts and (spread.window, spread.tiles) == (whole.window, whole.tiles)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(TEMP_PREFIX)]
