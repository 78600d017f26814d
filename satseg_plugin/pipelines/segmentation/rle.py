"""Competition run-length encoding (RLE) of binary masks, and streaming CSV export/import of mask rasters.

The encoding: the mask is flattened row-major (C order); each run of 1-pixels is written as its 1-based
start index and its length, all numbers separated by single spaces (``"3 2 7 1"``); a mask with no
1-pixel is ``"-1"``.

A mask raster is exported as a CSV of ``img_id,mask_rle`` rows, one per ``tile_size`` x ``tile_size``
tile of the raster, plus a sidecar JSON (``<csv>.json``) holding the raster's size, CRS, geotransform and
nodata so :func:`import_rle` rebuilds the georeferenced mask exactly. Both directions stream one row of
tiles at a time, so memory does not grow with the raster's height.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from ...core.errors import InputError
from ...core.progress import Feedback, NullFeedback, check_canceled, track
from ...core.raster import check_georeferencing, geotiff_profile, open_raster, raster_env
from ...core.staging import StagedFile
from ...core.version import __version__

__all__ = [
    "EMPTY",
    "CSV_HEADER",
    "SIDECAR_SUFFIX",
    "ExportResult",
    "binarize",
    "encode",
    "decode",
    "tile_id",
    "parse_tile_id",
    "sidecar_path",
    "export_rle",
    "import_rle",
]

#: The RLE of a mask without any 1-pixel.
EMPTY = "-1"
#: The CSV's header row.
CSV_HEADER = ("img_id", "mask_rle")
#: Appended to the CSV path to name the sidecar JSON (``sub.csv`` -> ``sub.csv.json``).
SIDECAR_SUFFIX = ".json"

_ID_PATTERN = re.compile(r"^(?P<prefix>.*)_r(?P<row>\d+)_c(?P<col>\d+)$")


def encode(mask: np.ndarray) -> str:
    """Run-length encode a binary mask.

    Args:
        mask: array of any shape; non-zero values are foreground. Flattened in row-major (C) order.

    Returns:
        ``"start length start length ..."`` with 1-based starts, or ``"-1"`` when no pixel is set.
    """
    flat = np.asarray(mask).ravel(order="C") != 0
    if not flat.any():
        return EMPTY
    edges = np.flatnonzero(np.diff(np.concatenate(([False], flat, [False])).view(np.int8)))
    starts, ends = edges[0::2], edges[1::2]  # 0-based start, exclusive end
    pairs = np.empty(2 * len(starts), dtype=np.int64)
    pairs[0::2] = starts + 1
    pairs[1::2] = ends - starts
    return " ".join(map(str, pairs.tolist()))


def _runs(rle: str, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Parse and validate an RLE string into 0-based starts and exclusive ends."""
    if not isinstance(rle, str):
        raise ValueError(f"an RLE must be a string, got {type(rle).__name__}")
    tokens = rle.split()
    if not tokens or tokens == [EMPTY]:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if EMPTY in tokens:
        raise ValueError("'-1' marks an empty mask and must stand alone, but the RLE also holds runs")
    for position, token in enumerate(tokens, start=1):
        if not (token.isascii() and token.isdigit()):
            raise ValueError(f"number {position} of the RLE, '{token[:20]}', is not a non-negative integer")
        if len(token) > 18:
            raise ValueError(f"number {position} of the RLE, '{token[:20]}...', is far past the end of the mask")
    if len(tokens) % 2:
        raise ValueError(f"an RLE holds 'start length' pairs, but this one has an odd count of numbers "
                         f"({len(tokens)})")
    values = np.array(tokens, dtype=np.int64)
    starts, lengths = values[0::2], values[1::2]
    if (starts < 1).any():
        i = int(np.argmax(starts < 1))
        raise ValueError(f"run {i + 1} starts at {starts[i]}; starts are 1-based, so at least 1")
    if (lengths < 1).any():
        i = int(np.argmax(lengths < 1))
        raise ValueError(f"run {i + 1} has length {lengths[i]}; lengths must be at least 1")
    ends = starts - 1 + lengths  # 0-based exclusive end
    if (ends > size).any():
        i = int(np.argmax(ends > size))
        raise ValueError(f"run {i + 1} ({starts[i]} {lengths[i]}) runs past the end of the {size}-pixel mask")
    bad = starts[1:] - 1 < ends[:-1]
    if bad.any():
        i = int(np.argmax(bad)) + 1
        raise ValueError(f"run {i + 1} starts at pixel {starts[i]}, but run {i} covers pixels "
                         f"{starts[i - 1]}..{ends[i - 1]}: runs must be sorted and must not overlap")
    return starts - 1, ends


