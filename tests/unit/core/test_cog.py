"""Cloud-Optimised GeoTIFF export: same grid and values, COG layout, overviews, staged."""

import os

import numpy as np
import pytest
import rasterio

from satseg_plugin.core.cog import export_cog
from satseg_plugin.core.errors import InputError


@pytest.mark.parametrize("categorical", [False, True])
def test_cog_keeps_grid_values_and_is_cloud_optimised(make_raster, tmp_path, categorical):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 9, (1, 1500, 1300), dtype="uint8")
    src = make_raster(data, nodata=0)
    if categorical:
        with rasterio.open(src, "r+") as dst:
            dst.write_colormap(1, {i: (20 * i, 0, 0, 255) for i in range(9)})
    out = export_cog(src, str(tmp_path / "out" / "c.tif"))
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert (b.crs, b.transform, b.shape, b.nodata) == (a.crs, a.transform, a.shape, a.nodata)
        np.testing.assert_array_equal(b.read(), a.read())
        assert b.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert b.block_shapes[0] == (512, 512) and b.overviews(1)
        assert bool(b.colormap(1)) if categorical else True
        overview = b.read(1, out_shape=(1, b.height // b.overviews(1)[0], b.width // b.overviews(1)[0]))
        if categorical:  # nearest overviews: only values that exist
            assert set(np.unique(overview)) <= set(range(9))
    assert sorted(os.listdir(tmp_path / "out")) == ["c.tif"]


def test_cog_bad_inputs(make_raster, tmp_path):
    src = make_raster(np.ones((1, 10, 10), "uint8"))
    with pytest.raises(InputError, match="OUTPUT"):
        export_cog(src, str(tmp_path / "c.png"))
    with pytest.raises(InputError, match="COMPRESSION"):
        export_cog(src, str(tmp_path / "c.tif"), compression="JPEG2000")
    assert not os.path.exists(tmp_path / "c.tif")
