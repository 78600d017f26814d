"""The scene model (torchvision ResNet-18): shapes, pooled features, and strict loading from a SatSeg model file
(own head, or backbone only under a new head), refusing files that do not fit."""

from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from satseg_plugin.core.errors import CheckpointError, InputError
from satseg_plugin.models.checkpoint import ModelMetadata, load_checkpoint, model_tensors, save_checkpoint
from satseg_plugin.models.nets.scene import (
    SCENE_ARCHITECTURE,
    build_scene_model,
    feature_dim,
    features,
    scene_model_from_checkpoint,
)

CLASSES = ["urban", "rural", "uninhabited"]
META = ModelMetadata(kind="scene", architecture=SCENE_ARCHITECTURE, encoder="torchvision", in_channels=3,
                     classes=CLASSES, bands=[1, 2, 3], mean=[0.0] * 3, std=[1.0] * 3, patch_size=32,
                     pixel_size=(1.0, 1.0))


def _trained_like(in_channels=3, classes=3, seed=0):
    """A random model with non-default batch-norm statistics (so a partial load would show)."""
    torch.manual_seed(seed)
    model = build_scene_model(classes, in_channels)
    with torch.no_grad():
        model.train()
        model(torch.randn(4, in_channels, 32, 32) * 3 + 1)
    return model.eval()


def _save(path, model, meta=META, drop=(), add=None):
    tensors = model_tensors(model)
    for key in drop:
        del tensors[f"model.{key}"]
    tensors.update(add or {})
    save_checkpoint(str(path), tensors, meta)
    return load_checkpoint(str(path), kind="scene")


def test_shapes_and_features():
    model = _trained_like()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        pooled = features(model, x)
    assert logits.shape == (2, 3) and pooled.shape == (2, 512) and feature_dim(model) == 512
    torch.testing.assert_close(model.fc(pooled), logits)  # features are exactly what the head reads
    four = build_scene_model(5, in_channels=4)
    assert four.conv1.in_channels == 4 and four(torch.randn(2, 4, 64, 48)).shape == (2, 5)
    for classes, bands in ((0, 3), (3, 0)):
        with pytest.raises(InputError):
            build_scene_model(classes, bands)


def test_round_trip_with_own_head(tmp_path):
    model = _trained_like()
    ckpt = _save(tmp_path / "m.satseg", model)
    loaded = scene_model_from_checkpoint(ckpt)
    assert not loaded.training
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_new_head_keeps_the_whole_backbone(tmp_path):
    model = _trained_like()
    loaded = scene_model_from_checkpoint(_save(tmp_path / "m.satseg", model), num_classes=7)
    assert loaded.fc.out_features == 7
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(features(loaded, x), features(model, x), rtol=0, atol=0)
    for key, value in model.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("case", ["missing_backbone", "missing_head", "unexpected", "bands"])
def test_weights_that_do_not_fit_are_refused(tmp_path, case):
    model = _trained_like()
    if case == "missing_backbone":
        ckpt = _save(tmp_path / "m.satseg", model, drop=["layer3.1.bn2.running_mean"])
    elif case == "missing_head":
        ckpt = _save(tmp_path / "m.satseg", model, drop=["fc.bias"])
    elif case == "unexpected":
        ckpt = _save(tmp_path / "m.satseg", model, add={"model.layer5.weight": torch.zeros(1)})
    else:  # the file says 4 bands but holds 3-band weights
        ckpt = _save(tmp_path / "m.satseg", model,
                     meta=replace(META, in_channels=4, bands=[1, 2, 3, 4], mean=[0.0] * 4, std=[1.0] * 4))
    with pytest.raises(CheckpointError) as err:
        scene_model_from_checkpoint(ckpt)
    assert "m.satseg" in str(err.value)
    if case != "missing_head":  # a new head does not excuse a damaged backbone
        with pytest.raises(CheckpointError):
            scene_model_from_checkpoint(ckpt, num_classes=5)
    else:
        assert scene_model_from_checkpoint(ckpt, num_classes=5).fc.out_features == 5
