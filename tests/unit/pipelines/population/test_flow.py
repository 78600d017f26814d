"""Horn–Schunck optical flow: known shifts recovered, convergence, pyramid, cancel, flow files and arrows."""

import glob
import os

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from satseg_plugin.core.errors import CanceledError, DeviceError, InputError, OutputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.pipelines.population.flow import (
    BAND_DESCRIPTIONS,
    FlowConfig,
    FlowResult,
    flow_series,
    flow_to_map,
    flow_vectors,
    horn_schunck,
    read_flow,
    write_flow,
)
from satseg_plugin.pipelines.population.frames import FrameSeries

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H, W = 80, 112
GRID = Affine(1000.0, 0.0, 4_000_000.0, 0.0, -1000.0, 3_300_000.0)


def blob(du=0.0, dv=0.0, sigma=6.0, amplitude=1500.0, cx=52.0, cy=38.0, h=H, w=W):
    """A Gaussian population blob centred at ``(cx + du, cy + dv)`` (columns, rows) on a low background."""
    rows, cols = np.mgrid[0:h, 0:w]
    return (amplitude * np.exp(-((cols - cx - du) ** 2 + (rows - cy - dv) ** 2) / (2 * sigma ** 2)) + 2.0).astype(
        np.float32)


def epe(result, du, dv, inside):
    """Mean end-point error against a uniform shift, over ``inside``."""
    return float(np.hypot(result.u - du, result.v - dv)[inside].mean())


@pytest.fixture(scope="module")
def shifted():
    """A blob moved 1.5 px east (+column) and 1 px north (-row), and where it is."""
    f1, f2 = blob(), blob(1.5, -1.0)
    return f1, f2, f1 > 0.2 * f1.max()


# --------------------------------------------------------------------------------------------- solving

def test_known_shift_is_recovered_with_the_right_signs(shifted):
    f1, f2, inside = shifted
    result = horn_schunck(f1, f2, FlowConfig(device="cpu"))
    assert isinstance(result, FlowResult) and result.converged
    assert result.u.dtype == np.float32 and result.u.shape == (H, W)
    assert epe(result, 1.5, -1.0, inside) < 0.1
    assert np.median(result.u[inside]) == pytest.approx(1.5, abs=0.1)
    assert np.median(result.v[inside]) == pytest.approx(-1.0, abs=0.1)


def test_two_pixel_shift_with_nan_sea_stays_finite():
    f1, f2 = blob(), blob(2.0, 1.0)
    f1[:, :8] = np.nan  # sea, far from the blob
    f2[:, :8] = np.nan
    result = horn_schunck(f1, f2)
    assert np.isfinite(result.u).all() and np.isfinite(result.v).all()
    assert epe(result, 2.0, 1.0, blob() > 0.2 * blob().max()) < 0.3


def test_iterating_to_convergence_beats_one_iteration(shifted):
    f1, f2, inside = shifted
    one = horn_schunck(f1, f2, FlowConfig(iterations=1, solver="jacobi"))
    jacobi = horn_schunck(f1, f2, FlowConfig(iterations=3000, tolerance=0.0, solver="jacobi"))
    cg = horn_schunck(f1, f2, FlowConfig())
    assert one.iterations == 1 and not one.converged
    assert epe(one, 1.5, -1.0, inside) > 1.0  # the study's single iteration: most of the motion missed
    assert epe(jacobi, 1.5, -1.0, inside) < 0.5 * epe(one, 1.5, -1.0, inside)
    assert epe(cg, 1.5, -1.0, inside) < epe(jacobi, 1.5, -1.0, inside)
    # both solvers approach the same solution of the Horn–Schunck equations
    longer = horn_schunck(f1, f2, FlowConfig(iterations=6000, tolerance=0.0, solver="jacobi"))
    assert np.abs(longer.u - cg.u)[inside].mean() < np.abs(jacobi.u - cg.u)[inside].mean()


def test_pyramid_finds_a_large_motion():
    f1, f2 = blob(sigma=8.0), blob(7.0, -4.0, sigma=8.0)
    inside = f1 > 0.2 * f1.max()
    plain = horn_schunck(f1, f2)
    pyramid = horn_schunck(f1, f2, FlowConfig(pyramid_levels=3))
    assert epe(plain, 7.0, -4.0, inside) > 1.0
    assert epe(pyramid, 7.0, -4.0, inside) < 0.3


def test_identical_frames_give_zero_flow():
    f = blob()
    result = horn_schunck(f, f.copy())
    assert np.abs(result.u).max() < 1e-6 and np.abs(result.v).max() < 1e-6 and result.converged


