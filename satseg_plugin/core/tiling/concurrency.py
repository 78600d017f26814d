"""The threads a tiled sweep runs around the model, and how far they may run ahead: the one place to tune them.

The model runs in the caller's thread. Around it (issue 16: on a fast GPU the host's reading, blending and
writing, not the model, set the pace):

* reader threads read the tiles of the next batches (:class:`~.readahead.TileQueue`), each thread with its
  own dataset handle (a rasterio dataset is not thread-safe); GDAL releases the GIL while it reads and
  decodes, so this overlaps even on a CPU;
* one writer thread writes the finished rows (:class:`~.writing.BlockWriter`): the MASK, the caller's hook,
  GDAL's write and the compression GDAL does in it.

The outputs do not depend on these numbers: tiles are read in the sweep's order and run in the same batches,
rows are written in the same order. Memory is bounded by them, never by the raster's size: at most
``(read_ahead + 1) x batch`` tiles are read and not yet through the model (``bands x tile² x 4`` bytes each:
72 MiB for batches of 8 three-band 512 px tiles, 48 MiB more than reading each batch when it is run), and at
most ``write_queue`` finished strips (copies of ``ROW_BLOCK x band`` pixels per output) wait for the writer.
Each reader thread also holds its own dataset handle (and GDAL's per-thread state): on the 2-core machine
four readers raised peak RSS by about 150 MiB over serial reading, the same for 4096 and 8192 px rasters.

:func:`threads_for` picks them by the model's device. Measured so far on the 2-core CPU only. On a GPU,
measure next: the share of the bare forward ``segment_raster`` keeps with ``readers`` 2/4/8 and
``read_ahead`` 1/2/4 at batch 32, and whether the main thread still waits in
:meth:`~.readahead.TileQueue.peek` (readers too few) or on the writer (``write_queue`` full: compression is
the bottleneck, see :func:`~..raster.geotiff_profile`'s ``compress_threads``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from ..errors import InputError

__all__ = ["SweepThreads", "GPU_THREADS", "CPU_THREADS", "DEFAULT_THREADS", "SERIAL", "THREADS_ENV", "threads_for"]


@dataclass(frozen=True)
class SweepThreads:
    """Threads and queue depths of one sweep.

    Attributes:
        readers: reader threads (0: each tile is read in the caller's thread just before its batch, as
            before issue 16). Four should keep a batch of 32 tiles of 512 px ahead of a GPU that runs it in
            ~20 ms (a tile took ~1.2 ms to read and flag on the H200 machine's CPU; not measured yet).
        read_ahead: batches read beyond the one the model is running.
        write_queue: finished strips that may wait for the writer thread (0: write in the caller's thread).
        span_rows: fill a batch with the next row's tiles when a tile row has fewer left
            (:class:`~.sweep.TileBatches`); off keeps every batch within one row (bit-identical CPU outputs).
    """

    readers: int = 4
    read_ahead: int = 2
    write_queue: int = 2
    span_rows: bool = False

    def __post_init__(self) -> None:
        if min(self.readers, self.read_ahead, self.write_queue) < 0:
            raise ValueError(f"thread and queue counts must be >= 0, got {self}")

    def depth(self, batch_size: int) -> int:
        """Tiles that may be read and not yet through the model, for batches of ``batch_size``."""
        return (self.read_ahead + 1) * max(1, int(batch_size))


#: With the model on a GPU (fast: the host must keep up): tiles read two batches ahead on four threads, and
#: batches filled across tile rows.
GPU_THREADS = SweepThreads(readers=4, read_ahead=2, write_queue=2, span_rows=True)
#: With the model on the CPU it sets the pace and reading is about 1 % of the time (bench/RESULTS.md): tiles
#: are read in the caller's thread, since reading ahead gained nothing measurable on the 2-core machine and
#: cost about 150 MiB more peak RSS (flat in the raster's size); rows are still written on the writer thread
#: (+20 MiB, and the main thread no longer waits for GDAL).
CPU_THREADS = SweepThreads(readers=0, read_ahead=0, write_queue=2)
#: The sweep's and the writer's default when the caller names no device (every thread in use).
DEFAULT_THREADS = GPU_THREADS
#: Everything in the caller's thread (the sweep before issue 16; for comparisons and debugging).
SERIAL = SweepThreads(readers=0, read_ahead=0, write_queue=0)


#: Environment variable that overrides the reader threads and queue depths of every sweep:
#: ``"readers,read_ahead"`` or ``"readers,read_ahead,write_queue"`` (e.g. ``"8,4"``). For measuring on hardware
#: these defaults were not measured on (``bench/bench_gpu.py --threads-sweep`` sets it per run); the outputs do
#: not depend on it.
THREADS_ENV = "SATSEG_SWEEP_THREADS"


def threads_for(device: Any) -> SweepThreads:
    """The threads of a sweep whose model runs on ``device`` (a ``torch.device`` or its type, e.g. ``"cuda"``):
    :data:`CPU_THREADS` or :data:`GPU_THREADS`, with :data:`THREADS_ENV`'s numbers when it is set."""
    base = CPU_THREADS if getattr(device, "type", str(device)) == "cpu" else GPU_THREADS
    spec = os.environ.get(THREADS_ENV, "").strip()
    if not spec:
        return base
    try:
        numbers = [int(part) for part in spec.split(",")]
        if len(numbers) not in (2, 3):
            raise ValueError(spec)
        return replace(base, **dict(zip(("readers", "read_ahead", "write_queue"), numbers)))
    except ValueError:
        raise InputError(f"'{spec}' is not 'readers,read_ahead' or 'readers,read_ahead,write_queue' (whole numbers "
                         "of 0 or more, e.g. '8,4'). Fix or unset the environment variable.", THREADS_ENV) from None
