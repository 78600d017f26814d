"""The seeded sample-scene generator: determinism, georeferencing, footprints that match the roofs."""

import json
import os

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.enums import ColorInterp

from sample_data.generate import (
    CLASS_NAMES,
    GENERATOR_VERSION,
    LAYER_NAME,
    ROOF_COLOURS,
    building_mask,
    generate_scene,
    is_up_to_date,
    main,
    read_buildings,
    render_scene,
)


def _pixels(path):
    with rasterio.open(path) as src:
        return src.read()


def _footprints(path):
    return [(b.id, b.roof, shapely.to_wkb(b.polygon)) for b in read_buildings(path)]


@pytest.fixture(scope="module")
def scene_256(tmp_path_factory):
    """One 256 px scene on disk plus the same scene rendered in memory."""
    out = tmp_path_factory.mktemp("scene256")
    paths = generate_scene(str(out), size=256, seed=1)
    return paths, render_scene(size=256, seed=1)


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    a = generate_scene(str(tmp_path / "a"), size=128, seed=7)
    b = generate_scene(str(tmp_path / "b"), size=128, seed=7)
    c = generate_scene(str(tmp_path / "c"), size=128, seed=8)
    assert np.array_equal(_pixels(a["scene"]), _pixels(b["scene"]))
    assert _footprints(a["buildings"]) == _footprints(b["buildings"])
    assert not np.array_equal(_pixels(a["scene"]), _pixels(c["scene"]))
    assert _footprints(a["buildings"]) != _footprints(c["buildings"])


def test_render_is_deterministic_in_memory():
    s1, s2 = render_scene(size=96, seed=3), render_scene(size=96, seed=3)
    assert np.array_equal(s1.rgb, s2.rgb) and np.array_equal(s1.roof_labels, s2.roof_labels)
    assert [shapely.to_wkb(b.polygon) for b in s1.buildings] == [shapely.to_wkb(b.polygon) for b in s2.buildings]


def test_georeferencing_and_raster_layout(tmp_path):
    paths = generate_scene(str(tmp_path), size=128, pixel_size=0.5, seed=2, epsg=32632, origin=(600000.0, 4000000.0))
    assert paths == {"scene": str(tmp_path / "scene.tif"), "buildings": str(tmp_path / "buildings.gpkg")}
    with rasterio.open(paths["scene"]) as src:
        assert src.crs.to_epsg() == 32632
        assert src.transform == Affine(0.5, 0.0, 600000.0, 0.0, -0.5, 4000000.0)
        assert (src.width, src.height, src.count) == (128, 128, 3)
        assert src.dtypes == ("uint8", "uint8", "uint8")
        assert src.nodata is None
        assert src.descriptions == ("red", "green", "blue")
        assert tuple(src.colorinterp) == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert src.block_shapes == [(256, 256)] * 3
        assert src.compression.name.lower() == "deflate"

    from osgeo import ogr

    ds = ogr.Open(paths["buildings"])
    layer = ds.GetLayerByName(LAYER_NAME)
    assert layer is not None and layer.GetFeatureCount() >= 2
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "32632"
    defn = layer.GetLayerDefn()
    fields = {defn.GetFieldDefn(i).GetName(): defn.GetFieldDefn(i).GetTypeName() for i in range(defn.GetFieldCount())}
    assert fields == {"id": "Integer", "roof": "String", "area_m2": "Real"}
    minx, maxx, miny, maxy = layer.GetExtent()
    assert 600000.0 <= minx < maxx <= 600064.0 and 3999936.0 <= miny < maxy <= 4000000.0
    for feat in layer:
        assert feat.GetField("roof") in ROOF_COLOURS
        assert feat.GetField("area_m2") == pytest.approx(feat.GetGeometryRef().GetArea())
    layer = ds = None


def test_footprints_rasterise_exactly_to_the_drawn_roofs(scene_256):
    paths, scene = scene_256
    mask = building_mask(paths)
    assert mask.dtype == bool and mask.shape == (256, 256)
    assert np.array_equal(mask, scene.roof_labels > 0)
    assert np.array_equal(building_mask(os.path.dirname(paths["scene"])), mask)
    buildings = read_buildings(paths["buildings"])
    assert [b.id for b in buildings] == list(range(1, len(buildings) + 1))
    assert np.array_equal(np.unique(scene.roof_labels)[1:], [b.id for b in buildings])  # every footprint drawn
    total_area = sum(b.area_m2 for b in buildings)
    assert mask.sum() * 0.25 == pytest.approx(total_area, rel=0.1)
    polys = [b.polygon for b in buildings]
    assert all(p.is_valid for p in polys)
    for i, p in enumerate(polys):  # no two buildings touch
        assert not any(p.intersects(q) for q in polys[i + 1:])


