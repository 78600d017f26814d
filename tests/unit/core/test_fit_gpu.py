"""The five trainers on a CUDA GPU, on tiny data (seconds each), and the out-of-memory back-off on a really
oversized batch.

Skipped without CUDA. ``SATSEG_GPU_TESTS_ON_CPU=1`` runs them on the CPU instead (a dry run before a GPU run);
there the out-of-memory test caps a notional device memory, since a CPU has no CUDA allocator to exhaust.
"""

import csv
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("torchvision")
pytest.importorskip("faiss")

from satseg_plugin.core.fit import OomBackoff, choose_precision
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.models.checkpoint import load_checkpoint
from satseg_plugin.models.nets.clusternet import build_clusternet
from satseg_plugin.models.nets.scene import scene_model_from_checkpoint
from satseg_plugin.pipelines.clustering.pixel.train import ClusterNetConfig, train_clusternet
from satseg_plugin.pipelines.clustering.scene.data import load_patches
from satseg_plugin.pipelines.clustering.scene.deepcluster import DeepClusterConfig, deep_cluster
from satseg_plugin.pipelines.clustering.scene.train import SceneTrainConfig, pretrain_scene
from satseg_plugin.pipelines.population.communities import frame_communities
from satseg_plugin.pipelines.segmentation.train import TrainConfig, train_segmentation
from tests.unit.gpu import CUDA, DEVICE, gpu_marks, write_scene
from tests.unit.pipelines.clustering.test_scene_data import write_scene_patches
from tests.unit.pipelines.population.test_communities import TRANSFORM, small_config, town_frame

pytestmark = gpu_marks(torch)

KINDS = ["urban"] * 8 + ["rural"] * 8 + ["uninhabited"] * 4
CLASSES = ["urban", "rural", "uninhabited"]


