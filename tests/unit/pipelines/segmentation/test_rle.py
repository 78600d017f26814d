"""Competition RLE: hand-checked strings, round trips, malformed input, and the CSV export/import of rasters."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from satseg_plugin.core.errors import CanceledError, InputError, OutputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.pipelines.segmentation.rle import (
    EMPTY,
    decode,
    encode,
    export_rle,
    import_rle,
    parse_tile_id,
    sidecar_path,
    tile_id,
)

NORTH_UP = Affine(0.5, 0, 500000.0, 0, -0.5, 5000000.0)
ROTATED = Affine.translation(500000.0, 5000000.0) * Affine.rotation(30) * Affine.scale(0.5, -0.5)

# Flattened row-major: 0 1 1 / 0 0 1 / 1 1 1 -> pixels 2-3 and 6-9 (1-based).
HAND = np.array([[0, 1, 1], [0, 0, 1], [1, 1, 1]], np.uint8)


def test_encode_hand_computed():
    assert encode(HAND) == "2 2 6 4"
    assert encode(np.zeros((3, 3))) == EMPTY == "-1"
    assert encode(np.ones((2, 2), bool)) == "1 4"
    assert encode(np.eye(3)) == "1 1 5 1 9 1"
    assert encode(np.array([[0, 0], [0, 7]])) == "4 1"  # any non-zero value is foreground


def test_decode_hand_computed():
    out = decode("2 2 6 4", (3, 3))
    assert out.dtype == np.uint8 and out.shape == (3, 3)
    np.testing.assert_array_equal(out, HAND)
    np.testing.assert_array_equal(decode("-1", (3, 3)), np.zeros((3, 3)))
    np.testing.assert_array_equal(decode("", (2, 2)), np.zeros((2, 2)))  # pandas' empty cell
    np.testing.assert_array_equal(decode("  1 4\n", (2, 2)), np.ones((2, 2)))
    np.testing.assert_array_equal(decode("1 1 2 1", 3), [1, 1, 0])  # touching runs are accepted


def test_round_trip_random_masks():
    rng = np.random.default_rng(42)
    for _ in range(200):
        shape = tuple(rng.integers(1, 20, size=2))
        density = rng.choice([0.0, 0.05, 0.5, 0.95, 1.0])
        mask = (rng.random(shape) < density).astype(np.uint8)
        rle = encode(mask)
        np.testing.assert_array_equal(decode(rle, shape), mask)
        assert encode(decode(rle, shape)) == rle
        if mask.any():
            numbers = [int(n) for n in rle.split()]
            assert sum(numbers[1::2]) == mask.sum()


@pytest.mark.parametrize("rle, message", [
    ("1 2 3", "odd count"),
    ("1 a", "'a', is not a non-negative integer"),
    ("1.5 2", "is not a non-negative integer"),
    ("-2 1", "is not a non-negative integer"),
    ("0 1", "starts are 1-based"),
    ("1 0", "lengths must be at least 1"),
    ("5 1 2 1", "sorted and must not overlap"),
    ("1 3 2 1", "sorted and must not overlap"),
    ("8 3", "past the end of the 9-pixel mask"),
    ("1 99999999999999999999", "far past the end"),
    ("-1 1 2", "must stand alone"),
])
def test_decode_rejects_malformed(rle, message):
    with pytest.raises(ValueError, match=message):
        decode(rle, (3, 3))


def test_tile_ids():
    assert tile_id("scene", 3, 12) == "scene_r0003_c0012"
    assert tile_id("a_b", 1, 2, digits=5) == "a_b_r00001_c00002"
    assert parse_tile_id("a_b_r00001_c00002") == ("a_b", 1, 2)
    with pytest.raises(ValueError, match="_r<row>_c<col>"):
        parse_tile_id("scene_7")


def mask_with_edge_cases(height=37, width=50, tile=16):
    """Random blobs, one all-empty tile (row 0, col 1) and one full tile (row 1, col 0)."""
    rng = np.random.default_rng(3)
    data = (rng.random((height, width)) < 0.3).astype(np.uint8)
    data[:tile, tile:2 * tile] = 0
    data[tile:2 * tile, :tile] = 1
    return data


@pytest.mark.parametrize("transform", [NORTH_UP, ROTATED], ids=["north-up", "rotated"])
def test_export_import_round_trip_is_exact(make_raster, tmp_path, transform):
    data = mask_with_edge_cases()
    src = make_raster(data, name="mask.tif", transform=transform)
    csv_path = str(tmp_path / "sub.csv")
    result = export_rle(src, csv_path, tile_size=16)
    assert (result.rows, result.cols, result.tile_count) == (3, 4, 12)
    lines = Path(csv_path).read_text().splitlines()
    assert lines[0] == "img_id,mask_rle" and len(lines) == 13
    rows = dict(line.split(",") for line in lines[1:])
    assert rows["mask_r0000_c0001"] == "-1"
    assert rows["mask_r0001_c0000"] == "1 256"
    # edge tile (row 2, col 3): 5 rows x 2 columns of the raster, padded with 0 to 16 x 16
    edge = decode(rows["mask_r0002_c0003"], (16, 16))
    np.testing.assert_array_equal(edge[:5, :2], data[32:, 48:])
    assert edge[5:].sum() == 0 and edge[:, 2:].sum() == 0
    assert result.empty_tiles == sum(v == "-1" for v in rows.values())

    meta = json.loads(Path(sidecar_path(csv_path)).read_text())
    assert (meta["width"], meta["height"], meta["tile_size"]) == (50, 37, 16)
    assert Affine(*meta["transform"]) == transform

    out = import_rle(csv_path, str(tmp_path / "rebuilt.tif"))
    with rasterio.open(out) as dst, rasterio.open(src) as ref:
        assert (dst.width, dst.height, dst.dtypes[0]) == (50, 37, "uint8")
        assert dst.transform == ref.transform and dst.crs == ref.crs
        assert dst.compression is not None and dst.profile["tiled"]
        np.testing.assert_array_equal(dst.read(1), data)
    assert [n for n in os.listdir(tmp_path) if n.startswith(".satseg-tmp")] == []


def test_export_nodata_threshold_and_prefix(make_raster, tmp_path):
    data = np.array([[0.0, 0.4, 0.6], [0.9, -9999.0, np.nan]], np.float32)
    src = make_raster(data, nodata=-9999.0)
    csv_path = str(tmp_path / "p.csv")
    export_rle(src, csv_path, tile_size=4, prefix="area51", threshold=0.5)
    assert Path(csv_path).read_text().splitlines()[1] == "area51_r0000_c0000,3 1 5 1"
    out = import_rle(csv_path, str(tmp_path / "p.tif"))
    with rasterio.open(out) as dst:
        np.testing.assert_array_equal(dst.read(1), [[0, 0, 1], [1, 0, 0]])
        assert dst.nodata is None  # -9999 is no byte: the rebuilt mask has no nodata


def test_mask_nodata_kept_when_it_is_a_byte(make_raster, tmp_path):
    data = np.array([[0, 1, 255], [1, 1, 0]], np.uint8)
    src = make_raster(data, nodata=255)
    export_rle(src, str(tmp_path / "m.csv"), tile_size=2)
    with rasterio.open(import_rle(str(tmp_path / "m.csv"), str(tmp_path / "m.tif"))) as dst:
        assert dst.nodata == 255
        np.testing.assert_array_equal(dst.read(1), [[0, 1, 0], [1, 1, 0]])


def test_import_with_reference_and_no_sidecar(make_raster, tmp_path):
    data = mask_with_edge_cases(20, 30, 8)
    src = make_raster(data, name="grid.tif")
    csv_path = str(tmp_path / "s.csv")
    export_rle(src, csv_path, tile_size=8)
    os.remove(sidecar_path(csv_path))
    with pytest.raises(InputError, match="REFERENCE: no sidecar"):
        import_rle(csv_path, str(tmp_path / "x.tif"), tile_size=8)
    out = import_rle(csv_path, str(tmp_path / "r.tif"), reference=src, tile_size=8)
    with rasterio.open(out) as dst:
        np.testing.assert_array_equal(dst.read(1), data)
        assert dst.transform == NORTH_UP
    with pytest.raises(InputError, match="INPUT: .*outside the"):  # wrong tile size: ids run past the grid
        import_rle(csv_path, str(tmp_path / "y.tif"), reference=src, tile_size=16)
    assert not (tmp_path / "x.tif").exists() and not (tmp_path / "y.tif").exists()


def test_missing_tiles_are_zero_and_other_images_skipped(make_raster, tmp_path):
    src = make_raster(np.ones((4, 4), np.uint8), name="a.tif")
    csv_path = str(tmp_path / "a.csv")
    export_rle(src, csv_path, tile_size=2)
    lines = Path(csv_path).read_text().splitlines()
    lines = lines[:2] + lines[3:] + ["b_r0000_c0000,1 4"]  # drop tile (0, 1), add a tile of image 'b'
    Path(csv_path).write_text("\n".join(lines) + "\n")
    feedback = RecordingFeedback()
    with rasterio.open(import_rle(csv_path, str(tmp_path / "a_out.tif"), feedback=feedback)) as dst:
        np.testing.assert_array_equal(dst.read(1), [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])
    assert any("1 of the 4 tiles are missing" in w for w in feedback.warnings)
    assert any("Skipped 1 rows of other images" in w for w in feedback.warnings)


@pytest.mark.parametrize("content, message", [
    ("id,rle\nx_r0000_c0000,-1\n", "header row"),
    ("img_id,mask_rle\nx_r0000_c0000,1 2 3\n", "tile 'x_r0000_c0000' .*malformed RLE: .*odd count"),
    ("img_id,mask_rle\nx_r0000_c0000,1 99\n", "past the end of the 16-pixel mask"),
    ("img_id,mask_rle\nx_r0000_c0000,-1\nx_r0000_c0000,-1\n", "appears twice"),
    ("img_id,mask_rle\nx_tile7,-1\n", "line 2 .*_r<row>_c<col>"),
    ("img_id,mask_rle\nx_r0000_c0000\n", "no comma"),
    ("img_id,mask_rle\nx_r0000_c0000,-1\ny_r0000_c0001,-1\n", "several images"),
])
def test_import_rejects_bad_csv(make_raster, tmp_path, content, message):
    ref = make_raster(np.zeros((4, 8), np.uint8))
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text(content)
    with pytest.raises(InputError, match=f"INPUT: .*{message}"):
        import_rle(str(csv_path), str(tmp_path / "out.tif"), reference=ref, tile_size=4)
    assert not (tmp_path / "out.tif").exists()


def test_export_cancel_and_overwrite(make_raster, tmp_path):
    src = make_raster(np.ones((40, 40), np.uint8))
    with pytest.raises(CanceledError):
        export_rle(src, str(tmp_path / "c.csv"), tile_size=8, feedback=RecordingFeedback(cancel_after=2))
    assert os.listdir(tmp_path) == ["in.tif"]
    export_rle(src, str(tmp_path / "c.csv"), tile_size=8)
    with pytest.raises(OutputError, match="exists"):
        export_rle(src, str(tmp_path / "c.csv"), tile_size=8, overwrite=False)
    with pytest.raises(InputError, match="TILE_SIZE"):
        export_rle(src, str(tmp_path / "d.csv"), tile_size=0)
    with pytest.raises(InputError, match="PREFIX"):
        export_rle(src, str(tmp_path / "d.csv"), prefix="a,b")
    with pytest.raises(InputError, match="OUTPUT: .*GeoTIFF"):
        import_rle(str(tmp_path / "c.csv"), str(tmp_path / "d.png"))
