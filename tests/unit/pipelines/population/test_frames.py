"""Population frames: loading, nodata, bad input and resampling onto the first frame's grid."""

import numpy as np
import pytest
from affine import Affine

from satseg_plugin.core.errors import CanceledError, InputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.pipelines.population import frames as frames_module
from satseg_plugin.pipelines.population.frames import FrameSeries, load_frames

GRID = Affine(1000.0, 0.0, 4_000_000.0, 0.0, -1000.0, 3_300_000.0)
CRS = "EPSG:3035"


def population(h=40, w=60, seed=0):
    """Smooth positive counts with a few hundred people per pixel at most."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:h, 0:w]
    blob = 400.0 * np.exp(-((cols - w / 2) ** 2 + (rows - h / 2) ** 2) / (2 * 6.0 ** 2))
    return (blob + rng.uniform(1.0, 5.0, (h, w))).astype(np.float32)


@pytest.fixture
def pair(make_raster):
    a, b = population(seed=0), population(seed=1)
    return [make_raster(a, "pop_2000.tif", transform=GRID, crs=CRS), make_raster(b, "pop_2005.tif", transform=GRID,
                                                                               crs=CRS)], (a, b)


def test_loads_frames_in_order_on_the_exact_grid(pair):
    paths, (a, b) = pair
    series = load_frames(paths)
    assert isinstance(series, FrameSeries) and len(series) == 2
    assert series.names == ["pop_2000", "pop_2005"]
    assert series.transform == GRID and series.crs.to_epsg() == 3035
    assert (series.width, series.height) == (60, 40) and series.pixel_area == 1e6
    for got, want in zip(series.arrays, (a, b)):
        assert got.dtype == np.float32 and got.shape == (40, 60)
        np.testing.assert_array_equal(got, want)


def test_nodata_value_and_nan_sea_become_nan_and_negative_nodata_is_not_negative(make_raster):
    a = population()
    a[:, :5] = -99999.0  # nodata value, negative on purpose
    a[0, 10] = np.nan  # a NaN sea pixel
    b = population(seed=2)
    b[3:6, 3:6] = np.nan
    paths = [make_raster(a, "a.tif", transform=GRID, crs=CRS, nodata=-99999.0),
             make_raster(b, "b.tif", transform=GRID, crs=CRS, nodata=np.nan)]
    series = load_frames(paths)
    first, second = series.arrays
    assert np.isnan(first[:, :5]).all() and np.isnan(first[0, 10])
    assert np.isnan(first).sum() == 40 * 5 + 1
    assert np.isnan(second).sum() == 9
    mask = series.nodata_mask(0, 1)
    assert mask.sum() == 40 * 5 + 1 + 9 - np.count_nonzero(np.isnan(first[3:6, 3:6]))
    np.testing.assert_array_equal(series.nodata_mask(), mask)
    np.testing.assert_array_equal(series.nodata_mask(1), np.isnan(second))


def test_integer_frames_with_nodata_are_read_as_float(make_raster):
    a = np.arange(1, 13, dtype=np.int32).reshape(3, 4)
    a[0, 0] = -1
    paths = [make_raster(a, "a.tif", transform=GRID, crs=CRS, nodata=-1),
             make_raster(a + 1, "b.tif", transform=GRID, crs=CRS, nodata=-1)]
    series = load_frames(paths)
    assert series.arrays[0].dtype == np.float32
    assert np.isnan(series.arrays[0][0, 0]) and series.arrays[0][2, 3] == 12.0


@pytest.mark.parametrize("count", [0, 1])
def test_fewer_than_two_frames_are_refused(pair, count):
    paths, _ = pair
    with pytest.raises(InputError, match=r"^FRAMES: .*at least two") as info:
        load_frames(paths[:count])
    assert info.value.parameter == "FRAMES"


def test_frames_in_different_crs_are_refused(make_raster):
    a = population()
    paths = [make_raster(a, "a.tif", transform=GRID, crs=CRS), make_raster(a, "b.tif", transform=GRID,
                                                                            crs="EPSG:32633")]
    with pytest.raises(InputError, match=r"FRAMES: frame 'b' is in EPSG:32633 but the first frame 'a' is in "
                                         r"EPSG:3035\. Reproject"):
        load_frames(paths)


def test_all_nodata_frame_is_refused(make_raster):
    a = population()
    paths = [make_raster(a, "a.tif", transform=GRID, crs=CRS),
             make_raster(np.full_like(a, -9.0), "empty.tif", transform=GRID, crs=CRS, nodata=-9.0)]
    with pytest.raises(InputError, match="FRAMES: frame 'empty' holds only nodata"):
        load_frames(paths)


def test_negative_populations_are_refused_with_their_count(make_raster):
    a, b = population(), population(seed=3)
    b[:2, :3] = -5.0
    paths = [make_raster(a, "a.tif", transform=GRID, crs=CRS), make_raster(b, "b.tif", transform=GRID, crs=CRS)]
    with pytest.raises(InputError, match=r"FRAMES: frame 'b' has 6 pixel\(s\) with a negative population "
                                         r"\(lowest -5\)"):
        load_frames(paths)


def test_several_bands_use_band_one_with_a_warning_or_the_band_asked(make_raster):
    a = np.stack([population(), population(seed=4) * 2])
    paths = [make_raster(a, "a.tif", transform=GRID, crs=CRS), make_raster(a, "b.tif", transform=GRID, crs=CRS)]
    feedback = RecordingFeedback()
    series = load_frames(paths, feedback)
    np.testing.assert_array_equal(series.arrays[0], a[0])
    assert len(feedback.warnings) == 2 and "band 1 is read" in feedback.warnings[0]
    np.testing.assert_array_equal(load_frames(paths, band=2).arrays[1], a[1])
    with pytest.raises(InputError, match="^BAND: band 3 does not exist in frame 'a', which has 2"):
        load_frames(paths, band=3)


def test_coarser_frame_on_the_same_area_is_resampled_keeping_the_total(make_raster):
    fine = population(40, 60)
    coarse = fine.reshape(20, 2, 30, 2).sum(axis=(1, 3))  # the same people counted on 2 km pixels
    coarse_grid = Affine(2000.0, 0.0, GRID.c, 0.0, -2000.0, GRID.f)
    paths = [make_raster(fine, "fine.tif", transform=GRID, crs=CRS),
             make_raster(coarse, "coarse.tif", transform=coarse_grid, crs=CRS)]
    feedback = RecordingFeedback()
    series = load_frames(paths, feedback)
    resampled = series.arrays[1]
    assert resampled.shape == (40, 60) and series.transform == GRID
    assert not np.isnan(resampled).any()
    assert resampled.sum() == pytest.approx(fine.sum(), rel=1e-4)
    # each 2 km pixel's people are spread evenly over its four 1 km pixels
    np.testing.assert_allclose(resampled, np.repeat(np.repeat(coarse / 4, 2, 0), 2, 1), rtol=1e-5)
    assert len(feedback.warnings) == 1 and "resampled onto that grid" in feedback.warnings[0]
    assert "coarse" in feedback.warnings[0]


def test_shifted_frame_is_resampled_and_pixels_outside_become_nodata(make_raster):
    a = population()
    shifted = Affine(1000.0, 0.0, GRID.c + 10_000.0, 0.0, -1000.0, GRID.f)  # 10 columns east
    paths = [make_raster(a, "a.tif", transform=GRID, crs=CRS), make_raster(a, "b.tif", transform=shifted, crs=CRS)]
    series = load_frames(paths, RecordingFeedback())
    b = series.arrays[1]
    assert np.isnan(b[:, :10]).all()
    np.testing.assert_allclose(b[:, 10:], a[:, :-10], rtol=1e-5)


def test_frames_that_do_not_overlap_are_refused(make_raster):
    a = population()
    far = Affine(1000.0, 0.0, GRID.c + 500_000.0, 0.0, -1000.0, GRID.f)
    paths = [make_raster(a, "a.tif", transform=GRID, crs=CRS), make_raster(a, "far.tif", transform=far, crs=CRS)]
    with pytest.raises(InputError, match="FRAMES: frame 'far' does not overlap the first frame 'a'"):
        load_frames(paths)


def test_frames_larger_than_the_limit_are_refused(pair, monkeypatch):
    paths, _ = pair
    monkeypatch.setattr(frames_module, "MAX_FRAME_PIXELS", 1000)
    with pytest.raises(InputError, match=r"FRAMES: frame 'pop_2000' has 60 x 40 = 2,400 pixels, more than"):
        load_frames(paths)


def test_cancel_between_frames(pair):
    paths, _ = pair
    with pytest.raises(CanceledError):
        load_frames(paths, RecordingFeedback(cancel_after=1))


def test_unreadable_frame_names_the_parameter(pair, tmp_path):
    paths, _ = pair
    with pytest.raises(InputError, match="^FRAMES: cannot read raster"):
        load_frames([paths[0], str(tmp_path / "missing.tif")])


def test_same_names_are_made_unique(make_raster, tmp_path):
    a = population()
    (tmp_path / "x").mkdir()
    first = make_raster(a, "pop.tif", transform=GRID, crs=CRS)
    second = make_raster(a, "x/pop.tif", transform=GRID, crs=CRS)
    assert load_frames([first, second]).names == ["pop", "pop_2"]
