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


def test_row_range_units_keep_the_extent_and_an_earlier_rasters_nodata(scene, model, tmp_path,  # noqa: F811
                                                                        monkeypatch):
    """Units of a column band x a range of rows, on an EXTENT away from the raster's corner and keeping an
    earlier run's nodata (read at the unit's offset in it): the same ids and counts as in-process."""
    from shapely.geometry import box

    from satseg_plugin.core import distributed

    with rasterio.open(scene) as src:
        x0, y0 = src.transform * (13, 21)
        x1, y1 = src.transform * (243, 251)
        mask = box(*(src.transform * (30, 200)), *(src.transform * (200, 40)))
    config = ClusterMapConfig(bounds=(x0, y1, x1, y0), **GRID)
    earlier = cluster_raster(scene, model, str(tmp_path / "earlier.tif"),
                             ClusterMapConfig(bounds=(x0, y1, x1, y0), mask=mask, **GRID), "cpu")
    whole = cluster_raster(scene, model, str(tmp_path / "whole.tif"), config, "cpu", keep_nodata_of=earlier.path)
    monkeypatch.setattr(cluster_map, "CLUSTER_BAND_COLUMNS", 96)
    monkeypatch.setattr(distributed, "UNIT_ROW_STEP", 64)  # 230 rows: 3 ranges of at least a tile
    fb = RecordingFeedback()
    spread = cluster_raster(scene, model, str(tmp_path / "spread.tif"), config, "cpu", fb,
                            keep_nodata_of=earlier.path, scheduler="local:2")
    assert any("9 Dask work units: 3 column bands" in m and "3 ranges of rows" in m for m in fb.infos)
    assert whole.window == spread.window == (13, 21, 230, 230)
    with rasterio.open(whole.path) as a, rasterio.open(spread.path) as b:
        ids = a.read(1)
        np.testing.assert_array_equal(b.read(1), ids)
        assert a.profile == b.profile and a.overviews(1) == b.overviews(1)
    assert (ids == 0).any() and (ids != 0).any()  # the earlier run's MASK is kept
    assert spread.pixel_counts == whole.pixel_counts
    assert sorted(os.listdir(tmp_path)) == ["earlier.tif", "spread.tif", "whole.tif"]
