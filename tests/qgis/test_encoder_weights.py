"""satseg:trainsegmentation with ENCODER_WEIGHTS / ENCODER_WEIGHTS_FILE in real QGIS (processing.run, no network)."""

import hashlib
import urllib.error

import pytest
from qgis.core import QgsProcessingException

from sample_data.generate import generate_scene

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
safetensors_torch = pytest.importorskip("safetensors.torch")
pytestmark = pytest.mark.slow

TINY = {"ENCODER": "resnet18", "PATCH_SIZE": 64, "BATCH_SIZE": 2, "EPOCHS": 1, "BATCHES_PER_EPOCH": 1,
        "DEVICE": 1}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(str(tmp_path_factory.mktemp("scene")), size=256, seed=5)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    from satseg_plugin.core import cache

    def no_network(request, timeout=None):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(cache, "urlopen", no_network)
    monkeypatch.setenv(cache.WEIGHTS_DIR_ENV, str(tmp_path / "weights_cache"))
    cache.reachable.cache_clear()
    yield str(tmp_path / "weights_cache")
    cache.reachable.cache_clear()


def test_parameters_are_main_ones(session_plugin):
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition

    session_plugin.initProcessing()
    alg = QgsApplication.processingRegistry().algorithmById("satseg:trainsegmentation")
    mode = alg.parameterDefinition("ENCODER_WEIGHTS")
    assert mode.options() == ["auto", "none", "imagenet"] and mode.defaultValue() == 0
    assert not mode.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    weights_file = alg.parameterDefinition("ENCODER_WEIGHTS_FILE")
    assert weights_file.flags() & QgsProcessingParameterDefinition.FlagOptional
    assert not weights_file.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    assert "SATSEG_WEIGHTS_DIR" in alg.shortHelpString()


def test_train_from_a_local_weights_file(scene, tmp_path, offline, session_plugin):
    import processing

    from satseg_plugin.models.checkpoint import load_checkpoint
    from satseg_plugin.models.registry import build_model

    session_plugin.initProcessing()
    torch.manual_seed(0)
    weights = str(tmp_path / "encoder.safetensors")
    state = build_model("unet", "resnet18").encoder.state_dict()
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, weights)
    result = processing.run("satseg:trainsegmentation", dict(
        TINY, INPUT=scene["scene"], LABELS=scene["buildings"] + "|layername=buildings", ENCODER_WEIGHTS=1,
        ENCODER_WEIGHTS_FILE=weights, OUTPUT_MODEL=str(tmp_path / "m.satseg")))
    init = load_checkpoint(result["OUTPUT_MODEL"]).metadata.extra["init"]
    assert init["init"] == "file" and init["sha256"] == hashlib.sha256(open(weights, "rb").read()).hexdigest()


def test_imagenet_offline_says_what_to_download(scene, tmp_path, offline, run_alg):
    with pytest.raises(QgsProcessingException, match="ENCODER_WEIGHTS: cannot download") as err:
        run_alg("satseg:trainsegmentation", dict(
            TINY, INPUT=scene["scene"], LABELS=scene["buildings"] + "|layername=buildings", ENCODER_WEIGHTS=2,
            OUTPUT_MODEL=str(tmp_path / "m.satseg")))
    assert "resnet18-imagenet-" in str(err.value) and offline in str(err.value)
    assert not (tmp_path / "m.satseg").exists()
