"""segment_raster with ONNX models: SatSeg's own export gives the .satseg model's result, ONNX and .satseg models
mix in ensembles, Deepness-style models run (fixed tile size included), bad files say what is wrong."""

import os

import numpy as np
import pytest
import rasterio

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from sample_data.generate import generate_scene, read_buildings
from satseg_plugin.core.errors import InputError
from satseg_plugin.core.labels import LabelSet
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.models.onnx_export import export_onnx, raster_samples
from satseg_plugin.pipelines.segmentation.segment import InferenceConfig, segment_raster
from satseg_plugin.pipelines.segmentation.train import TrainConfig, train_segmentation
from tests.unit.models.onnx_files import deepness_model, reference

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(encoder="resnet18", patch_size=64, batch_size=4, epochs=1, batches_per_epoch=2, max_val_tiles=4)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(str(tmp_path_factory.mktemp("scene")), size=256, seed=3)


@pytest.fixture(scope="module")
def models(scene, tmp_path_factory):
    """A tiny model trained on the sample scene, and its ONNX export checked on the scene's tiles."""
    out = tmp_path_factory.mktemp("model")
    buildings = read_buildings(scene["buildings"])
    scene = scene["scene"]
    labels = LabelSet([b.polygon for b in buildings], [1] * len(buildings))
    result = train_segmentation(scene, labels, str(out / "m.satseg"), TrainConfig(**TINY), "cpu",
                                log_path=str(out / "log.csv"), plot_path=str(out / "curve.png"))
    exported = export_onnx(result.model_path, str(out / "m.onnx"),
                           samples=raster_samples(scene, [1, 2, 3], 128, count=2))
    assert exported.max_difference <= 1e-4 and (2, 3, 128, 128) in exported.checked_shapes
    return result.model_path, exported.path


def _segment(scene, model_paths, out, name, **config):
    prob, mask = os.path.join(out, f"{name}_p.tif"), os.path.join(out, f"{name}_m.tif")
    feedback = RecordingFeedback()
    result = segment_raster(scene["scene"], model_paths, prob, mask, InferenceConfig(**config), "cpu", feedback)
    with rasterio.open(prob) as p, rasterio.open(mask) as m:
        return result, p.read(), m.read(), feedback


def test_exported_model_gives_the_same_probabilities_and_mask(scene, models, tmp_path):
    satseg, onnx_path = models
    torch_result, torch_prob, torch_mask, _ = _segment(scene, [satseg], str(tmp_path), "torch", tile_size=128)
    onnx_result, onnx_prob, onnx_mask, feedback = _segment(scene, [onnx_path], str(tmp_path), "onnx", tile_size=128)
    assert np.abs(onnx_prob - torch_prob).max() <= 1e-4
    assert np.array_equal(onnx_mask, torch_mask) and onnx_result.positive_pixels == torch_result.positive_pixels
    # the model's own threshold and classes travel in the ONNX metadata
    assert (onnx_result.threshold, onnx_result.classes) == (torch_result.threshold, torch_result.classes)
    assert any("onnxruntime CPUExecutionProvider, satseg metadata" in line for line in feedback.infos)


def test_satseg_and_onnx_models_form_an_ensemble(scene, models, tmp_path):
    satseg, onnx_path = models
    _, alone, alone_mask, _ = _segment(scene, [satseg], str(tmp_path), "alone", tile_size=128, tta=True)
    _, mixed, mixed_mask, feedback = _segment(scene, [satseg, onnx_path], str(tmp_path), "mixed", tile_size=128,
                                              tta=True, weights=(0.3, 0.7))
    # the same network twice: any weights give its probabilities again
    assert np.abs(mixed - alone).max() <= 1e-4 and np.array_equal(mixed_mask, alone_mask)
    assert any("m.onnx" in line and "weight 0.700" in line for line in feedback.infos)


def test_a_deepness_model_with_a_fixed_tile_size_runs(scene, tmp_path):
    model = deepness_model(str(tmp_path / "deepness.onnx"), size=64)
    result, prob, mask, feedback = _segment(scene, [model], str(tmp_path), "deepness", tile_size=128)
    with rasterio.open(scene["scene"]) as src:
        raw = src.read().astype(np.float32)[None]
    expected = reference(raw)[0]
    # a per-pixel network: the blended sweep of 64 px tiles gives the per-pixel reference exactly
    assert prob.shape == expected.shape and np.abs(prob - expected).max() <= 1e-5
    assert np.array_equal(mask[0], (expected[0] >= 0.6).astype(np.uint8))
    assert result.threshold == 0.6 and result.classes == ["building"]
    assert any("TILE_SIZE 128 px ignored: the ONNX model takes tiles of 64 px only" in line for line in feedback.infos)
    assert any("tiles of 64 px" in line for line in feedback.infos)


def test_ensemble_members_must_agree(scene, models, tmp_path):
    _, onnx_path = models
    other = deepness_model(str(tmp_path / "other.onnx"), size=None, class_names={0: "background", 1: "tree"})
    with pytest.raises(InputError, match="MODELS: 'other.onnx' uses bands .* classes \\['tree'\\]"):
        _segment(scene, [onnx_path, other], str(tmp_path), "bad")


def test_bad_onnx_files_give_errors_naming_models(scene, models, tmp_path):
    _, onnx_path = models
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(open(onnx_path, "rb").read()[:5000])
    with pytest.raises(InputError, match=r"MODELS: .*cut\.onnx' is not an ONNX model"):
        _segment(scene, [str(truncated)], str(tmp_path), "cut")
    no_names = deepness_model(str(tmp_path / "no_names.onnx"), class_names=None)
    with pytest.raises(InputError, match=r"MODELS: .*no_names\.onnx' has no 'class_names' metadata"):
        _segment(scene, [no_names], str(tmp_path), "no_names")
    assert not any(name.startswith(("cut", "no_names")) and name.endswith(".tif") for name in os.listdir(tmp_path))
