"""cluster_raster's GPU path (issue 16), run on the CPU through torch: features blended on the device
(``RampBlend(device)``), every pixel of a block assigned there, only uint16 ids copied back. It must give the
host path's features and ids exactly (the GPU's own run: tests/unit/pipelines/test_inference_gpu.py)."""

import numpy as np
import pytest
import rasterio

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("faiss")

from satseg_plugin.core.progress import NullFeedback
from satseg_plugin.pipelines.clustering.pixel import cluster_map
from satseg_plugin.pipelines.clustering.pixel.cluster_map import (
    CLUSTER_NODATA,
    ClusterMapConfig,
    ClusterModel,
    cluster_grid,
    cluster_raster,
    feature_blocks,
)

# the module's own copies of test_cluster_map's scene and tiny trained model (module-scoped fixtures)
from .test_cluster_map import GRID, K, model, scene  # noqa: E402,F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cpu_models_keep_the_host_path(model):  # noqa: F811 (fixtures)
    assert not ClusterModel(model, torch.device("cpu")).on_device


def test_feature_blocks_on_the_device_are_the_host_blocks(scene, model):  # noqa: F811 (fixtures)
    cm = ClusterModel(model, torch.device("cpu"))
    config = ClusterMapConfig(**GRID)
    runs = {}
    with rasterio.open(scene) as src:
        grid = cluster_grid(src, cm, config)
        for on_device in (False, True):
            blocks = feature_blocks(src, cm, grid, config, NullFeedback(), 96, None, on_device)
            runs[on_device] = [(b.r0, b.r1, b.c0, b.c1, b.band, type(b.values), b.empty.copy(),
                                np.array(b.values.cpu() if on_device else b.values)) for b in blocks]
    host, device = runs[False], runs[True]
    assert len(host) == len(device) > len(grid)  # three column bands: tiles straddling a border give two blocks
    for h, d in zip(host, device):
        assert h[:5] == d[:5] and (h[5], d[5]) == (np.ndarray, torch.Tensor)
        np.testing.assert_array_equal(d[6], h[6])
        np.testing.assert_array_equal(d[7], h[7])


def test_the_device_path_gives_the_host_ids_with_nodata_bands_and_splits(scene, model,  # noqa: F811 (fixtures)
                                                                          make_raster, tmp_path, monkeypatch):
    """Nodata holes, three column bands and a split cluster: ids and counts as on the host, every pixel
    assigned from tensors (a spy on ClusterModel.assign checks which path ran)."""
    with rasterio.open(scene) as src:
        data, transform = src.read()[:, :200, :], src.transform
    data[:, 10:40, 20:70] = 0
    data[:, 150:, 200:] = 0
    hole = np.all(data == 0, axis=0)
    path = make_raster(data, transform=transform, nodata=0)
    centroids = ClusterModel(model, torch.device("cpu")).centroids
    step = 0.1 * (centroids[1] - centroids[0])
    splits = {1: (np.stack([centroids[0] + step, centroids[0] - step]), [K + 1, K + 2])}
    monkeypatch.setattr(cluster_map, "CLUSTER_BAND_COLUMNS", 96)
    seen = []
    assign = ClusterModel.assign

    def spy(self, features, splits=None):
        seen.append(type(features))
        return assign(self, features, splits)

    monkeypatch.setattr(ClusterModel, "assign", spy)
    runs = {}
    for on_device in (False, True):
        monkeypatch.setattr(ClusterModel, "on_device", on_device)
        seen.clear()
        result = cluster_raster(path, model, str(tmp_path / f"{on_device}.tif"), ClusterMapConfig(**GRID), "cpu",
                                splits=splits)
        assert set(seen) == {torch.Tensor if on_device else np.ndarray}
        with rasterio.open(result.path) as out:
            runs[on_device] = out.read(1), result.pixel_counts
    (host, host_counts), (device, device_counts) = runs[False], runs[True]
    np.testing.assert_array_equal(device, host)
    assert device_counts == host_counts
    assert (host[hole] == CLUSTER_NODATA).all() and (host[~hole] != CLUSTER_NODATA).all()
    assert {K + 1, K + 2} <= set(np.unique(host).tolist())  # the split is in play