def test_empty_frames_give_zero_flow_without_iterating():
    zeros = np.zeros((10, 12), np.float32)
    zeros[0, 0] = np.nan
    feedback = RecordingFeedback()
    result = horn_schunck(zeros, zeros, feedback=feedback)
    assert result.iterations == 0 and not result.u.any() and not result.v.any()
    assert "empty" in feedback.infos[0]


def test_population_scale_does_not_change_the_flow(shifted):
    """Frames are normalised jointly, so counts x 100 give the same flow (ALPHA means the same)."""
    f1, f2, _ = shifted
    base, scaled = horn_schunck(f1, f2), horn_schunck(f1 * 100, f2 * 100)
    np.testing.assert_allclose(scaled.u, base.u, atol=1e-3)
    assert scaled.scale == pytest.approx(base.scale / 100)


def test_more_smoothing_spreads_the_flow_further(shifted):
    f1, f2, inside = shifted
    far = blob() < 3.0  # background, away from the blob
    smooth = horn_schunck(f1, f2, FlowConfig(alpha=40.0))
    sharp = horn_schunck(f1, f2, FlowConfig(alpha=2.0))
    assert np.hypot(smooth.u, smooth.v)[far].mean() > np.hypot(sharp.u, sharp.v)[far].mean()


def test_skimage_uses_the_same_displacement_convention(shifted):
    """scikit-image's (v, u) from reference f1 to moving f2 has the signs of SatSeg's (u, v)."""
    registration = pytest.importorskip("skimage.registration")
    f1, f2, inside = shifted
    scale = 1.0 / max(f1.max(), f2.max())
    v, u = registration.optical_flow_ilk(f1 * scale, f2 * scale)
    ours = horn_schunck(f1, f2)
    assert np.median(u[inside]) == pytest.approx(1.5, abs=0.2) and np.median(v[inside]) == pytest.approx(-1.0, abs=0.2)
    assert np.sign(np.median(ours.u[inside])) == np.sign(np.median(u[inside]))
    assert np.sign(np.median(ours.v[inside])) == np.sign(np.median(v[inside]))


def test_cancel_raises(shifted):
    f1, f2, _ = shifted
    feedback = RecordingFeedback(cancel_after=2)
    with pytest.raises(CanceledError):
        horn_schunck(f1, f2, FlowConfig(iterations=500, tolerance=0.0), feedback)
    assert len(feedback.progress) == 2


def test_progress_reaches_100_and_non_convergence_is_a_warning(shifted):
    f1, f2, _ = shifted
    feedback = RecordingFeedback()
    result = horn_schunck(f1, f2, FlowConfig(iterations=20, tolerance=0.0, pyramid_levels=2), feedback)
    assert not result.converged and result.iterations == 20
    assert feedback.progress[-1] == 100.0 and feedback.progress == sorted(feedback.progress)
    assert any("did not converge" in w for w in feedback.warnings)


@pytest.mark.parametrize("config, parameter", [
    (FlowConfig(alpha=0.0), "ALPHA"), (FlowConfig(iterations=0), "ITERATIONS"), (FlowConfig(tolerance=-1.0),
                                                                                   "TOLERANCE"),
    (FlowConfig(pyramid_levels=0), "PYRAMID_LEVELS"), (FlowConfig(solver="sor"), "SOLVER")])
def test_bad_settings_name_their_parameter(shifted, config, parameter):
    f1, f2, _ = shifted
    with pytest.raises(InputError, match=f"^{parameter}: "):
        horn_schunck(f1, f2, config)


def test_frames_of_different_shapes_are_refused():
    with pytest.raises(InputError, match="^FRAMES: .*one shape"):
        horn_schunck(np.ones((4, 5)), np.ones((5, 4)))


def test_missing_cuda_is_a_device_error(shifted):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    f1, f2, _ = shifted
    with pytest.raises(DeviceError):
        horn_schunck(f1, f2, FlowConfig(device="cuda"))


def test_flow_series_gives_one_flow_per_consecutive_pair():
    frames = [blob(), blob(1.0, 0.0), blob(2.0, 0.0)]
    series = FrameSeries(frames, ["t0", "t1", "t2"], CRS.from_epsg(3035), GRID, W, H)
    feedback = RecordingFeedback()
    flows = flow_series(series, feedback=feedback)
    inside = frames[0] > 0.2 * frames[0].max()
    assert len(flows) == 2 and all(epe(f, 1.0, 0.0, inside) < 0.2 for f in flows)
    assert feedback.progress[-1] == pytest.approx(100.0) and len(feedback.infos) == 2


# --------------------------------------------------------------------------------------------- files

