"""Patching: pixel-exact georeferencing, edge modes, filters, sampling and failure handling."""

import json
import os

import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

from satseg_plugin.core.errors import CanceledError, InputError, OutputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.core.staging import MARKER_NAME
from satseg_plugin.pipelines.patching.patches import PatchConfig, write_patches

NORTH_UP = Affine(0.5, 0, 500000.0, 0, -0.5, 5000000.0)
ROTATED = Affine.translation(500000.0, 5000000.0) * Affine.rotation(30) * Affine.scale(0.5, -0.5)
SOUTH_UP = Affine(2.0, 0, 1000.0, 0, 2.0, -500.0)


def ramp(count=3, height=37, width=50, dtype="uint16"):
    """Distinct value at every (band, row, col), never 0."""
    data = np.arange(count * height * width, dtype="int64").reshape(count, height, width) % 60000 + 1
    return data.astype(dtype)


def assert_patch_exact(record, src_path, bands=None):
    """The patch file holds exactly the source window and the shifted geotransform."""
    with rasterio.open(src_path) as src, rasterio.open(record.path) as patch:
        bands = bands or list(range(1, src.count + 1))
        assert patch.transform == src.transform * Affine.translation(record.x_off, record.y_off)
        assert patch.crs == src.crs
        assert patch.nodata == src.nodata
        assert (patch.width, patch.height) == (record.width, record.height)
        # oracle: the whole raster padded with the fill value, sliced (rasterio's boundless read goes
        # through a VRT that mishandles rotated transforms, so it is not used here)
        fill = src.nodata if src.nodata is not None else 0
        whole = np.pad(src.read(bands), ((0, 0), (0, record.height), (0, record.width)), constant_values=fill)
        expected = whole[:, record.y_off:record.y_off + record.height, record.x_off:record.x_off + record.width]
        np.testing.assert_array_equal(patch.read(), expected)
        ring = [patch.transform * c for c in ((0, 0), (patch.width, 0), (patch.width, patch.height), (0, patch.height))]
        np.testing.assert_allclose(record.footprint[:4], ring, rtol=0, atol=1e-9)


@pytest.mark.parametrize("transform", [NORTH_UP, ROTATED, SOUTH_UP], ids=["north-up", "rotated", "south-up"])
@pytest.mark.parametrize("edge", ["shift", "pad", "drop"])
def test_patches_are_pixel_exact(make_raster, tmp_path, transform, edge):
    src = make_raster(ramp(), transform=transform, descriptions=["r", "g", "b"])
    result = write_patches(src, str(tmp_path / "out"), PatchConfig(16, 16, edge=edge))
    expected_count = {"shift": 4 * 3, "pad": 4 * 3, "drop": 3 * 2}[edge]
    assert len(result.records) == expected_count
    for record in result.records:
        assert_patch_exact(record, src)
        with rasterio.open(record.path) as patch:
            assert patch.descriptions == ("r", "g", "b")
            assert patch.block_shapes[0] == (16, 16) and patch.compression is not None  # one tile
    if edge == "pad":
        assert max(r.pad_frac for r in result.records) > 0


def test_shift_covers_edges_and_names_by_row_col(make_raster, tmp_path):
    src = make_raster(ramp(height=37, width=50))
    result = write_patches(src, str(tmp_path / "out"), PatchConfig(16, 16))
    assert sorted({r.x_off for r in result.records}) == [0, 16, 32, 34]
    assert sorted({r.y_off for r in result.records}) == [0, 16, 21]
    assert all(r.pad_frac == 0 for r in result.records)
    names = sorted(os.path.basename(r.path) for r in result.records)
    assert names[0] == "in_r0000_c0000.tif" and names[-1] == "in_r0002_c0003.tif"
    assert [r.patch_id for r in result.records] == list(range(12))


def test_overlapping_stride(make_raster, tmp_path):
    src = make_raster(ramp(height=32, width=32))
    result = write_patches(src, str(tmp_path / "out"), PatchConfig(16, 16, stride_x=8, stride_y=8))
    assert len(result.records) == 9
    for record in result.records:
        assert_patch_exact(record, src)


