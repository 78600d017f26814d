"""Label rasterisation per window and band statistics."""

import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

from satseg_plugin.core.errors import InputError
from satseg_plugin.core.labels import IGNORE, LabelSet
from satseg_plugin.core.normalization import band_statistics, normalize

T = Affine(0.5, 0, 500000.0, 0, -0.5, 5000000.0)


def pix_box(c0, r0, c1, r1, transform=T):
    x0, y0 = transform * (c0, r0)
    x1, y1 = transform * (c1, r1)
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def test_rasterize_window_classes_and_aoi():
    labels = LabelSet([pix_box(2, 2, 6, 6), pix_box(8, 0, 10, 3)], [1, 2], ["building", "shed"],
                      aoi=pix_box(0, 0, 9, 10))
    out = labels.rasterize(T, (10, 12))
    assert out[2:6, 2:6].tolist() == np.ones((4, 4)).tolist()
    assert (out[0:3, 8] == 2).all()
    assert (out[:, 9:] == IGNORE).all()  # outside the AOI
    assert ((out == 1).sum(), (out == 0).sum()) == (16, 10 * 9 - 16 - 3)
    # a window further right sees the shifted geometry
    shifted = labels.rasterize(T * Affine.translation(2, 2), (4, 4))
    assert shifted.tolist() == np.ones((4, 4)).tolist()


def test_self_intersecting_polygons_are_repaired():
    """A bow-tie drawn by hand (invalid: GEOS refuses to intersect it) and an AOI drawn over itself still label
    their pixels."""
    from shapely.geometry import Polygon

    def bow_tie(c0, r0, c1, r1):  # the pixel rectangle's corners in crossing order
        return Polygon([T * (c0, r0), T * (c1, r1), T * (c1, r0), T * (c0, r1)])

    bow, aoi = bow_tie(2, 2, 6, 6), bow_tie(0, 0, 10, 10)
    assert not bow.is_valid and not aoi.is_valid
    labels = LabelSet([bow], [1], aoi=aoi)
    assert labels.geometries[0].is_valid and labels.aoi.is_valid
    assert labels.geometries[0].area == pytest.approx(8 * 0.25)  # two triangles of 4 px each, 0.5 m pixels
    out = labels.rasterize(T, (10, 10))
    assert 4 <= (out == 1).sum() <= 10 and (out == IGNORE).sum() > 0  # the triangles; outside the AOI's two
    assert labels.query(labels.geometries[0].bounds) == [0]
    # a "polygon" drawn flat repairs to a line, which labels no area: left out like an empty geometry
    flat = Polygon([T * (1, 1), T * (5, 1), T * (3, 1)])
    assert not flat.is_valid
    labels = LabelSet([flat, bow], [1, 1])
    assert len(labels.geometries) == 1 and labels.geometries[0].geom_type == "MultiPolygon"
    # a valid collection (what a repair upstream may hand over) keeps only its polygons
    from shapely.geometry import GeometryCollection, LineString

    mixed = GeometryCollection([LineString([T * (0, 0), T * (9, 9)]), pix_box(2, 2, 4, 4)])
    assert LabelSet([mixed], [1]).rasterize(T, (10, 10)).sum() == 4


def test_empty_labels_name_the_parameter():
    with pytest.raises(InputError, match="LABELS: the label layer holds no polygons"):
        LabelSet([], [])
    with pytest.raises(InputError, match="class indices"):
        LabelSet([pix_box(0, 0, 1, 1)], [3], ["a"])


def test_band_statistics_exclude_nodata(make_raster):
    data = np.zeros((2, 40, 40), "float32")
    data[0] = 10.0
    data[1, :, :20] = 1.0
    data[1, :, 20:] = 3.0
    data[:, :10, :] = -9  # nodata rows
    path = make_raster(data, nodata=-9)
    with rasterio.open(path) as src:
        mean, std = band_statistics(src, [1, 2], tile=16)
        np.testing.assert_allclose(mean, [10.0, 2.0])
        np.testing.assert_allclose(std, [1e-6, 1.0], atol=1e-9)
        sub_mean, _ = band_statistics(src, [1, 2], max_pixels=200, tile=8)
        assert sub_mean[0] == pytest.approx(10.0)


def test_band_statistics_exclude_pixels_a_mask_band_hides(tmp_path):
    """An orthophoto with an internal mask (or alpha) band and no nodata value: the transparent collar is not
    part of the statistics (it used to pull the mean towards the collar's black)."""
    path = str(tmp_path / "masked.tif")
    data = np.full((3, 48, 48), 200, "uint8")
    data[:, :, :24] = 0
    data[1, :, 24:] = 100
    mask = np.full((48, 48), 255, "uint8")
    mask[:, :24] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", driver="GTiff", width=48, height=48, count=3, dtype="uint8") as dst:
            dst.write(data)
            dst.write_mask(mask)
    with rasterio.open(path) as src:
        mean, std = band_statistics(src, [1, 2, 3], tile=16)
    np.testing.assert_allclose(mean, [200.0, 100.0, 200.0])
    np.testing.assert_allclose(std, 1e-6, atol=1e-9)


def test_all_nodata_is_a_clear_error(make_raster):
    path = make_raster(np.full((1, 8, 8), 7, "uint8"), nodata=7)
    with rasterio.open(path) as src, pytest.raises(InputError, match="no valid pixels"):
        band_statistics(src, [1])


def test_normalize():
    out = normalize(np.array([[[2.0, np.nan]], [[4.0, 6.0]]]), [1.0, 4.0], [0.5, 2.0])
    np.testing.assert_allclose(out, [[[2.0, 0.0]], [[0.0, 1.0]]])
    assert out.dtype == np.float32
