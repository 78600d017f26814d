"""Per-band normalisation statistics computed from a raster, streamed by blocks, nodata excluded."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.windows import Window

from .errors import InputError
from .raster import nodata_flags

__all__ = ["band_statistics", "normalize"]


def band_statistics(src: rasterio.DatasetReader, bands: Sequence[int], max_pixels: int = 4_000_000,
                    window: Optional[Window] = None, tile: int = 512) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each band over valid pixels.

    Reads ``tile`` x ``tile`` windows; when the raster (or ``window``) holds more than ``max_pixels``
    pixels, an evenly spread subset of windows is read, so memory and time stay bounded.

    Returns:
        ``(mean, std)``, float64 arrays of length ``len(bands)``; std is at least 1e-6.
    """
    region = window or Window(0, 0, src.width, src.height)
    x0, y0, w, h = int(region.col_off), int(region.row_off), int(region.width), int(region.height)
    windows = [Window(x, y, min(tile, x0 + w - x), min(tile, y0 + h - y))
               for y in range(y0, y0 + h, tile) for x in range(x0, x0 + w, tile)]
    step = max(1, int(np.ceil(w * h / max_pixels)))
    chosen = windows[::step] if step > 1 else windows
    total = np.zeros(len(bands))
    total_sq = np.zeros(len(bands))
    count = 0
    for win in chosen:
        data = src.read(list(bands), window=win).astype(np.float64)
        valid = ~nodata_flags(src, bands, win, data)
        values = data[:, valid]
        total += values.sum(axis=1)
        total_sq += (values ** 2).sum(axis=1)
        count += values.shape[1]
    if count == 0:
        raise InputError("the raster holds no valid pixels (all nodata) where statistics were computed.", "INPUT")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return mean, np.maximum(std, 1e-6)


def normalize(data: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(C, H, W)`` -> float32 ``(data - mean) / std`` per band; NaN becomes 0 (the mean)."""
    out = (data.astype(np.float32) - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