def decode(rle: str, shape: Union[int, Sequence[int]]) -> np.ndarray:
    """Decode an RLE string into a binary mask.

    ``"-1"`` and the empty string (what pandas writes for a missing value) both decode to an empty mask.
    Runs that touch (one starts right after the previous ends) are accepted.

    Args:
        rle: ``"start length ..."`` with 1-based starts in row-major order, or ``"-1"``.
        shape: the mask's shape, e.g. ``(224, 224)``.

    Returns:
        A ``uint8`` array of ``shape`` holding 0 and 1.

    Raises:
        ValueError: for a malformed RLE (non-integers, an odd count of numbers, starts below 1, lengths
            below 1, unsorted or overlapping runs, runs past the end of the mask), or a bad shape.
    """
    shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"mask shape must not be negative, got {shape}")
    size = int(np.prod(shape, dtype=np.int64))
    starts, ends = _runs(rle, size)
    if not len(starts):
        return np.zeros(shape, np.uint8)
    steps = np.bincount(starts, minlength=size + 1) - np.bincount(ends, minlength=size + 1)
    return np.cumsum(steps[:size]).astype(np.uint8).reshape(shape)


def _digits(rows: int, cols: int) -> int:
    """Zero-padding width of tile ids: at least 4, as ``satseg:patchraster`` names its patches."""
    return max(4, len(str(max(rows - 1, cols - 1, 0))))


def tile_id(prefix: str, row: int, col: int, digits: int = 4) -> str:
    """``<prefix>_r<row>_c<col>`` with zero-padded row and column (the stem patchraster gives that patch)."""
    return f"{prefix}_r{row:0{digits}d}_c{col:0{digits}d}"


def parse_tile_id(img_id: str) -> Tuple[str, int, int]:
    """Split ``<prefix>_r<row>_c<col>`` into ``(prefix, row, col)``.

    Raises:
        ValueError: when ``img_id`` does not end in ``_r<row>_c<col>``.
    """
    match = _ID_PATTERN.match(img_id)
    if match is None:
        raise ValueError(f"tile id '{img_id}' does not end in '_r<row>_c<col>'")
    return match["prefix"], int(match["row"]), int(match["col"])


def sidecar_path(csv_path: str) -> str:
    """The sidecar JSON written beside ``csv_path`` (``sub.csv`` -> ``sub.csv.json``)."""
    return csv_path + SIDECAR_SUFFIX


def _nodata_to_json(nodata: Optional[float]) -> Union[None, float, str]:
    if nodata is None:
        return None
    return "nan" if math.isnan(nodata) else nodata


def _mask_nodata(nodata: Union[None, float, str]) -> Optional[int]:
    """The nodata value of a rebuilt 0/1 mask: the source's when it is a byte other than 1 (which would
    hide buildings), else none."""
    if isinstance(nodata, (int, float)) and not isinstance(nodata, bool) and float(nodata).is_integer() \
            and 0 <= nodata <= 255 and nodata != 1:
        return int(nodata)
    return None


@dataclass
class ExportResult:
    """What :func:`export_rle` wrote.

    Attributes:
        csv_path: the CSV of ``img_id,mask_rle`` rows.
        sidecar_path: the JSON that lets :func:`import_rle` rebuild the georeferenced mask.
        tile_count: rows in the CSV (every tile of the grid, empty ones as ``-1``).
        empty_tiles: tiles without any foreground pixel.
        rows: tile rows of the grid.
        cols: tile columns of the grid.
        tile_size: tile edge in pixels.
        width: raster width in pixels.
        height: raster height in pixels.
    """

    csv_path: str
    sidecar_path: str
    tile_count: int
    empty_tiles: int
    rows: int
    cols: int
    tile_size: int
    width: int
    height: int


def binarize(data: np.ndarray, nodata: Optional[float] = None, threshold: float = 0.0) -> np.ndarray:
    """How SatSeg reads a mask or probability raster: values above ``threshold`` are foreground (True);
    everything else, nodata and NaN pixels included, is background.

    Args:
        data: pixel values of one band.
        nodata: the band's nodata value, or None.
        threshold: 0 for 0/1 (or 0/255) masks, e.g. 0.5 for probability rasters.
    """
    fg = np.asarray(data) > threshold
    if nodata is not None and not math.isnan(nodata):
        fg &= data != nodata
    return fg


