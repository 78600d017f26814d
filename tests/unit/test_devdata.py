"""scripts/fetch_devdata.py: Pascal VOC boxes become polygons in the image's CRS, the west/east split, the cache.

Everything runs on tiny stand-ins made here (a GeoTIFF, a PNG without georeferencing, a fake wheel in the
cache): no network, no package download.
"""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.io import MemoryFile

from sample_data.common import read_polygon_layer
from tests.conftest import load_script

fd = load_script("fetch_devdata")

VOC = """<annotation><filename>x.tif</filename>
<object><name>Tree</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>6</xmax><ymax>5</ymax></bndbox></object>
<object><name>Tree</name><bndbox><xmin>14</xmin><ymin>0</ymin><xmax>25</xmax><ymax>4</ymax></bndbox></object>
<object><name>Dead</name><bndbox><xmin>12</xmin><ymin>8</ymin><xmax>16</xmax><ymax>10</ymax></bndbox></object>
</annotation>"""


def _image(driver: str, width: int = 20, height: int = 10, georeferenced: bool = True) -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (3, height, width), dtype=np.uint8)
    kwargs = dict(crs="EPSG:32617", transform=Affine(0.1, 0, 404000.0, 0, -0.1, 3285000.0)) if georeferenced else {}
    with MemoryFile() as mem:
        with mem.open(driver=driver, width=width, height=height, count=3, dtype="uint8", **kwargs) as dst:
            dst.write(pixels)
        return mem.read()


def test_voc_boxes_are_read_and_bad_ones_refused():
    boxes = fd.parse_voc_boxes(VOC)
    assert boxes[0] == fd.Box(2, 3, 6, 5, "Tree") and [b.label for b in boxes] == ["Tree", "Tree", "Dead"]
    with pytest.raises(ValueError, match="object 1 has no complete"):
        fd.parse_voc_boxes("<a><object><name>T</name><bndbox><xmin>1</xmin></bndbox></object></a>")
    with pytest.raises(ValueError, match="empty box"):
        fd.parse_voc_boxes("<a><object><bndbox><xmin>3</xmin><ymin>1</ymin><xmax>3</xmax><ymax>4</ymax>"
                           "</bndbox></object></a>")


def test_split_cuts_at_a_column_and_counts_objects_by_centroid():
    from shapely.geometry import box

    t = Affine(0.5, 0, 100.0, 0, -0.5, 50.0)
    polys = [box(101, 45, 102, 46), box(104.5, 45, 105.5, 46), box(107, 40, 108, 41)]  # centroids 101.5, 105, 107.5
    split = fd.spatial_split(t, 20, 10, 0.5, polys)
    assert split["split_column"] == 10
    assert split["train_bounds"] == [100.0, 45.0, 105.0, 50.0] and split["test_bounds"] == [105.0, 45.0, 110.0, 50.0]
    assert (split["train_objects"], split["test_objects"]) == (1, 2)
    with pytest.raises(ValueError, match="train_fraction"):
        fd.spatial_split(t, 20, 10, 0.01)