def test_band_subset_keeps_order_and_metadata(make_raster, tmp_path):
    src = make_raster(ramp(count=4), descriptions=["b1", "b2", "b3", "nir"])
    result = write_patches(src, str(tmp_path / "out"), PatchConfig(16, 16, bands=(4, 1)))
    for record in result.records:
        assert_patch_exact(record, src, bands=[4, 1])
        with rasterio.open(record.path) as patch:
            assert patch.descriptions == ("nir", "b1")


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32", "float64"])
def test_any_data_type_and_single_band(make_raster, tmp_path, dtype):
    src = make_raster(ramp(count=1, dtype="uint8").astype(dtype))
    result = write_patches(src, str(tmp_path / "out"), PatchConfig(16, 16))
    for record in result.records:
        assert_patch_exact(record, src)


def test_nodata_fraction_filter_with_nodata_value(make_raster, tmp_path):
    data = ramp(height=32, width=32)
    data[:, :16, :16] = 9  # top-left patch all nodata
    data[:, 16:, :16][:, :4, :4] = 9  # 16 of 256 pixels of the bottom-left patch (6.25 %)
    data[1, 16:, 16:] = 9  # one band only is not nodata
    src = make_raster(data, nodata=9)
    result = write_patches(src, str(tmp_path / "a"), PatchConfig(16, 16, max_nodata_fraction=0.05))
    assert {(r.row, r.col) for r in result.records} == {(0, 1), (1, 1)}
    assert result.skipped_nodata == 2
    result = write_patches(src, str(tmp_path / "b"), PatchConfig(16, 16, max_nodata_fraction=0.1))
    fracs = {(r.row, r.col): r.nodata_frac for r in result.records}
    assert fracs == {(0, 1): 0.0, (1, 0): 0.0625, (1, 1): 0.0}


def test_zero_rule_without_nodata_value(make_raster, tmp_path):
    data = ramp(height=16, width=32)
    data[:, :, :16] = 0  # dark region in all bands
    data[0, :, 16:] = 0  # only one band dark: still valid
    src = make_raster(data)
    result = write_patches(src, str(tmp_path / "out"), PatchConfig(16, 16))
    assert [(r.row, r.col) for r in result.records] == [(0, 1)]


def test_nan_counts_as_nodata(make_raster, tmp_path):
    data = ramp(count=1, height=16, width=32, dtype="uint8").astype("float32")
    data[:, :, :16] = np.nan
    src = make_raster(data, nodata=float("nan"))
    result = write_patches(src, str(tmp_path / "out"), PatchConfig(16, 16))
    assert [(r.row, r.col) for r in result.records] == [(0, 1)]


def test_pad_fraction_does_not_count_as_nodata(make_raster, tmp_path):
    src = make_raster(ramp(height=20, width=20), nodata=0)
    result = write_patches(src, str(tmp_path / "out"), PatchConfig(16, 16, edge="pad"))
    assert len(result.records) == 4
    corner = [r for r in result.records if (r.row, r.col) == (1, 1)][0]
    assert corner.pad_frac == pytest.approx(1 - 16 / 256)
    assert corner.nodata_frac == 0
    with rasterio.open(corner.path) as patch:
        assert (patch.read()[:, 4:, :] == 0).all()


def test_sampling_is_reproducible_and_subset(make_raster, tmp_path):
    src = make_raster(ramp(height=64, width=64))
    runs = [write_patches(src, str(tmp_path / f"s{i}"), PatchConfig(8, 8, sample_count=10, seed=seed))
            for i, seed in enumerate((3, 3, 4))]
    ids = [[r.patch_id for r in run.records] for run in runs]
    assert len(ids[0]) == 10 and ids[0] == ids[1] and ids[0] != ids[2]
    assert ids[0] == sorted(ids[0])
    assert len(os.listdir(tmp_path / "s0")) == 10 + 1  # patches + manifest, no extras left by threads


