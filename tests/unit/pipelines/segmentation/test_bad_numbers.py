"""segment_raster refuses bad ensemble weights, clamps oversized tiles and warns about all-nodata input.

The model is an untrained U-Net saved as a SatSeg file: these checks are about the sweep, not the weights.
"""

import numpy as np
import pytest
import rasterio

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")

from satseg_plugin.core.errors import InputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.pipelines.segmentation.segment import MASK_NODATA, PROB_NODATA, InferenceConfig, segment_raster
from tests.unit.pipelines.segmentation.untrained import save_untrained_unet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_untrained_unet(str(tmp_path_factory.mktemp("model")))


@pytest.fixture
def raster(make_raster):
    return make_raster(np.random.default_rng(0).integers(1, 255, (3, 96, 80), dtype="uint8"), nodata=0)


@pytest.mark.parametrize("weights", [(float("nan"), 1.0), (float("inf"), 1.0), (-1.0, 2.0), (0.0, 0.0)])
def test_bad_weights_name_weights(model_path, raster, tmp_path, weights):
    with pytest.raises(InputError, match="^WEIGHTS: weights must be finite, non-negative and not all zero"):
        segment_raster(raster, [model_path, model_path], str(tmp_path / "p.tif"), str(tmp_path / "m.tif"),
                       InferenceConfig(weights=weights, threshold=0.5), "cpu")
    assert not (tmp_path / "p.tif").exists() and not (tmp_path / "m.tif").exists()


def test_bad_threshold_is_refused_before_anything_is_loaded(raster, tmp_path):
    with pytest.raises(InputError, match="^THRESHOLD"):
        segment_raster(raster, [str(tmp_path / "missing.satseg")], str(tmp_path / "p.tif"), str(tmp_path / "m.tif"),
                       InferenceConfig(threshold=float("nan")), "cpu")


def test_oversized_tile_is_clamped_to_the_region_with_the_same_outputs(model_path, raster, tmp_path):
    feedback = RecordingFeedback()
    big = segment_raster(raster, [model_path], str(tmp_path / "b.tif"), str(tmp_path / "bm.tif"),
                         InferenceConfig(tile_size=2048, overlap=512), "cpu", feedback)
    fitted = segment_raster(raster, [model_path], str(tmp_path / "f.tif"), str(tmp_path / "fm.tif"),
                            InferenceConfig(tile_size=96), "cpu")
    assert big.tiles == 1
    assert "Tile size 96 px instead of 2048 px (overlap 24 px): the region is only 80 x 96 px" in "".join(
        feedback.infos)
    with rasterio.open(big.probability_path) as a, rasterio.open(fitted.probability_path) as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_all_nodata_input_warns_and_writes_empty_outputs(model_path, make_raster, tmp_path):
    empty = make_raster(np.zeros((3, 40, 40), "uint8"), name="empty.tif", nodata=0)
    feedback = RecordingFeedback()
    result = segment_raster(empty, [model_path], str(tmp_path / "p.tif"), str(tmp_path / "m.tif"),
                            InferenceConfig(tile_size=64), "cpu", feedback)
    assert "Every pixel of INPUT in the extent is nodata; the outputs are empty." in feedback.warnings
    with rasterio.open(result.probability_path) as p, rasterio.open(result.mask_path) as m:
        assert (p.read() == PROB_NODATA).all() and (m.read() == MASK_NODATA).all()
    # a raster with valid pixels gives no such warning
    feedback = RecordingFeedback()
    data = np.zeros((3, 40, 40), "uint8")
    data[:, :5, :5] = 9
    segment_raster(make_raster(data, name="some.tif", nodata=0), [model_path], str(tmp_path / "p2.tif"),
                   str(tmp_path / "m2.tif"), InferenceConfig(tile_size=64), "cpu", feedback)
    assert not any("nodata" in w for w in feedback.warnings)
