"""Mean-teacher scene pretraining on synthetic urban / rural / uninhabited patches: it learns (validation
accuracy), the model file holds the kept teacher, the starting model is loaded strictly, cancel writes nothing,
and every refusal names its parameter. One tiny model is trained per module and reused."""

import csv
import math
import os
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from satseg_plugin.core.errors import CanceledError, CheckpointError, InputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.models.checkpoint import ModelMetadata, load_checkpoint, model_tensors, save_checkpoint
from satseg_plugin.models.nets.scene import build_scene_model, scene_model_from_checkpoint
from satseg_plugin.pipelines.clustering.scene.data import load_patches
from satseg_plugin.pipelines.clustering.scene.train import (
    SceneTrainConfig,
    augment_scenes,
    pretrain_scene,
    sigmoid_rampup,
    stratified_split,
)
from tests.unit.pipelines.clustering.test_scene_data import KINDS, write_scene_patches

CLASSES = list(KINDS)
N_PER_KIND = 14
# A short run: RAdam at 3e-3 and a fast teacher (EMA 0.8) so 6 epochs of 3 batches learn the three kinds.
# The defaults (1e-3, EMA 0.999, 20 ramp-up epochs) are for runs of thousands of steps.
TINY = SceneTrainConfig(epochs=6, batch_size=13, learning_rate=3e-3, ema_decay=0.8, rampup_epochs=2,
                        val_fraction=0.3, seed=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    kinds = list(KINDS) * N_PER_KIND  # 42 patches, interleaved
    paths = write_scene_patches(str(tmp_path_factory.mktemp("patches")), kinds, size=32, seed=1)
    truth = np.array([CLASSES.index(k) for k in kinds])
    labels = np.zeros((len(kinds), 3))
    labels[np.arange(30), truth[:30]] = 1.0  # 10 labelled per class, the last 12 patches unlabelled
    labels[0] = [0.6, 0.3, 0.0]               # a soft label (a patch partly covered by two classes)
    return paths, labels, truth


@pytest.fixture(scope="module")
def trained(patches, tmp_path_factory):
    paths, labels, _ = patches
    out = tmp_path_factory.mktemp("model")
    feedback = RecordingFeedback()
    result = pretrain_scene(paths, labels, CLASSES, str(out / "scene.satseg"), TINY, "cpu", feedback,
                            log_path=str(out / "log.csv"))
    return result, feedback


def test_learns_the_three_kinds(trained, patches):
    result, _ = trained
    _, labels, truth = patches
    assert result.val_accuracy >= 0.9, result.history
    # the seeded stratified split: 3 of the 10 labelled patches of each class, none unlabelled
    assert len(result.val_indices) == 9 and np.bincount(truth[result.val_indices]).tolist() == [3, 3, 3]
    assert (labels[result.val_indices].sum(axis=1) > 0).all()
    assert sorted(np.r_[result.train_indices, result.val_indices].tolist()) == list(range(42))
    assert result.probabilities.shape == (42, 3) and result.probabilities.dtype == np.float32
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(result.predicted, result.probabilities.argmax(axis=1))
    unlabelled = np.arange(30, 42)
    assert (result.predicted[unlabelled] == truth[unlabelled]).mean() >= 0.75  # chance: 1/3


def test_model_file_holds_the_kept_teacher(trained, patches):
    result, _ = trained
    paths = patches[0]
    ckpt = load_checkpoint(result.model_path, kind="scene")
    meta = ckpt.metadata
    assert (meta.architecture, meta.encoder, meta.in_channels, meta.bands) == ("resnet18", "torchvision", 3, [1, 2, 3])
    assert meta.classes == CLASSES and meta.patch_size == 32 and meta.crs_units == "metre"
    stack = load_patches(paths)
    np.testing.assert_allclose(meta.mean, stack.mean) and np.testing.assert_allclose(meta.std, stack.std)
    assert meta.metrics["val_accuracy"] == pytest.approx(result.val_accuracy)
    assert meta.metrics["best_epoch"] == result.best_epoch and meta.metrics["val_patches"] == 9
    assert meta.metrics["labelled"] == 30 and meta.metrics["unlabelled"] == 12
    assert meta.extra["train_config"]["ema_decay"] == 0.8 and meta.extra["class_counts"] == {c: 10 for c in CLASSES}
    # the file's network reproduces the returned probabilities: it is the kept teacher, batch norm included
    model = scene_model_from_checkpoint(ckpt)
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(stack.normalized())), dim=1).numpy()
    np.testing.assert_allclose(probs, result.probabilities, atol=1e-5)


