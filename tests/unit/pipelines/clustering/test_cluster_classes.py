"""Clusters to classes: the mapping table, annotation counts, the majority/split rule and the written rasters."""

import os

import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

from satseg_plugin.core.errors import InputError, OutputError
from satseg_plugin.core.labels import LabelSet
from satseg_plugin.pipelines.clustering.pixel.classes import (
    CLASS_NODATA,
    UNASSIGNED,
    clusters_to_classes,
    count_annotations,
    decide,
    parse_mapping,
)

# 6 x 8 cluster raster (0 = nodata) on a north-up grid with 1 m pixels; pixel (r, c) spans
# x in [100 + c, 101 + c], y in [199 - r, 200 - r]
IDS = np.array([[1, 1, 2, 2, 3, 3, 0, 0],
                [1, 1, 2, 2, 3, 3, 0, 0],
                [4, 4, 2, 2, 3, 3, 5, 5],
                [4, 4, 4, 4, 3, 3, 5, 5],
                [6, 6, 6, 6, 6, 6, 5, 5],
                [6, 6, 6, 6, 6, 6, 5, 5]], np.uint16)
TRANSFORM = Affine(1.0, 0, 100.0, 0, -1.0, 200.0)


def pixels(r0, c0, r1, c1):
    """Map-space box over rows r0..r1-1 and columns c0..c1-1."""
    return box(100 + c0, 200 - r1, 100 + c1, 200 - r0)


@pytest.fixture
def clusters(make_raster):
    return make_raster(IDS, name="clusters.tif", transform=TRANSFORM, nodata=0)


# ----------------------------------------------------------------------------------------------- parse_mapping


def test_parse_mapping_forms():
    expected = {1: "building", 4: "building", 7: "building", 8: "building", 9: "building", 2: "water"}
    assert parse_mapping("1,4,7-9=building; 2=water") == expected
    assert parse_mapping("1, 4, 7 - 9 = building\n2: water\n\n") == expected
    assert parse_mapping("3=bare soil;3=bare soil;") == {3: "bare soil"}
    assert list(parse_mapping("5=b;1=a").values()) == ["b", "a"]  # class order = order of appearance


@pytest.mark.parametrize("text, what", [
    ("building", "cannot read"),
    ("1=", "cannot read"),
    ("a=building", "cannot read"),
    ("1,x=building", "cannot read"),
    ("9-7=building", "not a range"),
    ("1-=building", "not a range"),
    ("1=building; 1=water", "mapped to both"),
    ("1-3=building\n2=water", "mapped to both"),
    ("", "maps no cluster"),
    (" ; \n", "maps no cluster"),
])
def test_parse_mapping_errors_name_mapping(text, what):
    with pytest.raises(InputError, match=what) as info:
        parse_mapping(text)
    assert info.value.parameter == "MAPPING" and str(info.value).startswith("MAPPING:")


# ----------------------------------------------------------------------------------------------- decide


def test_decide_majority_and_split_rule():
    names = ["a", "b", "c"]
    table = np.array([[0, 0, 0, 0],  # nodata row
                      [0, 90, 10, 0],  # 10 % b: majority a
                      [0, 0, 0, 0],  # not annotated: no decision
                      [0, 35, 65, 0],  # 35 % a: split between b (first, larger) and a
                      [0, 70, 30, 0],  # exactly 30 %: split
                      [0, 71, 29, 0],  # 29 %: majority a
                      [0, 40, 30, 30],  # three classes at >= 30 %: split three ways
                      [0, 0, 0, 12]])  # only c
    decisions = {d.cluster: d for d in decide(table, names)}
    assert sorted(decisions) == [1, 3, 4, 5, 6, 7]
    assert (decisions[1].class_id, decisions[1].new_clusters) == (1, {})
    assert decisions[1].annotated == {"a": 90, "b": 10} and decisions[1].decision.startswith("a (90% of 100")
    assert decisions[3].class_id == UNASSIGNED and list(decisions[3].new_clusters) == ["b", "a"]
    assert decisions[3].decision == "split between b, a"
    assert list(decisions[4].new_clusters) == ["a", "b"]
    assert (decisions[5].class_id, decisions[5].new_clusters) == (1, {})
    assert list(decisions[6].new_clusters) == ["a", "b", "c"]
    assert (decisions[7].class_id, decisions[7].annotated) == (3, {"c": 12})
    # a share above one half never splits
    assert all(not d.new_clusters for d in decide(table, names, split_share=0.6))
    assert {d.cluster: d.class_id for d in decide(table, names, split_share=0.6)} == {1: 1, 3: 2, 4: 1, 5: 1,
                                                                                      6: 1, 7: 3}


# ----------------------------------------------------------------------------------------------- count_annotations