def test_building_fraction_and_roof_colours_differ_from_grass(scene_256):
    paths, scene = scene_256
    roofs = building_mask(paths)
    assert 0.03 <= roofs.mean() <= 0.25
    rgb = _pixels(paths["scene"]).astype(float)
    grass = scene.landcover == CLASS_NAMES.index("grass")
    roof_mean, grass_mean = rgb[:, roofs].mean(axis=1), rgb[:, grass].mean(axis=1)
    assert grass_mean[1] > grass_mean[0] and grass_mean[1] > grass_mean[2]  # grass is green
    assert np.linalg.norm(roof_mean - grass_mean) > 25
    greenness = rgb[1] - np.maximum(rgb[0], rgb[2])
    assert greenness[roofs].mean() < greenness[grass].mean() - 15
    assert (greenness[roofs] > 5).mean() < 0.2 and (greenness[grass] > 5).mean() > 0.5
    # Roof pixels lie well outside the spread of grass colours.
    dist_roof = np.linalg.norm(rgb[:, roofs] - grass_mean[:, None], axis=0)
    dist_grass = np.linalg.norm(rgb[:, grass] - grass_mean[:, None], axis=0)
    assert np.median(dist_roof) > 1.5 * np.percentile(dist_grass, 90)


def test_small_scene_has_buildings_and_is_deterministic(tmp_path):
    paths = generate_scene(str(tmp_path / "small"), size=64, seed=5)
    assert _pixels(paths["scene"]).shape == (3, 64, 64)
    assert len(read_buildings(paths["buildings"])) >= 2
    assert np.array_equal(building_mask(paths), render_scene(size=64, seed=5).roof_labels > 0)
    again = generate_scene(str(tmp_path / "again"), size=64, seed=5)
    assert np.array_equal(_pixels(paths["scene"]), _pixels(again["scene"]))


def test_full_size_scene_has_a_plausible_number_of_buildings():
    scene = render_scene(size=1024, seed=0)
    assert 60 <= len(scene.buildings) <= 150
    assert 0.03 <= (scene.roof_labels > 0).mean() <= 0.25
    present = set(np.unique(scene.landcover).tolist())
    assert {CLASS_NAMES.index(c) for c in ("grass", "water", "road", "tree", "building")} <= present


@pytest.mark.parametrize("kwargs", [{"size": 31}, {"size": 64.0}, {"pixel_size": 0}, {"pixel_size": -0.5},
                                    {"seed": -1}, {"epsg": 4326}])
def test_bad_arguments_raise_value_error(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_scene(str(tmp_path), **kwargs)
    assert not os.listdir(tmp_path)


def test_cli_skips_up_to_date_output_and_regenerates_on_change(tmp_path, capsys):
    out = str(tmp_path / "gen")
    assert main(["--out", out, "--size", "64", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert os.path.join(out, "scene.tif") in printed and os.path.join(out, "buildings.gpkg") in printed
    with open(os.path.join(out, "scene.json")) as fh:
        params = json.load(fh)
    assert params["version"] == GENERATOR_VERSION and params["size"] == 64 and params["seed"] == 1
    assert is_up_to_date(out, size=64, seed=1) and not is_up_to_date(out, size=64, seed=2)
    stamp = os.stat(os.path.join(out, "scene.tif")).st_mtime_ns

    assert main(["--out", out, "--size", "64", "--seed", "1"]) == 0
    assert "Up to date" in capsys.readouterr().out
    assert os.stat(os.path.join(out, "scene.tif")).st_mtime_ns == stamp

    os.utime(os.path.join(out, "scene.tif"), ns=(0, 0))
    assert main(["--out", out, "--size", "64", "--seed", "1", "--force"]) == 0
    assert "Up to date" not in capsys.readouterr().out
    assert os.stat(os.path.join(out, "scene.tif")).st_mtime_ns != 0

    assert main(["--out", out, "--size", "64", "--seed", "2"]) == 0
    assert "Up to date" not in capsys.readouterr().out
    assert is_up_to_date(out, size=64, seed=2)


def test_cli_rejects_bad_size(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), "--size", "8"])
    assert exc.value.code == 2
    assert "size" in capsys.readouterr().err
