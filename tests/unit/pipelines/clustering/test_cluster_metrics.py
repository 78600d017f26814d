"""Cluster scores: the contingency table of a hand-made cluster raster, purity, NMI and reachable Dice/IoU."""

import numpy as np
import pytest
from affine import Affine
from shapely.geometry import box

from satseg_plugin.core.errors import InputError
from satseg_plugin.core.labels import LabelSet
from satseg_plugin.pipelines.clustering.pixel.evaluate import (
    contingency,
    evaluate_clusters,
    nmi_from_table,
    purity,
    reachable_scores,
)

# 4 x 6 cluster raster (0 = nodata); pixel (r, c) spans x in [100 + c, 101 + c], y in [199 - r, 200 - r]
IDS = np.array([[1, 1, 2, 2, 3, 3],
                [1, 1, 2, 2, 3, 3],
                [1, 1, 2, 0, 3, 3],
                [4, 4, 4, 4, 4, 4]], np.uint16)
TRANSFORM = Affine(1.0, 0, 100.0, 0, -1.0, 200.0)


def pixels(r0, c0, r1, c1):
    """Map-space box over rows r0..r1-1 and columns c0..c1-1."""
    return box(100 + c0, 200 - r1, 100 + c1, 200 - r0)


# building: rows 0-2 x cols 0-1 (all of cluster 1) and rows 0-1 x col 2 (2 of cluster 2's 5 valid pixels);
# water: row 3 x cols 0-2 (3 of cluster 4's 6 pixels); everything else is background
REFERENCE = LabelSet([pixels(0, 0, 3, 2), pixels(0, 2, 2, 3), pixels(3, 0, 4, 3)], [1, 1, 2],
                     class_names=["building", "water"])
TABLE = np.array([[0, 0, 0],
                  [0, 6, 0],
                  [3, 2, 0],
                  [6, 0, 0],
                  [3, 0, 3]])


@pytest.fixture
def clusters(make_raster):
    return make_raster(IDS, name="clusters.tif", transform=TRANSFORM, nodata=0)


def labels_of(table):
    """The (cluster, class) label pairs a table counts."""
    rows, cols = np.nonzero(table)
    counts = table[rows, cols]
    return np.repeat(rows, counts), np.repeat(cols, counts)


def test_contingency_by_hand(clusters):
    np.testing.assert_array_equal(contingency(clusters, REFERENCE), TABLE)
    np.testing.assert_array_equal(contingency(clusters, REFERENCE, strip_rows=1), TABLE)  # streamed by rows


def test_contingency_leaves_out_pixels_outside_the_aoi(clusters):
    aoi = pixels(0, 0, 4, 3)  # columns 0-2 only
    ref = LabelSet(REFERENCE.geometries, REFERENCE.classes, REFERENCE.class_names, aoi=aoi)
    expected = np.array([[0, 0, 0], [0, 6, 0], [1, 2, 0], [0, 0, 0], [0, 0, 3]])
    np.testing.assert_array_equal(contingency(clusters, ref), expected)


def test_contingency_refusals(clusters, make_raster):
    far = LabelSet([box(0, 0, 5, 5)], [1], aoi=box(0, 0, 5, 5))
    with pytest.raises(InputError, match="no valid pixel where the reference") as info:
        contingency(clusters, far)
    assert info.value.parameter == "REFERENCE"
    image = make_raster(np.ones((4, 6), "float32"), name="image.tif", transform=TRANSFORM)
    with pytest.raises(InputError) as info:
        contingency(image, REFERENCE)
    assert info.value.parameter == "INPUT"


def test_purity_by_hand():
    assert purity(TABLE) == pytest.approx((6 + 3 + 6 + 3) / 23)
    assert purity(np.zeros((3, 2), int)) == 0.0


@pytest.mark.parametrize("table", [
    TABLE,
    np.array([[0, 0], [5, 0], [0, 7]]),  # perfect
    np.array([[0, 0, 0], [4, 4, 4], [2, 2, 2]]),  # independent
    np.array([[0, 0], [10, 0], [3, 0]]),  # one reference class
    np.array([[0, 0, 0], [0, 0, 9]]),  # one cluster, one class
    np.random.default_rng(0).integers(0, 40, (9, 5)),
])
def test_nmi_matches_scikit_learn(table):
    metrics = pytest.importorskip("sklearn.metrics")
    clusters, classes = labels_of(table)
    expected = metrics.normalized_mutual_info_score(classes, clusters)
    assert nmi_from_table(table) == pytest.approx(expected, abs=1e-9)