def test_count_annotations_by_hand(clusters):
    labels = LabelSet([pixels(0, 0, 2, 3), pixels(2, 0, 4, 2), pixels(0, 5, 3, 8), pixels(4, 4, 6, 8)],
                      [1, 1, 2, 2], class_names=["a", "b"])
    # a: rows 0-1 x cols 0-2 -> cluster 1 x4, cluster 2 x2; rows 2-3 x cols 0-1 -> cluster 4 x4
    # b: rows 0-2 x cols 5-7 -> cluster 3 x3, nodata x4, cluster 5 x2; rows 4-5 x cols 4-7 -> cluster 6 x4, 5 x4
    expected = np.zeros((7, 3), np.int64)
    expected[1, 1], expected[2, 1], expected[4, 1] = 4, 2, 4
    expected[3, 2], expected[5, 2], expected[6, 2] = 3, 6, 4
    table = count_annotations(clusters, labels)
    np.testing.assert_array_equal(table, expected)
    np.testing.assert_array_equal(count_annotations(clusters, labels, strip_rows=1), expected)


def test_count_annotations_refusals(clusters):
    far = LabelSet([box(0, 0, 5, 5)], [1], class_names=["a"])
    with pytest.raises(InputError, match="no annotation polygon overlaps") as info:
        count_annotations(clusters, far)
    assert info.value.parameter == "ANNOTATIONS"
    on_nodata = LabelSet([pixels(0, 6, 2, 8)], [1], class_names=["a"])
    with pytest.raises(InputError, match="cover no valid pixel") as info:
        count_annotations(clusters, on_nodata)
    assert info.value.parameter == "ANNOTATIONS"


# ----------------------------------------------------------------------------------------------- clusters_to_classes


def read(path):
    with rasterio.open(path) as src:
        return src.read(1), src


def test_mapping_writes_the_lookup_on_the_same_grid(clusters, tmp_path):
    out = str(tmp_path / "classes.tif")
    result = clusters_to_classes(clusters, out, mapping=parse_mapping("1,4=building; 2,5-6=water"))
    lut = np.array([CLASS_NODATA, 1, 2, UNASSIGNED, 1, 2, 2], np.uint8)
    with rasterio.open(out) as dst, rasterio.open(clusters) as src:
        got = dst.read(1)
        assert (dst.width, dst.height, dst.dtypes[0], dst.nodata) == (8, 6, "uint8", CLASS_NODATA)
        assert dst.transform == src.transform and dst.crs == src.crs
        assert dst.tags()["classes"] == "building;water"
    np.testing.assert_array_equal(got, lut[IDS])
    assert result.class_names == ["building", "water"] and result.cluster_path is None
    assert result.pixel_counts == {"building": 10, "water": 26, "unassigned": 8}
    assert [(d.cluster, d.class_id) for d in result.decisions] == [(1, 1), (2, 2), (4, 1), (5, 2), (6, 2)]


def test_annotations_give_each_cluster_its_majority_class(clusters, tmp_path):
    labels = LabelSet([pixels(0, 0, 2, 2), pixels(2, 0, 3, 1), pixels(3, 0, 4, 4), pixels(4, 0, 6, 6)],
                      [1, 2, 2, 2], class_names=["roof", "grass"])
    # cluster 1: 4 roof; cluster 4: 1 + 4 grass; cluster 6: 12 grass
    out = str(tmp_path / "classes.tif")
    result = clusters_to_classes(clusters, out, labels=labels)
    got, _ = read(out)
    lut = np.array([CLASS_NODATA, 1, 0, 0, 2, 0, 2], np.uint8)
    np.testing.assert_array_equal(got, lut[IDS])
    assert {d.cluster: d.class_id for d in result.decisions} == {1: 1, 4: 2, 6: 2}


def test_shared_cluster_without_model_gets_its_majority(clusters, tmp_path):
    from satseg_plugin.core.progress import RecordingFeedback

    # cluster 6: 4 px a, 8 px b -> would split, but no model is given
    labels = LabelSet([pixels(4, 0, 6, 2), pixels(4, 2, 6, 6)], [1, 2], class_names=["a", "b"])
    fb = RecordingFeedback()
    result = clusters_to_classes(clusters, str(tmp_path / "classes.tif"), labels=labels, feedback=fb)
    assert any("hold two classes (6)" in w for w in fb.warnings)
    (d,) = result.decisions
    assert (d.cluster, d.class_id, d.new_clusters) == (6, 2, {}) and "not split" in d.decision
    got, _ = read(result.class_path)
    assert (got[IDS == 6] == 2).all() and (got[(IDS != 6) & (IDS != 0)] == UNASSIGNED).all()


def test_clusters_to_classes_refusals(clusters, make_raster, tmp_path):
    labels = LabelSet([pixels(0, 0, 2, 2)], [1], class_names=["a"])
    far = LabelSet([box(0, 0, 5, 5)], [1], class_names=["a"])
    with pytest.raises(InputError) as info:
        clusters_to_classes(clusters, str(tmp_path / "o.tif"), labels=far)
    assert info.value.parameter == "ANNOTATIONS"
    for kwargs in ({}, {"mapping": {1: "a"}, "labels": labels}):
        with pytest.raises(InputError) as info:
            clusters_to_classes(clusters, str(tmp_path / "o.tif"), **kwargs)
        assert info.value.parameter == "MAPPING"
    with pytest.raises(OutputError) as info:
        clusters_to_classes(clusters, str(tmp_path / "o.png"), mapping={1: "a"})
    assert info.value.parameter == "OUTPUT"
    not_clusters = make_raster(np.ones((3, 6, 8), "float32"), name="image.tif", transform=TRANSFORM)
    with pytest.raises(InputError) as info:
        clusters_to_classes(not_clusters, str(tmp_path / "o.tif"), mapping={1: "a"})
    assert info.value.parameter == "INPUT"
    assert sorted(os.listdir(tmp_path)) == ["clusters.tif", "image.tif"]


