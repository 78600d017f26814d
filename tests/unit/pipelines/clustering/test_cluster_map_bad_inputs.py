"""cluster_raster clamps an oversized tile to the raster and warns about an all-nodata extent."""

import numpy as np
import pytest
import rasterio

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("faiss")

from sample_data.generate import generate_scene
from satseg_plugin.core.errors import InputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.pipelines.clustering.pixel.cluster_map import CLUSTER_NODATA, ClusterMapConfig, cluster_raster
from satseg_plugin.pipelines.clustering.pixel.train import ClusterNetConfig, train_clusternet

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = ClusterNetConfig(encoder="resnet18", feature_dim=8, num_clusters=3, rounds=1, steps_per_round=1,
                        batch_size=2, patch_size=64, crops_per_round=2, sample_pixels=2000, kmeans_iterations=3)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    scene = generate_scene(str(tmp_path_factory.mktemp("scene")), size=96, seed=1)["scene"]
    return scene, train_clusternet([scene], str(tmp_path_factory.mktemp("model") / "cn.satseg"), TINY,
                                   "cpu").model_path


def test_oversized_tile_is_clamped_to_the_raster(model, tmp_path):
    scene, path = model
    feedback = RecordingFeedback()
    big = cluster_raster(scene, path, str(tmp_path / "big.tif"), ClusterMapConfig(tile_size=2048, overlap=512),
                         "cpu", feedback)
    fitted = cluster_raster(scene, path, str(tmp_path / "fit.tif"), ClusterMapConfig(tile_size=96), "cpu")
    assert big.tiles == 1 and any("Tile size 96 px instead of 2048 px" in m and "the raster is only 96 x 96 px"
                                  in m for m in feedback.infos)
    with rasterio.open(big.path) as a, rasterio.open(fitted.path) as b:
        assert a.tags()["satseg_tile"] == "96"
        np.testing.assert_array_equal(a.read(), b.read())
    with pytest.raises(InputError, match="^BATCH_SIZE"):
        cluster_raster(scene, path, str(tmp_path / "x.tif"), ClusterMapConfig(batch_size=0), "cpu")


def test_all_nodata_extent_warns(model, make_raster, tmp_path):
    _scene, path = model
    feedback = RecordingFeedback()
    result = cluster_raster(make_raster(np.zeros((3, 40, 40), "uint8"), nodata=0), path, str(tmp_path / "c.tif"),
                            ClusterMapConfig(tile_size=64), "cpu", feedback)
    assert "Every pixel of INPUT in the extent is nodata; the output is empty." in feedback.warnings
    with rasterio.open(result.path) as out:
        assert (out.read(1) == CLUSTER_NODATA).all()