def test_log_has_one_row_per_epoch(trained):
    result, feedback = trained
    with open(result.log_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == list(range(1, TINY.epochs + 1))
    assert set(rows[0]) >= {"loss", "supervised_loss", "consistency_loss", "consistency_weight", "train_accuracy",
                            "val_accuracy", "val_loss", "best"}
    weights = [float(r["consistency_weight"]) for r in rows]
    assert weights == sorted(weights) and weights[-1] == pytest.approx(TINY.consistency_weight)
    assert result.history[result.best_epoch - 1]["val_accuracy"] == pytest.approx(result.val_accuracy)
    assert feedback.progress == sorted(feedback.progress) and feedback.progress[-1] == 100.0


def test_starts_from_a_scene_model_strictly(trained, patches, tmp_path):
    result, _ = trained
    paths, labels, _ = patches
    # with a vanishing learning rate the teacher stays at the starting weights: it scores like them at once
    config = replace(TINY, epochs=1, learning_rate=1e-9, init_weights=result.model_path)
    again = pretrain_scene(paths, labels, CLASSES, str(tmp_path / "again.satseg"), config, "cpu")
    assert again.val_accuracy >= 0.9
    np.testing.assert_array_equal(again.val_indices, result.val_indices)

    other = build_scene_model(3, 4)  # a 4-band model cannot start a 3-band training
    meta = ModelMetadata(kind="scene", architecture="resnet18", encoder="torchvision", in_channels=4, classes=CLASSES,
                         bands=[1, 2, 3, 4], mean=[0.0] * 4, std=[1.0] * 4, patch_size=32, pixel_size=(1.0, 1.0))
    save_checkpoint(str(tmp_path / "four.satseg"), model_tensors(other), meta)
    with pytest.raises(InputError) as err:
        pretrain_scene(paths, labels, CLASSES, str(tmp_path / "x.satseg"),
                       replace(TINY, init_weights=str(tmp_path / "four.satseg")), "cpu")
    assert err.value.parameter == "INIT_WEIGHTS"
    broken = model_tensors(build_scene_model(3, 3))
    del broken["model.layer1.0.conv1.weight"]  # a damaged backbone is refused, never silently skipped
    save_checkpoint(str(tmp_path / "broken.satseg"), broken, replace(meta, in_channels=3, bands=[1, 2, 3],
                                                                     mean=[0.0] * 3, std=[1.0] * 3))
    for bad in ("broken.satseg", "missing.satseg"):
        with pytest.raises(CheckpointError):
            pretrain_scene(paths, labels, CLASSES, str(tmp_path / "x.satseg"),
                           replace(TINY, init_weights=str(tmp_path / bad)), "cpu")
    assert not os.path.exists(tmp_path / "x.satseg")


def test_cancel_writes_nothing(trained, patches, tmp_path):
    paths, labels, _ = patches
    feedback = RecordingFeedback(cancel_after=len(paths) + 4)  # one report per patch read, then one per batch
    with pytest.raises(CanceledError):
        pretrain_scene(paths, labels, CLASSES, str(tmp_path / "m.satseg"), TINY, "cpu", feedback,
                       str(tmp_path / "log.csv"))
    assert any("Epoch 1/" in line for line in feedback.infos)  # canceled in the second epoch's batches
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("case", ["none", "missing_class", "shape", "negative"])
def test_label_errors(case, patches, tmp_path):
    paths, labels, _ = patches
    labels = labels.copy()
    if case == "none":
        labels[:] = 0
    elif case == "missing_class":
        labels[:, 2] = 0
    elif case == "shape":
        labels = labels[:, :2]
    else:
        labels[3, 0] = -1
    with pytest.raises(InputError) as err:
        pretrain_scene(paths, labels, CLASSES, str(tmp_path / "m.satseg"), TINY, "cpu")
    assert err.value.parameter == "LABELS"
    if case == "missing_class":
        assert "'uninhabited'" in str(err.value)
    if case == "none":
        assert "no patch is labelled" in str(err.value)


def test_class_names_must_be_distinct(patches, tmp_path):
    paths, labels, _ = patches
    with pytest.raises(InputError) as err:
        pretrain_scene(paths, labels, ["urban", "urban", "x"], str(tmp_path / "m.satseg"), TINY, "cpu")
    assert err.value.parameter == "CLASSES"


@pytest.mark.parametrize("field, value, parameter", [
    ("epochs", 0, "EPOCHS"), ("batch_size", 1, "BATCH_SIZE"), ("learning_rate", 0.0, "LEARNING_RATE"),
    ("ema_decay", 1.0, "EMA_DECAY"), ("consistency_weight", -1.0, "CONSISTENCY_WEIGHT"),
    ("rampup_epochs", -1, "RAMPUP_EPOCHS"), ("val_fraction", 1.0, "VAL_FRACTION"),
])
def test_config_errors_name_the_parameter(field, value, parameter):
    with pytest.raises(InputError) as err:
        replace(SceneTrainConfig(), **{field: value}).validate()
    assert err.value.parameter == parameter
    SceneTrainConfig().validate()


def test_augmentations():
    images = torch.arange(4 * 3 * 8 * 8, dtype=torch.float32).reshape(4, 3, 8, 8)
    geometric = augment_scenes(images, torch.Generator().manual_seed(0), radiometric=False)
    assert geometric.shape == images.shape
    for before, after in zip(images, geometric):  # flips and 90-degree turns only move pixels
        assert torch.equal(before.flatten().sort().values, after.flatten().sort().values)
    assert not torch.equal(geometric, images)
    again = augment_scenes(images, torch.Generator().manual_seed(0), radiometric=False)
    assert torch.equal(geometric, again)
    grey = augment_scenes(images, torch.Generator().manual_seed(0), grey_p=1.0)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    wide = augment_scenes(torch.zeros(2, 3, 4, 6), torch.Generator().manual_seed(0))
    assert wide.shape == (2, 3, 4, 6)  # no 90-degree turns for rectangles


def test_rampup_and_split():
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(10, 10) == sigmoid_rampup(20, 10) == sigmoid_rampup(0, 0) == 1.0
    classes = np.array([0] * 10 + [1] * 2 + [2])
    train, val = stratified_split(classes, 0.2, seed=3)
    assert np.bincount(classes[val], minlength=3).tolist() == [2, 1, 0]  # at least one; a lone sample trains
    assert sorted(np.r_[train, val].tolist()) == list(range(13))
    np.testing.assert_array_equal(val, stratified_split(classes, 0.2, seed=3)[1])
    assert len(stratified_split(classes, 0.0, seed=3)[1]) == 0
