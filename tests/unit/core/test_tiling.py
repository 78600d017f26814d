"""core/tiling: the tile grid, reading with the nodata rule, the two blends, block writing, and the golden
outputs of the sweeps as they were before core/tiling (tests/unit/data/tiling_golden.npz, see tiling_golden.py)."""

import itertools
import os

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from satseg_plugin.core.errors import InputError
from satseg_plugin.core.progress import NullFeedback
from satseg_plugin.core.tiling import (
    SERIAL,
    BlockWriter,
    HannBlend,
    Output,
    RampBlend,
    TileReader,
    check_overlap,
    core_spans,
    fit_tile,
    hann_grid,
    hann_window,
    nodata_flags,
    ramp_grid,
    ramp_weights,
    sweep,
    tile_origins,
)

# ----------------------------------------------------------------------------------------------- grid


def test_hann_grid_is_a_value_anchored_at_the_region():
    grid = hann_grid(Window(10, 20, 100, 30), 500, 400, 64, 16)
    assert [c.origin for c in grid.cols] == [10, 46] and [r.origin for r in grid.rows] == [20]
    assert all(c.stop - c.start == 64 and c.start == c.origin for c in grid.cols)
    assert len(grid) == 2 and grid.windows() == [Window(10, 20, 64, 64), Window(46, 20, 64, 64)]
    assert grid.half == 0
    assert grid.column_bands(64) == [(10, 74), (74, 110)]
    assert [c.origin for c in grid.cols_meeting((74, 110))] == [46]  # the first tile ends at column 73
    assert [c.origin for c in grid.cols_meeting((73, 110))] == [10, 46]


def test_ramp_grid_keeps_the_raster_grid_for_any_extent():
    whole = ramp_grid(Window(0, 0, 200, 200), 200, 200, 64, 16)
    assert whole.half == 4
    assert [tuple(c) for c in whole.cols] == [(0, 0, 60), (48, 52, 108), (96, 100, 152), (136, 144, 200)]
    part = ramp_grid(Window(100, 0, 20, 200), 200, 200, 64, 16)
    assert part.rows == whole.rows and part.cols == whole.cols[1:3]  # supports meeting columns 100..119


def test_tile_size_and_overlap_checks():
    assert fit_tile(None, 32) == 512 and fit_tile(0, 32) == 512 and fit_tile(70, 32) == 96 and fit_tile(8, 32) == 32
    assert check_overlap(64, None) == 16 and check_overlap(64, 0) == 0
    for bad in (64, -1):
        with pytest.raises(InputError) as info:
            check_overlap(64, bad)
        assert info.value.parameter == "OVERLAP"


def test_tile_origins_cover_region():
    assert tile_origins(0, 100, 64, 48) == [0, 36]
    assert tile_origins(10, 30, 64, 48) == [10]
    for length in range(1, 300, 7):
        starts = tile_origins(0, length, 64, 48)
        covered = {p for s in starts for p in range(s, s + 64)}
        assert set(range(length)) <= covered


def check_spans(length, tile, overlap):
    spans = core_spans(length, tile, overlap)
    if length <= tile:
        assert spans == [(0, 0, length)]
        return
    origins = [o for o, _, _ in spans]
    assert origins == sorted(set(origins)) and origins[0] == 0 and origins[-1] + tile == length
    # the cores partition [0, length) exactly, in order, none empty
    assert spans[0][1] == 0 and spans[-1][2] == length
    assert all(a[2] == b[1] for a, b in zip(spans, spans[1:]))
    assert all(start < end for _, start, end in spans)
    for i, (origin, start, end) in enumerate(spans):
        assert origin <= start < end <= origin + tile  # the core lies inside its tile
        # away from the raster edges a core keeps half the overlap from its tile's border
        if i > 0:
            assert start - origin >= overlap // 2
        if i < len(spans) - 1:
            assert origin + tile - end >= overlap // 2
    # neighbouring tiles overlap by at least the overlap asked for
    assert all(b - a <= tile - overlap for a, b in zip(origins, origins[1:]))


