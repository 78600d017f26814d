"""Mask polygonisation across strip borders, areas, holes, mean probability, rotated grids."""

import numpy as np
import pytest
from affine import Affine
from shapely.geometry import box

from satseg_plugin.core.errors import InputError
from satseg_plugin.core.vectorize import polygonize_mask, sieve_array, sieve_file

T = Affine(0.5, 0, 500000.0, 0, -0.5, 5000000.0)


def mask_with_ring():
    mask = np.zeros((20, 24), "uint8")
    mask[2:14, 3:15] = 1
    mask[6:10, 7:11] = 0  # hole
    mask[16:18, 20:22] = 1  # small square, 4 px = 1 m²
    mask[0, 23] = 255  # nodata
    return mask


@pytest.mark.parametrize("strip_rows", [20, 5, 3, 1])
def test_polygons_are_identical_whatever_the_strip_height(make_raster, strip_rows):
    path = make_raster(mask_with_ring(), nodata=255)
    records = polygonize_mask(path, strip_rows=strip_rows)
    areas = sorted(r.area_m2 for r in records)
    assert areas == [1.0, (144 - 16) * 0.25]
    big = max(records, key=lambda r: r.area_m2)
    assert len(big.geometry.interiors) == 1
    x0, y0 = T * (3, 14)
    x1, y1 = T * (15, 2)
    assert big.geometry.envelope.equals(box(x0, y0, x1, y1))


def test_min_area_simplify_and_mean_prob(make_raster):
    mask = mask_with_ring()
    prob = np.where(mask == 1, 0.8, 0.1).astype("float32")
    prob[16:18, 20:22] = 0.6
    mpath = make_raster(mask, name="m.tif", nodata=255)
    ppath = make_raster(prob, name="p.tif", nodata=-1)
    records = polygonize_mask(mpath, ppath, min_area=2.0)
    assert len(records) == 1 and records[0].mean_prob == pytest.approx(0.8)
    small = polygonize_mask(mpath, ppath)
    assert sorted(round(r.mean_prob, 5) for r in small) == [0.6, 0.8]
    simplified = polygonize_mask(mpath, simplify=0.3)
    assert all(r.geometry.is_valid for r in simplified)


def test_rotated_grid(make_raster):
    rotated = Affine.translation(1000.0, 2000.0) * Affine.rotation(25) * Affine.scale(2.0, -2.0)
    mask = np.zeros((10, 10), "uint8")
    mask[2:5, 3:7] = 1
    path = make_raster(mask, transform=rotated)
    (record,) = polygonize_mask(path, strip_rows=3)
    assert record.area_m2 == pytest.approx(12 * 4.0)
    corner = rotated * (3, 2)
    assert any(np.allclose(corner, c) for c in record.geometry.exterior.coords)


def test_classes_and_geographic_crs(make_raster):
    mask = np.zeros((6, 6), "uint8")
    mask[0:2, 0:2] = 1
    mask[3:6, 3:6] = 2
    path = make_raster(mask)
    assert sorted((r.class_id, r.area_m2) for r in polygonize_mask(path)) == [(1, 1.0), (2, 2.25)]
    assert [r.class_id for r in polygonize_mask(path, classes=[2])] == [2]
    geo = make_raster(mask, name="geo.tif", crs="EPSG:4326", transform=Affine(0.001, 0, 10, 0, -0.001, 50))
    with pytest.raises(InputError, match="geographic CRS"):
        polygonize_mask(geo)


def test_sieve_removes_specks_fills_small_holes_and_leaves_nodata_alone(make_raster):
    import rasterio

    mask = np.zeros((60, 80), np.uint8)
    mask[10:30, 10:30] = 1  # an object of 400 px ...
    mask[18:20, 18:20] = 0  # ... with a 4 px hole
    mask[40, 40] = mask[50:52, 60:62] = 1  # specks of 1 and 4 px
    mask[5, 70] = 2  # a one-pixel speck of another class
    mask[45:60, 0:15] = 255  # nodata (declared): never merged into, never changed
    mask[50, 5] = 1  # a speck inside nodata stays: nodata is not a neighbour it can take
    path = make_raster(mask[None], nodata=255)
    sieve_file(path, 10)
    with rasterio.open(path) as src:
        out = src.read(1)
    expected = np.zeros_like(mask)
    expected[10:30, 10:30] = 1
    expected[45:60, 0:15] = 255
    expected[50, 5] = 1
    np.testing.assert_array_equal(out, expected)
    # the in-memory version gives the same, and 0 or 1 changes nothing
    np.testing.assert_array_equal(sieve_array(mask, 10, valid=mask != 255), expected)
    np.testing.assert_array_equal(sieve_array(mask, 1), mask)
    sieve_file(path, 0)
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(1), expected)
