"""core/tiling's threads (issue 16): tiles read ahead on reader threads, strips written on a writer thread.

The outputs must not change (the goldens in test_tiling.py run the threaded sweep end to end); here: the same
blocks as the serial sweep, errors of either thread raised in the caller, no thread left behind after the
end, an error, a cancel or an early close, and the read-ahead and write queues within their bounds.
"""

import re
import threading
import time

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from satseg_plugin.core.errors import CanceledError
from satseg_plugin.core.progress import NullFeedback, RecordingFeedback
from satseg_plugin.core.raster import THREADED_GTIFF_GDAL, geotiff_profile
from satseg_plugin.core.tiling import (
    CPU_THREADS,
    GPU_THREADS,
    ROW_BLOCK,
    SERIAL,
    BlockWriter,
    HannBlend,
    Output,
    RampBlend,
    SweepThreads,
    TileReader,
    hann_grid,
    ramp_grid,
    sweep,
    threads_for,
)

THREADED = SweepThreads(readers=3, read_ahead=1, write_queue=2)


def scene(seed=0, height=150, width=170):
    """Two uint8 bands of noise with a nodata hole (0 in both bands)."""
    data = np.random.default_rng(seed).integers(1, 255, (2, height, width), dtype=np.uint8)
    data[:, 60:75, 90:120] = 0
    return data


def predict(raw):
    """A model stand-in that mixes the bands and the neighbourhood, so tile borders would show."""
    out = np.tanh((raw[:, :1] - 100.0) / 50.0) + 0.25 * np.roll(raw[:, 1:2], 3, axis=-1) / 255.0
    return out.astype(np.float32)


def blocks_of(path, grid, blend, threads, band_columns, feedback=None):
    with rasterio.open(path) as src:
        reader = TileReader(src, [1, 2], np.array([120.0, 130.0], np.float32), grid.tile)
        return [(b.r0, b.r1, b.c0, b.c1, b.band, b.values.copy(), b.empty.copy())
                for b in sweep(grid, reader, predict, blend, feedback or NullFeedback(), 3, band_columns, threads)]


def thread_names():
    return sorted(t.name for t in threading.enumerate())


@pytest.mark.parametrize("layout", ["hann", "ramp"])
@pytest.mark.parametrize("band_columns", [1000, 64])
def test_threaded_sweep_gives_the_serial_blocks_bit_for_bit(make_raster, layout, band_columns):
    path = make_raster(scene(), nodata=0)
    if layout == "hann":
        grid, blend = hann_grid(Window(3, 5, 160, 140), 150, 170, 32, 8), HannBlend(32)
    else:
        grid, blend = ramp_grid(Window(3, 5, 160, 140), 150, 170, 32, 8), RampBlend()
    before = thread_names()
    serial = blocks_of(path, grid, blend, SERIAL, band_columns)
    threaded = blocks_of(path, grid, blend, THREADED, band_columns)
    assert len(threaded) == len(serial) > 4
    for a, b in zip(serial, threaded):
        assert a[:5] == b[:5]
        np.testing.assert_array_equal(a[5], b[5])
        np.testing.assert_array_equal(a[6], b[6])
    assert any(b[6].any() for b in threaded)  # the nodata hole is flagged
    assert thread_names() == before


def test_reopened_reader_reads_the_same_tile_on_its_own_handle(make_raster):
    path = make_raster(scene(1), nodata=0)
    with rasterio.open(path) as src:
        reader = TileReader(src, [2, 1], np.array([5.0, 6.0], np.float32), 40)
        copy = reader.reopen()
        assert copy.src is not src and copy.src.name == src.name
        for window in (Window(0, 0, 40, 40), Window(80, 50, 40, 40), Window(150, 130, 40, 40)):
            a, b = reader.read(window), copy.read(window)
            np.testing.assert_array_equal(a.raw, b.raw)
            np.testing.assert_array_equal(a.empty, b.empty)
        copy.close()
        reader.close()  # a reader given an open dataset leaves it open
        assert copy.src.closed and not src.closed


def corrupt_block(path, col, row):
    """Overwrite the compressed bytes of one block of a tiled GeoTIFF: reading it fails inside GDAL."""
    with rasterio.open(path) as src:
        offset = int(src.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1))
        size = int(src.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=1))
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)


def test_a_read_error_on_a_reader_thread_reaches_the_caller_unchanged(make_raster):
    path = make_raster(scene(2), tiled=True, blockxsize=16, blockysize=16, compress="deflate")
    corrupt_block(path, 6, 5)  # raster pixels x 96..111, y 80..95: read by tiles of the fourth tile row
    grid = hann_grid(Window(0, 0, 170, 150), 150, 170, 32, 8)
    errors = []
    before = thread_names()
    for threads in (SERIAL, THREADED):
        with pytest.raises(rasterio.errors.RasterioIOError) as info:
            blocks_of(path, grid, HannBlend(32), threads, 1000)
        errors.append((type(info.value), str(info.value), str(info.value.__cause__)))
        assert thread_names() == before
    assert errors[0] == errors[1] and "IReadBlock failed at X offset 6, Y offset 5" in errors[0][2]


