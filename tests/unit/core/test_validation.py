"""Bad numbers are refused by the settings' own checks, naming the parameter: NaN, infinities, out of range.

Also the tile-size clamp of the shared sweep (:func:`plan_tiles`) and the RLE sidecar's sizes.
"""

import json
import math

import numpy as np
import pytest

from satseg_plugin.core.errors import InputError, check_settings
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.core.tiling import fit_tile, plan_tiles
from satseg_plugin.pipelines.clustering.pixel.config import ClusterMapConfig, ClusterNetConfig
from satseg_plugin.pipelines.clustering.scene.config import DeepClusterConfig, SceneTrainConfig
from satseg_plugin.pipelines.patching.config import PatchConfig
from satseg_plugin.pipelines.population.config import CommunityConfig, FlowConfig
from satseg_plugin.pipelines.segmentation.config import InferenceConfig, TrainConfig

NAN, INF = float("nan"), float("inf")


def test_check_settings_refuses_nan_and_infinity_even_where_the_check_passes():
    # inf passes "> 0": the finiteness rule must catch it, and say so
    with pytest.raises(InputError, match=r"^LEARNING_RATE: must be a finite number, got inf\.$"):
        check_settings([("LEARNING_RATE", INF > 0, "positive", INF)])
    with pytest.raises(InputError, match=r"^HIDDEN: must be a finite number"):
        check_settings([("HIDDEN", True, "positive widths", (64, NAN))])
    check_settings([("K", True, "at least 2", 3), ("AMP", True, "a flag", True), ("X", True, "set", None)])


@pytest.mark.parametrize("config, parameter", [
    (TrainConfig(learning_rate=INF), "LEARNING_RATE"),
    (TrainConfig(learning_rate=NAN), "LEARNING_RATE"),
    (TrainConfig(threshold=NAN), "THRESHOLD"),
    (TrainConfig(weight_decay=INF), "WEIGHT_DECAY"),
    (TrainConfig(gamma=NAN), "GAMMA"),
    (InferenceConfig(threshold=NAN), "THRESHOLD"),
    (InferenceConfig(batch_size=0), "BATCH_SIZE"),
    (InferenceConfig(overlap=-1), "OVERLAP"),
    (ClusterNetConfig(learning_rate=INF), "LEARNING_RATE"),
    (ClusterNetConfig(band_share=NAN), "BAND_SHARE"),
    (ClusterMapConfig(tile_size=-5), "TILE_SIZE"),
    (SceneTrainConfig(consistency_weight=INF), "CONSISTENCY_WEIGHT"),
    (SceneTrainConfig(ema_decay=NAN), "EMA_DECAY"),
    (DeepClusterConfig(learning_rate=INF), "LEARNING_RATE"),
    (FlowConfig(tolerance=INF), "TOLERANCE"),
    (FlowConfig(tolerance=NAN), "TOLERANCE"),
    (FlowConfig(alpha=INF), "ALPHA"),
    (CommunityConfig(pop_min=INF), "POP_MIN"),
    (CommunityConfig(eps=NAN), "EPS"),
    (CommunityConfig(clip_quantile=NAN), "CLIP_QUANTILE"),
    (PatchConfig(max_nodata_fraction=NAN), "MAX_NODATA_FRACTION"),
    (PatchConfig(workers=0), "WORKERS"),
])
def test_every_settings_class_names_the_parameter_of_a_bad_number(config, parameter):
    with pytest.raises(InputError) as info:
        config.validate()
    assert info.value.parameter == parameter and str(info.value).startswith(f"{parameter}: ")


def test_defaults_are_valid():
    for cls in (TrainConfig, InferenceConfig, ClusterNetConfig, ClusterMapConfig, SceneTrainConfig,
                DeepClusterConfig, FlowConfig, CommunityConfig, PatchConfig):
        cls().validate()


# ------------------------------------------------------------------------------------------ tile clamp

def test_tile_is_clamped_to_the_extent_rounded_up_to_the_model_multiple():
    assert fit_tile(2048, 32, (256, 100)) == 256
    assert fit_tile(2048, 32, (250, 90)) == 256  # rounded up, never below the region
    assert fit_tile(2048, 32, (5000, 4000)) == 2048  # the region is larger: unchanged
    assert fit_tile(None, 32, None, 300) == 288 and fit_tile(None, 32, None, 10) == 32


def test_plan_tiles_logs_why_and_keeps_a_fitting_overlap():
    feedback = RecordingFeedback()
    assert plan_tiles(2048, 512, 32, (256, 256), None, feedback, "the raster") == (256, 64)
    assert feedback.infos == ["Tile size 256 px instead of 2048 px (overlap 64 px): the raster is only "
                              "256 x 256 px, so a larger tile would compute padding."]
    feedback = RecordingFeedback()
    assert plan_tiles(1024, None, 32, (4096, 4096), 700, feedback) == (672, 168)
    assert "the device's free memory holds tiles of at most about 700 px" in feedback.infos[0]
    # no clamping: exactly fit_tile and check_overlap, nothing logged
    feedback = RecordingFeedback()
    assert plan_tiles(70, 8, 32, (500, 500), 5000, feedback) == (96, 8) and feedback.infos == []
    with pytest.raises(InputError, match="^OVERLAP"):  # the overlap is still checked against the tile asked for
        plan_tiles(256, 256, 32, (100, 100))


# ------------------------------------------------------------------------------------------ RLE sidecar

@pytest.mark.parametrize("change, message", [
    ({"width": 10 ** 36, "height": 10 ** 36}, "width = 1000000"),
    ({"tile_size": 0}, "tile_size = 0"),
    ({"height": 12.5}, "height = 12.5"),
    ({"transform": [0.5, 0, 500000, 0, 0, 5000000]}, "geotransform"),
    ({"transform": [math.inf, 0, 500000, 0, -0.5, 5000000]}, "geotransform"),
])
def test_import_rle_refuses_a_sidecar_with_impossible_sizes(make_raster, tmp_path, change, message):
    from satseg_plugin.pipelines.segmentation.rle import export_rle, import_rle, sidecar_path

    csv_path = str(tmp_path / "m.csv")
    export_rle(make_raster(np.eye(8, dtype="uint8")), csv_path, tile_size=4)
    with open(sidecar_path(csv_path)) as handle:
        meta = json.load(handle)
    meta.update(change)
    with open(sidecar_path(csv_path), "w") as handle:
        json.dump(meta, handle)
    with pytest.raises(InputError, match=f"^INPUT: the sidecar .*{message}"):
        import_rle(csv_path, str(tmp_path / "out.tif"))
    assert not (tmp_path / "out.tif").exists()
