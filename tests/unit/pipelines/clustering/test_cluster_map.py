"""Cluster maps: cluster_raster's grid, nodata, extent, mask, errors and cancel (the tile grid: core/test_tiling)."""

import os
import shutil

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from satseg_plugin.pipelines.clustering.pixel.cluster_map import CLUSTER_NODATA

# ----------------------------------------------------------------------------------------------- cluster_raster

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("faiss")

from sample_data.generate import generate_scene
from satseg_plugin.core.errors import CanceledError, InputError, OutputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.pipelines.clustering.pixel.cluster_map import ClusterMapConfig, cluster_raster
from satseg_plugin.pipelines.clustering.pixel.train import ClusterNetConfig, FeatureTransform, train_clusternet

K = 4
TINY = ClusterNetConfig(encoder="resnet18", feature_dim=8, num_clusters=K, rounds=2, steps_per_round=2,
                        batch_size=2, patch_size=64, crops_per_round=4, sample_pixels=5000, kmeans_iterations=5,
                        whiten=True, normalize=True)
GRID = {"tile_size": 64, "overlap": 16, "batch_size": 3}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(str(tmp_path_factory.mktemp("scene")), size=256, seed=3)["scene"]


@pytest.fixture(scope="module")
def model(scene, tmp_path_factory):
    return train_clusternet([scene], str(tmp_path_factory.mktemp("model") / "cn.satseg"), TINY, "cpu").model_path


@pytest.fixture(scope="module")
def whole(scene, model, tmp_path_factory):
    """The whole scene clustered on 64 px tiles: (ids, result)."""
    result = cluster_raster(scene, model, str(tmp_path_factory.mktemp("whole") / "c.tif"), ClusterMapConfig(**GRID),
                            "cpu")
    with rasterio.open(result.path) as out:
        return out.read(1), result


def test_output_is_uint16_ids_on_the_input_grid(scene, whole):
    ids, result = whole
    with rasterio.open(scene) as src, rasterio.open(result.path) as out:
        assert (out.width, out.height, out.count, out.dtypes[0]) == (src.width, src.height, 1, "uint16")
        assert out.transform == src.transform and out.crs == src.crs
        assert out.nodata == CLUSTER_NODATA and out.descriptions == ("cluster",)
    assert result.window == (0, 0, 256, 256) and result.tiles == 25 and result.num_clusters == K
    assert ids.min() >= 1 and ids.max() <= K  # no nodata in the scene: every pixel has a cluster
    assert len(np.unique(ids)) >= 2
    assert result.pixel_counts == np.bincount(ids.ravel(), minlength=K + 1)[1:].tolist()


def test_ids_are_the_nearest_centroid_of_the_features(scene, model, tmp_path):
    """Recompute the ids by hand from the model file (one tile covers the scene: no tiling involved)."""
    from satseg_plugin.core.kmeans import nearest_centroid
    from satseg_plugin.models.checkpoint import load_checkpoint
    from satseg_plugin.models.nets.clusternet import clusternet_from_checkpoint

    result = cluster_raster(scene, model, str(tmp_path / "one.tif"), ClusterMapConfig(tile_size=256), "cpu")
    ckpt = load_checkpoint(model)
    net = clusternet_from_checkpoint(ckpt)
    meta = ckpt.metadata
    with rasterio.open(scene) as src:
        raw = src.read(meta.bands).astype(np.float32)
    x = (raw - np.float32(meta.mean)[:, None, None]) / np.float32(meta.std)[:, None, None]
    with torch.no_grad():
        feats = net.features(torch.from_numpy(x[None])).numpy()[0]
    extras = {k: v.numpy() for k, v in ckpt.extras.items()}
    space = FeatureTransform.from_tensors(extras, True).apply(feats.reshape(feats.shape[0], -1).T)
    expected, _ = nearest_centroid(space, extras["centroids"])
    with rasterio.open(result.path) as out:
        ids = out.read(1).ravel().astype(np.int64)
    assert result.tiles == 1
    assert np.mean(ids == expected + 1) > 0.999


