"""segment_raster on a Dask cluster: the column bands run as work units and the outputs equal the in-process run.

The model is an untrained U-Net saved as a SatSeg file (these tests are about the sweep and the assembly, not
the weights); the raster is small and BAND_COLUMNS is lowered so that there are several units.
"""

import os

import numpy as np
import pytest
import rasterio

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("distributed")

from satseg_plugin.core.errors import CanceledError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.core.staging import TEMP_PREFIX
from satseg_plugin.pipelines.segmentation import segment
from satseg_plugin.pipelines.segmentation.segment import InferenceConfig, segment_raster
from tests.unit.pipelines.segmentation.untrained import save_untrained_unet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: 200 x 300 px, 64 px tiles and 128 px column bands: 3 work units, two borders crossed by tiles
BAND = 128
CONFIG = InferenceConfig(tile_size=64, overlap=16, threshold=0.5, min_object_pixels=4)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_untrained_unet(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def raster(tmp_path_factory):
    from tests.conftest import write_raster

    data = np.random.default_rng(0).integers(1, 255, (3, 200, 300), dtype="uint8")
    data[:, 90:110, 100:160] = 0  # nodata across a band border
    return write_raster(str(tmp_path_factory.mktemp("raster") / "in.tif"), data, nodata=0)


@pytest.fixture(scope="module")
def in_process(model_path, raster, tmp_path_factory):
    out = tmp_path_factory.mktemp("in_process")
    mp = pytest.MonkeyPatch()
    mp.setattr(segment, "BAND_COLUMNS", BAND)
    try:
        result = segment_raster(raster, [model_path], str(out / "p.tif"), str(out / "m.tif"), CONFIG, "cpu")
    finally:
        mp.undo()
    return result


def _read(path):
    with rasterio.open(path) as r:
        return r.read(), r.profile, r.overviews(1)


@pytest.mark.parametrize("row_step, units", [(None, "3 Dask work units: 3 column bands"),
                                              # 200 rows: 3 ranges of at least a tile in every band
                                              (64, "9 Dask work units: 3 column bands")], ids=["bands", "rows"])
def test_local_cluster_outputs_are_pixel_identical(model_path, raster, in_process, tmp_path, monkeypatch, row_step,
                                                   units):
    from satseg_plugin.core import distributed

    monkeypatch.setattr(segment, "BAND_COLUMNS", BAND)
    monkeypatch.setattr(distributed, "UNIT_ROW_STEP", row_step)
    fb = RecordingFeedback()
    result = segment_raster(raster, [model_path], str(tmp_path / "p.tif"), str(tmp_path / "m.tif"), CONFIG, "cpu",
                            fb, scheduler="local:2")
    assert any("3 column bands" in m and units in m for m in fb.infos)
    assert fb.progress[-1] == 100.0 and fb.progress == sorted(fb.progress)
    for ours, theirs in ((result.probability_path, in_process.probability_path),
                         (result.mask_path, in_process.mask_path)):
        (a, pa, oa), (b, pb, ob) = _read(ours), _read(theirs)
        np.testing.assert_array_equal(a, b)
        assert pa == pb and oa == ob
    assert result.positive_pixels == in_process.positive_pixels
    assert (result.window, result.tiles, result.threshold) == (in_process.window, in_process.tiles,
                                                                in_process.threshold)
    assert sorted(os.listdir(tmp_path)) == ["m.tif", "p.tif"]  # no parts folder, no temporaries left


def test_cancel_on_the_cluster_leaves_nothing(model_path, raster, tmp_path, monkeypatch):
    monkeypatch.setattr(segment, "BAND_COLUMNS", BAND)
    with pytest.raises(CanceledError):
        segment_raster(raster, [model_path], str(tmp_path / "p.tif"), str(tmp_path / "m.tif"), CONFIG, "cpu",
                       RecordingFeedback(cancel_after=0), scheduler="local:1")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(TEMP_PREFIX) or n.endswith(".tif")]


def test_row_range_units_put_together_in_process_give_the_whole_run(model_path, raster, in_process, tmp_path):
    """Without Dask: each unit (a column band x a range of rows, cut inside tiles) run by segment_band and
    copied into place gives the in-process probabilities bit for bit, and their class mask before the sieve."""
    from rasterio.windows import Window

    from satseg_plugin.core.progress import NullFeedback
    from satseg_plugin.core.tiling import hann_grid
    from satseg_plugin.pipelines.segmentation.segment import MASK_NODATA, SegmentBand, SegmentPlan, segment_band

    grid = hann_grid(Window(0, 0, 300, 200), 200, 300, 64, 16)
    assert len(grid) == in_process.tiles
    plan = SegmentPlan(raster, (model_path,), CONFIG, "cpu", 0.5, grid, BAND)
    ranges = grid.row_ranges(4, 8, 40)
    assert ranges == [(0, 48), (48, 96), (96, 144), (144, 200)]
    probs = np.full((1, 200, 300), np.nan, np.float32)
    mask = np.zeros((1, 200, 300), np.uint8)
    for band in grid.column_bands(BAND):
        for rows in ranges:
            unit = SegmentBand(plan, band, str(tmp_path / f"p-{band[0]}-{rows[0]}.tif"),
                               str(tmp_path / f"m-{band[0]}-{rows[0]}.tif"), rows)
            segment_band(unit, NullFeedback())
            with rasterio.open(unit.probability_part) as p, rasterio.open(unit.mask_part) as m:
                assert (p.width, p.height) == (band[1] - band[0], rows[1] - rows[0])
                probs[:, rows[0]:rows[1], band[0]:band[1]] = p.read()
                mask[:, rows[0]:rows[1], band[0]:band[1]] = m.read()
    whole, _, _ = _read(in_process.probability_path)
    np.testing.assert_array_equal(probs, whole)
    nodata = whole[0] == segment.PROB_NODATA
    assert nodata.any() and not nodata.all()
    np.testing.assert_array_equal(mask[0], np.where(nodata, MASK_NODATA, whole[0] >= 0.5))