def export_rle(mask_path: str, csv_path: str, tile_size: int = 224, prefix: Optional[str] = None,
               threshold: float = 0.0, overwrite: bool = True, feedback: Optional[Feedback] = None) -> ExportResult:
    """Cut a mask raster into tiles and write each tile's RLE as one CSV row, plus a sidecar JSON.

    Pixels of band 1 above ``threshold`` are 1; everything else (0, nodata, NaN) is 0. Tiles form a grid
    from the top-left corner; tiles at the right and bottom edges that run past the raster are padded
    with 0 to the full ``tile_size`` x ``tile_size`` before encoding (so every RLE describes a full tile),
    and :func:`import_rle` crops that padding away again. Every tile is written, empty ones as ``-1``.
    The tile ids, ``<prefix>_r<row>_c<col>``, equal the file stems ``satseg:patchraster`` gives the same
    tiles (patch size = tile size, edge mode pad).

    Args:
        mask_path: the mask raster (band 1 is read).
        csv_path: the CSV to write; the sidecar goes to ``<csv_path>.json``.
        tile_size: tile edge in pixels.
        prefix: id prefix (None: the raster file's stem).
        threshold: values above this are foreground (0 for 0/1 masks, 0.5 for probability rasters).
        overwrite: replace existing files.
        feedback: progress, cancel and log.

    Returns:
        What was written.

    Raises:
        InputError: unreadable raster, bad tile size or prefix.
        OutputError: the CSV cannot be written.
        CanceledError: the user canceled; no file was written.
    """
    feedback = feedback or NullFeedback()
    if int(tile_size) < 1:
        raise InputError(f"tile size must be at least 1 pixel, got {tile_size}.", "TILE_SIZE")
    tile = int(tile_size)
    if prefix is not None and ("," in prefix or "\n" in prefix or '"' in prefix):
        raise InputError(f"prefix '{prefix}' holds a comma, quote or line break, which would break the CSV. "
                         "Choose a prefix without them.", "PREFIX")
    prefix = prefix or os.path.splitext(os.path.basename(mask_path))[0]
    with raster_env(), open_raster(mask_path) as src:
        check_georeferencing(src, feedback)
        if src.count > 1:
            feedback.warning(f"The mask raster has {src.count} bands: only band 1 is exported.")
        width, height, nodata = src.width, src.height, src.nodata
        rows, cols = -(-height // tile), -(-width // tile)
        digits = _digits(rows, cols)
        sidecar = {
            "satseg_version": __version__, "kind": "rle", "source": os.path.abspath(mask_path),
            "width": width, "height": height, "tile_size": tile, "rows": rows, "cols": cols,
            "prefix": prefix, "id_digits": digits, "order": "row-major, 1-based starts, edge tiles padded with 0",
            "threshold": threshold, "crs_wkt": src.crs.to_wkt() if src.crs else None,
            "transform": list(src.transform)[:6], "nodata": _nodata_to_json(nodata),
        }
        feedback.info(f"Encoding a {width}x{height} mask as {rows}x{cols} tiles of {tile} px.")
        empty = 0
        staged_csv = StagedFile(csv_path, overwrite=overwrite, parameter="OUTPUT")
        staged_json = StagedFile(sidecar_path(csv_path), overwrite=overwrite, parameter="OUTPUT")
        with staged_csv as tmp_csv, staged_json as tmp_json:
            with open(tmp_csv, "w", encoding="utf-8", newline="") as out:
                out.write(",".join(CSV_HEADER) + "\n")
                for row in track(range(rows), feedback, span=(0.0, 99.0)):
                    y0 = row * tile
                    strip_h = min(tile, height - y0)
                    data = src.read(1, window=Window(0, y0, width, strip_h))
                    strip = np.zeros((tile, cols * tile), np.uint8)
                    strip[:strip_h, :width] = binarize(data, nodata, threshold)
                    for col in range(cols):
                        rle = encode(strip[:, col * tile:(col + 1) * tile])
                        empty += rle == EMPTY
                        out.write(f"{tile_id(prefix, row, col, digits)},{rle}\n")
            with open(tmp_json, "w", encoding="utf-8") as out:
                json.dump(sidecar, out, indent=1)
            check_canceled(feedback)
            staged_csv.commit()
            staged_json.commit()
    feedback.set_progress(100.0)
    feedback.info(f"Wrote {rows * cols} tiles ({empty} empty) to {os.path.abspath(csv_path)}.")
    return ExportResult(os.path.abspath(csv_path), os.path.abspath(sidecar_path(csv_path)), rows * cols, empty,
                        rows, cols, tile, width, height)


def _read_rows(csv_path: str) -> Iterator[Tuple[int, str, str]]:
    """Yield ``(line number, img_id, mask_rle)`` of an ``img_id,mask_rle`` CSV (header checked)."""
    try:
        handle = open(csv_path, encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read '{csv_path}' ({exc.strerror}). Choose an existing CSV file.", "INPUT") from exc
    with handle:
        header = handle.readline()
        names = [c.strip().strip('"').lower() for c in header.strip().split(",")]
        if names != list(CSV_HEADER):
            raise InputError(f"'{csv_path}' does not start with the header row '{','.join(CSV_HEADER)}' "
                             f"(found '{header.strip()[:60]}'). Choose a CSV written by SatSeg's RLE export "
                             "or in the competition format.", "INPUT")
        for number, line in enumerate(handle, start=2):
            line = line.strip()
            if not line:
                continue
            parts = line.split(",", 1)
            if len(parts) != 2:
                raise InputError(f"line {number} of '{csv_path}' has no comma between img_id and mask_rle.", "INPUT")
            yield number, parts[0].strip().strip('"'), parts[1].strip().strip('"')


def _load_sidecar(csv_path: str) -> Optional[dict]:
    path = sidecar_path(csv_path)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            meta = json.load(handle)
        for key in ("width", "height", "tile_size", "transform"):
            meta[key]  # presence check
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"the sidecar '{path}' is unreadable or incomplete ({exc}). Delete it and give a "
                         "REFERENCE raster for the grid instead.", "INPUT") from exc
    _check_sidecar(meta, path)
    return meta


#: Largest raster side GDAL can create (its sizes are C ints).
_MAX_SIDE = 2 ** 31 - 1


def _check_sidecar(meta: dict, path: str) -> None:
    """Refuse sizes and geotransforms no raster can have (a damaged or hand-edited sidecar)."""
    fix = "The sidecar is damaged: export the mask again, or delete the sidecar and give a REFERENCE raster."
    for key in ("width", "height", "tile_size"):
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_SIDE:
            raise InputError(f"the sidecar '{path}' gives {key} = {value!r}; it must be a whole number of pixels "
                             f"from 1 to {_MAX_SIDE}. {fix}", "INPUT")
    transform = meta["transform"]
    if not (isinstance(transform, list) and len(transform) == 6
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in transform)
            and transform[0] * transform[4] - transform[1] * transform[3] != 0):
        raise InputError(f"the sidecar '{path}' gives the geotransform {transform!r}; it must be six finite numbers "
                         f"with a non-zero pixel size. {fix}", "INPUT")


