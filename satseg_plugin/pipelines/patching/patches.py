"""Cut a raster into georeferenced patches, streaming window by window.

Every patch keeps the source CRS, nodata, band metadata, and a geotransform equal to the source
transform composed with its pixel offset, exactly. Patches are written to a staging folder and moved
into place only when the whole set is done (see :mod:`.staging`).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Deque, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from ...core.distributed import (
    Scheduler,
    checked_client,
    parse_scheduler,
    run_units,
    unit_count,
)
from ...core.errors import InputError
from ...core.grid import PatchWindow, patch_grid
from ...core.progress import Feedback, NullFeedback, SubFeedback, check_canceled
from ...core.raster import (
    check_georeferencing,
    copy_band_metadata,
    geotiff_profile,
    nodata_pixels,
    open_raster,
    pixel_bounds,
    raster_env,
    resolve_bands,
    window_footprint,
)
from ...core.staging import StagedDirectory, Transaction, stages_outputs
from ...core.version import __version__
from .config import PatchConfig

__all__ = ["PatchConfig", "PatchRecord", "PatchResult", "PatchRows", "write_patches", "write_patch_rows",
           "plan_patches", "PATCH_CACHE_BYTES", "UNIT_PATCHES"]

#: GDAL block cache while patching (bytes): enough for a row of source blocks of a wide raster.
PATCH_CACHE_BYTES = 64 * 2**20
#: Most patches per Dask work unit (whole patch rows): a unit costs a scheduler round trip and a task of a few
#: seconds at 256 px patches keeps that small. Units are smaller when that gives each worker thread fewer
#: than :data:`~...core.distributed.UNITS_PER_WORKER` of them (so the last units even the load out).
UNIT_PATCHES = 512


@dataclass(frozen=True)
class PatchRecord:
    """One written patch: its grid cell, pixel window in the source, file and footprint ring."""

    patch_id: int
    row: int
    col: int
    x_off: int
    y_off: int
    width: int
    height: int
    path: str
    nodata_frac: float
    pad_frac: float
    footprint: Tuple[Tuple[float, float], ...] = field(repr=False)


@dataclass
class PatchResult:
    """What :func:`write_patches` produced."""

    output_dir: str
    records: List[PatchRecord]
    crs_wkt: Optional[str]
    transform: Affine
    bands: Tuple[int, ...]
    candidates: int
    skipped_nodata: int
    skipped_mask: int


def plan_patches(src: rasterio.DatasetReader, config: PatchConfig) -> Tuple[List[PatchWindow], int, bool]:
    """The patch windows to write, after extent and mask filtering (no pixels are read).

    The grid always covers the whole raster, so a patch has the same row, col and id whatever extent or
    mask selects it; EXTENT and MASK keep the patches whose footprint overlaps them.

    Returns:
        The windows (row-major), how many the extent/mask excluded, and whether any runs past the raster.
    """
    config.validate()
    if config.edge == "drop" and (config.patch_width > src.width or config.patch_height > src.height):
        raise InputError(f"a {config.patch_width}x{config.patch_height} patch is larger than the "
                         f"{src.width}x{src.height} raster, so 'drop' leaves nothing. Use a smaller patch, or "
                         "the 'pad' or 'shift' edge mode.", "PATCH_WIDTH")
    windows, beyond = patch_grid((0, 0, src.width, src.height), (config.patch_width, config.patch_height),
                                 config.stride, config.edge)
    if config.bounds is None and config.mask is None:
        return windows, 0, beyond
    import shapely  # only needed to filter
    from shapely.geometry import Polygon, box

    area, parameter = None, "EXTENT"
    if config.bounds is not None:
        area = box(*config.bounds)
    if config.mask is not None:
        if config.mask.is_empty:
            raise InputError("the mask layer holds no polygons. Draw or select polygons, or leave MASK empty.", "MASK")
        area = config.mask if area is None else area.intersection(config.mask)
        parameter = "MASK"
    raster_area = Polygon(window_footprint(src.transform, 0, 0, src.width, src.height))
    if area.is_empty or not area.intersects(raster_area):
        raise InputError("the area to patch does not overlap the raster. Check its position and CRS (it is "
                         "compared in the raster's CRS).", parameter)
    shapely.prepare(area)
    c0, r0, c1, r1 = pixel_bounds(src.transform, area.bounds)
    kept = [w for w in windows
            if w.x_off < c1 and w.x_off + w.width > c0 and w.y_off < r1 and w.y_off + w.height > r0
            and area.intersects(Polygon(window_footprint(src.transform, w.x_off, w.y_off, w.width, w.height)))]
    beyond = any(w.x_off + w.width > src.width or w.y_off + w.height > src.height for w in kept)
    return kept, len(windows) - len(kept), beyond


class _PatchWriter:
    """Reads, checks and writes single patches; safe to call from several threads (one dataset each).

    Patches are written into ``staged_dir`` and recorded at their path in ``final_dir`` (where the staging
    folder is moved on commit).
    """

    def __init__(self, path: str, bands: Tuple[int, ...], config: PatchConfig, staged_dir: str, final_dir: str,
                 name_format: str) -> None:
        self.path, self.bands, self.config, self.name_format = path, bands, config, name_format
        self.staged_dir, self.final_dir = staged_dir, final_dir
        self._local = threading.local()
        self._opened: List[rasterio.DatasetReader] = []
        self._lock = threading.Lock()

    def _dataset(self) -> rasterio.DatasetReader:
        src = getattr(self._local, "src", None)
        if src is None:
            src = rasterio.open(self.path)
            self._local.src = src
            with self._lock:
                self._opened.append(src)
        return src

    def close(self) -> None:
        for src in self._opened:
            src.close()
        self._opened.clear()

    def __call__(self, win: PatchWindow) -> Optional[PatchRecord]:
        src = self._dataset()
        x0, y0 = max(win.x_off, 0), max(win.y_off, 0)
        x1, y1 = min(win.x_off + win.width, src.width), min(win.y_off + win.height, src.height)
        inner = Window(x0, y0, x1 - x0, y1 - y0)
        data = src.read(self.bands, window=inner)
        if src.nodata is None and any(f in (MaskFlags.per_dataset, MaskFlags.alpha) for f in src.mask_flag_enums[0]):
            empty = src.read_masks(1, window=inner) == 0  # internal mask or alpha band
        else:
            empty = nodata_pixels(data, src.nodata)
        inside = inner.width * inner.height
        nodata_frac = float(empty.sum()) / inside if inside else 1.0
        if nodata_frac > self.config.max_nodata_fraction:
            return None
        pad_frac = 1.0 - inside / float(win.width * win.height)
        if pad_frac > 0:
            fill = src.nodata if src.nodata is not None else 0
            full = np.full((len(self.bands), win.height, win.width), fill, dtype=data.dtype)
            full[:, y0 - win.y_off:y1 - win.y_off, x0 - win.x_off:x1 - win.x_off] = data
            data = full
        name = self.name_format.format(row=win.row, col=win.col)
        transform = src.transform * Affine.translation(win.x_off, win.y_off)
        profile = geotiff_profile(win.width, win.height, len(self.bands), data.dtype.name, src.crs, transform,
                                  src.nodata, self.config.compress)
        with rasterio.open(os.path.join(self.staged_dir, name), "w", **profile) as dst:
            dst.write(data)
            copy_band_metadata(src, dst, self.bands)
        return PatchRecord(
            patch_id=win.index, row=win.row, col=win.col, x_off=win.x_off, y_off=win.y_off, width=win.width,
            height=win.height, path=os.path.join(self.final_dir, name), nodata_frac=round(nodata_frac, 6),
            pad_frac=round(pad_frac, 6),
            footprint=window_footprint(src.transform, win.x_off, win.y_off, win.width, win.height))


@dataclass(frozen=True)
class PatchRows:
    """A distributed run's work unit: whole rows of patch windows, written into the shared staging folder.

    Attributes:
        source: the raster's path.
        bands: the bands to write.
        config: the run's settings.
        staged_dir: the staging folder (on storage the workers share).
        final_dir: the output folder the patches are recorded in.
        name_format: the patch file names.
        windows: the unit's windows, row-major.
    """

    source: str
    bands: Tuple[int, ...]
    config: PatchConfig
    staged_dir: str
    final_dir: str
    name_format: str
    windows: Tuple[PatchWindow, ...]


def write_patch_rows(unit: PatchRows, feedback: Feedback) -> List[Optional[PatchRecord]]:
    """Write a unit's patches (a Dask work unit); per window its record, or None when skipped for nodata."""
    writer = _PatchWriter(unit.source, unit.bands, unit.config, unit.staged_dir, unit.final_dir, unit.name_format)
    records: List[Optional[PatchRecord]] = []
    try:
        with raster_env(GDAL_CACHEMAX=PATCH_CACHE_BYTES):
            for win in unit.windows:
                check_canceled(feedback)
                records.append(writer(win))
    finally:
        writer.close()
    return records