def mixed_precision_logged(feedback: RecordingFeedback) -> bool:
    return any(m.startswith("Mixed precision: ") for m in feedback.infos)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The generated test scene and its building footprints (kept in memory: no GDAL Python bindings needed)."""
    return write_scene(tmp_path_factory.mktemp("scene"))


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    return write_scene_patches(str(tmp_path_factory.mktemp("patches")), KINDS, size=32, seed=1)


@pytest.mark.parametrize("half", [False, True], ids=["native", "float16"])
def test_segmentation_trains_on_the_device(scene, tmp_path, monkeypatch, half):
    if half:  # the float16 + GradScaler path of GPUs without bfloat16 (an H100/H200 would pick bfloat16)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    src, labels = scene
    feedback = RecordingFeedback()
    config = TrainConfig(encoder="resnet18", patch_size=64, batch_size=4, epochs=2, batches_per_epoch=2,
                         max_val_tiles=8)
    result = train_segmentation(src, labels, str(tmp_path / "m.satseg"), config, DEVICE, feedback,
                                log_path=str(tmp_path / "log.csv"), plot_path=str(tmp_path / "curve.png"))
    assert not result.canceled and result.epochs_run == 2 and 0 <= result.best_dice <= 1
    assert all(np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"]) for row in result.history)
    assert load_checkpoint(result.model_path, kind="segmentation").metadata.metrics["best_epoch"] == result.best_epoch
    assert [int(r["epoch"]) for r in csv.DictReader(open(result.log_path))] == [1, 2]
    assert open(result.plot_path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert mixed_precision_logged(feedback) == CUDA
    if CUDA:
        expected = "float16 autocast with gradient scaling" if half else "bfloat16 autocast"
        assert f"Mixed precision: {expected}." in feedback.infos


@pytest.fixture(scope="module")
def scene_model(patches, tmp_path_factory):
    out = tmp_path_factory.mktemp("scene_model")
    truth = np.array([CLASSES.index(k) for k in KINDS])
    labels = np.eye(3)[truth]
    config = SceneTrainConfig(epochs=2, batch_size=7, learning_rate=3e-3, ema_decay=0.8, rampup_epochs=1,
                              val_fraction=0.25, seed=0)
    feedback = RecordingFeedback()
    result = pretrain_scene(patches, labels, CLASSES, str(out / "scene.satseg"), config, DEVICE, feedback,
                            log_path=str(out / "log.csv"))
    return result, feedback


def test_mean_teacher_trains_on_the_device(scene_model, patches):
    result, feedback = scene_model
    assert result.probabilities.shape == (len(KINDS), 3) and np.isfinite(result.probabilities).all()
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1, atol=1e-4)
    assert [row["epoch"] for row in result.history] == [1, 2] and 1 <= result.best_epoch <= 2
    assert all(np.isfinite(row["loss"]) for row in result.history)
    # the file's network is the kept teacher and gives the returned probabilities on the CPU too
    model = scene_model_from_checkpoint(load_checkpoint(result.model_path, kind="scene"))
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(load_patches(patches).normalized())), dim=1).numpy()
    np.testing.assert_allclose(probs, result.probabilities, atol=2e-3)
    assert mixed_precision_logged(feedback) == CUDA


def test_deepcluster_trains_on_the_device(scene_model, patches, tmp_path):
    result, _ = scene_model
    config = DeepClusterConfig(k=3, epochs=2, pca_dim=3, k_min=2, k_max=4, batch_size=4, kmeans_iterations=5)
    feedback = RecordingFeedback()
    clustered = deep_cluster(patches, KINDS, ("urban", "rural"), result.model_path,
                             str(tmp_path / "features.safetensors"), config, DEVICE, feedback,
                             table_path=str(tmp_path / "silhouette.csv"), plot_path=str(tmp_path / "silhouette.png"))
    assert clustered.counts == {"urban": 8, "rural": 8}
    assert len(clustered.history) == 4 and all(np.isfinite(row["loss"]) for row in clustered.history)
    assert len(clustered.rows) == 2 * 3 and os.path.exists(clustered.features_path)
    assert open(clustered.plot_path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert mixed_precision_logged(feedback) == CUDA


def test_clusternet_trains_on_the_device(scene, tmp_path):
    config = ClusterNetConfig(encoder="resnet18", feature_dim=8, num_clusters=4, rounds=2, steps_per_round=2,
                              batch_size=2, patch_size=64, crops_per_round=4, sample_pixels=5000, kmeans_iterations=5)
    result = train_clusternet([scene[0]], str(tmp_path / "cn.satseg"), config, DEVICE,
                              log_path=str(tmp_path / "log.csv"))
    assert [row["round"] for row in result.rounds] == [1, 2] and np.isfinite(result.objective)
    assert all(np.isfinite(row["loss"]) for row in result.rounds)
    assert load_checkpoint(result.model_path, kind="clusternet").extras["centroids"].shape == (4, 8 + 3)


def test_clusternet_head_reset_on_the_device_draws_the_cpu_weights():
    """The CUDA bug: a CPU generator drew straight into CUDA weights ("Expected a 'cuda' device type for
    generator but found 'cpu'")."""
    weights = []
    for device in ("cpu", DEVICE):
        torch.manual_seed(0)
        model = build_clusternet("unet", "resnet18", 3, 8, 4).to(device)
        model.reset_head(torch.Generator().manual_seed(7))
        assert model.head.weight.device.type == device
        weights.append(model.head.weight.detach().cpu())
    assert torch.equal(weights[0], weights[1])  # the same seed gives the same head on every device


def test_population_communities_on_the_device():
    population, u, v = town_frame()
    feedback = RecordingFeedback()
    result = frame_communities(population, u, v, TRANSFORM, 900.0, small_config(device=DEVICE, epochs=20),
                               feedback)
    assert len(result.records) >= 2 and result.clustered_pixels == int((np.nan_to_num(population) > 0).sum())
    assert result.ae_mse < result.ae_baseline_mse


def test_oom_backoff_halves_a_really_oversized_batch():
    """The first batch needs four times the device's memory; the batch halves until a training step fits."""
    device = torch.device(DEVICE)
    features = 4096
    per_item = features * 4  # bytes of one float32 input row
    memory = torch.cuda.get_device_properties(device).total_memory if CUDA else 32 * 2**20  # notional on a CPU
    start = 1 << int(np.ceil(np.log2(4 * memory / per_item)))
    model = torch.nn.Linear(features, 64).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    precision = choose_precision(device, amp=False)
    tried = []

    def step(size):
        tried.append(size)
        if not CUDA and size * per_item > memory:  # what the CUDA allocator does on a GPU
            raise torch.cuda.OutOfMemoryError(f"emulated: {size * per_item} bytes > {memory}")
        x = torch.randn(size, features, device=device)
        loss = model(x).square().mean()
        precision.step(loss, optimizer)
        return float(loss.detach())

    feedback = RecordingFeedback()
    backoff = OomBackoff(start, feedback, "row", "Use a smaller batch.")
    loss = backoff.run(step)
    assert np.isfinite(loss) and len(tried) >= 3  # 4x, 2x and 1x the memory cannot fit
    assert tried == [start >> i for i in range(len(tried))] and backoff.batch_size == tried[-1]
    assert tried[-1] * per_item <= memory
    assert feedback.warnings == [f"CUDA out of memory: retrying with batches of {n} rows." for n in tried[1:]]
    if CUDA:
        del model, optimizer
        torch.cuda.empty_cache()
        assert torch.cuda.memory_allocated(device) < 2**30  # the failed batches left nothing behind