def test_nmi_extremes():
    assert nmi_from_table(np.array([[0, 0], [5, 0], [0, 7]])) == pytest.approx(1.0)
    assert nmi_from_table(np.array([[0, 0, 0], [4, 4, 4], [2, 2, 2]])) == pytest.approx(0.0, abs=1e-12)
    assert nmi_from_table(np.zeros((2, 2), int)) == 0.0


def test_reachable_scores_by_hand():
    # building: shares c1 = 6/6, c2 = 2/5, c3 = 0, c4 = 0; 8 building pixels in all
    dice, iou, best_dice, best_iou, chosen = reachable_scores(TABLE, 1, 0.4)
    assert chosen == [1, 2]  # 2/5 = 0.4 counts
    assert dice == pytest.approx(2 * 8 / (2 * 8 + 3 + 0)) and iou == pytest.approx(8 / 11)
    assert best_dice == pytest.approx(2 * 6 / (2 * 6 + 0 + 2))  # cluster 1 alone
    assert best_iou == pytest.approx(6 / 8)
    dice, iou, best_dice, _, chosen = reachable_scores(TABLE, 1, 0.5)
    assert chosen == [1] and dice == pytest.approx(12 / 14) and best_dice == pytest.approx(12 / 14)
    # water: cluster 4 is half water
    dice, iou, best_dice, best_iou, chosen = reachable_scores(TABLE, 2, 0.4)
    assert chosen == [4] and dice == pytest.approx(6 / 9) and iou == pytest.approx(3 / 6)
    assert best_dice == pytest.approx(6 / 9) and best_iou == pytest.approx(0.5)
    dice, iou, best_dice, _, chosen = reachable_scores(TABLE, 2, 0.6)
    assert chosen == [] and dice == 0.0 and iou == 0.0 and best_dice == pytest.approx(6 / 9)


def test_cluster_raster_equal_to_the_reference_scores_one(make_raster):
    ref_ids = np.array([[2, 2, 1, 1], [2, 2, 1, 3], [1, 1, 1, 3]], np.uint16)  # 1 background, 2 a, 3 b
    path = make_raster(ref_ids, name="perfect.tif", transform=TRANSFORM, nodata=0)
    ref = LabelSet([pixels(0, 0, 2, 2), pixels(1, 3, 3, 4)], [1, 2], class_names=["a", "b"],
                   aoi=pixels(0, 0, 3, 4))
    scores = evaluate_clusters(path, ref, keep_threshold=0.4)
    assert scores.dice == {"a": 1.0, "b": 1.0} and scores.iou == {"a": 1.0, "b": 1.0}
    assert scores.best_dice == {"a": 1.0, "b": 1.0}
    assert scores.positive_clusters == {"a": [2], "b": [3]}
    assert scores.purity == 1.0 and scores.nmi == pytest.approx(1.0) and scores.pixels == 12


def test_evaluate_clusters_on_the_hand_made_raster(clusters):
    scores = evaluate_clusters(clusters, REFERENCE, keep_threshold=0.4)
    np.testing.assert_array_equal(scores.table, TABLE)
    assert scores.class_names == ["building", "water"] and scores.pixels == 23
    assert scores.dice["building"] == pytest.approx(16 / 19) and scores.best_dice["building"] == pytest.approx(6 / 7)
    assert scores.dice["water"] == pytest.approx(2 / 3) and scores.positive_clusters["water"] == [4]
    assert scores.purity == pytest.approx(18 / 23) and scores.nmi == pytest.approx(nmi_from_table(TABLE))
    for bad in (0.0, 1.5):
        with pytest.raises(InputError) as info:
            evaluate_clusters(clusters, REFERENCE, keep_threshold=bad)
        assert info.value.parameter == "KEEP_THRESHOLD"