@pytest.mark.parametrize("tile", [32, 64, 96, 512])
def test_core_spans_partition_every_length(tile):
    overlaps = sorted({0, 1, 7, tile // 4, tile // 2, tile - 1})
    for length, overlap in itertools.product(range(1, 3 * tile + 40), overlaps):
        check_spans(length, tile, overlap)


def test_core_spans_by_hand():
    assert core_spans(50, 64, 16) == [(0, 0, 50)]
    assert core_spans(64, 64, 16) == [(0, 0, 64)]
    # origins 0, 48, 96, 136 (the last shifted to end at 200); borders at the middle of each overlap
    assert core_spans(200, 64, 16) == [(0, 0, 56), (48, 56, 104), (96, 104, 148), (136, 148, 200)]
    assert core_spans(128, 64, 0) == [(0, 0, 64), (64, 64, 128)]


# ----------------------------------------------------------------------------------------------- reading


def read_tile(path, window, tile=8, fill=(7.0, 9.0)):
    with rasterio.open(path) as src:
        return TileReader(src, [1, 2], np.asarray(fill, np.float32), tile).read(window)


def test_reader_pads_past_the_edge_with_the_fill_and_flags_it(make_raster):
    """Past the raster's edge a tile holds the fill (the band means), as for nodata. Segmentation used to pad
    with raw 0 there, so its probabilities change where a tile runs past the raster (a raster or EXTENT
    narrower than one tile at the raster's edge); cluster maps padded with the band means already."""
    data = np.arange(2 * 6 * 5, dtype="uint8").reshape(2, 6, 5) + 1
    tile = read_tile(make_raster(data), Window(2, 3, 8, 8))
    assert tile.raw.dtype == np.float32 and tile.raw.shape == (2, 8, 8)
    np.testing.assert_array_equal(tile.raw[:, :3, :3], data[:, 3:, 2:])
    assert not tile.empty[:3, :3].any() and tile.empty[3:].all() and tile.empty[:, 3:].all()
    assert (tile.raw[0][tile.empty] == 7).all() and (tile.raw[1][tile.empty] == 9).all()


def test_nodata_rule_uses_what_the_raster_declares(make_raster, tmp_path):
    data = np.full((2, 4, 4), 50, "uint8")
    data[:, 0, 0] = 0  # zero in every band
    data[0, 1, 1] = 0  # zero in one band only: data
    declared = read_tile(make_raster(data, name="d.tif", nodata=0), Window(0, 0, 4, 4), tile=4)
    assert declared.empty.sum() == 1 and declared.empty[0, 0]
    assert (declared.raw[:, 0, 0] == [7, 9]).all() and declared.raw[0, 1, 1] == 0
    # no nodata value: zeros are data (the rule of cluster maps before core/tiling made them nodata)
    plain = read_tile(make_raster(data, name="p.tif"), Window(0, 0, 4, 4), tile=4)
    assert not plain.empty.any() and (plain.raw[:, 0, 0] == 0).all()
    # floats: NaN or infinity in any band is nodata, even without a nodata value
    floats = data.astype("float32")
    floats[1, 2, 2] = np.nan
    floats[0, 3, 3] = np.inf
    flagged = read_tile(make_raster(floats, name="f.tif"), Window(0, 0, 4, 4), tile=4)
    assert sorted(zip(*np.nonzero(flagged.empty))) == [(2, 2), (3, 3)]
    # a mask band (no nodata value): masked pixels are nodata
    path = str(tmp_path / "masked.tif")
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=2, dtype="uint8") as dst:
            dst.write(np.full((2, 4, 4), 50, "uint8"))
            mask = np.full((4, 4), 255, "uint8")
            mask[3, :2] = 0
            dst.write_mask(mask)
    with rasterio.open(path) as src:
        data = src.read([1, 2])
        empty = nodata_flags(src, [1, 2], Window(0, 0, 4, 4), data)
    assert sorted(zip(*np.nonzero(empty))) == [(3, 0), (3, 1)]


# ----------------------------------------------------------------------------------------------- blending


def test_hann_window_is_positive_symmetric_and_peaks_in_the_middle():
    w = hann_window(64)
    assert w.shape == (64, 64) and (w > 0).all()
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert w[32, 32] > 0.99 and w[0, 0] < 0.01


def test_blended_overlaps_reconstruct_a_smooth_field_exactly():
    """Tiles that each predict the same underlying field blend back to that field (no seams)."""
    tile, stride, length = 32, 24, 100
    field = np.sin(np.linspace(0, 6, length))[:, None] * np.cos(np.linspace(0, 4, length))[None, :]
    acc = np.zeros_like(field)
    wsum = np.zeros_like(field)
    w = hann_window(tile)
    for y in tile_origins(0, length, tile, stride):
        for x in tile_origins(0, length, tile, stride):
            acc[y:y + tile, x:x + tile] += field[y:y + tile, x:x + tile] * w
            wsum[y:y + tile, x:x + tile] += w
    np.testing.assert_allclose(acc / wsum, field, atol=1e-6)


class FieldReader:
    """A reader of a synthetic field: tile outputs are computed by ``predict`` from the tile's position."""

    def __init__(self, tile, empty_at=None):
        self.tile, self.empty_at = tile, empty_at

    def read(self, window):
        from satseg_plugin.core.tiling import Tile

        y, x = np.mgrid[window.row_off:window.row_off + self.tile, window.col_off:window.col_off + self.tile]
        empty = np.zeros((self.tile, self.tile), bool) if self.empty_at is None else self.empty_at(y, x)
        return Tile(window, np.stack([y, x]).astype(np.float32), empty)


def assemble(grid, blend, predict, band_columns, reader, kinds=None, threads=None):
    """The sweep's blocks pasted into the region; ``kinds`` (a set) collects the types of ``Block.values``."""
    x0, y0 = int(grid.region.col_off), int(grid.region.row_off)
    out = np.full((1, int(grid.region.height), int(grid.region.width)), np.nan, np.float32)
    empty = np.zeros(out.shape[1:], bool)
    extra = {} if threads is None else {"threads": threads}
    for block in sweep(grid, reader, predict, blend, NullFeedback(), 3, band_columns, **extra):
        target = out[:, block.r0 - y0:block.r1 - y0, block.c0 - x0:block.c1 - x0]
        assert np.isnan(target).all()  # every pixel comes once
        if kinds is not None:
            kinds.add(type(block.values))
        target[:] = block.values if isinstance(block.values, np.ndarray) else block.values.cpu().numpy()
        empty[block.r0 - y0:block.r1 - y0, block.c0 - x0:block.c1 - x0] = block.empty
    assert not np.isnan(out).any()
    return out[0], empty


@pytest.mark.parametrize("band_columns", [1000, 50])
def test_hann_sweep_gives_back_a_field_every_tile_agrees_on(band_columns):
    """Tiles that all predict the same field blend back to it, whatever the column bands; nodata stays flagged."""
    grid = hann_grid(Window(5, 3, 140, 90), 120, 160, 32, 8)
    field = lambda y, x: np.sin(y / 9.0) + np.cos(x / 13.0)  # noqa: E731
    reader = FieldReader(32, empty_at=lambda y, x: (y >= 40) & (y < 50) & (x >= 60) & (x < 70))
    predict = lambda raw: field(raw[:, :1], raw[:, 1:2])  # noqa: E731
    out, empty = assemble(grid, HannBlend(32), predict, band_columns, reader)
    y, x = np.mgrid[3:93, 5:145]
    np.testing.assert_allclose(out, field(y, x), atol=1e-5)
    np.testing.assert_array_equal(empty, (y >= 40) & (y < 50) & (x >= 60) & (x < 70))


@pytest.mark.parametrize("band_columns", [1000, 50])
def test_hann_blend_on_a_device_gives_the_host_blend(band_columns):
    """Accumulators kept as torch tensors (on a GPU in use; here the CPU) give the numpy blend's blocks: the
    tile outputs stay tensors, only finished blocks come back as numpy."""
    torch = pytest.importorskip("torch")
    grid = hann_grid(Window(5, 3, 140, 90), 120, 160, 32, 8)
    rng = np.random.default_rng(0)
    noise = rng.random((1, 120, 160), dtype=np.float32)
    reader = FieldReader(32, empty_at=lambda y, x: (y >= 40) & (y < 50) & (x >= 60) & (x < 70))

    def predict(raw):  # a different value per tile and pixel, so every weight matters
        y, x = raw[:, 0, 0, 0].astype(int), raw[:, 1, 0, 0].astype(int)
        return np.stack([np.pad(noise, ((0, 0), (0, 32), (0, 32)))[:, a:a + 32, b:b + 32] + i
                         for i, (a, b) in enumerate(zip(y, x))]).astype(np.float32)

    host = assemble(grid, HannBlend(32), predict, band_columns, reader)
    blend = HannBlend(32, torch.device("cpu"))
    assert blend.on_device and not HannBlend(32).on_device
    on_device = assemble(grid, blend, lambda raw: torch.from_numpy(predict(raw)), band_columns, reader)
    np.testing.assert_allclose(on_device[0], host[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(on_device[1], host[1])


@pytest.mark.parametrize("blend, make_grid", [(HannBlend(32), hann_grid), (RampBlend(), ramp_grid)],
                         ids=["hann", "ramp"])
def test_batches_across_tile_rows_give_the_same_blocks(blend, make_grid):
    """With ``span_rows`` (on a GPU) a batch takes the next row's tiles when a row has fewer left: the model sees
    full batches and every pixel gets the same value as with batches inside rows."""
    from dataclasses import replace

    grid = make_grid(Window(5, 3, 140, 90), 120, 160, 32, 8)
    rng = np.random.default_rng(1)
    noise = np.pad(rng.random((1, 120, 160), dtype=np.float32), ((0, 0), (0, 32), (0, 32)))
    reader = FieldReader(32, empty_at=lambda y, x: (y >= 40) & (y < 50) & (x >= 60) & (x < 70))
    sizes = {}

    def predict(raw, key):
        sizes.setdefault(key, []).append(len(raw))
        y, x = raw[:, 0, 0, 0].astype(int), raw[:, 1, 0, 0].astype(int)
        return np.stack([noise[:, a:a + 32, b:b + 32] + a / 7 + b / 11 for a, b in zip(y, x)]).astype(np.float32)

    within = assemble(grid, blend, lambda raw: predict(raw, "within"), 50, reader, threads=SERIAL)
    across = assemble(grid, blend, lambda raw: predict(raw, "across"), 50, reader,
                      threads=replace(SERIAL, span_rows=True))
    np.testing.assert_array_equal(across[0], within[0])
    np.testing.assert_array_equal(across[1], within[1])
    total = sum(sizes["within"])
    assert sum(sizes["across"]) == total and len(sizes["across"]) == -(-total // 3)  # every tile once, full batches


def test_ramp_sweep_blends_linearly_across_core_borders():
    """Each tile predicts its own origin: cores give it back, ramps go linearly from one tile's to the next's."""
    grid = ramp_grid(Window(0, 0, 200, 60), 60, 200, 64, 16)
    origin = lambda raw: np.broadcast_to(raw[:, 1:2, :1, :1], (len(raw), 1, 64, 64)).copy()  # noqa: E731
    out, _ = assemble(grid, RampBlend(), origin, 70, FieldReader(64))
    w = ramp_weights(4)
    np.testing.assert_allclose(out[:, 30], 0)  # core of the first tile
    np.testing.assert_allclose(out[0, 52:60], 48 * w)  # the ramp around the first border (56)
    np.testing.assert_allclose(out[:, 80], 48)
    np.testing.assert_allclose(out[0, 100:108], 48 + 48 * w)
    np.testing.assert_allclose(out[:, 199], 136)


@pytest.mark.parametrize("band_columns", [1000, 50])
def test_ramp_blend_on_a_device_gives_the_host_blend(band_columns):
    """Ramps carried as torch tensors (on a GPU in use; here the CPU) give the numpy blend's blocks bit for bit,
    and the blocks' values stay tensors there (for the cluster map to reduce to ids before the copy back)."""
    torch = pytest.importorskip("torch")
    grid = ramp_grid(Window(5, 3, 140, 90), 120, 160, 32, 16)
    assert grid.half == 4 and len(grid.rows) > 2 and len(grid.cols) > 2  # ramps in x and y, four tiles at corners
    noise = np.random.default_rng(1).random((1, 120 + 32, 160 + 32), dtype=np.float32)
    reader = FieldReader(32, empty_at=lambda y, x: (y >= 40) & (y < 50) & (x >= 60) & (x < 70))

    def predict(raw):  # a different value per tile and pixel, so every ramp weight matters
        y, x = raw[:, 0, 0, 0].astype(int), raw[:, 1, 0, 0].astype(int)
        return np.stack([noise[:, a:a + 32, b:b + 32] + 0.25 * a + 0.5 * b for a, b in zip(y, x)])

    host_kinds, device_kinds = set(), set()
    host = assemble(grid, RampBlend(), predict, band_columns, reader, host_kinds)
    blend = RampBlend(torch.device("cpu"))
    assert blend.on_device and not RampBlend().on_device
    on_device = assemble(grid, blend, lambda raw: torch.from_numpy(predict(raw)), band_columns, reader,
                         device_kinds)
    assert host_kinds == {np.ndarray} and device_kinds == {torch.Tensor}
    np.testing.assert_array_equal(on_device[0], host[0])
    np.testing.assert_array_equal(on_device[1], host[1])
    assert host[1].any() and not host[1].all()
    # the ramps are in play: blended offsets take many more values than the tiles' own offsets
    y, x = np.mgrid[3:93, 5:145]
    offsets = np.unique(np.round(host[0] - noise[0, y, x], 3))
    assert len(offsets) > 4 * len(grid.rows) * len(grid.cols)


def test_block_writer_writes_whole_blocks_with_the_mask_as_nodata(make_raster, tmp_path):
    from shapely.geometry import box

    src_path = make_raster(np.zeros((1, 600, 300), "uint8"))
    with rasterio.open(src_path) as src:
        transform_of = src.window_transform
        left, top = src.transform * (0, 0)
        right, bottom = src.transform * (100, 600)
    profile = dict(driver="GTiff", width=280, height=590, count=1, dtype="int16", tiled=True, blockxsize=256,
                   blockysize=256)
    written = []
    with rasterio.open(str(tmp_path / "o.tif"), "w", **profile) as dst:
        writer = BlockWriter([Output(dst, 1, "int16", -1)], Window(10, 5, 280, 590), 64, transform_of,
                             box(left, bottom, right, top), lambda w, strips: written.append(w))
        for band in ((10, 150), (150, 290)):
            for r0 in range(5, 595, 50):
                rows = min(50, 595 - r0)
                writer.put(r0, band[0], band, [np.full((1, rows, band[1] - band[0]), r0, "int16")])
        writer.close()
    assert [(w.row_off, w.height) for w in written] == [(0, 256), (256, 256), (512, 78)] * 2
    with rasterio.open(str(tmp_path / "o.tif")) as out:
        values = out.read(1)
    assert (values[:, 90:] == -1).all()  # outside the mask (raster columns >= 100)
    np.testing.assert_array_equal(values[:, 0], (np.arange(590) // 50 * 50 + 5).astype("int16"))


# ----------------------------------------------------------------------------------------------- golden outputs

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("faiss")

from tests.unit.core import tiling_golden as recipe  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def golden():
    with np.load(os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "tiling_golden.npz")) as npz:
        return dict(npz)


@pytest.fixture(scope="module")
def rerun(golden, tmp_path_factory):
    """Today's sweeps on the golden input, with the golden's models rebuilt from their seeds."""
    folder = str(tmp_path_factory.mktemp("golden"))
    data = golden["data"]
    seg, seg_digest = recipe.build_segmentation(os.path.join(folder, "s.satseg"), data, float(golden["threshold"]))
    clu, clu_digest = recipe.build_clusternet(os.path.join(folder, "c.satseg"), data, golden["centroids"])
    assert (seg_digest, clu_digest) == (str(golden["seg_digest"]), str(golden["cluster_digest"])), (
        f"torch {torch.__version__} builds other seeded weights than the golden's: remake the golden outputs "
        "with tests/unit/core/tiling_golden.py from a checkout of 776c07c")
    return recipe.run_sweeps(folder, data, seg, clu)


@pytest.mark.parametrize("suffix", ["nodata0", "plain"])
def test_segmentation_is_pixel_identical_to_the_golden(golden, rerun, suffix):
    """The nodata rule did not change for segmentation: same probabilities, mask and summary, bit for bit."""
    np.testing.assert_array_equal(rerun[f"seg_mask_{suffix}"], golden[f"seg_mask_{suffix}"])
    np.testing.assert_array_equal(rerun[f"seg_summary_{suffix}"], golden[f"seg_summary_{suffix}"])
    np.testing.assert_array_equal(rerun[f"seg_prob_{suffix}"], golden[f"seg_prob_{suffix}"])
    mask = golden[f"seg_mask_{suffix}"]
    assert (mask == 255).any() and (mask == 1).any() and (mask == 0).any()


def test_cluster_ids_are_identical_where_the_raster_declares_its_nodata(golden, rerun):
    np.testing.assert_array_equal(rerun["cluster_ids_nodata0"], golden["cluster_ids_nodata0"])
    np.testing.assert_array_equal(rerun["cluster_summary_nodata0"], golden["cluster_summary_nodata0"])


def test_cluster_ids_change_only_where_the_nodata_rule_explains(golden, rerun):
    """Without a nodata value, all-zero pixels were nodata for cluster maps (not for segmentation); now they
    are data, as the raster says. The ids change exactly there (0 -> a cluster) and, through the features,
    in the supports of the tiles that read a zero pixel; nowhere else."""
    old, new = golden["cluster_ids_plain"], rerun["cluster_ids_plain"]
    np.testing.assert_array_equal(old, golden["cluster_ids_nodata0"])  # the old rule: 0 was nodata anyway
    data = golden["data"]
    grid = ramp_grid(Window(5, 7, 288, 245), data.shape[1], data.shape[2], 64, 16)
    zero = np.all(data == 0, axis=0)
    explained = np.zeros(zero.shape, bool)
    for row in grid.rows:
        for col in grid.cols:
            if zero[row.origin:row.origin + 64, col.origin:col.origin + 64].any():
                explained[row.start:row.stop, col.start:col.stop] = True
    explained, zero = explained[7:252, 5:293], zero[7:252, 5:293]
    inside = golden["seg_mask_nodata0"] != 255  # inside the MASK and not nodata: zero pixels are in the hole
    outside_mask = (golden["seg_mask_plain"] == 255)
    np.testing.assert_array_equal(new[~explained], old[~explained])
    assert ((old[zero & ~outside_mask] == 0) & (new[zero & ~outside_mask] >= 1)).all()
    assert (new[outside_mask] == 0).all()
    assert (new[inside] == old[inside]).mean() > 0.9  # most ids near the hole are unchanged too
