"""Shared raster settings and helpers."""

import pytest
from affine import Affine

from satseg_plugin.core.raster import CACHE_BYTES, geotiff_profile, pixel_window, raster_env


def test_gdal_block_cache_is_really_256_mib():
    """rasterio passes GDAL_CACHEMAX to GDALSetCacheMax in bytes: a bare 256 would be 256 bytes."""
    gdal = pytest.importorskip("osgeo.gdal")
    with raster_env():
        assert gdal.GetCacheMax() == CACHE_BYTES == 256 * 2**20


def test_pixel_window_rounds_outward_and_clips():
    t = Affine(0.5, 0, 100.0, 0, -0.5, 200.0)
    x0, y0 = t * (2.2, 3.0)
    x1, y1 = t * (5.0, 7.9)
    assert pixel_window(t, (x0, y1, x1, y0), 10, 10) == (2, 3, 3, 5)
    assert pixel_window(t, (0, 0, 1, 1), 10, 10) is None
    assert pixel_window(t, (90, 150, 500, 500), 10, 10) == (0, 0, 10, 10)


def test_geotiff_profile_levels_and_predictors():
    p = geotiff_profile(300, 20, 1, "float32", None, Affine.identity(), -1.0, level=1)
    assert (p["predictor"], p["zlevel"], p["blockxsize"], p["blockysize"]) == (3, 1, 256, 32)
    assert "zlevel" not in geotiff_profile(16, 16, 3, "uint8", None, Affine.identity(), None)


# -- one grid check: same_grid / require_same_grid ----------------------------------------------------------------

GRID = Affine(1000.0, 0.0, 4_000_000.0, 0.0, -1000.0, 3_300_000.0)  # 1 km pixels (population frames)


def grid(transform=GRID, width=5, height=4, crs="EPSG:3035"):
    from rasterio.crs import CRS

    from satseg_plugin.core.raster import Grid

    return Grid(CRS.from_string(crs) if crs else None, transform, width, height)


def test_same_grid_tolerates_float_noise_only():
    """Moved from the population frames tests: float noise is the same grid, a thousandth of a pixel is not."""
    from satseg_plugin.core.raster import same_grid

    noisy = Affine(GRID.a, 0.0, GRID.c + 1e-6, 0.0, GRID.e, GRID.f)
    assert same_grid(grid(), grid(noisy))
    assert not same_grid(grid(), grid(noisy, width=6))
    assert not same_grid(grid(), grid(Affine(GRID.a, 0.0, GRID.c + 1.0, 0.0, GRID.e, GRID.f)))


def test_grid_tolerance_is_measured_in_pixels_at_the_corners():
    from satseg_plugin.core.raster import GRID_TOLERANCE, grid_offset, same_grid

    half = GRID_TOLERANCE / 2
    for pixel in (0.5, 1000.0):  # the same fraction of a pixel, whatever the pixel size
        t = Affine(pixel, 0.0, 10.0, 0.0, -pixel, 20.0)
        inside = Affine(pixel, 0.0, 10.0 + half * pixel, 0.0, -pixel, 20.0 - half * pixel)
        outside = Affine(pixel, 0.0, 10.0 + 2 * GRID_TOLERANCE * pixel, 0.0, -pixel, 20.0)
        assert grid_offset(grid(inside), grid(t)) == pytest.approx(half * 2 ** 0.5, rel=1e-3)
        assert same_grid(grid(inside), grid(t)) and not same_grid(grid(outside), grid(t))
    # a pixel-size difference counts by how far it moves the far corner: it grows with the raster
    scaled = Affine(1.0 + 1e-7, 0.0, 0.0, 0.0, -1.0, 0.0)
    small, large = grid(scaled, 10, 10), grid(scaled, 10_000, 10)
    assert grid_offset(small, grid(Affine(1.0, 0, 0, 0, -1.0, 0), 10, 10)) == pytest.approx(1e-6, rel=1e-3)
    assert same_grid(small, grid(Affine(1.0, 0, 0, 0, -1.0, 0), 10, 10))
    assert not same_grid(large, grid(Affine(1.0, 0, 0, 0, -1.0, 0), 10_000, 10))


def test_same_grid_compares_crs_and_any_affine():
    from satseg_plugin.core.raster import grid_offset, same_grid

    assert not same_grid(grid(), grid(crs="EPSG:32633"))
    assert not same_grid(grid(), grid(crs=None)) and same_grid(grid(crs=None), grid(crs=None))
    rotated = Affine.rotation(30) * Affine.scale(2.0, -2.0)
    assert same_grid(grid(rotated), grid(rotated))
    assert not same_grid(grid(rotated), grid(Affine.rotation(31) * Affine.scale(2.0, -2.0)))
    assert grid_offset(grid(), grid(Affine(0, 0, 0, 0, 0, 0))) == float("inf")  # singular: never the same


def test_require_same_grid_names_the_parameter_and_what_differs():
    from satseg_plugin.core.errors import InputError
    from satseg_plugin.core.raster import require_same_grid

    ref = grid()
    require_same_grid(grid(Affine(GRID.a, 0.0, GRID.c + 1e-6, 0.0, GRID.e, GRID.f)), ref, "MASK")
    with pytest.raises(InputError, match=r"^MASK: the mask is 6x4 px but the image is 5x4 px: .*Warp it\.$"):
        require_same_grid(grid(width=6), ref, "MASK", "the mask", "the image", "Warp it.")
    with pytest.raises(InputError, match=r"^MASK: the mask lies 0\.5 px away from the image's pixel grid"):
        require_same_grid(grid(GRID * Affine.translation(0.5, 0)), ref, "MASK", "the mask", "the image")
    with pytest.raises(InputError, match=r"the mask's CRS \(EPSG:32633\) differs from the image's \(EPSG:3035\)"):
        require_same_grid(grid(crs="EPSG:32633"), ref, "MASK", "the mask", "the image")


def _rgba(path, alpha):
    import numpy as np
    import rasterio
    from rasterio.enums import ColorInterp

    data = np.full((3, 16, 16), 120, "uint8")
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=4, dtype="uint8",
                       photometric="RGB", alpha="YES") as dst:
        dst.write(data, [1, 2, 3])
        dst.write(alpha, 4)
        assert dst.colorinterp[3] == ColorInterp.alpha
    return path


def test_model_bands_leave_out_alpha_unless_asked(tmp_path):
    """An RGBA orthophoto feeds its three colours to a model; its alpha band is the transparency mask."""
    import numpy as np
    import rasterio

    from satseg_plugin.core.progress import RecordingFeedback
    from satseg_plugin.core.raster import model_bands, nodata_flags, resolve_bands

    alpha = np.full((16, 16), 255, "uint8")
    alpha[:, :4] = 0
    path = _rgba(str(tmp_path / "rgba.tif"), alpha)
    fb = RecordingFeedback()
    with rasterio.open(path) as src:
        assert resolve_bands(src, None) == (1, 2, 3, 4)  # patching copies every band
        assert model_bands(src, None, feedback=fb) == (1, 2, 3)
        assert model_bands(src, [4, 1]) == (4, 1)  # asked for: used as given
        empty = nodata_flags(src, [1, 2, 3], None, src.read([1, 2, 3]))
    assert any("Band(s) 4 (alpha) left out" in m for m in fb.infos)
    assert empty[:, :4].all() and not empty[:, 4:].any()
