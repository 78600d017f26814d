"""Inputs the benchmarks share: the synthetic source rasters, the cached sample scene, the tiny model, verdicts.

The source rasters are generated once, block by block, and cached under ``bench/out/`` (git-ignored).
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict

import numpy as np

#: Bump when the generated content changes, so cached rasters are rebuilt.
GENERATOR_VERSION = 1
CRS = "EPSG:32633"
ORIGIN = (500000.0, 5600000.0)  # upper-left corner, metres
PIXEL_SIZE = 0.5
CHUNK = 1024  # generation window edge (a multiple of the 256 px tile)
NOISE_SIGMA = 0.7  # per-pixel noise; sets how well the raster compresses

#: The tiny model of the memory runs: a timm MobileNetV3 encoder and a narrow U-Net decoder.
TINY_ENCODER = "tu-mobilenetv3_small_050"
TINY_KWARGS = {"decoder_channels": [16, 16, 8, 8, 8]}
#: Seam verdict: border/interior ratio at most this counts as seamless.
SEAM_LIMIT = 1.10
#: Memory verdict: most spread of peak RSS between runs whose GDAL block cache reached its cap.
PLATEAU_LIMIT_MIB = 64


# --------------------------------------------------------------------------------------------------
# Source raster generation
# --------------------------------------------------------------------------------------------------

def _hash01(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic pseudo-random values in [0, 1) for integer lattice points (splitmix-style hash).

    Args:
        ix: lattice x indices (any integer array, broadcast with ``iy``).
        iy: lattice y indices.
        salt: distinguishes independent fields.

    Returns:
        float32 array of the broadcast shape.
    """
    with np.errstate(over="ignore"):
        h = (np.asarray(ix, dtype=np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
             ^ np.asarray(iy, dtype=np.int64).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
             ^ np.uint64((salt * 0x165667B19E3779F9) & 0xFFFFFFFFFFFFFFFF))
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xC4CEB9FE1A85EC53)
        h ^= h >> np.uint64(33)
    return ((h >> np.uint64(40)).astype(np.float32) / np.float32(2 ** 24))


def _value_noise(x0: int, y0: int, width: int, height: int, cell: int, salt: int) -> np.ndarray:
    """Smooth value noise on a lattice of ``cell`` pixels, evaluated on one window of the global grid.

    The lattice values depend only on global lattice coordinates, so windows join seamlessly.

    Returns:
        float32 ``(height, width)`` array in [0, 1).
    """
    xs = (np.arange(x0, x0 + width, dtype=np.float64) + 0.5) / cell
    ys = (np.arange(y0, y0 + height, dtype=np.float64) + 0.5) / cell
    jx, jy = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    fx, fy = (xs - jx).astype(np.float32), (ys - jy).astype(np.float32)
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)  # smoothstep
    lx = np.arange(jx[0], jx[-1] + 2)
    ly = np.arange(jy[0], jy[-1] + 2)
    lattice = _hash01(lx[None, :], ly[:, None], salt)  # (len(ly), len(lx)), tiny
    cx = jx - lx[0]
    along_x = lattice[:, cx] * (1 - fx) + lattice[:, cx + 1] * fx  # (len(ly), width)
    cy = jy - ly[0]
    return along_x[cy] * (1 - fy)[:, None] + along_x[cy + 1] * fy[:, None]


