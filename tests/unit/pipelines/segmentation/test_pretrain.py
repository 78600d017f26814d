"""pretrain_encoder: SimCLR on random crops of a real raster file, written as an encoder model that INIT_WEIGHTS takes."""

import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")

from sample_data.generate import generate_scene
from satseg_plugin.core.errors import CanceledError, InputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.models.checkpoint import load_checkpoint
from satseg_plugin.models.pretrained import init_from_model_file
from satseg_plugin.models.registry import build_model
from satseg_plugin.pipelines.segmentation.config import TrainConfig
from satseg_plugin.pipelines.segmentation.pretrain import (
    PretrainConfig,
    make_views,
    nt_xent,
    pretrain_encoder,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

TINY = dict(encoder="resnet18", patch_size=64, view_size=32, batch_size=4, epochs=2, batches_per_epoch=2,
            encoder_weights="none")
#: Long enough for the loss to fall clearly (24 batches of 16 crops; about 25 s on one thread).
LEARNS = dict(TINY, batch_size=16, epochs=6, batches_per_epoch=4)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(str(tmp_path_factory.mktemp("scene")), size=256, seed=3)["scene"]


@pytest.fixture(scope="module")
def pretrained(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("encoder")
    feedback = RecordingFeedback()
    result = pretrain_encoder(scene, str(out / "enc.satseg"), PretrainConfig(**LEARNS), "cpu", feedback,
                              log_path=str(out / "log.csv"))
    return result, feedback


def test_defaults_follow_training_and_the_settings_module_stays_light():
    assert PretrainConfig.encoder == TrainConfig.encoder and PretrainConfig.architecture == TrainConfig.architecture
    PretrainConfig().validate()
    # the Processing provider reads the defaults at QGIS start: no numpy, rasterio or torch behind them
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('numpy', 'rasterio', 'torch', 'shapely'): raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from satseg_plugin.pipelines.segmentation.config import PretrainConfig\n"
            "print(PretrainConfig().encoder)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == TrainConfig.encoder, out.stderr


def test_contrastive_loss_falls_and_pairs_are_found(pretrained):
    result, feedback = pretrained
    losses = [row["loss"] for row in result.history]
    assert result.epochs_run == 6 and result.steps == 24 and not result.canceled
    # each epoch sees fresh random crops, so single epochs are noisy: compare the halves of the run
    assert np.mean(losses[3:]) < np.mean(losses[:3]) - 0.05
    # chance level is ln(2N - 1) = ln(31) = 3.43 and a pair accuracy of 1/31: the encoder tells crops apart
    assert losses[-1] < np.log(31) and np.mean([row["pair_accuracy"] for row in result.history[3:]]) > 2 / 31
    assert feedback.progress[-1] == 100.0 and any("Epoch 6: contrastive loss" in m for m in feedback.infos)
    with open(result.log_path) as handle:
        assert handle.readline().strip().split(",")[:3] == ["epoch", "loss", "pair_accuracy"]


def test_model_file_holds_the_encoder_and_feeds_init_weights(pretrained, scene):
    result, _ = pretrained
    ckpt = load_checkpoint(result.model_path, kind="encoder")
    meta = ckpt.metadata
    assert meta.classes == [] and meta.bands == [1, 2, 3] and meta.encoder == "resnet18"
    assert meta.extra["init"] == {"init": "none"} and meta.extra["pretrain_config"]["view_size"] == 32
    with rasterio.open(scene) as src:
        assert meta.pixel_size == (abs(src.res[0]), abs(src.res[1]))
        expected_mean = src.read(1).astype(float).mean()
    assert meta.mean[0] == pytest.approx(expected_mean, rel=1e-6)

    torch.manual_seed(7)
    model = build_model("unet", "resnet18", in_channels=3, classes=1)
    random_state = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    origin = init_from_model_file(model, result.model_path, "resnet18", 3, "unet/resnet18 model")
    loaded = model.encoder.state_dict()
    assert origin["init"] == "encoder" and origin["tensors"] == len(loaded) == len(ckpt.model_state)
    assert all(torch.equal(loaded[k], ckpt.model_state[k]) for k in loaded)
    changed = [k for k in loaded if k.endswith("weight") and not torch.equal(loaded[k], random_state[k])]
    assert len(changed) > 10  # pretraining moved the weights away from a random start


def test_views_overlap_in_content_and_loss_rewards_matching_pairs():
    generator = torch.Generator().manual_seed(0)
    crops = torch.randn(4, 5, 64, 64)  # any band count
    first, second = make_views(crops, 32, 0.4, generator)
    assert first.shape == second.shape == (4, 5, 32, 32) and not torch.equal(first, second)
    z = torch.randn(6, 16)
    matched, matched_acc = nt_xent(z, z + 0.01 * torch.randn(6, 16), 0.2)
    shuffled, _ = nt_xent(z, torch.randn(6, 16), 0.2)
    assert matched < shuffled and float(matched_acc) == 1.0


@pytest.mark.parametrize("settings, parameter", [
    (dict(batch_size=1), "BATCH_SIZE"),
    (dict(view_size=48), "VIEW_SIZE"),
    (dict(patch_size=16), "PATCH_SIZE"),
    (dict(temperature=0.0), "TEMPERATURE"),
    (dict(min_scale=0.0), "MIN_SCALE"),
    (dict(epochs=0), "EPOCHS"),
    (dict(learning_rate=float("nan")), "LEARNING_RATE"),
    (dict(encoder="resnet9000"), "ENCODER"),
])
def test_bad_settings_name_the_parameter(scene, tmp_path, settings, parameter):
    with pytest.raises(InputError) as err:
        pretrain_encoder(scene, str(tmp_path / "enc.satseg"), PretrainConfig(**dict(TINY, **settings)), "cpu")
    assert err.value.parameter == parameter
    assert not (tmp_path / "enc.satseg").exists()


def test_all_nodata_raster_is_refused(tmp_path):
    path = str(tmp_path / "empty.tif")
    data = np.zeros((3, 96, 96), np.uint8)
    data[:, :8, :8] = 200  # a few valid pixels, so the statistics exist, but no crop is mostly valid
    with rasterio.open(path, "w", driver="GTiff", width=96, height=96, count=3, dtype="uint8", nodata=0,
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 1, 1)) as dst:
        dst.write(data)
    with pytest.raises(InputError, match="mostly nodata") as err:
        pretrain_encoder(path, str(tmp_path / "enc.satseg"), PretrainConfig(**TINY), "cpu")
    assert err.value.parameter == "INPUT" and not (tmp_path / "enc.satseg").exists()


def test_cancel_before_an_epoch_writes_nothing_and_after_keeps_the_last(scene, tmp_path):
    with pytest.raises(CanceledError):
        pretrain_encoder(scene, str(tmp_path / "a.satseg"), PretrainConfig(**TINY), "cpu", RecordingFeedback(1))
    assert not (tmp_path / "a.satseg").exists()
    feedback = RecordingFeedback(cancel_after=3)  # during the second epoch
    result = pretrain_encoder(scene, str(tmp_path / "b.satseg"), PretrainConfig(**TINY), "cpu", feedback)
    assert result.canceled and result.epochs_run == 1 and result.steps == 2
    assert load_checkpoint(result.model_path).metadata.metrics["epochs_run"] == 1
    assert any("keeping the best model so far (epoch 1" in m for m in feedback.warnings)


def test_a_raster_smaller_than_a_crop_is_read_in_crops_of_its_shorter_side(tmp_path):
    path = str(tmp_path / "small.tif")
    data = np.random.default_rng(0).integers(0, 255, (3, 40, 90), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=90, height=40, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 1, 1)) as dst:
        dst.write(data)
    feedback = RecordingFeedback()
    result = pretrain_encoder(path, str(tmp_path / "enc.satseg"), PretrainConfig(**dict(TINY, epochs=1)), "cpu",
                              feedback)
    assert os.path.exists(result.model_path)
    assert any("crops of 40 px are used" in w for w in feedback.warnings)


def test_a_raster_narrower_than_the_smallest_crop_is_refused_naming_input(tmp_path):
    path = str(tmp_path / "strip.tif")
    with rasterio.open(path, "w", driver="GTiff", width=200, height=20, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 1, 1)) as dst:
        dst.write(np.full((3, 20, 200), 90, np.uint8))
    with pytest.raises(InputError, match="too small to pretrain") as err:
        pretrain_encoder(path, str(tmp_path / "enc.satseg"), PretrainConfig(**TINY), "cpu")
    assert err.value.parameter == "INPUT" and not (tmp_path / "enc.satseg").exists()
