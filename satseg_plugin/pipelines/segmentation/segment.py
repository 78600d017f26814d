"""Tiled, seamless inference of one model or an ensemble over a raster of any size.

Tiles overlap and are blended with a 2-D Hann window, so there are no seams. The raster is cut into column
bands of at most ``BAND_COLUMNS`` pixels (block-aligned); each band is swept top to bottom and finished rows are
written out at once, so memory is bounded by the tile size and the band width (``(tile + 256) x band``
accumulators), never by the raster's size. Tiles lie on one grid anchored at the region's origin and a band
computes every tile that touches it, so the tile column straddling a band border is predicted twice (about
``tile / BAND_COLUMNS`` extra work on rasters wider than one band) and every pixel gets the same blend as in a
single sweep. Outputs are staged and moved into place only when the whole raster is done.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from ...core.deps import require
from ...core.errors import InputError
from ...core.grid import axis_offsets, column_bands
from ...core.progress import Feedback, NullFeedback, check_canceled
from ...core.raster import (
    bounds_region,
    check_georeferencing,
    check_geotiff_name,
    check_model_fits,
    geotiff_profile,
    nodata_pixels,
    open_raster,
    overview_factors,
    raster_env,
)
from ...core.staging import StagedFile

__all__ = ["InferenceConfig", "SegmentResult", "hann_window", "tile_origins", "column_bands", "segment_raster",
           "PROB_NODATA", "MASK_NODATA", "BAND_COLUMNS"]

PROB_NODATA = -1.0
MASK_NODATA = 255
_ROW_BLOCK = 256  # output GeoTIFF block height: rows are written in whole blocks
# Widest column band swept at once: its accumulators cost ~(tile + 256) x BAND_COLUMNS x (4K + 5) bytes, about
# 60 MiB for one class and 512 px tiles. A multiple of the output block size, so bands write whole blocks.
BAND_COLUMNS = 8192


@dataclass(frozen=True)
class InferenceConfig:
    """Inference settings.

    Attributes:
        tile_size: tile side in pixels (0: 512, rounded up to what the models need).
        overlap: overlap between neighbouring tiles in pixels (None: a quarter of the tile).
        batch_size: tiles per forward pass (halved automatically on CUDA out-of-memory).
        weights: ensemble weight per model (None: equal); normalised to sum to 1.
        threshold: probability threshold of the mask (None: the models' own, weighted).
        tta: average the predictions of the tile and its horizontal, vertical and double flips.
        bounds: ``(xmin, ymin, xmax, ymax)`` in the raster's CRS: only predict this area.
        mask: shapely polygons in the raster's CRS: pixels outside are nodata.
        amp: mixed precision on CUDA.
    """

    tile_size: int = 0
    overlap: Optional[int] = None
    batch_size: int = 8
    weights: Optional[Tuple[float, ...]] = None
    threshold: Optional[float] = None
    tta: bool = False
    bounds: Optional[Tuple[float, float, float, float]] = None
    mask: object = None
    amp: bool = True


@dataclass
class SegmentResult:
    """Written outputs and a summary of the run."""

    probability_path: str
    mask_path: str
    threshold: float
    classes: List[str]
    window: Tuple[int, int, int, int]
    tiles: int
    positive_pixels: int


def hann_window(size: int) -> np.ndarray:
    """2-D Hann blending weights ``(size, size)``, strictly positive (so a lone tile still counts)."""
    w = np.hanning(size + 2)[1:-1]
    return np.outer(w, w).astype(np.float32)


def tile_origins(start: int, length: int, tile: int, stride: int) -> List[int]:
    """Tile starts covering ``[start, start + length)``; a region shorter than a tile gets one tile."""
    if length <= tile:
        return [start]
    offsets, _ = axis_offsets(start, length, tile, stride, "shift")
    return offsets


class _Ensemble:
    """Loaded models with their normalisation and weights; turns a raw tile batch into probabilities."""

    def __init__(self, paths: Sequence[str], weights: Optional[Sequence[float]], device, amp: bool,
                 feedback: Feedback) -> None:
        torch = require("torch")
        from ...models.checkpoint import build_from_checkpoint, load_checkpoint
        from ...models.registry import input_multiple

        if not paths:
            raise InputError("give at least one model file.", "MODELS")
        self.checkpoints = [load_checkpoint(p, kind="segmentation") for p in paths]
        first = self.checkpoints[0].metadata
        for path, ckpt in zip(paths[1:], self.checkpoints[1:]):
            meta = ckpt.metadata
            if list(meta.bands) != list(first.bands) or list(meta.classes) != list(first.classes):
                raise InputError(f"'{os.path.basename(path)}' uses bands {meta.bands} and classes {meta.classes}, "
                                 f"but '{os.path.basename(paths[0])}' uses bands {first.bands} and classes "
                                 f"{first.classes}; models of an ensemble must agree on both.", "MODELS")
        if weights:
            if len(weights) != len(paths):
                raise InputError(f"{len(weights)} weights for {len(paths)} models; give one weight per model.",
                                 "WEIGHTS")
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise InputError("weights must be non-negative and not all zero.", "WEIGHTS")
            total = float(sum(weights))
            self.weights = [w / total for w in weights]
        else:
            self.weights = [1.0 / len(paths)] * len(paths)
        self.device, self.torch = device, torch
        self.amp = amp and device.type == "cuda"
        self.models = []
        for ckpt in self.checkpoints:
            model = build_from_checkpoint(ckpt).to(device).eval()
            self.models.append(model)
        self.metadata = first
        self.binary = len(first.classes) == 1
        self.multiple = max(input_multiple(c.metadata.architecture, c.metadata.encoder) for c in self.checkpoints)
        self.threshold = float(sum(w * c.metadata.threshold for w, c in zip(self.weights, self.checkpoints)))
        for path, w in zip(paths, self.weights):
            feedback.info(f"Model {os.path.basename(path)}: weight {w:.3f}")

    @property
    def out_bands(self) -> int:
        """Probability bands: one per foreground class."""
        return len(self.metadata.classes)

    def predict(self, raw: np.ndarray, tta: bool) -> np.ndarray:
        """Foreground probabilities ``(N, K, H, W)`` float32 for raw tiles ``(N, C, H, W)``."""
        torch = self.torch
        total = None
        for model, ckpt, weight in zip(self.models, self.checkpoints, self.weights):
            if weight == 0:
                continue
            meta = ckpt.metadata
            mean = np.asarray(meta.mean, np.float32)[None, :, None, None]
            std = np.asarray(meta.std, np.float32)[None, :, None, None]
            x = torch.from_numpy(np.nan_to_num((raw - mean) / std)).to(self.device)
            flips = [(), (-1,), (-2,), (-2, -1)] if tta else [()]
            acc = None
            with torch.no_grad(), torch.autocast(device_type=self.device.type, enabled=self.amp):
                for dims in flips:
                    logits = model(x.flip(dims) if dims else x).float()
                    probs = torch.sigmoid(logits) if self.binary else torch.softmax(logits, dim=1)[:, 1:]
                    probs = probs.flip(dims) if dims else probs
                    acc = probs if acc is None else acc + probs
            acc = (acc / len(flips)) * weight
            total = acc if total is None else total + acc
        return total.cpu().numpy().astype(np.float32)


class _Blender:
    """Weighted accumulators for a strip of output rows of one column band, flushed in whole blocks.

    ``region`` is the band's ``(x, y, width, height)`` in raster pixels; ``out_origin`` is the raster pixel of
    the output files' top-left corner. Buffer row 0 is raster row ``base``; ``base`` only moves down as
    finished rows are written.
    """

    def __init__(self, bands: int, tile: int, region: Tuple[int, int, int, int], threshold: float,
                 prob_dst, mask_dst, mask_geom, transform_of, out_origin: Tuple[int, int]) -> None:
        self.x0, self.y0, self.width, self.height = region
        self.out_x0, self.out_y0 = out_origin
        self.rows = tile + _ROW_BLOCK
        self.acc = np.zeros((bands, self.rows, self.width), np.float32)
        self.wsum = np.zeros((self.rows, self.width), np.float32)
        self.invalid = np.zeros((self.rows, self.width), bool)
        self.base = self.y0
        self.threshold, self.prob_dst, self.mask_dst = threshold, prob_dst, mask_dst
        self.mask_geom, self.transform_of = mask_geom, transform_of
        self.positive = 0

    def _clip(self, x: int, y: int, h: int, w: int) -> Optional[Tuple[int, int, int, int]]:
        r0, r1 = max(y, self.y0), min(y + h, self.y0 + self.height)
        c0, c1 = max(x, self.x0), min(x + w, self.x0 + self.width)
        return (r0, r1, c0, c1) if r1 > r0 and c1 > c0 else None

    def mark_invalid(self, x: int, y: int, empty: np.ndarray) -> None:
        """Flag nodata pixels of a read window (top-left raster pixel ``x, y``)."""
        box = self._clip(x, y, *empty.shape)
        if box:
            r0, r1, c0, c1 = box
            self.invalid[r0 - self.base:r1 - self.base, c0 - self.x0:c1 - self.x0] |= \
                empty[r0 - y:r1 - y, c0 - x:c1 - x]

    def add(self, x: int, y: int, probs: np.ndarray, weight: np.ndarray) -> None:
        """Add a tile's probabilities ``(K, T, T)`` with blending weights ``(T, T)`` at raster ``x, y``."""
        box = self._clip(x, y, *weight.shape)
        if box:
            r0, r1, c0, c1 = box
            w = weight[r0 - y:r1 - y, c0 - x:c1 - x]
            rows, cols = slice(r0 - self.base, r1 - self.base), slice(c0 - self.x0, c1 - self.x0)
            self.acc[:, rows, cols] += probs[:, r0 - y:r1 - y, c0 - x:c1 - x] * w
            self.wsum[rows, cols] += w

    def flush(self, upto: int, final: bool = False) -> None:
        """Write finished rows ``[base, upto)``, in whole output blocks unless ``final``."""
        rows = upto - self.base
        if not final:
            rows = (rows // _ROW_BLOCK) * _ROW_BLOCK
        if rows <= 0:
            return
        probs = self.acc[:, :rows] / np.maximum(self.wsum[:rows], 1e-12)
        bad = self.invalid[:rows] | (self.wsum[:rows] == 0)
        if self.mask_geom is not None:
            from rasterio.features import geometry_mask

            bad |= geometry_mask([self.mask_geom], out_shape=(rows, self.width),
                                 transform=self.transform_of(Window(self.x0, self.base, self.width, rows)))
        if probs.shape[0] == 1:
            cls = (probs[0] >= self.threshold).astype(np.uint8)
        else:
            cls = np.where(probs.max(0) >= self.threshold, probs.argmax(0) + 1, 0).astype(np.uint8)
        probs[:, bad] = PROB_NODATA
        cls[bad] = MASK_NODATA
        self.positive += int(((cls > 0) & (cls != MASK_NODATA)).sum())
        out = Window(self.x0 - self.out_x0, self.base - self.out_y0, self.width, rows)
        self.prob_dst.write(probs, window=out)
        self.mask_dst.write(cls[None], window=out)
        keep = self.rows - rows
        self.acc[:, :keep] = self.acc[:, rows:]
        self.acc[:, keep:] = 0
        for buf in (self.wsum, self.invalid):
            buf[:keep] = buf[rows:]
            buf[keep:] = 0
        self.base += rows


def segment_raster(source: str, model_paths: Sequence[str], probability_path: str, mask_path: str,
                   config: InferenceConfig = InferenceConfig(), device: str = "auto",
                   feedback: Optional[Feedback] = None) -> SegmentResult:
    """Predict a probability raster and a class mask with one model or a weighted ensemble.

    Args:
        source: raster path (the models' bands are read from it).
        model_paths: SatSeg segmentation model files.
        probability_path: float32 GeoTIFF of foreground probabilities (one band per class; nodata -1).
        mask_path: uint8 GeoTIFF mask (binary: 0/1; multi-class: class index; nodata 255).
        config: tiling, ensemble and output settings.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        feedback: progress per tile row, cancel, log.

    Returns:
        Paths and a summary. Outputs have the input's CRS and grid (cropped to the extent's pixel window).
    """
    from ...core.device import describe_device, resolve_device, shrink_batch_after_oom

    feedback = feedback or NullFeedback()
    check_geotiff_name(probability_path, "OUTPUT_PROBABILITY")
    check_geotiff_name(mask_path, "OUTPUT_MASK")
    torch_device = resolve_device(device)
    feedback.info(f"Device: {describe_device(torch_device)}")
    ensemble = _Ensemble(model_paths, config.weights, torch_device, config.amp, feedback)
    meta = ensemble.metadata
    threshold = ensemble.threshold if config.threshold is None else float(config.threshold)
    if not 0 < threshold < 1:
        raise InputError(f"must lie strictly between 0 and 1, got {threshold}.", "THRESHOLD")
    with raster_env(), open_raster(source) as src:
        check_georeferencing(src, feedback)
        bands = list(meta.bands)
        check_model_fits(src, bands, meta.pixel_size, feedback)
        tile = int(math.ceil((config.tile_size or 512) / ensemble.multiple) * ensemble.multiple)
        overlap = tile // 4 if config.overlap is None else int(config.overlap)
        if not 0 <= overlap < tile:
            raise InputError(f"must be at least 0 and less than the tile size ({tile}), got {overlap}.", "OVERLAP")
        region = bounds_region(src, config.bounds)
        x0, y0, width, height = region
        xs = tile_origins(x0, width, tile, tile - overlap)
        ys = tile_origins(y0, height, tile, tile - overlap)
        feedback.info(f"Predicting {len(xs) * len(ys)} tiles of {tile} px (overlap {overlap} px) over "
                      f"{width} x {height} px; threshold {threshold:.3f}{', flip TTA' if config.tta else ''}.")
        window_transform = src.window_transform(Window(x0, y0, width, height))
        k = ensemble.out_bands
        # level 1: the float probabilities encode ~5x faster for a few percent more bytes (see bench/RESULTS.md)
        prob_profile = geotiff_profile(width, height, k, "float32", src.crs, window_transform, PROB_NODATA, level=1)
        prob_profile.update(blockxsize=_ROW_BLOCK, blockysize=_ROW_BLOCK, interleave="band")
        mask_profile = geotiff_profile(width, height, 1, "uint8", src.crs, window_transform, MASK_NODATA, level=1)
        mask_profile.update(blockxsize=_ROW_BLOCK, blockysize=_ROW_BLOCK)
        staged_prob = StagedFile(probability_path, parameter="OUTPUT_PROBABILITY", suffix=".tif")
        staged_mask = StagedFile(mask_path, parameter="OUTPUT_MASK", suffix=".tif")
        weight = hann_window(tile)
        fill = np.asarray(meta.mean, np.float32)[:, None]  # nodata pixels are fed as the band means
        check_nodata = src.nodata is not None or np.issubdtype(np.dtype(src.dtypes[bands[0] - 1]), np.floating)
        batch_size = max(1, config.batch_size)
        torch = require("torch")

        def read_tile(tx: int, ty: int, blender: _Blender) -> np.ndarray:
            """The raw tile at raster ``tx, ty``, zero-padded past the edges, nodata flagged and filled."""
            ix0, iy0 = max(tx, 0), max(ty, 0)
            ix1, iy1 = min(tx + tile, src.width), min(ty + tile, src.height)
            data = src.read(bands, window=Window(ix0, iy0, ix1 - ix0, iy1 - iy0))
            raw = np.zeros((len(bands), tile, tile), np.float32)
            inner = raw[:, iy0 - ty:iy1 - ty, ix0 - tx:ix1 - tx]
            inner[:] = data
            if check_nodata:
                empty = ~np.all(np.isfinite(data), axis=0)
                if src.nodata is not None:
                    empty |= nodata_pixels(data, src.nodata)
                blender.mark_invalid(ix0, iy0, empty)
                inner[:, empty] = fill
            return raw

        with staged_prob as prob_tmp, staged_mask as mask_tmp:
            with rasterio.open(prob_tmp, "w", **prob_profile) as prob_dst, \
                    rasterio.open(mask_tmp, "w", **mask_profile) as mask_dst:
                for i, name in enumerate(meta.classes, start=1):
                    prob_dst.set_band_description(i, f"{name} probability")
                mask_dst.set_band_description(1, "class" if k > 1 else f"{meta.classes[0]} mask")
                bands_x = column_bands(x0, width, BAND_COLUMNS)
                positive, steps, done = 0, len(bands_x) * len(ys), 0
                for c0, c1 in bands_x:
                    band_xs = [tx for tx in xs if tx < c1 and tx + tile > c0]
                    blender = _Blender(k, tile, (c0, y0, c1 - c0, height), threshold, prob_dst, mask_dst,
                                       config.mask, src.window_transform, (x0, y0))
                    for ty in ys:
                        check_canceled(feedback)
                        blender.flush(ty)
                        start = 0
                        while start < len(band_xs):
                            check_canceled(feedback)
                            chunk = band_xs[start:start + batch_size]
                            raws = np.stack([read_tile(tx, ty, blender) for tx in chunk])
                            try:
                                probs = ensemble.predict(raws, config.tta)
                            except torch.cuda.OutOfMemoryError:
                                batch_size = shrink_batch_after_oom(batch_size, feedback, "tile",
                                                                    "Lower TILE_SIZE or use DEVICE=cpu.")
                                continue
                            for tx, p in zip(chunk, probs):
                                blender.add(tx, ty, p, weight)
                            start += len(chunk)
                        done += 1
                        feedback.set_progress(95.0 * done / steps)
                    check_canceled(feedback)
                    blender.flush(y0 + height, final=True)
                    positive += blender.positive
                factors = overview_factors(width, height)
                if factors:
                    prob_dst.build_overviews(factors, Resampling.average)
                    mask_dst.build_overviews(factors, Resampling.nearest)
            # both files are complete and closed: move them into place together
            staged_prob.commit()
            staged_mask.commit()
    feedback.set_progress(100.0)
    return SegmentResult(os.path.abspath(probability_path), os.path.abspath(mask_path), threshold,
                         list(meta.classes), region, len(xs) * len(ys), positive)
