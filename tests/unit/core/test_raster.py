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
