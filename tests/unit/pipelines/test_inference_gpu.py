"""The model-running tools that are not trainers, on a CUDA GPU: ``segment_raster``, ``cluster_raster``,
``horn_schunck`` (optical flow) and ``pretrain_encoder``, each on tiny data (seconds), compared with the same run
on the CPU.

The trainers are in ``tests/unit/core/test_fit_gpu.py``. Skipped without CUDA; ``SATSEG_GPU_TESTS_ON_CPU=1``
runs them on the CPU instead (the dry run before a GPU run: then both sides are the CPU and must agree exactly).

Tolerances on the GPU: cuDNN convolutions run in TF32 by default on Ampere and later (about 1e-3 relative), and
mixed precision in bfloat16 (about 1e-2), so outputs are compared within those and masks / cluster ids by the
share of pixels that agree; the sweep itself is checked bit-exact on the CPU by the tiling goldens.
"""


import numpy as np
import pytest
import rasterio

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("faiss")

from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.core.tiling import GPU_THREADS, threads_for
from satseg_plugin.models.checkpoint import load_checkpoint
from satseg_plugin.pipelines.clustering.pixel.cluster_map import ClusterMapConfig, ClusterModel, cluster_raster
from satseg_plugin.pipelines.clustering.pixel.train import ClusterNetConfig, train_clusternet
from satseg_plugin.pipelines.population.flow import FlowConfig, horn_schunck
from satseg_plugin.pipelines.segmentation.config import PretrainConfig
from satseg_plugin.pipelines.segmentation.pretrain import pretrain_encoder
from satseg_plugin.pipelines.segmentation.segment import InferenceConfig, segment_raster
from satseg_plugin.pipelines.segmentation.train import TrainConfig, train_segmentation
from tests.unit.gpu import CUDA, DEVICE, gpu_marks, write_scene
from tests.unit.pipelines.population.test_flow import blob

pytestmark = gpu_marks(torch)


def read(path):
    with rasterio.open(path) as src:
        return src.read(), src.transform, src.crs


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A generated 256 px scene (a 3 x 3 grid of 96 px tiles with overlap 16) and its buildings."""
    return write_scene(tmp_path_factory.mktemp("scene"))


@pytest.fixture(scope="module")
def segmentation_model(scene, tmp_path_factory):
    config = TrainConfig(encoder="resnet18", patch_size=64, batch_size=4, epochs=2, batches_per_epoch=3,
                         max_val_tiles=8, encoder_weights="none")
    out = tmp_path_factory.mktemp("seg")
    return train_segmentation(scene[0], scene[1], str(out / "m.satseg"), config, "cpu").model_path


@pytest.fixture(scope="module")
def cluster_model(scene, tmp_path_factory):
    config = ClusterNetConfig(encoder="resnet18", feature_dim=8, num_clusters=4, rounds=1, steps_per_round=2,
                              batch_size=2, patch_size=64, crops_per_round=4, sample_pixels=5000,
                              kmeans_iterations=5)
    out = tmp_path_factory.mktemp("cn")
    return train_clusternet([scene[0]], str(out / "cn.satseg"), config, "cpu").model_path


@pytest.mark.parametrize("amp", [False, True], ids=["float32", "mixed"])
def test_segment_raster_on_the_device_matches_the_cpu(scene, segmentation_model, tmp_path, amp):
    runs = {}
    for run, device in (("cpu", "cpu"), ("device", DEVICE)):  # two runs even when DEVICE is the CPU
        out = tmp_path / run
        out.mkdir()
        feedback = RecordingFeedback()
        config = InferenceConfig(tile_size=96, overlap=16, batch_size=4, amp=amp, min_object_pixels=0)
        result = segment_raster(scene[0], [segmentation_model], str(out / "p.tif"), str(out / "m.tif"), config,
                                device, feedback)
        assert result.tiles == 9
        runs[run] = read(result.probability_path), read(result.mask_path)
    (cpu_prob, transform, crs), (cpu_mask, _, _) = runs["cpu"]
    (dev_prob, dev_transform, dev_crs), (dev_mask, _, _) = runs["device"]
    assert dev_transform == transform and dev_crs == crs and dev_prob.shape == cpu_prob.shape
    if not CUDA:
        assert np.array_equal(dev_prob, cpu_prob) and np.array_equal(dev_mask, cpu_mask)
        return
    np.testing.assert_allclose(dev_prob, cpu_prob, atol=3e-2 if amp else 3e-3)
    assert (dev_mask == cpu_mask).mean() >= (0.98 if amp else 0.995)


def test_a_cuda_sweep_reads_ahead_on_threads():
    """On a GPU the host reads and writes on threads around the model (issue 16); on the CPU it does not."""
    assert threads_for(torch.device("cuda")) == GPU_THREADS and GPU_THREADS.readers > 0
    assert threads_for(torch.device("cpu")).readers == 0


def test_cluster_raster_on_the_device_matches_the_cpu(scene, cluster_model, tmp_path, monkeypatch):
    """On the device the features are blended and assigned as tensors there (issue 16); the dry run on the CPU
    takes that path too (then it must give the host path's ids exactly)."""
    seen = set()
    assign = ClusterModel.assign

    def spy(self, features, splits=None):  # where the features are assigned: "host" (numpy) or a device type
        seen.add(features.device.type if isinstance(features, torch.Tensor) else "host")
        return assign(self, features, splits)

    monkeypatch.setattr(ClusterModel, "assign", spy)
    ids = {}
    for run, device in (("cpu", "cpu"), ("device", DEVICE)):  # two runs even when DEVICE is the CPU
        if run == "device" and not CUDA:
            monkeypatch.setattr(ClusterModel, "on_device", True)  # the GPU's path, on the CPU
        seen.clear()
        path = str(tmp_path / f"{run}.tif")
        result = cluster_raster(scene[0], cluster_model, path, ClusterMapConfig(tile_size=96, overlap=16,
                                                                                batch_size=4, amp=False), device)
        assert result.num_clusters == 4
        assert seen == ({"host"} if run == "cpu" else {DEVICE})
        ids[run] = read(path)
    cpu_ids, transform, crs = ids["cpu"]
    dev_ids, dev_transform, dev_crs = ids["device"]
    assert dev_transform == transform and dev_crs == crs and dev_ids.dtype == np.uint16
    agree = (dev_ids == cpu_ids).mean()
    assert agree == 1.0 if not CUDA else agree >= 0.99


def test_optical_flow_on_the_device_matches_the_cpu():
    f1, f2 = blob(), blob(1.5, -1.0)
    cpu, dev = (horn_schunck(f1, f2, FlowConfig(device=device, pyramid_levels=2)) for device in ("cpu", DEVICE))
    assert dev.converged and dev.u.dtype == np.float32
    np.testing.assert_allclose(dev.u, cpu.u, atol=0 if not CUDA else 1e-3)
    np.testing.assert_allclose(dev.v, cpu.v, atol=0 if not CUDA else 1e-3)


def test_encoder_pretraining_on_the_device(scene, tmp_path):
    feedback = RecordingFeedback()
    config = PretrainConfig(encoder="resnet18", patch_size=64, view_size=32, batch_size=8, epochs=2,
                            batches_per_epoch=2, encoder_weights="none")
    result = pretrain_encoder(scene[0], str(tmp_path / "enc.satseg"), config, DEVICE, feedback)
    assert not result.canceled and result.steps == 4 and np.isfinite(result.final_loss)
    assert load_checkpoint(result.model_path, kind="encoder").metadata.encoder == "resnet18"
    assert any(m.startswith("Mixed precision: ") for m in feedback.infos) == CUDA