def import_rle(csv_path: str, output_path: str, reference: Optional[str] = None, tile_size: Optional[int] = None,
               overwrite: bool = True, feedback: Optional[Feedback] = None) -> str:
    """Rebuild a georeferenced mask GeoTIFF from an RLE CSV written by :func:`export_rle`.

    The grid (size, CRS, geotransform) comes from the ``reference`` raster when given, else from the
    sidecar ``<csv_path>.json``. The tile size comes from the sidecar, else from ``tile_size``. Rows are
    placed by the ``_r<row>_c<col>`` ending of their ids; padding past the raster's edge is cropped away.
    Tiles missing from the CSV are written as 0 (with a warning). When the sidecar names a prefix, rows of
    other images are skipped (with a warning); without it the CSV must hold a single prefix.

    The output is a tiled, compressed ``uint8`` GeoTIFF holding 0 and 1. Its nodata is the source mask's
    when that was a byte value other than 1, else none.

    Args:
        csv_path: the ``img_id,mask_rle`` CSV.
        output_path: the GeoTIFF to write.
        reference: a raster on the target grid (needed when there is no sidecar).
        tile_size: tile edge in pixels when there is no sidecar (default 224).
        overwrite: replace an existing file.
        feedback: progress, cancel and log.

    Returns:
        The absolute path of the written GeoTIFF.

    Raises:
        InputError: unreadable or malformed CSV, missing grid, a reference that disagrees with the sidecar.
        OutputError: the GeoTIFF cannot be written.
        CanceledError: the user canceled; nothing was written.
    """
    feedback = feedback or NullFeedback()
    if os.path.splitext(output_path)[1].lower() not in (".tif", ".tiff"):
        raise InputError(f"'{output_path}' is not a GeoTIFF name; the mask is written as GeoTIFF. Use a "
                         ".tif file name.", "OUTPUT")
    if not os.path.isfile(csv_path):
        raise InputError(f"'{csv_path}' does not exist or is not a file. Choose the RLE CSV to import.", "INPUT")
    meta = _load_sidecar(csv_path)
    nodata: Optional[int] = None
    crs = None
    if reference is not None:
        with raster_env(), open_raster(reference, "REFERENCE") as ref:
            check_georeferencing(ref, feedback, "REFERENCE")
            width, height, transform, crs = ref.width, ref.height, ref.transform, ref.crs
        if meta is not None and (meta["width"], meta["height"]) != (width, height):
            raise InputError(f"the reference raster is {width}x{height} px but the CSV was exported from a "
                             f"{meta['width']}x{meta['height']} px mask (see its sidecar). Choose the raster the "
                             "mask was exported from, or leave REFERENCE empty to use the sidecar.", "REFERENCE")
    elif meta is not None:
        width, height = int(meta["width"]), int(meta["height"])
        transform = Affine(*meta["transform"])
        crs = meta.get("crs_wkt")
    else:
        raise InputError(f"no sidecar '{sidecar_path(csv_path)}' was found, so the mask's size and position are "
                         "unknown. Give a REFERENCE raster on the grid the CSV was made from.", "REFERENCE")
    if meta is not None:
        tile = int(meta["tile_size"])
        if tile_size is not None and int(tile_size) != tile:
            feedback.warning(f"The sidecar says the tiles are {tile} px; TILE_SIZE {tile_size} is ignored.")
        nodata = _mask_nodata(meta.get("nodata"))
    else:
        tile = int(tile_size or 224)
    if tile < 1:
        raise InputError(f"tile size must be at least 1 pixel, got {tile}.", "TILE_SIZE")
    rows, cols = -(-height // tile), -(-width // tile)
    wanted_prefix = meta.get("prefix") if meta is not None else None

    tiles: Dict[Tuple[int, int], Tuple[str, str]] = {}
    prefixes: set = set()
    skipped = 0
    for number, img_id, rle in _read_rows(csv_path):
        try:
            prefix, row, col = parse_tile_id(img_id)
        except ValueError as exc:
            raise InputError(f"line {number} of '{csv_path}': {exc}. Ids must look like <name>_r0001_c0002.",
                             "INPUT") from exc
        if wanted_prefix is not None and prefix != wanted_prefix:
            skipped += 1
            continue
        prefixes.add(prefix)
        if len(prefixes) > 1:
            raise InputError(f"the CSV holds tiles of several images ({', '.join(sorted(prefixes)[:3])}) and no "
                             "sidecar says which one to rebuild. Keep only one image's rows.", "INPUT")
        if not (row < rows and col < cols):
            raise InputError(f"line {number} of '{csv_path}': tile '{img_id}' lies outside the {rows}x{cols} grid "
                             f"of {tile} px tiles over a {width}x{height} raster. Check the tile size and the "
                             "reference raster.", "INPUT")
        if (row, col) in tiles:
            raise InputError(f"line {number} of '{csv_path}': tile '{img_id}' appears twice. Keep one row per "
                             "tile.", "INPUT")
        tiles[(row, col)] = (img_id, rle)
    if skipped:
        feedback.warning(f"Skipped {skipped} rows of other images (the sidecar names '{wanted_prefix}').")
    if not tiles:
        raise InputError(f"'{csv_path}' holds no tile of this image. Check the file and its prefix.", "INPUT")
    missing = rows * cols - len(tiles)
    if missing:
        feedback.warning(f"{missing} of the {rows * cols} tiles are missing from the CSV: they are written as 0.")

    profile = geotiff_profile(width, height, 1, "uint8", crs, transform, nodata)
    staged = StagedFile(output_path, overwrite=overwrite, parameter="OUTPUT", suffix=".tif")
    with staged as tmp, raster_env():
        with rasterio.open(tmp, "w", **profile) as dst:
            for row in track(range(rows), feedback, span=(0.0, 99.0)):
                strip = np.zeros((tile, cols * tile), np.uint8)
                for col in range(cols):
                    if (row, col) not in tiles:
                        continue
                    img_id, rle = tiles[(row, col)]
                    try:
                        strip[:, col * tile:(col + 1) * tile] = decode(rle, (tile, tile))
                    except ValueError as exc:
                        raise InputError(f"tile '{img_id}' of '{csv_path}' has a malformed RLE: {exc}. Fix or "
                                         "re-export that row.", "INPUT") from exc
                y0 = row * tile
                strip_h = min(tile, height - y0)
                dst.write(strip[:strip_h, :width], 1, window=Window(0, y0, width, strip_h))
        check_canceled(feedback)
        staged.commit()
    feedback.set_progress(100.0)
    feedback.info(f"Rebuilt a {width}x{height} mask from {len(tiles)} tiles into {os.path.abspath(output_path)}.")
    return os.path.abspath(output_path)
