"""ENCODER is a drop-down in the toolbox as in the dock: the registry's one list, the config's default, and any other
smp encoder or ``tu-<timm name>`` from scripts (ENCODER) and from the dialog (the advanced ENCODER_NAME)."""

from __future__ import annotations

import pytest
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
)
from qgis.gui import QgsGui, QgsProcessingGui
from qgis.PyQt.QtWidgets import QComboBox

from sample_data.generate import generate_scene
from satseg_plugin.models.checkpoint import read_metadata
from satseg_plugin.models.registry import ENCODER_CHOICES
from satseg_plugin.pipelines.clustering.pixel.config import ClusterNetConfig
from satseg_plugin.pipelines.segmentation.config import PretrainConfig, TrainConfig
from satseg_plugin.processing.parameters import ENCODER_NAME, encoder_value

TRAINERS = [("satseg:trainsegmentation", TrainConfig), ("satseg:pretrainencoder", PretrainConfig),
            ("satseg:trainclusternet", ClusterNetConfig)]
TINY_TIMM = "tu-mobilenetv3_small_050"


def algorithm(alg_id):
    return QgsApplication.processingRegistry().createAlgorithmById(alg_id)


@pytest.mark.parametrize("alg_id, config", TRAINERS)
def test_encoder_is_a_drop_down_of_the_registry_list_at_the_config_default(qgis_app, alg_id, config):
    alg = algorithm(alg_id)
    encoder = alg.parameterDefinition("ENCODER")
    assert isinstance(encoder, QgsProcessingParameterEnum) and encoder.usesStaticStrings()
    assert encoder.options() == list(ENCODER_CHOICES) and encoder.defaultValue() == config.encoder
    other = alg.parameterDefinition(ENCODER_NAME)
    assert other.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    assert other.flags() & QgsProcessingParameterDefinition.FlagOptional
    assert encoder.clone().checkValueIsAcceptable(TINY_TIMM)  # scripts and qgis_process may pass any name
    assert encoder.checkValueIsAcceptable(2) and not encoder.checkValueIsAcceptable(len(ENCODER_CHOICES))
    assert not encoder.checkValueIsAcceptable("") and not encoder.checkValueIsAcceptable(1.5)


def test_encoder_value_prefers_the_other_name_then_the_choice_then_the_default(qgis_app):
    alg, context = algorithm("satseg:trainsegmentation"), QgsProcessingContext()
    assert encoder_value(alg, {}, "ENCODER", context) == TrainConfig.encoder
    assert encoder_value(alg, {"ENCODER": "resnet50"}, "ENCODER", context) == "resnet50"
    assert encoder_value(alg, {"ENCODER": TINY_TIMM}, "ENCODER", context) == TINY_TIMM
    assert encoder_value(alg, {"ENCODER": 2}, "ENCODER", context) == ENCODER_CHOICES[2]  # as the reference says
    assert encoder_value(alg, {"ENCODER": "0"}, "ENCODER", context) == ENCODER_CHOICES[0]  # qgis_process ENCODER=0
    assert encoder_value(alg, {"ENCODER": "resnet50", ENCODER_NAME: f" {TINY_TIMM} "}, "ENCODER", context) == TINY_TIMM
    assert encoder_value(alg, {"ENCODER": "resnet50", ENCODER_NAME: " "}, "ENCODER", context) == "resnet50"


def test_the_dialog_shows_a_drop_down_whose_value_is_the_encoder_name(qgis_app):
    alg = algorithm("satseg:trainsegmentation")  # owns the definition: kept alive
    definition = alg.parameterDefinition("ENCODER")
    wrapper = QgsGui.processingGuiRegistry().createParameterWidgetWrapper(definition, QgsProcessingGui.Standard)
    context = QgsProcessingContext()
    widget = wrapper.createWrappedWidget(context)
    assert isinstance(widget, QComboBox)
    assert [widget.itemText(i) for i in range(widget.count())] == list(ENCODER_CHOICES)
    assert wrapper.parameterValue() == TrainConfig.encoder
    wrapper.setParameterValue("resnet50", context)
    assert wrapper.parameterValue() == "resnet50"


@pytest.mark.slow
def test_a_timm_encoder_reaches_the_engine_by_either_parameter(run_alg, tmp_path):
    pytest.importorskip("faiss")
    scene = generate_scene(str(tmp_path / "scene"), size=128, seed=3)
    fast = {"INPUT": [scene["scene"]], "NUM_CLUSTERS": 4, "FEATURE_DIM": 8, "ROUNDS": 1, "STEPS_PER_ROUND": 1,
            "PATCH_SIZE": 64, "CROPS_PER_ROUND": 2, "BATCH_SIZE": 2, "SAMPLE_PIXELS": 2000, "DEVICE": 1}
    result = run_alg("satseg:trainclusternet", dict(fast, ENCODER="resnet18", ENCODER_NAME=TINY_TIMM,
                                                    OUTPUT_MODEL=str(tmp_path / "a.satseg")))
    assert read_metadata(result["OUTPUT_MODEL"]).encoder == TINY_TIMM
    with pytest.raises(QgsProcessingException, match="timm has no model 'nosuchnet'"):
        run_alg("satseg:trainclusternet", dict(fast, ENCODER="tu-nosuchnet", OUTPUT_MODEL=str(tmp_path / "b.satseg")))


@pytest.mark.slow
def test_qgis_process_passes_a_timm_encoder_name_to_the_engine(qgis_process, tmp_path):
    """QGIS's own enum check would refuse ``ENCODER=tu-...`` ("Wrong or missing parameter value"): the engine's
    answer shows that the name got through."""
    scene = generate_scene(str(tmp_path / "scene"), size=64, seed=3)
    out = qgis_process("run", "satseg:trainclusternet", "--", f"INPUT={scene['scene']}", "ENCODER=tu-nosuchnet",
                       "DEVICE=1", f"OUTPUT_MODEL={tmp_path / 'm.satseg'}", check=False)
    assert out.returncode != 0 and "timm has no model 'nosuchnet'" in out.stdout + out.stderr, out.stdout[-2000:]