def test_sampling_skips_invalid_patches(make_raster, tmp_path):
    data = ramp(height=64, width=64)
    data[:, :32, :] = 0
    src = make_raster(data, nodata=0)
    fb = RecordingFeedback()
    result = write_patches(src, str(tmp_path / "out"), PatchConfig(8, 8, sample_count=40), fb)
    assert len(result.records) == 32 and all(r.y_off >= 32 for r in result.records)
    assert any("fewer than" in w for w in fb.warnings)


def test_extent_keeps_overlapping_patches_of_the_full_grid(make_raster, tmp_path):
    src = make_raster(ramp(height=64, width=64))
    # pixels 10..30 in x, 20..40 in y
    x0, y0 = NORTH_UP * (10, 20)
    x1, y1 = NORTH_UP * (30, 40)
    result = write_patches(src, str(tmp_path / "out"), PatchConfig(8, 8, bounds=(x0, y1, x1, y0)))
    assert sorted({r.x_off for r in result.records}) == [8, 16, 24]
    assert sorted({r.y_off for r in result.records}) == [16, 24, 32]
    full = write_patches(src, str(tmp_path / "full"), PatchConfig(8, 8))
    by_id = {r.patch_id: (r.row, r.col) for r in full.records}
    assert all(by_id[r.patch_id] == (r.row, r.col) for r in result.records)  # same ids as a full run
    for record in result.records:
        assert_patch_exact(record, src)


def test_extent_on_rotated_raster_uses_true_footprints(make_raster, tmp_path):
    src = make_raster(ramp(height=64, width=64), transform=ROTATED)
    cx, cy = ROTATED * (36, 36)  # centre of patch (row 4, col 4) of an 8 px grid
    result = write_patches(src, str(tmp_path / "out"), PatchConfig(8, 8, bounds=(cx - 0.1, cy - 0.1, cx + 0.1, cy + 0.1)))
    assert [(r.row, r.col) for r in result.records] == [(4, 4)]


def test_mask_keeps_touching_patches(make_raster, tmp_path):
    src = make_raster(ramp(height=32, width=32))
    xa, ya = NORTH_UP * (2, 2)
    xb, yb = NORTH_UP * (4, 4)
    xc, yc = NORTH_UP * (26, 26)
    xd, yd = NORTH_UP * (27, 27)
    mask = box(xa, yb, xb, ya).union(box(xc, yd, xd, yc))
    result = write_patches(src, str(tmp_path / "out"), PatchConfig(8, 8, mask=mask))
    assert [(r.x_off, r.y_off) for r in result.records] == [(0, 0), (24, 24)]
    assert result.skipped_mask == 14


def test_manifest_describes_the_set(make_raster, tmp_path):
    src = make_raster(ramp())
    result = write_patches(src, str(tmp_path / "out"), PatchConfig(16, 16))
    manifest = json.load(open(tmp_path / "out" / MARKER_NAME))
    assert manifest["kind"] == "patches" and len(manifest["patches"]) == len(result.records)
    assert manifest["config"]["bands"] == [1, 2, 3]


def test_no_crs_warns_and_still_patches(make_raster, tmp_path):
    src = make_raster(ramp(), crs=None)
    fb = RecordingFeedback()
    result = write_patches(src, str(tmp_path / "out"), PatchConfig(16, 16), fb)
    assert result.records and any("no CRS" in w for w in fb.warnings)
    with rasterio.open(result.records[0].path) as patch:
        assert patch.crs is None and patch.transform == NORTH_UP


