"""train_segmentation starts from ENCODER_WEIGHTS or a ClusterNet's encoder and records where the weights came from."""

import hashlib
import urllib.error

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from satseg_plugin.core import cache
from satseg_plugin.core.errors import InputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.models.checkpoint import ModelMetadata, load_checkpoint, model_tensors, save_checkpoint
from satseg_plugin.models.nets.clusternet import build_clusternet
from satseg_plugin.models.registry import build_model
from satseg_plugin.pipelines.segmentation.train import TrainConfig, train_segmentation

from . import test_training_inference

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The generated scene and its buildings (a module-scoped fixture shared with the training tests).
scene = test_training_inference.scene

TINY = dict(encoder="resnet18", patch_size=64, batch_size=2, epochs=1, batches_per_epoch=1, max_val_tiles=2)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    def no_network(request, timeout=None):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(cache, "urlopen", no_network)
    cache.reachable.cache_clear()
    yield
    cache.reachable.cache_clear()


def test_weights_file_is_used_and_recorded(scene, tmp_path):
    torch.manual_seed(0)
    encoder = build_model("unet", "resnet18").encoder
    weights = str(tmp_path / "resnet18_encoder.safetensors")
    safetensors_torch.save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, weights)
    feedback = RecordingFeedback()
    result = train_segmentation(scene[0], scene[1], str(tmp_path / "m.satseg"),
                                TrainConfig(**TINY, encoder_weights=weights), "cpu", feedback)
    init = load_checkpoint(result.model_path).metadata.extra["init"]
    assert init["init"] == "file" and init["file"] == "resnet18_encoder.safetensors"
    assert init["sha256"] == hashlib.sha256(open(weights, "rb").read()).hexdigest()
    assert any("Encoder initialised from file weights" in m for m in feedback.infos)


def test_auto_offline_trains_from_random_weights_as_before(scene, tmp_path, monkeypatch):
    monkeypatch.setenv(cache.WEIGHTS_DIR_ENV, str(tmp_path / "empty_cache"))
    result = train_segmentation(scene[0], scene[1], str(tmp_path / "m.satseg"), TrainConfig(**TINY), "cpu")
    assert load_checkpoint(result.model_path).metadata.extra["init"]["init"] == "none"
    with pytest.raises(InputError, match="ENCODER_WEIGHTS: cannot download"):
        train_segmentation(scene[0], scene[1], str(tmp_path / "n.satseg"),
                           TrainConfig(**TINY, encoder_weights="imagenet"), "cpu")
    assert not (tmp_path / "n.satseg").exists()


def test_clusternet_init_weights_gives_the_encoder(scene, tmp_path):
    torch.manual_seed(1)
    net = build_clusternet("unet", "resnet18", 3, 8, 4)
    path = str(tmp_path / "clusters.satseg")
    save_checkpoint(path, model_tensors(net), ModelMetadata(
        kind="clusternet", architecture="unet", encoder="resnet18", in_channels=3, classes=["a", "b", "c", "d"],
        bands=[1, 2, 3], mean=[0.0] * 3, std=[1.0] * 3, patch_size=64, pixel_size=(0.5, 0.5),
        extra={"feature_dim": 8}))
    feedback = RecordingFeedback()
    result = train_segmentation(scene[0], scene[1], str(tmp_path / "m.satseg"),
                                TrainConfig(**TINY, init_weights=path), "cpu", feedback)
    init = load_checkpoint(result.model_path).metadata.extra["init"]
    assert init["init"] == "clusternet" and init["tensors"] == len(net.backbone.encoder.state_dict())
    assert any("tensors taken" in m for m in feedback.infos)
    with pytest.raises(InputError, match="INIT_WEIGHTS: .*set ENCODER to resnet18"):
        train_segmentation(scene[0], scene[1], str(tmp_path / "x.satseg"),
                           TrainConfig(**dict(TINY, encoder="mobilenet_v2"), init_weights=path), "cpu")