def test_extent_run_gives_the_same_ids_as_the_whole_raster(scene, model, whole, tmp_path):
    ids, _ = whole
    with rasterio.open(scene) as src:
        x0, y0 = src.transform * (37.3, 50.6)  # not on pixel edges: rounded outward
        x1, y1 = src.transform * (150.2, 140.9)
        window = Window(37, 50, 114, 91)
        expected_transform = src.window_transform(window)
    result = cluster_raster(scene, model, str(tmp_path / "e.tif"), ClusterMapConfig(bounds=(x0, y1, x1, y0), **GRID),
                            "cpu")
    assert result.window == (37, 50, 114, 91) and result.tiles < 25
    with rasterio.open(result.path) as out:
        assert (out.width, out.height) == (114, 91)
        assert out.transform == expected_transform
        part = out.read(1)
    np.testing.assert_array_equal(part, ids[50:141, 37:151])

    with pytest.raises(InputError) as info:
        cluster_raster(scene, model, str(tmp_path / "far.tif"), ClusterMapConfig(bounds=(0, 0, 10, 10)), "cpu")
    assert info.value.parameter == "EXTENT"


def test_nodata_pixels_stay_nodata(scene, model, make_raster, tmp_path):
    with rasterio.open(scene) as src:
        data = src.read()[:, :96, :128]
        transform = src.transform
    data[:, 10:40, 20:70] = 0
    data[:, 60:, 100:] = 0
    hole = np.all(data == 0, axis=0)
    path = make_raster(data, transform=transform, nodata=0)
    result = cluster_raster(path, model, str(tmp_path / "c.tif"), ClusterMapConfig(**GRID), "cpu")
    with rasterio.open(result.path) as out:
        ids = out.read(1)
        assert out.transform == transform
    assert (ids[hole] == CLUSTER_NODATA).all()
    assert ((ids[~hole] >= 1) & (ids[~hole] <= K)).all()
    assert sum(result.pixel_counts) == int((~hole).sum())


def test_rotated_grid_is_kept(scene, model, make_raster, tmp_path):
    with rasterio.open(scene) as src:
        data = src.read()[:, :80, :100]
    rotated = Affine.translation(500000, 5000000) * Affine.rotation(20) * Affine.scale(0.5, -0.5)
    path = make_raster(data, transform=rotated, crs="EPSG:32633")
    result = cluster_raster(path, model, str(tmp_path / "c.tif"), ClusterMapConfig(**GRID), "cpu")
    with rasterio.open(result.path) as out:
        assert out.transform == rotated and (out.width, out.height) == (100, 80)
        assert out.crs == rasterio.crs.CRS.from_epsg(32633)


def test_mask_sets_pixels_outside_to_nodata(scene, model, whole, tmp_path):
    from shapely.geometry import box

    ids, _ = whole
    with rasterio.open(scene) as src:
        left, top = src.transform * (0, 0)
        right, bottom = src.transform * (100, 180)  # pixels 0..99 x 0..179
    result = cluster_raster(scene, model, str(tmp_path / "m.tif"),
                            ClusterMapConfig(mask=box(left, bottom, right, top), **GRID), "cpu")
    with rasterio.open(result.path) as out:
        masked = out.read(1)
    inside = np.zeros(ids.shape, bool)
    inside[:180, :100] = True
    assert (masked[~inside] == CLUSTER_NODATA).all()
    np.testing.assert_array_equal(masked[inside], ids[inside])
    assert sum(result.pixel_counts) == 180 * 100


def test_input_and_output_errors(model, make_raster, tmp_path):
    one_band = make_raster(np.full((1, 64, 64), 50, "uint8"))
    with pytest.raises(InputError, match="the model reads bands") as info:
        cluster_raster(one_band, model, str(tmp_path / "c.tif"), ClusterMapConfig(**GRID), "cpu")
    assert info.value.parameter == "INPUT"
    three = make_raster(np.full((3, 64, 64), 50, "uint8"), name="three.tif")
    with pytest.raises(OutputError) as info:
        cluster_raster(three, model, str(tmp_path / "c.png"), ClusterMapConfig(**GRID), "cpu")
    assert info.value.parameter == "OUTPUT"
    with pytest.raises(InputError) as info:
        cluster_raster(three, model, str(tmp_path / "c.tif"), ClusterMapConfig(tile_size=64, overlap=64), "cpu")
    assert info.value.parameter == "OVERLAP"
    assert sorted(os.listdir(tmp_path)) == ["in.tif", "three.tif"]


def read_bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


