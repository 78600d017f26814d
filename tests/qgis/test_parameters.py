"""One source for choices and defaults: the Processing parameters read the registry, the device list and the engine's
config dataclasses, so every tool offers the same choices in the same order."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
from qgis.core import QgsApplication, QgsProcessingParameterEnum

from satseg_plugin.core.device import DEVICE_CHOICES
from satseg_plugin.models.registry import ARCHITECTURE_NAMES, ENCODER_CHOICES, architecture_labels
from satseg_plugin.processing.provider import ALGORITHMS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def provider_algorithms():
    return QgsApplication.processingRegistry().providerById("satseg").algorithms()


def algorithm_module(algorithm):
    return importlib.import_module(type(algorithm).__module__)


def test_every_architecture_and_device_enum_follows_the_one_list(qgis_app):
    seen = {"ARCHITECTURE": 0, "DEVICE": 0}
    for alg in provider_algorithms():
        for key, expected in (("ARCHITECTURE", architecture_labels()), ("DEVICE", list(DEVICE_CHOICES))):
            definition = alg.parameterDefinition(key)
            if definition is None:
                continue
            seen[key] += 1
            assert isinstance(definition, QgsProcessingParameterEnum), (alg.id(), key)
            assert definition.options() == expected, (alg.id(), key)
    assert seen["ARCHITECTURE"] == 2 and seen["DEVICE"] >= 6  # trainsegmentation, trainclusternet; every model


@pytest.mark.parametrize("alg_id, config", [("satseg:trainsegmentation", "TrainConfig"),
                                            ("satseg:trainclusternet", "ClusterNetConfig")])
def test_architecture_and_encoder_defaults_come_from_the_config(qgis_app, alg_id, config):
    alg = QgsApplication.processingRegistry().algorithmById(alg_id)
    cls = algorithm_module(alg).CONFIG
    assert cls.__name__ == config
    architecture = alg.parameterDefinition("ARCHITECTURE").defaultValue()
    assert ARCHITECTURE_NAMES[int(architecture)] == cls.architecture
    encoder = alg.parameterDefinition("ENCODER")
    assert encoder.defaultValue() == cls.encoder
    assert all(name in encoder.help() for name in ENCODER_CHOICES) and "tu-<timm name>" in encoder.help()


def test_config_modules_import_without_numpy_rasterio_or_torch():
    """The provider reads defaults from pipelines/*/config.py at QGIS start: those modules stay light."""
    configs = {importlib.import_module(alg.__module__).CONFIG for alg in ALGORITHMS
               if hasattr(importlib.import_module(alg.__module__), "CONFIG")}
    assert len(configs) >= 9
    modules = sorted({cls.__module__ for cls in configs})
    assert all(m.endswith(".config") for m in modules), modules
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('numpy', 'rasterio', 'torch', 'shapely'): raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        f"import importlib; [importlib.import_module(m) for m in {modules!r}]\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_number_defaults_equal_the_engine_defaults(qgis_app):
    """Spot checks over every pipeline: the toolbox default is the dataclass default (not a retyped number)."""
    from satseg_plugin.pipelines.clustering.pixel.cluster_map import ClusterMapConfig
    from satseg_plugin.pipelines.clustering.pixel.train import ClusterNetConfig
    from satseg_plugin.pipelines.clustering.scene.deepcluster import DeepClusterConfig
    from satseg_plugin.pipelines.clustering.scene.train import SceneTrainConfig
    from satseg_plugin.pipelines.patching.patches import PatchConfig
    from satseg_plugin.pipelines.population.communities import CommunityConfig
    from satseg_plugin.pipelines.population.flow import FlowConfig
    from satseg_plugin.pipelines.segmentation.segment import InferenceConfig
    from satseg_plugin.pipelines.segmentation.train import TrainConfig

    cases = [("trainsegmentation", "EPOCHS", TrainConfig.epochs),
             ("trainsegmentation", "BATCH_SIZE", TrainConfig.batch_size),
             ("trainsegmentation", "LEARNING_RATE", TrainConfig.learning_rate),
             ("trainclusternet", "NUM_CLUSTERS", ClusterNetConfig.num_clusters),
             ("trainclusternet", "SAMPLE_PIXELS", ClusterNetConfig.sample_pixels),
             ("segmentraster", "BATCH_SIZE", InferenceConfig.batch_size),
             ("clusterraster", "TILE_SIZE", ClusterMapConfig.tile_size),
             ("pretrainscene", "EMA_DECAY", SceneTrainConfig.ema_decay), ("deepcluster", "K", DeepClusterConfig.k),
             ("populationclusters", "EPS", CommunityConfig.eps), ("opticalflow", "ALPHA", FlowConfig.alpha),
             ("patchraster", "MAX_NODATA_FRACTION", PatchConfig.max_nodata_fraction)]
    registry = QgsApplication.processingRegistry()
    for name, key, expected in cases:
        assert registry.algorithmById(f"satseg:{name}").parameterDefinition(key).defaultValue() == expected, (name, key)