def test_cancel_or_an_early_close_leaves_no_thread_behind(make_raster):
    path = make_raster(scene(3), nodata=0)
    grid = hann_grid(Window(0, 0, 170, 150), 150, 170, 32, 8)
    before = thread_names()
    with pytest.raises(CanceledError):
        blocks_of(path, grid, HannBlend(32), THREADED, 1000, RecordingFeedback(cancel_after=2))
    assert thread_names() == before
    with rasterio.open(path) as src:
        reader = TileReader(src, [1, 2], np.zeros(2, np.float32), 32)
        blocks = sweep(grid, reader, predict, HannBlend(32), NullFeedback(), 3, 1000, THREADED)
        next(blocks)
        assert any(name.startswith("satseg-tile-reader") for name in thread_names())
        blocks.close()
    assert thread_names() == before


class CountingReader:
    """A TileReader wrapped so that it and its copies count, in one ledger, the tiles whose read started."""

    def __init__(self, reader, ledger):
        self.reader, self.ledger = reader, ledger

    def reopen(self):
        return CountingReader(self.reader.reopen(), self.ledger)

    def close(self):
        self.reader.close()

    def read(self, window):
        self.ledger.started()
        return self.reader.read(window)


class Ledger:
    """Tiles whose read started, tiles the model finished, and the most read and not yet finished."""

    def __init__(self):
        self.lock = threading.Condition()
        self.reads = self.done = self.most = 0

    def started(self):
        with self.lock:
            self.reads += 1
            self.most = max(self.most, self.reads - self.done)
            self.lock.notify_all()

    def predict(self, total, ahead):
        def run(raw):
            with self.lock:  # let the readers fill the queue before the model runs: the bound must hold anyway
                self.lock.wait_for(lambda: self.reads >= min(self.done + ahead, total), timeout=10)
            out = predict(raw)
            with self.lock:
                self.done += len(raw)
            return out
        return run


@pytest.mark.parametrize("threads", [SweepThreads(readers=2, read_ahead=2), SweepThreads(readers=4, read_ahead=0),
                                     SERIAL])
def test_tiles_read_ahead_stay_within_the_bound(make_raster, threads):
    path = make_raster(scene(4), nodata=0)
    grid = hann_grid(Window(0, 0, 170, 150), 150, 170, 32, 8)
    batch = 3
    ledger = Ledger()
    total = sum(len(grid.cols_meeting(band)) for band in grid.column_bands(64)) * len(grid.rows)
    depth = threads.depth(batch) if threads.readers else batch
    with rasterio.open(path) as src:
        reader = CountingReader(TileReader(src, [1, 2], np.zeros(2, np.float32), 32), ledger)
        model = ledger.predict(total, depth if threads.readers else 0)
        blocks = list(sweep(grid, reader, model, HannBlend(32), NullFeedback(), batch, 64, threads))
    assert blocks and ledger.reads == ledger.done == total > 2 * depth
    assert ledger.most == depth  # the readers ran ahead as far as allowed, never further


def test_threads_follow_the_models_device():
    assert threads_for("cpu") == CPU_THREADS and CPU_THREADS.readers == 0 and CPU_THREADS.write_queue > 0
    assert threads_for("cuda") == GPU_THREADS and GPU_THREADS.readers > 0
    torch = pytest.importorskip("torch")
    assert threads_for(torch.device("cpu")) == CPU_THREADS and threads_for(torch.device("cuda:0")) == GPU_THREADS
    with pytest.raises(ValueError):
        SweepThreads(readers=-1)