@pytest.mark.parametrize("config, parameter", [
    (PatchConfig(16, 16, stride_x=0), "STRIDE_X"),
    (PatchConfig(16, 16, stride_y=-4), "STRIDE_Y"),
    (PatchConfig(0, 16), "PATCH_WIDTH"),
    (PatchConfig(64, 64, edge="drop"), "PATCH_WIDTH"),
    (PatchConfig(16, 16, edge="mirror"), "EDGE"),
    (PatchConfig(16, 16, max_nodata_fraction=1.5), "MAX_NODATA_FRACTION"),
    (PatchConfig(16, 16, bands=(4,)), "BANDS"),
    (PatchConfig(16, 16, bounds=(0, 0, 1, 1)), "EXTENT"),
])
def test_bad_parameters_name_the_parameter(make_raster, tmp_path, config, parameter):
    src = make_raster(ramp())
    with pytest.raises(InputError) as info:
        write_patches(src, str(tmp_path / "out"), config)
    assert info.value.parameter == parameter and str(info.value).startswith(parameter)
    assert not (tmp_path / "out").exists()


def test_unreadable_input(tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"not a tiff")
    with pytest.raises(InputError, match="INPUT: cannot read raster"):
        write_patches(str(bad), str(tmp_path / "out"))
    with pytest.raises(InputError, match="INPUT"):
        write_patches(str(tmp_path / "missing.tif"), str(tmp_path / "out"))


def test_gcp_only_raster_is_refused(tmp_path):
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS

    path = str(tmp_path / "gcp.tif")
    gcps = [GroundControlPoint(0, 0, 10, 20), GroundControlPoint(0, 50, 10, 30), GroundControlPoint(37, 0, 20, 20)]
    with rasterio.open(path, "w", driver="GTiff", width=50, height=37, count=1, dtype="uint8",
                       gcps=gcps, crs=CRS.from_epsg(4326)) as dst:
        dst.write(np.ones((1, 37, 50), "uint8"))
    with pytest.raises(InputError, match="ground control points"):
        write_patches(path, str(tmp_path / "out"), PatchConfig(16, 16))


def test_non_empty_output_refused_and_overwrite_replaces(make_raster, tmp_path):
    src = make_raster(ramp())
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    with pytest.raises(OutputError, match="not empty"):
        write_patches(src, str(out), PatchConfig(16, 16))
    with pytest.raises(OutputError, match="not written by SatSeg"):
        write_patches(src, str(out), PatchConfig(16, 16, overwrite=True))
    assert os.listdir(out) == ["keep.txt"]
    write_patches(src, str(tmp_path / "sat"), PatchConfig(16, 16))
    result = write_patches(src, str(tmp_path / "sat"), PatchConfig(32, 32, overwrite=True))
    assert len(os.listdir(tmp_path / "sat")) == len(result.records) + 1


def test_unwritable_output(make_raster, unwritable_dir):
    src = make_raster(ramp())
    with pytest.raises(OutputError, match="OUTPUT_DIR"):
        write_patches(src, os.path.join(unwritable_dir, "out"), PatchConfig(16, 16))


def test_cancel_leaves_previous_output_intact(make_raster, tmp_path):
    src = make_raster(ramp(height=64, width=64))
    out = tmp_path / "out"
    first = write_patches(src, str(out), PatchConfig(16, 16))
    before = sorted(os.listdir(out))
    with pytest.raises(CanceledError):
        write_patches(src, str(out), PatchConfig(8, 8, overwrite=True), RecordingFeedback(cancel_after=5))
    assert sorted(os.listdir(out)) == before and len(first.records) == 16
    assert sorted(os.listdir(tmp_path)) == ["in.tif", "out"]


def test_cancel_before_any_output_leaves_nothing(make_raster, tmp_path):
    src = make_raster(ramp(height=64, width=64))
    with pytest.raises(CanceledError):
        write_patches(src, str(tmp_path / "new" / "out"), PatchConfig(8, 8), RecordingFeedback(cancel_after=3))
    assert sorted(os.listdir(tmp_path)) == ["in.tif"]


def test_progress_reaches_100(make_raster, tmp_path):
    fb = RecordingFeedback()
    write_patches(make_raster(ramp()), str(tmp_path / "out"), PatchConfig(16, 16), fb)
    assert fb.progress[-1] == 100.0 and fb.progress == sorted(fb.progress)