def _row_groups(windows: Sequence[PatchWindow], size: int) -> List[Tuple[PatchWindow, ...]]:
    """Row-major ``windows`` cut into groups of whole patch rows, each of about ``size`` windows at most (a
    row longer than ``size`` is a group of its own)."""
    groups: List[List[PatchWindow]] = []
    for _row, cells in itertools.groupby(windows, key=lambda w: w.row):
        cells = list(cells)
        if groups and len(groups[-1]) + len(cells) <= size:
            groups[-1].extend(cells)
        else:
            groups.append(cells)
    return [tuple(g) for g in groups]


def _write_on_cluster(scheduler: Scheduler, source: str, bands: Tuple[int, ...], config: PatchConfig,
                      staging: StagedDirectory, name_format: str, windows: Sequence[PatchWindow],
                      order: Sequence[PatchWindow], target: int,
                      feedback: Feedback) -> Tuple[List[PatchRecord], int]:
    """Write the patches as Dask work units of whole patch rows; the accepted records and the nodata skips.

    With a sample, every window is written and the patches past the first ``target`` accepted in the drawn
    order are removed again, so the sample is the one an in-process run draws.
    """
    staged_dir, final_dir = staging.staged_path(""), staging.final_path("")
    with checked_client(scheduler, feedback, [(source, "INPUT")], staged_dir, "OUTPUT_DIR") as client:
        size = min(UNIT_PATCHES, -(-len(windows) // unit_count(client)))
        units = [PatchRows(os.path.abspath(source), bands, config, staged_dir, final_dir, name_format, group)
                 for group in _row_groups(windows, size)]
        feedback.info(f"{len(units)} groups of patch rows run as Dask work units.")
        results = run_units(client, write_patch_rows, units, SubFeedback(feedback, 0, 95),
                            what="group of patch rows")
    written = {win.index: record for unit, records in zip(units, results) for win, record in zip(unit.windows, records)}
    accepted: List[PatchRecord] = []
    skipped_nodata = 0
    for win in order:
        record = written[win.index]
        if record is None:
            skipped_nodata += len(accepted) < target
        elif len(accepted) < target:
            accepted.append(record)
        else:
            os.remove(staging.staged_path(os.path.basename(record.path)))
    return accepted, skipped_nodata


def _write_in_process(writer: _PatchWriter, order: Sequence[PatchWindow], target: int, workers: int,
                      staging: StagedDirectory, feedback: Feedback) -> Tuple[List[PatchRecord], int]:
    """Write the patches on ``workers`` threads in ``order`` until ``target`` are accepted; the accepted
    records and the nodata skips."""
    accepted: List[PatchRecord] = []
    skipped_nodata = 0

    def take(future: Future) -> None:
        """Keep a finished patch, count a skipped one, delete one drawn beyond the sample size."""
        nonlocal skipped_nodata
        record = future.result()
        if record is None:
            skipped_nodata += 1
        elif len(accepted) < target:
            accepted.append(record)
        else:  # threads still in flight drew more patches than the sample needs
            os.remove(staging.staged_path(os.path.basename(record.path)))

    # Each window is read about once, so a small block cache suffices and peak memory stays the same
    # whatever the raster's size (the 256 MiB default would fill up on large rasters only).
    with raster_env(GDAL_CACHEMAX=PATCH_CACHE_BYTES), ThreadPoolExecutor(max_workers=workers) as pool:
        pending: Deque[Future] = deque()
        max_inflight = 2 * workers
        try:
            for done, win in enumerate(order, start=1):
                check_canceled(feedback)
                pending.append(pool.submit(writer, win))
                while pending and (len(pending) >= max_inflight or pending[0].done()):
                    take(pending.popleft())
                feedback.set_progress(95.0 * max(done / len(order), len(accepted) / target))
                if len(accepted) >= target:
                    break
            while pending:
                take(pending.popleft())
        finally:
            for fut in pending:
                fut.cancel()
    return accepted, skipped_nodata


@stages_outputs
def write_patches(source: str, output_dir: str, config: PatchConfig = PatchConfig(),
                  feedback: Optional[Feedback] = None, transaction: Optional[Transaction] = None,
                  scheduler: str = "") -> PatchResult:
    """Cut ``source`` into georeferenced GeoTIFF patches in ``output_dir``.

    Memory stays bounded by ``workers`` x a few patches whatever the raster size: each patch is read
    through its own window.

    Args:
        source: path of the raster (any band count and data type GDAL reads).
        output_dir: folder to create (must be new or empty, or an earlier SatSeg patch folder with
            ``config.overwrite``).
        config: grid, filters and output options.
        feedback: progress, cancel and log.
        transaction: stage the outputs into this run's transaction and leave the commit to its owner
            (default: the current run's, else they are moved into place together when this returns).
        scheduler: SCHEDULER (:func:`~...core.distributed.parse_scheduler`): empty writes on ``config.workers``
            threads here; ``local:N`` or a scheduler's address write groups of patch rows as Dask work units
            into the staging folder (on storage the workers share), with the same patches and index.

    Returns:
        The written patches (sorted by row, col) and counts of what was skipped.

    Raises:
        InputError: bad parameters or unreadable input.
        OutputError: the output folder cannot be used.
        CanceledError: the user canceled; ``output_dir`` is as it was before.
    """
    feedback = feedback or NullFeedback()
    config.validate()
    cluster = parse_scheduler(scheduler)
    with raster_env(), open_raster(source) as src:
        check_georeferencing(src, feedback)
        bands = resolve_bands(src, config.bands)
        windows, skipped_mask, beyond = plan_patches(src, config)
        if beyond and config.edge == "shift":
            feedback.warning("The area to patch is smaller than one patch: the patch is padded with nodata.")
        if beyond and src.nodata is None:
            feedback.warning("The raster has no nodata value: padding is filled with 0.")
        transform, crs_wkt = src.transform, (src.crs.to_wkt() if src.crs else None)
    config = replace(config, bands=bands)
    order: Sequence[PatchWindow] = windows
    if config.sample_count:
        rng = np.random.default_rng(config.seed)
        order = [windows[i] for i in rng.permutation(len(windows))]
    target = config.sample_count or len(order)
    prefix = config.prefix or os.path.splitext(os.path.basename(source))[0]
    digits = max(4, len(str(max(max(w.row for w in windows), max(w.col for w in windows)))))
    name_format = f"{prefix}_r{{row:0{digits}d}}_c{{col:0{digits}d}}.tif"
    feedback.info(f"Patching {len(windows)} candidate windows of {config.patch_width}x{config.patch_height} px "
                  f"(stride {config.stride[0]}x{config.stride[1]}, edge '{config.edge}', bands {list(bands)}).")

    with StagedDirectory(output_dir, overwrite=config.overwrite) as staging:
        if cluster.in_process:
            writer = _PatchWriter(source, bands, config, staging.staged_path(""), staging.final_path(""),
                                  name_format)
            try:
                accepted, skipped_nodata = _write_in_process(writer, order, target, config.workers, staging,
                                                             feedback)
            finally:
                writer.close()
        else:
            accepted, skipped_nodata = _write_on_cluster(cluster, source, bands, config, staging, name_format,
                                                         windows, order, target, feedback)
        check_canceled(feedback)
        if not accepted:
            raise InputError(f"every one of the {len(order)} patches has more than "
                             f"{config.max_nodata_fraction:.0%} nodata, so none was written. Raise "
                             "MAX_NODATA_FRACTION or check the raster's nodata value.", "MAX_NODATA_FRACTION")
        accepted.sort(key=lambda r: (r.row, r.col))
        if config.sample_count and len(accepted) < config.sample_count:
            feedback.warning(f"Only {len(accepted)} patches pass the nodata filter, fewer than the "
                             f"{config.sample_count} asked for; all of them were written.")
        staging.write_manifest({
            "satseg_version": __version__, "kind": "patches", "source": os.path.abspath(source),
            "crs_wkt": crs_wkt, "transform": list(transform)[:6],
            "config": {k: v for k, v in asdict(config).items() if k != "mask"},
            "patches": [{k: v for k, v in asdict(r).items() if k != "footprint"} for r in accepted],
        })
        staging.commit()
    feedback.set_progress(100.0)
    feedback.info(f"Wrote {len(accepted)} patches to {os.path.abspath(output_dir)} "
                  f"({skipped_nodata} skipped for nodata, {skipped_mask} outside the extent/mask).")
    return PatchResult(os.path.abspath(output_dir), accepted, crs_wkt, transform, bands, len(windows),
                       skipped_nodata, skipped_mask)
