"""satseg:pretrainencoder in real QGIS (processing.run), its encoder then passed to satseg:trainsegmentation."""

import pytest
from qgis.core import QgsProcessingException

from sample_data.generate import generate_scene

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
pytestmark = pytest.mark.slow

PRETRAIN = {"ENCODER": "resnet18", "ENCODER_WEIGHTS": 1, "PATCH_SIZE": 64, "VIEW_SIZE": 32, "BATCH_SIZE": 4,
            "EPOCHS": 1, "BATCHES_PER_EPOCH": 2, "DEVICE": 1}
TRAIN = {"ENCODER": "resnet18", "ENCODER_WEIGHTS": 1, "PATCH_SIZE": 64, "BATCH_SIZE": 2, "EPOCHS": 1,
         "BATCHES_PER_EPOCH": 1, "DEVICE": 1}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(str(tmp_path_factory.mktemp("scene")), size=256, seed=5)


def test_parameters_and_help(qgis_app):
    from qgis.core import QgsApplication

    from satseg_plugin.pipelines.segmentation.config import TrainConfig

    alg = QgsApplication.processingRegistry().algorithmById("satseg:pretrainencoder")
    assert alg is not None and alg.group() == QgsApplication.processingRegistry().algorithmById(
        "satseg:trainsegmentation").group()
    assert alg.parameterDefinition("ENCODER").defaultValue() == TrainConfig.encoder
    assert alg.parameterDefinition("ENCODER_WEIGHTS").options() == ["auto", "none", "imagenet"]
    assert {"OUTPUT_MODEL", "OUTPUT_LOG"} <= {p.name() for p in alg.destinationParameterDefinitions()}
    assert "INIT_WEIGHTS" in alg.shortHelpString() and "without downloading anything" in alg.shortHelpString()


def test_pretrained_encoder_starts_segmentation_training(scene, tmp_path, run_alg):
    from satseg_plugin.models.checkpoint import load_checkpoint

    encoder = str(tmp_path / "encoder.satseg")
    pretrained = run_alg("satseg:pretrainencoder", dict(PRETRAIN, INPUT=scene["scene"], OUTPUT_MODEL=encoder,
                                                        OUTPUT_LOG=str(tmp_path / "pretrain.csv")))
    assert pretrained["OUTPUT_MODEL"] == encoder and pretrained["STEPS"] == 2 and pretrained["FINAL_LOSS"] > 0
    assert open(pretrained["OUTPUT_LOG"]).readline().startswith("epoch,loss,pair_accuracy")
    weights = load_checkpoint(encoder, kind="encoder").model_state

    trained = run_alg("satseg:trainsegmentation", dict(
        TRAIN, INPUT=scene["scene"], LABELS=scene["buildings"] + "|layername=buildings", INIT_WEIGHTS=encoder,
        OUTPUT_MODEL=str(tmp_path / "model.satseg")))
    meta = load_checkpoint(trained["OUTPUT_MODEL"]).metadata
    assert meta.extra["init"]["init"] == "encoder" and meta.extra["init"]["tensors"] == len(weights)


def test_wrong_encoder_is_refused_before_training(scene, tmp_path, run_alg):
    encoder = str(tmp_path / "encoder.satseg")
    run_alg("satseg:pretrainencoder", dict(PRETRAIN, INPUT=scene["scene"], OUTPUT_MODEL=encoder))
    with pytest.raises(QgsProcessingException, match="INIT_WEIGHTS: .*set ENCODER to resnet18"):
        run_alg("satseg:trainsegmentation", dict(
            TRAIN, ENCODER="resnet34", INPUT=scene["scene"], LABELS=scene["buildings"] + "|layername=buildings",
            INIT_WEIGHTS=encoder, OUTPUT_MODEL=str(tmp_path / "model.satseg")))
    assert not (tmp_path / "model.satseg").exists()
