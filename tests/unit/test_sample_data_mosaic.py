"""The seeded mosaic generator: urban, rural and uninhabited regions in one scene, with the regions as truth."""

import json
import os

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from shapely.geometry import box

from sample_data.generate import (
    CLASS_NAMES,
    MOSAIC_PARAMS_NAME,
    MOSAIC_VERSION,
    PARAMS_NAME,
    REGION_CLASSES,
    REGIONS_LAYER,
    building_mask,
    generate_mosaic,
    generate_scene,
    is_mosaic_up_to_date,
    main,
    read_buildings,
    read_regions,
    render_mosaic,
)

SIZE, PS = 512, 0.5
EXTENT = box(500000.0, 5000000.0 - SIZE * PS, 500000.0 + SIZE * PS, 5000000.0)


def _pixels(path):
    with rasterio.open(path) as src:
        return src.read()


def _footprints(path):
    return [(b.id, b.roof, shapely.to_wkb(b.polygon)) for b in read_buildings(path)]


def _regions(path):
    return [(shapely.to_wkb(p), c) for p, c in read_regions(path)]


@pytest.fixture(scope="module")
def mosaic_512(tmp_path_factory):
    """One 512 px mosaic on disk plus the same mosaic rendered in memory."""
    out = tmp_path_factory.mktemp("mosaic512")
    return generate_mosaic(str(out), size=SIZE, seed=0), render_mosaic(size=SIZE, seed=0)


def test_files_and_layers(mosaic_512):
    paths, _ = mosaic_512
    folder = os.path.dirname(paths["scene"])
    assert paths == {"scene": os.path.join(folder, "scene.tif"), "buildings": os.path.join(folder, "buildings.gpkg"),
                     "regions": os.path.join(folder, "regions.gpkg")}
    with open(os.path.join(folder, MOSAIC_PARAMS_NAME)) as fh:
        params = json.load(fh)
    assert params["kind"] == "mosaic" and params["version"] == MOSAIC_VERSION and params["size"] == SIZE
    from osgeo import ogr

    ds = ogr.Open(paths["regions"])
    layer = ds.GetLayerByName(REGIONS_LAYER)
    assert layer is not None and layer.GetGeomType() == ogr.wkbPolygon
    defn = layer.GetLayerDefn()
    fields = {defn.GetFieldDefn(i).GetName(): defn.GetFieldDefn(i).GetTypeName() for i in range(defn.GetFieldCount())}
    assert fields["class"] == "String"
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "32633"
    assert {feat.GetField("class") for feat in layer} <= set(REGION_CLASSES)
    layer = ds = None


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path, mosaic_512):
    a, _ = mosaic_512
    b = generate_mosaic(str(tmp_path / "b"), size=SIZE, seed=0)
    c = generate_mosaic(str(tmp_path / "c"), size=SIZE, seed=1)
    assert np.array_equal(_pixels(a["scene"]), _pixels(b["scene"]))
    assert _footprints(a["buildings"]) == _footprints(b["buildings"])
    assert _regions(a["regions"]) == _regions(b["regions"])
    assert not np.array_equal(_pixels(a["scene"]), _pixels(c["scene"]))
    assert _regions(a["regions"]) != _regions(c["regions"])


def test_render_is_deterministic_and_matches_the_files(mosaic_512):
    paths, mosaic = mosaic_512
    assert np.array_equal(_pixels(paths["scene"]), mosaic.scene.rgb)
    again = render_mosaic(size=SIZE, seed=0)
    assert np.array_equal(again.scene.rgb, mosaic.scene.rgb)
    assert np.array_equal(again.region_map, mosaic.region_map)
    assert [(shapely.to_wkb(p), c) for p, c in again.regions] == _regions(paths["regions"])


def test_georeferencing_as_asked(tmp_path):
    paths = generate_mosaic(str(tmp_path), size=256, pixel_size=0.5, seed=2, epsg=32632, origin=(600000.0, 4000000.0))
    with rasterio.open(paths["scene"]) as src:
        assert src.crs.to_epsg() == 32632
        assert src.transform == Affine(0.5, 0.0, 600000.0, 0.0, -0.5, 4000000.0)
        assert (src.width, src.height, src.count) == (256, 256, 3)
        assert src.dtypes == ("uint8", "uint8", "uint8")
    regions = read_regions(paths["regions"])
    union = shapely.union_all([p for p, _ in regions])
    assert union.bounds == pytest.approx((600000.0, 3999872.0, 600128.0, 4000000.0), abs=1e-6)
    from osgeo import ogr

    for name, layer_name in (("regions", REGIONS_LAYER), ("buildings", "buildings")):
        ds = ogr.Open(paths[name])
        assert ds.GetLayerByName(layer_name).GetSpatialRef().GetAuthorityCode(None) == "32632"
        ds = None