def test_cancel_keeps_the_previous_output(scene, model, whole, tmp_path):
    path = str(tmp_path / "c.tif")
    with pytest.raises(CanceledError):
        cluster_raster(scene, model, path, ClusterMapConfig(**GRID), "cpu", RecordingFeedback(cancel_after=1))
    assert os.listdir(tmp_path) == []

    shutil.copyfile(whole[1].path, path)  # an earlier output
    before = read_bytes(path)
    fb = RecordingFeedback(cancel_after=2)  # after the second of five tile rows
    with pytest.raises(CanceledError):
        cluster_raster(scene, model, path, ClusterMapConfig(**GRID), "cpu", fb)
    assert len(fb.progress) == 2
    assert read_bytes(path) == before
    assert os.listdir(tmp_path) == ["c.tif"]


# ----------------------------------------------------------------------------------------------- blending

def _blended_by_hand(scene, model, tile, overlap):
    """Every tile's features over the whole scene, weighted per pixel by separable ramps written out here."""
    from satseg_plugin.core.tiling import core_spans
    from satseg_plugin.pipelines.clustering.pixel.cluster_map import ClusterModel

    cm = ClusterModel(model, torch.device("cpu"))
    half = overlap // 4
    with rasterio.open(scene) as src:
        raw = src.read(list(cm.metadata.bands)).astype(np.float32)
    height, width = raw.shape[1:]

    def weights(length):  # (tiles, length): 1 inside a core, linear across 2 * half px around each border
        spans = core_spans(length, tile, overlap)
        w = np.zeros((len(spans), length), np.float32)
        for i, (_, start, stop) in enumerate(spans):
            w[i, start:stop] = 1
        for i, (_, _, border) in enumerate(spans[:-1]):
            for p in range(border - half, border + half):
                later = (p - (border - half) + 0.5) / (2 * half)
                w[i, p], w[i + 1, p] = 1 - later, later
        return spans, w

    rows, wy = weights(height)
    cols, wx = weights(width)
    out = 0
    for i, (ty, _, _) in enumerate(rows):
        for j, (tx, _, _) in enumerate(cols):
            f = cm.features(raw[None, :, ty:ty + tile, tx:tx + tile])[0]
            full = np.zeros((f.shape[0], height, width), np.float32)
            full[:, ty:ty + tile, tx:tx + tile] = f
            out = out + full * wy[i][None, :, None] * wx[j][None, None, :]
    return cm, out, raw


@pytest.mark.parametrize("band_columns", [None, 80])
def test_features_blend_linearly_across_core_borders(scene, model, band_columns):
    """feature_blocks == every tile's features weighted by hand-made ramps, with one band or several."""
    from satseg_plugin.core.progress import NullFeedback
    from satseg_plugin.pipelines.clustering.pixel.cluster_map import cluster_grid, feature_blocks

    cm, expected, raw = _blended_by_hand(scene, model, 64, 16)
    config = ClusterMapConfig(**GRID)
    got = np.full_like(expected, np.nan)
    bands = set()
    with rasterio.open(scene) as src:
        grid = cluster_grid(src, cm, config)
        assert grid.half == 4
        for block in feature_blocks(src, cm, grid, config, NullFeedback(), band_columns):
            region = got[:, block.r0:block.r1, block.c0:block.c1]
            assert np.isnan(region).all()  # every pixel comes once
            region[:] = block.values
            assert not block.empty.any()
            bands.add(block.band)
    assert len(bands) == (1 if band_columns is None else 4)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # the ramps matter: a pixel just left of the first core border (x = 56) is not its own tile's features
    own = cm.features(raw[None, :, 0:64, 0:64])[0]
    assert np.abs(got[:, 8:40, 55] - own[:, 8:40, 55]).max() > 1e-2
    np.testing.assert_allclose(got[:, 8:40, 30], own[:, 8:40, 30], atol=1e-5)  # a core's middle is


def test_column_bands_give_the_same_ids(scene, model, whole, tmp_path, monkeypatch):
    from satseg_plugin.pipelines.clustering.pixel import cluster_map

    monkeypatch.setattr(cluster_map, "CLUSTER_BAND_COLUMNS", 96)
    result = cluster_raster(scene, model, str(tmp_path / "b.tif"), ClusterMapConfig(**GRID), "cpu")
    with rasterio.open(result.path) as out:
        np.testing.assert_array_equal(out.read(1), whole[0])
    assert result.pixel_counts == whole[1].pixel_counts
