"""Scene (patch-level) data: a stack of equally sized patch files in memory, and soft labels from polygons.

The scene pipeline (``satseg:pretrainscene``, ``satseg:deepcluster``) works on the patch files written by
``satseg:patchraster``: every patch has the same size and bands, and a person labels a sample of them by
drawing urban / rural / uninhabited polygons. :func:`load_patches` reads the patches into one float32 array
with per-band statistics over valid pixels; :func:`soft_labels` turns the polygons into the fraction of each
patch's footprint that each class covers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from ....core.deps import require
from ....core.errors import InputError
from ....core.progress import Feedback, NullFeedback, track
from ....core.raster import crs_units, model_bands, nodata_flags, open_raster, raster_env

__all__ = ["MAX_STACK_BYTES", "PatchStack", "load_patches", "soft_labels"]

#: Largest patch stack :func:`load_patches` builds (the float32 pixels; :meth:`PatchStack.normalized`
#: makes a second array of the same size).
MAX_STACK_BYTES = 2 * 2**30


@dataclass
class PatchStack:
    """Patches read into memory.

    Attributes:
        data: ``(N, C, H, W)`` float32 pixel values as stored in the files (nodata pixels keep their value).
        valid: ``(N, H, W)`` bool, False where a pixel holds no data (nodata value, NaN, dataset mask).
        mean: ``(C,)`` float64 per-band mean over the valid pixels of every patch.
        std: ``(C,)`` float64 per-band standard deviation over the same pixels (at least 1e-6).
        bands: the 1-based bands read from each patch file, in channel order.
        paths: the absolute patch file paths, in row order.
        crs_wkt: WKT of the first patch's CRS (None if it has none).
        crs_units: units of that CRS (``metre``, ``degrees``, ``pixels``).
        pixel_size: ``(x, y)`` pixel size of the first patch in ``crs_units``.
    """

    data: np.ndarray
    valid: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    bands: Tuple[int, ...]
    paths: List[str]
    crs_wkt: Optional[str]
    crs_units: str
    pixel_size: Tuple[float, float]

    @property
    def count(self) -> int:
        """Number of patches N."""
        return int(self.data.shape[0])

    @property
    def in_channels(self) -> int:
        """Number of bands C."""
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        """Patch height H in pixels."""
        return int(self.data.shape[2])

    @property
    def width(self) -> int:
        """Patch width W in pixels."""
        return int(self.data.shape[3])

    def normalized(self, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None) -> np.ndarray:
        """The patches as network inputs: ``(data - mean) / std`` per band, invalid pixels set to 0.

        Args:
            mean: per-band mean to subtract (None: the stack's own :attr:`mean`); pass a model's stored mean
                to feed patches to a model trained on other statistics.
            std: per-band standard deviation to divide by (None: the stack's :attr:`std`).

        Returns:
            A new ``(N, C, H, W)`` float32 array (as large again as :attr:`data`).
        """
        centre = np.asarray(self.mean if mean is None else mean, np.float32)
        scale = np.asarray(self.std if std is None else std, np.float32)
        if centre.shape != (self.in_channels,) or scale.shape != (self.in_channels,):
            raise InputError(f"normalisation needs one mean and one std per band ({self.in_channels}), got "
                             f"{centre.size} and {scale.size}.")
        out = (self.data - centre[None, :, None, None]) / scale[None, :, None, None]
        out *= self.valid[:, None]
        return np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)


def load_patches(paths: Sequence[str], bands: Optional[Sequence[int]] = None,
                 feedback: Optional[Feedback] = None, max_bytes: int = MAX_STACK_BYTES) -> PatchStack:
    """Read every patch file into one ``(N, C, H, W)`` float32 array and compute per-band statistics.

    Cost: one read of each file; memory is ``N * C * H * W * 4`` bytes (refused above ``max_bytes``).

    Args:
        paths: the patch files (GeoTIFFs written by ``satseg:patchraster``), all the same size and band count.
        bands: 1-based band subset in channel order (None: every band).
        feedback: progress (0..100 over the files) and cancel, checked before each file.
        max_bytes: largest stack allowed, in bytes.

    Returns:
        The :class:`PatchStack`.

    Raises:
        InputError: no patches (``PATCH_INDEX``); a file cannot be read or differs in size or band count from
            the first one (``PATCH_INDEX``, naming the file); bad bands (``BANDS``); too many patches for memory
            (``INPUT``); every pixel is nodata (``PATCH_INDEX``).
        CanceledError: when the user cancels.
    """
    feedback = feedback or NullFeedback()
    files = [os.path.abspath(str(p)) for p in paths]
    if not files:
        raise InputError("no patch files were given. Choose a patch index written by Create patches "
                         "(satseg:patchraster) that lists at least one patch.", "PATCH_INDEX")
    with raster_env():
        with open_raster(files[0], "PATCH_INDEX") as first:
            chosen = model_bands(first, bands, feedback=feedback)
            height, width, band_count = first.height, first.width, first.count
            crs = first.crs
            crs_wkt = crs.to_wkt() if crs else None
            units = crs_units(crs)
            pixel_size = (abs(float(first.res[0])), abs(float(first.res[1])))
        n, channels = len(files), len(chosen)
        needed = n * channels * height * width * 4
        if needed > max_bytes:
            raise InputError(f"{n} patches of {channels} band(s) x {height} x {width} px need "
                             f"{needed / 2**30:.1f} GiB, too many patches for memory (limit "
                             f"{max_bytes / 2**30:.1f} GiB); use SAMPLE to draw fewer patches, or smaller patches.",
                             "INPUT")
        data = np.empty((n, channels, height, width), np.float32)
        valid = np.empty((n, height, width), bool)
        count = np.zeros(channels)
        mean = np.zeros(channels)
        m2 = np.zeros(channels)
        for i in track(range(n), feedback, total=n):
            with open_raster(files[i], "PATCH_INDEX") as src:
                if (src.width, src.height, src.count) != (width, height, band_count):
                    raise InputError(f"patch '{files[i]}' is {src.width} x {src.height} px with {src.count} band(s), "
                                     f"but the first patch '{files[0]}' is {width} x {height} px with {band_count}. "
                                     "All patches must share one size and band count: write them again with one "
                                     "patch size from the same raster bands.", "PATCH_INDEX")
                pixels = src.read(list(chosen))
                mask = ~nodata_flags(src, chosen, None, pixels)
            data[i] = pixels
            valid[i] = mask
            values = data[i][:, mask].astype(np.float64)
            m = values.shape[1]
            if m:
                # Chan et al.'s pairwise update: numerically stable pooled mean and variance
                patch_mean = values.mean(axis=1)
                patch_m2 = ((values - patch_mean[:, None]) ** 2).sum(axis=1)
                total = count + m
                delta = patch_mean - mean
                mean = mean + delta * m / total
                m2 = m2 + patch_m2 + delta ** 2 * count * m / total
                count = total
    if count[0] == 0:
        raise InputError("every pixel of every patch is nodata; choose patches with valid pixels (or check "
                         "the nodata value of the source raster).", "PATCH_INDEX")
    std = np.maximum(np.sqrt(m2 / count), 1e-6)
    return PatchStack(data=data, valid=valid, mean=mean, std=std, bands=tuple(chosen), paths=files,
                      crs_wkt=crs_wkt, crs_units=units, pixel_size=pixel_size)


def soft_labels(footprints: Sequence[Any], geometries: Sequence[Any], classes: Sequence[int],
                num_classes: int) -> np.ndarray:
    """Fraction of each footprint's area that each class's polygons cover.

    Per footprint and class, the area of (footprint intersected with the union of that class's polygons)
    divided by the footprint's area; polygons of one class that overlap count once. Where classes overlap
    each other a row can sum to more than 1: such rows are divided by their sum. A footprint no polygon
    touches gets an all-zero row, which the scene training treats as unlabelled. Rows summing to less than
    1 (a patch partly annotated) are kept as they are; the training uses ``row / row.sum()``.

    Only footprint-polygon pairs whose bounding boxes meet are intersected (a shapely ``STRtree``), so the
    cost grows with the number of such pairs, not with footprints x polygons.

    Args:
        footprints: patch footprints as shapely polygons, or as coordinate rings (``PatchRecord.footprint``).
        geometries: annotation polygons (shapely), in the footprints' CRS; None or empty ones are skipped and
            invalid ones repaired with ``make_valid``.
        classes: the class index (``0 .. num_classes - 1``) of each geometry.
        num_classes: number of classes C.

    Returns:
        ``(len(footprints), num_classes)`` float64 fractions in ``[0, 1]``.

    Raises:
        InputError: when geometries and classes differ in length, a class index is out of range, or
            ``num_classes < 1`` (``LABELS``).
    """
    shapely = require("shapely")
    if num_classes < 1:
        raise InputError(f"soft labels need at least one class, got {num_classes}.", "LABELS")
    fps = np.empty(len(footprints), dtype=object)
    for i, fp in enumerate(footprints):
        fps[i] = fp if isinstance(fp, shapely.Geometry) else shapely.Polygon(fp)
    geoms = np.empty(len(geometries), dtype=object)
    geoms[:] = list(geometries)
    codes = np.asarray(list(classes))
    if codes.shape != (len(geoms),):
        raise InputError(f"{codes.size} class values for {len(geoms)} geometries; give one class per polygon.",
                         "LABELS")
    out = np.zeros((len(fps), int(num_classes)), np.float64)
    if not len(fps) or not len(geoms):
        return out
    if not np.issubdtype(codes.dtype, np.integer):
        if not np.issubdtype(codes.dtype, np.floating) or not np.all(codes == np.round(codes)):
            raise InputError(f"class values must be integer indices 0..{num_classes - 1}.", "LABELS")
        codes = codes.astype(np.int64)
    bad = codes[(codes < 0) | (codes >= num_classes)]
    if bad.size:
        raise InputError(f"class index {int(bad[0])} is out of range 0..{num_classes - 1}.", "LABELS")
    present = np.array([g is not None for g in geoms], bool)
    present[present] = ~shapely.is_empty(geoms[present].astype(object))
    geoms, codes = geoms[present], codes[present]
    if not len(geoms):
        return out
    broken = ~shapely.is_valid(geoms)
    if broken.any():
        geoms[broken] = shapely.make_valid(geoms[broken])
    tree = shapely.STRtree(geoms)
    fp_idx, geom_idx = tree.query(fps, predicate="intersects")
    if not len(fp_idx):
        return out
    pieces = shapely.intersection(fps[fp_idx], geoms[geom_idx])
    keys = fp_idx.astype(np.int64) * num_classes + codes[geom_idx]
    order = np.argsort(keys, kind="stable")
    keys, pieces = keys[order], pieces[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    stops = np.r_[starts[1:], len(keys)]
    areas = shapely.area(fps)
    for start, stop in zip(starts, stops):
        fp, cls = divmod(int(keys[start]), num_classes)
        if areas[fp] <= 0:
            continue
        covered = pieces[start] if stop - start == 1 else shapely.union_all(pieces[start:stop])
        out[fp, cls] = shapely.area(covered) / areas[fp]
    np.clip(out, 0.0, 1.0, out=out)
    sums = out.sum(axis=1)
    over = sums > 1.0 + 1e-9
    out[over] /= sums[over, None]
    return out