def test_regions_cover_the_raster_exactly_once(mosaic_512):
    paths, mosaic = mosaic_512
    regions = read_regions(paths["regions"])
    polys = [p for p, _ in regions]
    assert all(isinstance(c, str) for _, c in regions)
    assert all(p.geom_type == "Polygon" and p.is_valid and p.area > 0 for p in polys)
    area = EXTENT.area
    union = shapely.union_all(polys)
    assert union.area == pytest.approx(area, rel=1e-9)
    assert union.symmetric_difference(EXTENT).area <= 1e-6
    assert sum(p.area for p in polys) == pytest.approx(area, abs=1e-6)  # no overlaps
    for i, p in enumerate(polys):
        for q in polys[i + 1:]:
            assert p.intersection(q).area <= 1e-6
    # The in-memory region map is the pixel-centre rasterisation of the same polygons.
    with rasterio.open(paths["scene"]) as src:
        transform = src.transform
    from rasterio.features import rasterize

    burnt = rasterize([(p, REGION_CLASSES.index(c) + 1) for p, c in regions], out_shape=(SIZE, SIZE),
                      transform=transform, fill=0, dtype="uint8")
    assert (burnt > 0).all()
    assert np.array_equal(burnt - 1, mosaic.region_map)


def test_all_classes_present_and_building_density_ordered(mosaic_512):
    paths, _ = mosaic_512
    regions = read_regions(paths["regions"])
    assert {c for _, c in regions} == set(REGION_CLASSES)
    buildings = read_buildings(paths["buildings"])
    counts = dict.fromkeys(REGION_CLASSES, 0)
    by_class = {c: shapely.union_all([p for p, k in regions if k == c]).buffer(1e-6) for c in REGION_CLASSES}
    for b in buildings:
        owners = [c for p, c in regions if p.contains(b.polygon.centroid)]
        assert len(owners) == 1
        assert by_class[owners[0]].contains(b.polygon)  # inside regions of one class (neighbours may share it)
        counts[owners[0]] += 1
    area = {c: sum(p.area for p, k in regions if k == c) for c in REGION_CLASSES}
    density = {c: counts[c] / area[c] for c in REGION_CLASSES}
    assert density["urban"] > density["rural"] > density["uninhabited"] == 0
    assert density["urban"] > 3 * density["rural"]


def test_footprints_rasterise_exactly_to_the_drawn_roofs(mosaic_512):
    paths, mosaic = mosaic_512
    mask = building_mask(paths)
    assert np.array_equal(mask, mosaic.scene.roof_labels > 0)
    buildings = read_buildings(paths["buildings"])
    assert [b.id for b in buildings] == list(range(1, len(buildings) + 1))
    assert np.array_equal(np.unique(mosaic.scene.roof_labels)[1:], [b.id for b in buildings])
    polys = [b.polygon for b in buildings]
    assert all(p.is_valid and p.geom_type == "Polygon" for p in polys)
    tree = shapely.STRtree(polys)
    for i, p in enumerate(polys):
        assert set(tree.query(p, predicate="intersects").tolist()) == {i}  # no two buildings touch


def test_region_types_look_different(mosaic_512):
    _, mosaic = mosaic_512
    cover, regions = mosaic.scene.landcover, mosaic.region_map

    def share(region, *names):
        inside = cover[regions == REGION_CLASSES.index(region)]
        return np.isin(inside, [CLASS_NAMES.index(n) for n in names]).mean()

    assert share("urban", "building", "road") > 0.4
    assert share("uninhabited", "tree", "water", "soil") > 0.5
    assert share("uninhabited", "building") == 0 and share("rural", "building") < share("urban", "building")
    rgb = mosaic.scene.rgb.astype(float)
    green = rgb[1] - np.maximum(rgb[0], rgb[2])
    assert green[regions == REGION_CLASSES.index("uninhabited")].mean() > \
        green[regions == REGION_CLASSES.index("urban")].mean() + 5


@pytest.mark.parametrize("kwargs", [{"size": 128}, {"size": 31}, {"pixel_size": 0}, {"seed": -1}, {"epsg": 4326}])
def test_bad_arguments_raise_value_error(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_mosaic(str(tmp_path), **kwargs)
    assert not os.listdir(tmp_path)


def test_cli_mosaic_skips_up_to_date_output(tmp_path, capsys):
    out = str(tmp_path / "mosaic")
    assert main(["--mosaic", "--out", out, "--size", "256", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    for name in ("scene.tif", "buildings.gpkg", "regions.gpkg"):
        assert os.path.join(out, name) in printed
    assert is_mosaic_up_to_date(out, size=256, seed=1) and not is_mosaic_up_to_date(out, size=256, seed=2)
    assert main(["--mosaic", "--out", out, "--size", "256", "--seed", "1"]) == 0
    assert "Up to date" in capsys.readouterr().out
    # A settlement scene written into the same folder replaces scene.tif: the mosaic is no longer up to date,
    # and a mosaic written over a scene removes the scene's marker.
    generate_scene(out, size=64, seed=1)
    assert not is_mosaic_up_to_date(out, size=256, seed=1)
    assert main(["--mosaic", "--out", out, "--size", "256", "--seed", "1"]) == 0
    assert "Up to date" not in capsys.readouterr().out
    assert not os.path.exists(os.path.join(out, PARAMS_NAME))
    assert is_mosaic_up_to_date(out, size=256, seed=1)
