"""ClusterNet (DeepCluster) training on a small generated scene: the model file, the log, seeding, cancel,
and every refusal naming its parameter. One tiny model is trained per module and reused."""

import csv
import math
import os
from dataclasses import replace

import numpy as np
import pytest
import rasterio

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("faiss")

from sample_data.generate import generate_scene
from satseg_plugin.core.errors import CanceledError, InputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.models.checkpoint import load_checkpoint
from satseg_plugin.pipelines.clustering.pixel.train import ClusterNetConfig, FeatureTransform, train_clusternet

K = 4
TINY = ClusterNetConfig(encoder="resnet18", feature_dim=8, num_clusters=K, rounds=2, steps_per_round=2,
                        batch_size=2, patch_size=64, crops_per_round=4, sample_pixels=5000, kmeans_iterations=5,
                        whiten=True, normalize=True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(str(tmp_path_factory.mktemp("scene")), size=256, seed=3)["scene"]


@pytest.fixture(scope="module")
def trained(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    return train_clusternet([scene], str(out / "cn.satseg"), TINY, "cpu", log_path=str(out / "log.csv"))


def test_model_file_holds_network_centroids_and_whitening(trained, scene):
    ckpt = load_checkpoint(trained.model_path, kind="clusternet")
    meta = ckpt.metadata
    assert (meta.architecture, meta.encoder, meta.in_channels, meta.bands) == ("unet", "resnet18", 3, [1, 2, 3])
    assert meta.classes == ["cluster 1", "cluster 2", "cluster 3", "cluster 4"]
    assert meta.patch_size == 64 and tuple(meta.pixel_size) == (0.5, 0.5) and meta.crs_units == "metre"
    with rasterio.open(scene) as src:
        data = src.read().reshape(3, -1).astype(float)
        assert rasterio.crs.CRS.from_wkt(meta.crs_wkt) == src.crs
    np.testing.assert_allclose(meta.mean, data.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(meta.std, data.std(axis=1), rtol=1e-5)
    assert meta.extra["feature_dim"] == 8 and meta.extra["whiten"] and meta.extra["normalize"]
    assert meta.extra["train_config"]["num_clusters"] == K and meta.extra["sources"] == [os.path.abspath(scene)]

    d = 8 + 3  # learned features + the pixel's bands
    assert set(ckpt.extras) == {"centroids", "whiten_mean", "whiten_matrix"}
    assert tuple(ckpt.extras["centroids"].shape) == (K, d)
    assert tuple(ckpt.extras["whiten_mean"].shape) == (d,) and tuple(ckpt.extras["whiten_matrix"].shape) == (d, d)
    # k-means ran on L2-normalised vectors: its centroids are means of unit vectors
    assert (ckpt.extras["centroids"].norm(dim=1) <= 1 + 1e-5).all()
    # every pixel sampled for the final k-means is in one cluster (4 crops of 64 px > sample_pixels)
    assert sum(trained.cluster_sizes) == TINY.sample_pixels and len(trained.cluster_sizes) == K
    assert meta.extra["cluster_sizes"] == trained.cluster_sizes
    assert meta.metrics["objective"] == pytest.approx(trained.objective) and trained.objective > 0
    assert meta.metrics["rounds"] == 2


def test_log_has_one_row_per_round(trained):
    with open(trained.log_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["round"]) for r in rows] == [1, 2]
    assert set(rows[0]) >= {"objective", "nmi_previous", "loss", "clusters_used", "largest_cluster_share"}
    assert math.isnan(float(rows[0]["nmi_previous"]))  # no previous round
    assert 0.0 <= float(rows[1]["nmi_previous"]) <= 1.0
    for row, logged in zip(rows, trained.rounds):
        assert float(row["objective"]) == pytest.approx(logged["objective"]) and float(row["objective"]) > 0
        assert 1 <= int(row["clusters_used"]) <= K
        assert float(row["smallest_cluster_share"]) <= 1 / K <= float(row["largest_cluster_share"])
        assert math.isfinite(float(row["loss"])) and float(row["loss"]) > 0


def test_same_seed_gives_the_same_model_on_cpu(trained, scene, tmp_path):
    again = train_clusternet([scene], str(tmp_path / "again.satseg"), TINY, "cpu")
    a, b = load_checkpoint(trained.model_path), load_checkpoint(again.model_path)
    assert set(a.extras) == set(b.extras)
    assert all(torch.equal(a.extras[k], b.extras[k]) for k in a.extras)
    assert a.model_state.keys() == b.model_state.keys()
    assert all(torch.equal(a.model_state[k], b.model_state[k]) for k in a.model_state)
    assert again.cluster_sizes == trained.cluster_sizes


def test_band_subset_without_whitening(scene, tmp_path):
    config = replace(TINY, bands=(3, 1), whiten=False, normalize=False, rounds=1, steps_per_round=1, seed=5)
    result = train_clusternet([scene], str(tmp_path / "sub.satseg"), config, "cpu")
    ckpt = load_checkpoint(result.model_path, kind="clusternet")
    assert ckpt.metadata.bands == [3, 1] and ckpt.metadata.in_channels == 2
    with rasterio.open(scene) as src:
        np.testing.assert_allclose(ckpt.metadata.mean, [src.read(3).mean(), src.read(1).mean()], rtol=1e-6)
    assert set(ckpt.extras) == {"centroids"}  # no whitening stored
    assert tuple(ckpt.extras["centroids"].shape) == (K, 8 + 2)
    assert result.log_path is None and len(result.rounds) == 1


@pytest.mark.parametrize("cancel_after", [1, 3])  # in round 1; in round 2 (two progress reports per round)
def test_cancel_writes_nothing(scene, tmp_path, cancel_after):
    fb = RecordingFeedback(cancel_after=cancel_after)
    with pytest.raises(CanceledError):
        train_clusternet([scene], str(tmp_path / "cn.satseg"), TINY, "cpu", fb, log_path=str(tmp_path / "log.csv"))
    assert len(fb.progress) == cancel_after
    assert os.listdir(tmp_path) == []


def test_more_clusters_than_valid_pixels(make_raster, tmp_path):
    data = np.zeros((3, 64, 64), "uint8")
    rng = np.random.default_rng(1)
    data[:, 5, 20:30] = rng.integers(1, 255, (3, 10))  # 10 valid pixels
    src = make_raster(data, nodata=0)
    config = replace(TINY, num_clusters=20, sample_pixels=100, crops_per_round=1)
    with pytest.raises(InputError, match="only 10 valid pixels") as info:
        train_clusternet([src], str(tmp_path / "cn.satseg"), config, "cpu")
    assert info.value.parameter == "NUM_CLUSTERS" and "NUM_CLUSTERS" in str(info.value)
    assert not os.path.exists(tmp_path / "cn.satseg")


def test_all_nodata_raster_is_refused(make_raster, tmp_path):
    src = make_raster(np.zeros((3, 64, 64), "uint8"), nodata=0)
    with pytest.raises(InputError, match="only nodata") as info:
        train_clusternet([src], str(tmp_path / "cn.satseg"), TINY, "cpu")
    assert info.value.parameter == "INPUT"
    assert not os.path.exists(tmp_path / "cn.satseg")


def test_sources_are_checked(scene, make_raster, tmp_path):
    with pytest.raises(InputError, match="at least one raster") as info:
        train_clusternet([], str(tmp_path / "cn.satseg"), TINY, "cpu")
    assert info.value.parameter == "INPUT"
    two_bands = make_raster(np.full((2, 64, 64), 7, "uint8"))
    with pytest.raises(InputError, match="same bands") as info:
        train_clusternet([scene, two_bands], str(tmp_path / "cn.satseg"), TINY, "cpu")
    assert info.value.parameter == "INPUT"
    with pytest.raises(InputError) as info:
        train_clusternet([scene], str(tmp_path / "cn.satseg"), replace(TINY, bands=(4,)), "cpu")
    assert info.value.parameter == "BANDS"
    with pytest.raises(InputError, match="multiple of") as info:
        train_clusternet([scene], str(tmp_path / "cn.satseg"), replace(TINY, patch_size=80), "cpu")
    assert info.value.parameter == "PATCH_SIZE"
    assert os.listdir(tmp_path) == ["in.tif"]


@pytest.mark.parametrize("change, parameter", [
    ({"feature_dim": 1}, "FEATURE_DIM"),
    ({"num_clusters": 1}, "NUM_CLUSTERS"),
    ({"rounds": 0}, "ROUNDS"),
    ({"steps_per_round": 0}, "STEPS_PER_ROUND"),
    ({"batch_size": 0}, "BATCH_SIZE"),
    ({"patch_size": 16}, "PATCH_SIZE"),
    ({"crops_per_round": 0}, "CROPS_PER_ROUND"),
    ({"sample_pixels": 3}, "SAMPLE_PIXELS"),  # fewer than num_clusters = 4
    ({"learning_rate": 0.0}, "LEARNING_RATE"),
])
def test_validate_names_the_parameter(change, parameter, tmp_path):
    TINY.validate()  # the base configuration is fine
    config = replace(TINY, **change)
    with pytest.raises(InputError) as info:
        config.validate()
    assert info.value.parameter == parameter and str(info.value).startswith(parameter + ":")
    with pytest.raises(InputError, match=parameter):  # refused before anything is read or written
        train_clusternet(["no-such-raster.tif"], str(tmp_path / "cn.satseg"), config, "cpu")
    assert os.listdir(tmp_path) == []


def test_feature_transform_round_trip():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(500, 5)) * [1, 2, 3, 4, 50] + [0, 0, 0, 0, 100]).astype(np.float32)
    fitted = FeatureTransform.fit(x, whiten=True, normalize=True)
    out = fitted.apply(x)
    assert out.shape == (500, 5) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    # whitened (before the norm): zero mean, unit covariance
    white = fitted.whitening.apply(x)
    np.testing.assert_allclose(white.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(np.cov(white.T, bias=True), np.eye(5), atol=1e-3)
    stored = fitted.tensors()
    assert set(stored) == {"whiten_mean", "whiten_matrix"}
    restored = FeatureTransform.from_tensors(stored, normalize=True)
    np.testing.assert_array_equal(restored.apply(x), out)

    plain = FeatureTransform.fit(x, whiten=False, normalize=False)
    assert plain.tensors() == {} and FeatureTransform.from_tensors({}, False).whitening is None
    np.testing.assert_array_equal(plain.apply(x), x)
