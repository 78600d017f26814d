"""core/tiling: a distributed work unit is a column band restricted to a range of output rows (issue 17).

Sweeping the grid's row parts one by one and putting their blocks together must give the whole sweep's
values and nodata flags bit for bit, for both blends, wherever the cuts fall (inside Hann overlaps, inside
ramps, on tile borders), and each part must only give rows of its range.
"""

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from satseg_plugin.core.distributed import tile_units
from satseg_plugin.core.progress import NullFeedback
from satseg_plugin.core.tiling import SERIAL, HannBlend, RampBlend, TileReader, hann_grid, ramp_grid, sweep

from .test_tiling_pipeline import predict, scene

REGION = Window(3, 5, 160, 140)


def grid_and_blend(layout):
    if layout == "hann":
        return hann_grid(REGION, 150, 170, 32, 8), HannBlend(32)
    return ramp_grid(REGION, 150, 170, 32, 8), RampBlend()


def swept(path, grid, blend, band_columns, bands=None):
    """The sweep's blocks put together on the region: (values, empty, rows given), nan where no block fell."""
    values = np.full((1, int(REGION.height), int(REGION.width)), np.nan, np.float32)
    empty = np.zeros(values.shape[1:], bool)
    given = set()
    with rasterio.open(path) as src:
        reader = TileReader(src, [1, 2], np.array([120.0, 130.0], np.float32), grid.tile)
        for b in sweep(grid, reader, predict, blend, NullFeedback(), 3, band_columns, SERIAL, bands):
            rows = slice(b.r0 - int(REGION.row_off), b.r1 - int(REGION.row_off))
            cols = slice(b.c0 - int(REGION.col_off), b.c1 - int(REGION.col_off))
            assert np.isnan(values[:, rows, cols]).all()  # no pixel is given twice
            values[:, rows, cols] = b.values
            empty[rows, cols] = b.empty
            given.update(range(b.r0, b.r1))
    return values, empty, given


@pytest.mark.parametrize("layout", ["hann", "ramp"])
@pytest.mark.parametrize("band_columns, step", [(1000, 1), (64, 8), (64, 32)])
def test_row_parts_put_together_give_the_whole_sweep_bit_for_bit(make_raster, layout, band_columns, step):
    path = make_raster(scene(), nodata=0)
    grid, blend = grid_and_blend(layout)
    whole, whole_empty, _ = swept(path, grid, blend, band_columns)
    assert not np.isnan(whole).any() and whole_empty.any()
    ranges = grid.row_ranges(40, step)
    assert len(ranges) > 4 and ranges[0][0] == 5 and ranges[-1][1] == 145
    values = np.full_like(whole, np.nan)
    empty = np.zeros_like(whole_empty)
    for a, b in ranges:
        part = grid.row_part((a, b))
        assert part.output_rows == (a, b) and part.region == grid.region and part.cols == grid.cols
        assert len(part.rows) < len(grid.rows)
        got, got_empty, given = swept(path, part, blend, band_columns)
        assert given == set(range(a, b))  # a part gives its rows and no other
        rows = slice(a - 5, b - 5)
        values[:, rows] = got[:, rows]
        empty[rows] = got_empty[rows]
    np.testing.assert_array_equal(values, whole)
    np.testing.assert_array_equal(empty, whole_empty)


def test_a_part_of_some_bands_gives_those_bands_rows_only(make_raster):
    path = make_raster(scene(), nodata=0)
    grid, blend = grid_and_blend("ramp")
    whole, _, _ = swept(path, grid, blend, 64)
    band = grid.column_bands(64)[1]
    got, _, given = swept(path, grid.row_part((40, 90)), blend, 64, [band])
    assert given == set(range(40, 90))
    cols = slice(band[0] - 3, band[1] - 3)
    np.testing.assert_array_equal(got[:, 35:85, cols], whole[:, 35:85, cols])
    assert np.isnan(got[:, :35]).all() and np.isnan(got[:, 85:]).all() and np.isnan(got[:, :, :band[0] - 3]).all()


def test_row_ranges_start_on_steps_and_hold_a_tile():
    grid = hann_grid(Window(0, 10, 300, 200), 400, 300, 64, 16)
    assert grid.row_ranges(3, 64, 64) == [(10, 74), (74, 138), (138, 210)]
    assert grid.row_ranges(1, 64) == [(10, 210)]
    assert grid.row_ranges(50, 64, 64) == [(10, 74), (74, 138), (138, 210)]  # no more than whole steps
    assert grid.row_ranges(50, 64, 100) == [(10, 210)]  # 138..210 would be shorter than min_rows
    assert grid.row_ranges(4, 256) == [(10, 210)]  # shorter than a step: one range
    big = hann_grid(Window(0, 0, 10240, 10240), 10240, 10240, 512, 128)
    assert big.row_ranges(4, 256, 512) == [(0, 2560), (2560, 5120), (5120, 7680), (7680, 10240)]


def test_row_part_keeps_the_tile_rows_that_count_and_refuses_rows_outside():
    grid = hann_grid(Window(0, 10, 300, 200), 400, 300, 64, 16)
    assert [r.origin for r in grid.rows] == [10, 58, 106, 146]
    assert [r.origin for r in grid.row_part((74, 138)).rows] == [58, 106]  # 10..73 ends before 74
    assert [r.origin for r in grid.row_part((73, 74)).rows] == [10, 58]
    ramp = ramp_grid(Window(0, 0, 200, 200), 200, 200, 64, 16)
    assert [tuple(r) for r in ramp.row_part((100, 105)).rows] == [(48, 52, 108), (96, 100, 152)]  # 100..104 is ramp
    assert [tuple(r) for r in ramp.row_part((110, 140)).rows] == [(96, 100, 152)]
    for bad in ((0, 20), (200, 211), (50, 50)):
        with pytest.raises(ValueError):
            grid.row_part(bad)


def test_tile_units_cut_every_band_into_the_same_row_ranges():
    grid = hann_grid(Window(0, 0, 10240, 10240), 10240, 10240, 512, 128)
    units = tile_units(grid, 8192, 8)
    assert [band for band, _ in units] == [(0, 8192)] * 4 + [(8192, 10240)] * 4
    assert [rows for _, rows in units[:4]] == [rows for _, rows in units[4:]] == grid.row_ranges(4, 256, 512)
    few = hann_grid(Window(0, 0, 300, 600), 600, 300, 64, 16)
    units = tile_units(few, 128, 3)
    assert [band for band, _ in units] == [(0, 128), (128, 256), (256, 300)]  # one range each: 3 bands, 3 units
    assert {rows for _, rows in units} == {(0, 600)}