def test_the_environment_overrides_the_threads_of_every_sweep(monkeypatch):
    from satseg_plugin.core.errors import InputError
    from satseg_plugin.core.tiling.concurrency import THREADS_ENV

    monkeypatch.setenv(THREADS_ENV, "8,4")
    assert threads_for("cuda") == SweepThreads(readers=8, read_ahead=4, write_queue=GPU_THREADS.write_queue,
                                               span_rows=True)
    assert threads_for("cpu") == SweepThreads(readers=8, read_ahead=4, write_queue=CPU_THREADS.write_queue)
    monkeypatch.setenv(THREADS_ENV, " 2,1,0 ")
    assert (threads_for("cpu").readers, threads_for("cpu").read_ahead, threads_for("cpu").write_queue) == (2, 1, 0)
    for bad in ("8", "a,b", "1,2,3,4", "-1,2"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(InputError, match=f"{THREADS_ENV}: '{bad}' is not"):
            threads_for("cuda")
    monkeypatch.setenv(THREADS_ENV, "")
    assert threads_for("cuda") == GPU_THREADS


# ------------------------------------------------------------------------------------------------ writing


def write_rows(path, threads, height=700, width=300, hook=None, region=None, rows_per_put=50):
    """Put ``height`` rows of known values through a BlockWriter into a new int16 GeoTIFF of ``width``."""
    profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="int16", tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate")
    region = region or Window(0, 0, width, height)
    with rasterio.open(path, "w", **profile) as dst:
        with BlockWriter([Output(dst, 1, "int16", -1)], region, 64, lambda w: None, None, hook, threads) as writer:
            for band in ((0, 256), (256, int(region.width))):
                for r0 in range(0, int(region.height), rows_per_put):
                    rows = min(rows_per_put, int(region.height) - r0)
                    values = (np.arange(r0, r0 + rows)[:, None] * 3 + np.arange(*band)[None]) % 30000
                    writer.put(r0, band[0], band, [values[None].astype("int16")])


def test_the_writer_thread_writes_what_the_caller_would(tmp_path):
    windows = {}
    for name, threads in (("serial", SERIAL), ("threaded", THREADED)):
        windows[name] = []
        write_rows(str(tmp_path / f"{name}.tif"), threads, hook=lambda w, strips, n=name: windows[n].append(w))
    assert windows["threaded"] == windows["serial"] and len(windows["serial"]) == 6
    with rasterio.open(str(tmp_path / "serial.tif")) as a, rasterio.open(str(tmp_path / "threaded.tif")) as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert (a.read(1)[699, :] == (699 * 3 + np.arange(300)) % 30000).all()


def test_a_write_error_on_the_writer_thread_reaches_the_caller(tmp_path):
    """The output is smaller than the region: GDAL refuses the first strip below its last row."""
    errors = []
    before = thread_names()
    for name, threads in (("serial", SERIAL), ("threaded", THREADED)):
        with pytest.raises(rasterio.errors.RasterioIOError) as info:
            write_rows(str(tmp_path / f"{name}.tif"), threads, height=300, region=Window(0, 0, 300, 700))
        errors.append((str(info.value), str(info.value.__cause__).split(": ", 1)[-1]))  # the file name differs
        assert thread_names() == before
    assert errors[0] == errors[1] and "Requested (0,256) of size 256x256 on raster of 300x300" in errors[0][1]


def test_a_hook_error_on_the_writer_thread_reaches_the_caller_and_stops_the_writes(tmp_path):
    calls = []

    def hook(window, strips):
        calls.append(window)
        if len(calls) == 2:
            raise ValueError("the hook failed on the second strip")

    before = thread_names()
    with pytest.raises(ValueError, match="second strip"):
        write_rows(str(tmp_path / "o.tif"), THREADED, hook=hook)
    assert len(calls) == 2  # strips queued after the failed one are not written
    assert thread_names() == before


def test_strips_waiting_for_the_writer_stay_within_the_queue(tmp_path):
    """A slow writer: the caller blocks once ``write_queue`` strips wait, so memory stays bounded."""
    ledger = {"hooked": 0, "put": 0, "most": 0}

    def slow_hook(window, strips):
        ledger["hooked"] += int(window.height)
        time.sleep(0.05)

    class Watched(BlockWriter):
        def put(self, r0, c0, band, arrays):
            super().put(r0, c0, band, arrays)
            ledger["put"] = max(ledger["put"], r0 + arrays[0].shape[1])
            ledger["most"] = max(ledger["most"], ledger["put"] - ledger["hooked"])

    threads = SweepThreads(write_queue=2)
    profile = dict(driver="GTiff", width=256, height=2048, count=1, dtype="int16", tiled=True, blockxsize=256,
                   blockysize=256)
    with rasterio.open(str(tmp_path / "o.tif"), "w", **profile) as dst:
        with Watched([Output(dst, 1, "int16", -1)], Window(0, 0, 256, 2048), 64, lambda w: None, None,
                     slow_hook, threads) as writer:
            for r0 in range(0, 2048, ROW_BLOCK):
                writer.put(r0, 0, (0, 256), [np.full((1, ROW_BLOCK, 256), r0, "int16")])
    # rows put and not yet handed to the hook: the strip being filled plus the queue
    assert ROW_BLOCK < ledger["most"] <= (threads.write_queue + 1) * ROW_BLOCK
    with rasterio.open(str(tmp_path / "o.tif")) as out:
        assert (out.read(1)[:, 7] == np.arange(2048) // ROW_BLOCK * ROW_BLOCK).all()


def test_compression_threads_only_where_gdal_makes_them_safe():
    profile = geotiff_profile(512, 512, 1, "float32", None, rasterio.Affine.identity(), -1.0, level=1,
                              compress_threads=True)
    version = tuple(int(p) for p in re.findall(r"\d+", rasterio.__gdal_version__)[:3])
    assert ("num_threads" in profile) == (version >= THREADED_GTIFF_GDAL)
    assert "num_threads" not in geotiff_profile(512, 512, 1, "float32", None, rasterio.Affine.identity(), -1.0)
    assert "num_threads" not in geotiff_profile(512, 512, 1, "float32", None, rasterio.Affine.identity(), -1.0,
                                                compress="NONE", compress_threads=True)