def test_georeferenced_image_gets_box_polygons_in_its_crs(tmp_path):
    dataset = fd.Dataset("tiny", "pkg", "1.0", "pkg/data/x.tif", "pkg/data/x.xml", "MIT", "test", 0.6)
    info = fd.write_dataset(dataset, _image("GTiff"), VOC, str(tmp_path), "pkg-1.0-py3-none-any.whl", "abc")
    with rasterio.open(tmp_path / "image.tif") as src:
        assert src.crs.to_epsg() == 32617 and src.transform == Affine(0.1, 0, 404000.0, 0, -0.1, 3285000.0)
        assert src.read().shape == (3, 10, 20)
    rows = read_polygon_layer(str(tmp_path / "labels.gpkg"), "objects", ("label",))
    assert [(fid, values) for fid, _, values in rows] == [(1, ["Tree"]), (2, ["Tree"]), (3, ["Dead"])]
    # box 1: columns 2..6, rows 3..5 -> x 404000.2..404000.6, y 3284999.5..3284999.7
    assert rows[0][1].bounds == pytest.approx((404000.2, 3284999.5, 404000.6, 3284999.7))
    assert rows[0][1].area == pytest.approx(0.4 * 0.2)
    # box 2 reaches past the image (xmax 25 > width 20): clipped at the edge
    assert rows[1][1].bounds[2] == pytest.approx(404002.0)
    assert info["objects"] == 3 and info["georeferenced"] and info["crs"] == "EPSG:32617"
    assert info["pixel_size"] == pytest.approx([0.1, 0.1]) and info["classes"] == ["Dead", "Tree"]
    assert info["split"]["split_column"] == 12
    assert (info["split"]["train_objects"], info["split"]["test_objects"]) == (1, 2)  # centroids at cols 4, 17, 14
    on_disk = json.loads((tmp_path / "dataset.json").read_text())
    assert on_disk["source"] == {"package": "pkg", "version": "1.0", "file": "pkg-1.0-py3-none-any.whl",
                                 "sha256": "abc", "image": "pkg/data/x.tif", "annotations": "pkg/data/x.xml"}
    assert on_disk["license"] == "MIT" and "box polygons" in on_disk["labels_note"]


def test_image_without_georeferencing_gets_a_local_pixel_grid(tmp_path):
    dataset = fd.Dataset("tiny", "pkg", "1.0", "pkg/data/x.png", "pkg/data/x.xml", "MIT", "test", 0.5)
    info = fd.write_dataset(dataset, _image("PNG", georeferenced=False), VOC, str(tmp_path), "w.whl", "abc")
    with rasterio.open(tmp_path / "image.tif") as src:
        assert src.transform == Affine(1, 0, 0, 0, -1, 0) and src.crs is not None and not src.crs.is_epsg_code
    rows = read_polygon_layer(str(tmp_path / "labels.gpkg"), "objects", ())
    assert rows[0][1].bounds == (2.0, -5.0, 6.0, -3.0)  # x = column, y = -row
    assert not info["georeferenced"] and info["pixel_units"] == "pixel" and "local pixel grid" in info["crs"]
    assert info["split"]["train_bounds"] == [0.0, -10.0, 10.0, 0.0]


def test_fetch_reads_the_cached_wheel_and_is_idempotent(tmp_path, monkeypatch):
    dataset = fd.Dataset("tiny", "fakepkg", "0.1", "fakepkg/data/x.tif", "fakepkg/data/x.xml", "MIT", "test")
    monkeypatch.setitem(fd.DATASETS, "tiny", dataset)
    cache = tmp_path / "cache"
    cache.mkdir()
    with zipfile.ZipFile(cache / "fakepkg-0.1-py3-none-any.whl", "w") as zf:
        zf.writestr(dataset.image, _image("GTiff"))
        zf.writestr(dataset.annotations, VOC)
    out = tmp_path / "real"
    (folder,) = fd.fetch(["tiny"], str(out), str(cache))
    info = json.loads(open(os.path.join(folder, "dataset.json")).read())
    assert info["objects"] == 3 and info["source"]["file"] == "fakepkg-0.1-py3-none-any.whl"
    stamp = os.path.getmtime(os.path.join(folder, "image.tif"))
    os.utime(os.path.join(folder, "image.tif"), (stamp - 100, stamp - 100))
    fd.fetch(["tiny"], str(out), str(cache))  # up to date: nothing rewritten
    assert os.path.getmtime(os.path.join(folder, "image.tif")) == stamp - 100
    fd.fetch(["tiny"], str(out), str(cache), force=True)
    assert os.path.getmtime(os.path.join(folder, "image.tif")) > stamp - 100


def test_help_names_the_options():
    proc = subprocess.run([sys.executable, fd.__file__, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for word in ("--dataset", "--out", "--cache", "--force", "neon-osbs-029"):
        assert word in proc.stdout