# ----------------------------------------------------------------------------------------------- split (model)


@pytest.mark.parametrize("layout", ["default tiles", "small tiles and an extent"])
def test_shared_cluster_is_split_with_the_model(tmp_path_factory, layout):
    torch = pytest.importorskip("torch")
    pytest.importorskip("segmentation_models_pytorch")
    pytest.importorskip("faiss")
    from sample_data.generate import generate_scene
    from satseg_plugin.pipelines.clustering.pixel.cluster_map import ClusterMapConfig, cluster_raster
    from satseg_plugin.pipelines.clustering.pixel.train import ClusterNetConfig, train_clusternet

    k = 4
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        work = tmp_path_factory.mktemp("split")
        scene = generate_scene(str(work / "scene"), size=256, seed=3)["scene"]
        config = ClusterNetConfig(encoder="resnet18", feature_dim=8, num_clusters=k, rounds=1, steps_per_round=1,
                                  batch_size=2, patch_size=64, crops_per_round=4, sample_pixels=5000,
                                  kmeans_iterations=5, whiten=True, normalize=True)
        model = train_clusternet([scene], str(work / "cn.satseg"), config, "cpu").model_path
        # the split step must recompute features with the tiles and region the first run used (its tags)
        map_config = ClusterMapConfig()
        if layout != "default tiles":
            with rasterio.open(scene) as src:
                b = src.bounds
            map_config = ClusterMapConfig(tile_size=64, overlap=16, bounds=(b.left + 13.3, b.bottom + 20.1,
                                                                            b.right - 30.7, b.top - 9.9))
        first = cluster_raster(scene, model, str(work / "clusters.tif"), map_config, "cpu").path
        with rasterio.open(first) as src:
            ids = src.read(1)
            transform = src.transform
            window_bounds = src.bounds
        with rasterio.open(scene) as src:
            band = src.read(1, window=rasterio.windows.from_bounds(*window_bounds, transform=src.transform))

        shared = int(np.bincount(ids.ravel()).argmax())
        other = next(c for c in np.argsort(-np.bincount(ids.ravel(), minlength=k + 1)) if c not in (0, shared))
        ys, xs = np.nonzero(ids == shared)
        order = np.argsort(band[ys, xs], kind="stable")  # dark pixels of the cluster -> a, bright ones -> b
        dark, bright = order[:30], order[-30:]
        oy, ox = np.nonzero(ids == other)

        def px(r, c):
            (x0, y0), (x1, y1) = transform * (c, r), transform * (c + 1, r + 1)
            return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

        geoms = [px(ys[i], xs[i]) for i in dark] + [px(ys[i], xs[i]) for i in bright] + \
            [px(oy[i], ox[i]) for i in range(20)]
        labels = LabelSet(geoms, [1] * 30 + [2] * 30 + [2] * 20, class_names=["a", "b"])
        table = count_annotations(first, labels)
        assert table[shared, 1:].tolist() == [30, 30] and table[other, 1:].tolist() == [0, 20]

        out = str(work / "classes.tif")
        result = clusters_to_classes(first, out, labels=labels, source=scene, model_path=model, device="cpu")
        decisions = {d.cluster: d for d in result.decisions}
        assert decisions[shared].decision.startswith("split between a, b")
        assert decisions[shared].new_clusters == {"a": k + 1, "b": k + 2}
        assert decisions[other].class_id == 2 and not decisions[other].new_clusters
        assert result.cluster_path == os.path.abspath(str(work / "classes_clusters.tif"))

        with rasterio.open(result.cluster_path) as src:
            new = src.read(1)
            assert src.transform == transform
        # the shared cluster's pixels now have the two new ids, both in use; every other pixel is unchanged
        assert set(np.unique(new[ids == shared]).tolist()) == {k + 1, k + 2}
        assert shared not in np.unique(new)
        np.testing.assert_array_equal(new[ids != shared], ids[ids != shared])
        # most annotated pixels land in their own class's new cluster
        assert np.mean(new[ys[dark], xs[dark]] == k + 1) > 0.5 and np.mean(new[ys[bright], xs[bright]] == k + 2) > 0.5

        classes, _ = read(out)
        lut = np.zeros(k + 3, np.uint8)
        lut[other], lut[k + 1], lut[k + 2] = 2, 1, 2
        np.testing.assert_array_equal(classes, lut[new])
        assert result.pixel_counts == {"a": int((new == k + 1).sum()),
                                       "b": int((new == k + 2).sum() + (new == other).sum()),
                                       "unassigned": int(((new != k + 1) & (new != k + 2) & (new != other)).sum())}
    finally:
        torch.set_num_threads(threads)
