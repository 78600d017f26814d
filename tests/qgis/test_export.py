"""Export algorithms in real QGIS: polygons to GeoPackage / GeoJSON / Shapefile, rasters as COG."""

import json
import os

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from qgis.core import QgsProcessingFeedback, QgsVectorLayer

from sample_data.generate import generate_scene
from tests.qgis.conftest import parse_json_output


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(str(tmp_path_factory.mktemp("scene")), size=256, seed=5)


class Log(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.warnings = []

    def pushWarning(self, warning):
        self.warnings.append(warning)


@pytest.mark.parametrize("fmt, ext", [(0, ".gpkg"), (1, ".geojson"), (2, ".shp")])
def test_export_polygons(run_alg, scene, tmp_path, fmt, ext):
    source = scene["buildings"] + "|layername=buildings"
    layer = QgsVectorLayer(source)
    log = Log()
    result = run_alg("satseg:exportvector", {"INPUT": source, "FORMAT": fmt,
                                             "OUTPUT": str(tmp_path / "out" / "buildings.xyz")}, feedback=log)
    assert result["OUTPUT"].endswith(ext) and os.path.exists(result["OUTPUT"])
    out = QgsVectorLayer(result["OUTPUT"])
    assert out.isValid() and out.featureCount() == layer.featureCount() > 0
    if ext == ".geojson":  # RFC 7946: longitude/latitude
        first = json.load(open(result["OUTPUT"]))["features"][0]["geometry"]["coordinates"][0][0]
        assert -180 <= first[0] <= 180 and -90 <= first[1] <= 90
    else:
        assert out.crs() == layer.crs()
        assert abs(sum(f.geometry().area() for f in out.getFeatures()) -
                   sum(f.geometry().area() for f in layer.getFeatures())) < 1e-6
    if ext == ".shp" and any(len(f.name()) > 10 for f in layer.fields()):
        assert any("10 characters" in w for w in log.warnings)
    assert not [n for n in os.listdir(tmp_path / "out") if n.startswith(".satseg-tmp")]


def test_export_cog_keeps_the_grid(run_alg, scene, tmp_path):
    result = run_alg("satseg:exportcog", {"INPUT": scene["scene"], "OUTPUT": str(tmp_path / "scene_cog.tif")})
    with rasterio.open(scene["scene"]) as a, rasterio.open(result["OUTPUT"]) as b:
        assert (b.crs, b.transform, b.shape, b.count) == (a.crs, a.transform, a.shape, a.count)
        np.testing.assert_array_equal(a.read(), b.read())
        assert b.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"


def test_qgis_process_export_cog(qgis_process, scene, tmp_path):
    out = qgis_process("run", "satseg:exportcog", "--json", "--", f"INPUT={scene['scene']}", "COMPRESSION=1",
                       f"OUTPUT={tmp_path / 'c.tif'}")
    path = parse_json_output(out.stdout)["results"]["OUTPUT"]
    with rasterio.open(path) as b:
        assert b.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and b.compression.name == "lzw"
