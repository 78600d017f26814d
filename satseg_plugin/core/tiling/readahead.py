"""The tiles of a sweep in the order the model takes them, read ahead on a few reader threads.

A :class:`TileQueue` is given every tile window of a sweep up front (in the sweep's order) and keeps the next
``depth`` of them read or being read, on a :class:`concurrent.futures.ThreadPoolExecutor`. Each reader thread
reads through its own copy of the reader (:meth:`~.reading.TileReader.reopen`: its own dataset handle, since a
rasterio dataset must not be used by two threads at once). The model's thread takes tiles in order with
:meth:`~TileQueue.peek` (a batch, kept until it went through the model: a CUDA out-of-memory retry takes a
smaller part of it again) and :meth:`~TileQueue.pop`. The tiles are the ones the caller's thread would read,
so outputs do not change.

A reader thread's error is raised again, unchanged, in the thread that takes that tile. :meth:`TileQueue.close`
(or leaving the ``with`` block) cancels the reads not started, waits for the ones running (one tile each) and
closes the handles: no thread outlives the queue.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Deque, Iterable, List, Optional, Union

from rasterio.windows import Window

from .reading import Tile

__all__ = ["TileQueue"]


class TileQueue:
    """Tiles of the given windows, in order, read up to ``depth`` ahead on ``readers`` threads.

    Args:
        reader: reads a tile (``read(window) -> Tile``). Tiles are read on threads only when it has a
            ``reopen()`` giving a copy for one thread (with ``close()``), as :class:`~.reading.TileReader`
            has; otherwise each tile is read in the caller's thread when it is first asked for.
        windows: every tile window of the sweep, in the order the tiles will be taken.
        readers: reader threads (0: read in the caller's thread).
        depth: most tiles read or being read and not yet popped (at least the largest batch asked for).
    """

    def __init__(self, reader: Any, windows: Iterable[Window], readers: int, depth: int) -> None:
        self.reader, self.windows, self.depth = reader, iter(windows), max(1, int(depth))
        # per tile, in order: its window (not read yet), its read in flight, or the tile
        self.pending: Deque[Union[Window, Future, Tile]] = deque()
        self.pool: Optional[ThreadPoolExecutor] = None
        if readers > 0 and callable(getattr(reader, "reopen", None)):
            self.pool = ThreadPoolExecutor(max_workers=int(readers), thread_name_prefix="satseg-tile-reader")
        self._local = threading.local()  # each reader thread's copy of the reader
        self._copies: List[Any] = []
        self._lock = threading.Lock()
        self._fill()

    def __enter__(self) -> "TileQueue":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def peek(self, n: int) -> List[Tile]:
        """The next ``n`` tiles (fewer at the end), waiting for their reads; they stay until :meth:`pop`.

        Raises:
            Exception: whatever reading one of them raised (in a reader thread or here).
        """
        self._fill(n)
        tiles = []
        for i in range(min(n, len(self.pending))):
            item = self.pending[i]
            if isinstance(item, Window):
                item = self.pending[i] = self.reader.read(item)
            elif isinstance(item, Future):
                item = self.pending[i] = item.result()
            tiles.append(item)
        return tiles

    def pop(self, n: int) -> None:
        """Drop the next ``n`` tiles (they went through the model) and start reading as many further ones."""
        for _ in range(min(n, len(self.pending))):
            self.pending.popleft()
        self._fill()

    def close(self) -> None:
        """Cancel the reads not started, wait for the running ones and close every thread's handle."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        self.pending.clear()
        with self._lock:
            copies, self._copies = self._copies, []
        for copy in copies:
            copy.close()

    def _fill(self, at_least: int = 0) -> None:
        """Queue windows until ``max(depth, at_least)`` tiles are pending (or the windows run out)."""
        while len(self.pending) < max(self.depth, at_least):
            window = next(self.windows, None)
            if window is None:
                return
            self.pending.append(window if self.pool is None else self.pool.submit(self._read, window))

    def _read(self, window: Window) -> Tile:
        """Read a tile on a reader thread, through that thread's own copy of the reader."""
        copy = getattr(self._local, "reader", None)
        if copy is None:
            copy = self.reader.reopen()
            with self._lock:
                self._copies.append(copy)
            self._local.reader = copy
        return copy.read(window)