def test_write_read_round_trip_keeps_the_grid_exactly(tmp_path, shifted):
    f1, f2, _ = shifted
    odd = Affine(1000.000001, 0.0, 4_000_000.123456789, 0.0, -999.999999, 3_300_000.987654321)
    series = FrameSeries([f1, f2], ["a", "b"], CRS.from_epsg(3035), odd, W, H)
    result = horn_schunck(f1, f2)
    mask = np.zeros((H, W), bool)
    mask[:3, :4] = True
    path = write_flow(str(tmp_path / "out" / "flow.tif"), result, series, nodata_mask=mask)
    assert path == str(tmp_path / "out" / "flow.tif")
    with rasterio.open(path) as src:
        assert src.transform == odd and src.crs == series.crs and src.count == 2
        assert src.descriptions == BAND_DESCRIPTIONS and src.dtypes == ("float32", "float32")
        assert np.isnan(src.nodata) and src.tags()["satseg_iterations"] == str(result.iterations)
    u, v = read_flow(path)
    assert np.isnan(u[:3, :4]).all() and np.isnan(v[:3, :4]).all()
    np.testing.assert_array_equal(u[~mask], result.u[~mask])
    np.testing.assert_array_equal(v[~mask], result.v[~mask])
    assert glob.glob(str(tmp_path / "out" / ".satseg-tmp*")) == []


def test_write_refuses_other_formats_and_other_grids(tmp_path):
    series = FrameSeries([], [], CRS.from_epsg(3035), GRID, 5, 4)
    zeros = np.zeros((4, 5), np.float32)
    with pytest.raises(OutputError, match="^OUTPUT: .*GeoTIFF"):
        write_flow(str(tmp_path / "flow.png"), (zeros, zeros), series)
    with pytest.raises(InputError, match="not on the grid"):
        write_flow(str(tmp_path / "flow.tif"), (np.zeros((4, 6)), np.zeros((4, 6))), series)
    assert not os.path.exists(tmp_path / "flow.tif")


def test_read_flow_refuses_a_one_band_raster(make_raster):
    path = make_raster(np.zeros((1, 3, 3), np.float32))
    with pytest.raises(InputError, match="^FLOW: .*has 1 band"):
        read_flow(path)


# --------------------------------------------------------------------------------------------- vectors

def test_flow_vector_directions_on_a_north_up_raster():
    u = np.array([[2.0, 0.0], [0.0, -1.0]], np.float32)
    v = np.array([[0.0, -3.0], [1.0, 0.0]], np.float32)
    vectors = flow_vectors(u, v, GRID, step=1)
    assert [round(x.direction_deg) for x in vectors] == [90, 0, 180, 270]  # east, north (up), south, west
    east, north = vectors[0], vectors[1]
    assert (east.x, east.y) == (GRID.c + 500.0, GRID.f - 500.0)
    assert (east.dx_map, east.dy_map, east.magnitude) == (2000.0, 0.0, 2000.0)
    assert (north.dx_map, north.dy_map, north.magnitude) == (0.0, 3000.0, 3000.0)
    assert (north.u_px, north.v_px) == (0.0, -3.0)


def test_flow_vectors_follow_the_transform_on_a_south_up_raster():
    south_up = Affine(1000.0, 0.0, 0.0, 0.0, 1000.0, 0.0)  # rows go north
    (vector,) = flow_vectors(np.zeros((1, 1)), np.full((1, 1), 1.0), south_up, step=1)
    assert vector.dy_map == 1000.0 and vector.direction_deg == 0.0
    dx, dy = flow_to_map(np.array([1.0]), np.array([0.0]), Affine.rotation(90) * south_up)
    assert dx[0] == pytest.approx(0.0, abs=1e-9) and dy[0] == pytest.approx(1000.0)


def test_flow_vectors_sample_a_grid_and_skip_nodata_and_short_arrows():
    u = np.ones((25, 30), np.float32)
    v = np.zeros((25, 30), np.float32)
    u[5, 5] = np.nan
    u[15, 25] = 0.1
    vectors = flow_vectors(u, v, GRID, step=10)
    cols = sorted({round((x.x - GRID.c) / 1000 - 0.5) for x in vectors})
    rows = sorted({round((GRID.f - x.y) / 1000 - 0.5) for x in vectors})
    assert cols == [5, 15, 25] and rows == [5, 15]
    assert len(vectors) == 5  # 3 x 2 samples, the NaN one left out
    assert len(flow_vectors(u, v, GRID, step=10, min_magnitude=0.5)) == 4
    with pytest.raises(InputError, match="^STEP: "):
        flow_vectors(u, v, GRID, step=0)