def synth_window(x0: int, y0: int, width: int, height: int, seed: int = 0, noise: float = NOISE_SIGMA) -> np.ndarray:
    """Imagery-like RGB pixels for one window: terrain, field parcels, a road grid and sensor noise.

    Deterministic in the window's global position and the ``CHUNK`` grid.

    Args:
        x0: global column of the window's first pixel.
        y0: global row of the window's first pixel.
        width: window width.
        height: window height.
        seed: content seed.
        noise: standard deviation of the per-pixel sensor noise (digital numbers).

    Returns:
        uint8 ``(3, height, width)`` array.
    """
    terrain = np.zeros((height, width), np.float32)
    for octave, (cell, amp) in enumerate(((2048, 0.50), (512, 0.25), (128, 0.15), (32, 0.10))):
        terrain += amp * _value_noise(x0, y0, width, height, cell, salt=seed * 101 + octave)
    # Field parcels: piecewise-constant cells of 160 px, visible where a coarse "farmland" field is high.
    px = (np.arange(x0, x0 + width) // 160)[None, :]
    py = (np.arange(y0, y0 + height) // 160)[:, None]
    parcel = _hash01(px, py, salt=seed * 101 + 50)
    farmland = np.clip(_value_noise(x0, y0, width, height, 4096, salt=seed * 101 + 51) * 3 - 1, 0, 1)
    # Roads: thin lines every 1280 px.
    xx = np.arange(x0, x0 + width)[None, :] % 1280
    yy = np.arange(y0, y0 + height)[:, None] % 1280
    road = ((xx < 6) | (yy < 6)).astype(np.float32)
    rng = np.random.default_rng([GENERATOR_VERSION, seed, y0, x0])
    out = np.empty((3, height, width), np.uint8)
    for band, (base, t_gain, p_gain) in enumerate(((60, 110, 50), (70, 120, 40), (50, 90, 60))):
        value = base + t_gain * terrain + p_gain * farmland * parcel
        value = value * (1 - road) + 200 * road
        value += rng.normal(0.0, noise, size=value.shape).astype(np.float32)
        np.clip(value, 1, 255, out=value)
        out[band] = value.astype(np.uint8)
    return out


def source_path(out_dir: str, size: int) -> str:
    """Cache path of the generated raster of ``size`` x ``size`` pixels."""
    return os.path.join(out_dir, f"src_{size}_v{GENERATOR_VERSION}.tif")


def ensure_source(out_dir: str, size: int, log: Callable[[str], None]) -> str:
    """Generate the ``size`` x ``size`` x 3 uint8 source raster unless it is cached.

    Written window by window (``CHUNK`` px, tile aligned) with rasterio: the full array is never held.
    The file is written under a temporary name and renamed when complete.

    Returns:
        The raster path.
    """
    import rasterio
    from affine import Affine

    path = source_path(out_dir, size)
    if os.path.exists(path):
        log(f"Using cached source raster {os.path.relpath(path)}")
        return path
    os.makedirs(out_dir, exist_ok=True)
    tmp = path + ".partial.tif"
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": CRS,
        "transform": Affine(PIXEL_SIZE, 0.0, ORIGIN[0], 0.0, -PIXEL_SIZE, ORIGIN[1]),
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "DEFLATE", "predictor": 2,
        "interleave": "pixel", "photometric": "RGB", "num_threads": "ALL_CPUS", "BIGTIFF": "IF_SAFER",
    }
    log(f"Generating {size}x{size}x3 uint8 source raster {os.path.relpath(path)} (one time) ...")
    start = time.perf_counter()
    with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(tmp, "w", **profile) as dst:
        for y0 in range(0, size, CHUNK):
            for x0 in range(0, size, CHUNK):
                w, h = min(CHUNK, size - x0), min(CHUNK, size - y0)
                dst.write(synth_window(x0, y0, w, h), window=rasterio.windows.Window(x0, y0, w, h))
    os.replace(tmp, path)
    log(f"  done in {time.perf_counter() - start:.1f} s, {os.path.getsize(path) / 2**20:.0f} MiB on disk "
        f"({size * size * 3 / 2**20:.0f} MiB of pixels)")
    return path


def warm_cache(path: str) -> None:
    """Read a file once so every method starts with it in the page cache."""
    with open(path, "rb") as handle:
        while handle.read(16 * 2**20):
            pass


def ensure_scene(out_dir: str, size: int, log: Callable[[str], None]) -> Dict[str, str]:
    """The generated sample scene of ``size`` px (``sample_data.generate``), cached."""
    from sample_data.generate import generate_scene, is_up_to_date

    folder = os.path.join(out_dir, f"scene_{size}")
    if is_up_to_date(folder, size=size):
        log(f"Using cached scene {os.path.relpath(folder)}")
        return {"scene": os.path.join(folder, "scene.tif"), "buildings": os.path.join(folder, "buildings.gpkg")}
    log(f"Generating the {size} px sample scene (one time) ...")
    start = time.perf_counter()
    paths = generate_scene(folder, size=size)
    log(f"  done in {time.perf_counter() - start:.0f} s")
    return paths
