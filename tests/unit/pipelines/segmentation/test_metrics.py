"""Segmentation metrics: hand-computed pixel scores, the tile score, per-building F1, raster evaluation."""

import numpy as np
import pytest
from affine import Affine
from shapely.geometry import Polygon, box

from satseg_plugin.core.errors import CanceledError, InputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.core.scores import confusion, dice, f1, iou, precision, recall
from satseg_plugin.pipelines.segmentation import evaluate as metrics
from satseg_plugin.pipelines.segmentation.evaluate import (
    ObjectAccumulator,
    evaluate_masks,
    evaluate_rasters,
    object_scores,
    tile_counts,
    tile_dice_score,
)

NORTH_UP = Affine(0.5, 0, 500000.0, 0, -0.5, 5000000.0)
ROTATED = Affine.translation(500000.0, 5000000.0) * Affine.rotation(30) * Affine.scale(0.5, -0.5)


def squares():
    """Two 4x4 squares in a 10x10 grid, offset by 2 columns: 8 pixels overlap."""
    pred, ref = np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8)
    pred[2:6, 2:6] = 1
    ref[2:6, 4:8] = 1
    return pred, ref


def test_two_squares_by_hand():
    pred, ref = squares()
    counts = confusion(pred, ref)
    assert counts == (8, 8, 8, 76)
    assert dice(*counts[:3]) == pytest.approx(16 / 32)
    assert iou(*counts[:3]) == pytest.approx(8 / 24)
    assert precision(counts.tp, counts.fp) == recall(counts.tp, counts.fn) == 0.5
    valid = np.zeros((10, 10), bool)
    valid[:, :5] = True  # columns 0-4: pred 12 px, ref 4 px, overlap 4 px
    assert confusion(pred, ref, valid) == (4, 8, 0, 38)


def test_empty_cases_are_defined():
    empty, full = np.zeros((4, 4)), np.ones((4, 4))
    tp, fp, fn, tn = confusion(empty, empty)
    assert (dice(tp, fp, fn), iou(tp, fp, fn), f1(tp, fp, fn)) == (1.0, 1.0, 1.0)
    assert (precision(tp, fp), recall(tp, fn)) == (1.0, 1.0)
    tp, fp, fn, tn = confusion(empty, full)  # nothing predicted, everything missed
    assert (dice(tp, fp, fn), precision(tp, fp), recall(tp, fn)) == (0.0, 1.0, 0.0)
    tp, fp, fn, tn = confusion(full, empty)  # everything predicted, nothing there
    assert (dice(tp, fp, fn), precision(tp, fp), recall(tp, fn)) == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="same shape"):
        confusion(empty, np.ones((4, 5)))


def test_tile_score_leaves_out_tiles_empty_in_both():
    pred, ref = np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)
    # tile (0,0): empty in both -> left out; (0,1): perfect -> 1; (1,0): prediction only -> 0;
    # (1,1): pred 2 px, ref 4 px, overlap 2 -> 2*2 / (2 + 4) = 2/3
    pred[0:2, 2:4] = ref[0:2, 2:4] = 1
    pred[2, 0] = 1
    pred[2, 2:4] = 1
    ref[2:4, 2:4] = 1
    tp, fp, fn = tile_counts(pred, ref, 2)
    np.testing.assert_array_equal(tp, [[0, 4], [0, 2]])
    assert tile_dice_score(pred, ref, 2) == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert dice(*confusion(pred, ref)[:3]) == pytest.approx(2 * 6 / (7 + 8))  # pixel Dice differs
    assert tile_dice_score(np.zeros((5, 5)), np.zeros((5, 5)), 2) == 1.0  # every tile left out
    valid = np.zeros((4, 4), bool)
    valid[:2] = True
    assert tile_dice_score(pred, ref, 2, valid) == 1.0  # only the perfect tile remains


def test_partial_edge_tiles_count_their_inside_pixels():
    pred, ref = np.zeros((5, 5), np.uint8), np.zeros((5, 5), np.uint8)
    pred[4, 4] = ref[4, 4] = 1  # the 1x1 corner tile of a 2 px grid
    pred[4, 0] = 1  # the 1x2 bottom-left tile: prediction only
    tp, fp, fn = tile_counts(pred, ref, 2)
    assert tp.shape == (3, 3) and tp[2, 2] == 1 and fp[2, 0] == 1
    assert tile_dice_score(pred, ref, 2) == pytest.approx(0.5)


def buildings():
    """Reference: buildings A, B, C (10x10 each). Prediction: 60 % of A (IoU 0.6), 40 % of B (IoU 0.4),
    C split in two 40 % pieces (IoU 0.4 each)."""
    pred, ref = np.zeros((12, 40), np.uint8), np.zeros((12, 40), np.uint8)
    for c0 in (0, 13, 26):
        ref[1:11, c0:c0 + 10] = 1
    pred[1:11, 0:6] = 1  # A: 60 of 100 px
    pred[1:11, 13:17] = 1  # B: 40 of 100 px
    pred[1:11, 26:30] = 1  # C, left piece
    pred[1:11, 32:36] = 1  # C, right piece (a gap of 2 columns)
    return pred, ref


def test_per_building_f1_on_constructed_objects():
    pred, ref = buildings()
    scores = object_scores(pred, ref)
    assert (scores.tp, scores.fp, scores.fn) == (1, 3, 2)
    assert scores.mean_iou == pytest.approx(0.6)
    assert scores.precision == pytest.approx(1 / 4) and scores.recall == pytest.approx(1 / 3)
    assert scores.f1 == pytest.approx(2 / (2 + 3 + 2))
    loose = object_scores(pred, ref, iou_threshold=0.4)  # every piece now qualifies; C matches one piece
    assert (loose.tp, loose.fp, loose.fn) == (3, 1, 0)


def test_matching_is_one_to_one_and_inclusive_at_the_threshold():
    ref = np.zeros((4, 9), np.uint8)
    ref[:, 0:4] = ref[:, 5:9] = 1  # two buildings, a gap column between them
    pred = np.zeros_like(ref)
    pred[:, 0:9] = 1  # one blob over both: IoU 16/36 with each
    assert (object_scores(pred, ref).tp, object_scores(pred, ref, iou_threshold=0.4).tp) == (0, 1)
    half = np.zeros_like(ref)
    half[:, 0:2] = 1  # exactly half of the first building: IoU 0.5 matches (>=)
    scores = object_scores(half, ref)
    assert (scores.tp, scores.fp, scores.fn) == (1, 0, 1)
    assert object_scores(np.zeros((3, 3)), np.zeros((3, 3))).f1 == 1.0


def test_connectivity():
    diagonal = np.eye(4, dtype=np.uint8)
    assert object_scores(diagonal, diagonal, connectivity=4).tp == 4
    assert object_scores(diagonal, diagonal, connectivity=8).tp == 1
    with pytest.raises(ValueError, match="connectivity"):
        object_scores(diagonal, diagonal, connectivity=6)


def test_objects_fed_in_strips_equal_whole_masks():
    """Objects crossing strip boundaries (a U joined only at its bottom, diagonals) are merged."""
    rng = np.random.default_rng(5)
    from scipy import ndimage

    for trial in range(20):
        pred = ndimage.binary_dilation(rng.random((30, 25)) < 0.06, iterations=int(rng.integers(1, 3)))
        ref = ndimage.binary_dilation(rng.random((30, 25)) < 0.06, iterations=int(rng.integers(1, 3)))
        if trial == 0:
            ref[:] = 0
            ref[2:20, 2:4] = ref[2:20, 8:10] = ref[18:20, 2:10] = 1  # a U open at the top
        for connectivity in (4, 8):
            whole = object_scores(pred, ref, connectivity=connectivity)
            accumulator = ObjectAccumulator(connectivity=connectivity)
            step = int(rng.integers(1, 6))
            for y in range(0, 30, step):
                accumulator.add(pred[y:y + step], ref[y:y + step])
            assert accumulator.result() == whole


def pixel_box(transform, c0, r0, c1, r1):
    """The map-space polygon of pixel columns c0..c1 and rows r0..r1 (exclusive ends)."""
    return Polygon([transform * (c0, r0), transform * (c1, r0), transform * (c1, r1), transform * (c0, r1)])


@pytest.fixture
def scene(make_raster):
    """A 40 x 60 px prediction and its reference polygons, with buildings that cross 16 px strip rows."""
    pred = np.zeros((40, 60), np.uint8)
    ref = np.zeros((40, 60), np.uint8)
    boxes = [(2, 10, 12, 22), (20, 5, 30, 12), (35, 14, 55, 19), (5, 30, 15, 38), (40, 30, 44, 34)]
    for c0, r0, c1, r1 in boxes:
        ref[r0:r1, c0:c1] = 1
    pred[10:22, 2:12] = 1  # building 1 exactly
    pred[5:12, 20:26] = 1  # building 2, 6 of 10 columns: IoU 0.6
    pred[14:19, 35:43] = 1  # building 3, 8 of 20 columns: IoU 0.4
    pred[25:28, 50:55] = 1  # a false building
    return pred, ref, boxes


@pytest.mark.parametrize("transform", [NORTH_UP, ROTATED], ids=["north-up", "rotated"])
def test_raster_evaluation_against_polygons_matches_arrays(make_raster, scene, monkeypatch, transform):
    pred, ref, boxes = scene
    pred_path = make_raster(pred, transform=transform)
    polygons = [pixel_box(transform, *b) for b in boxes]
    expected = evaluate_masks(pred, ref, tile_size=16)
    assert (expected.object_tp, expected.object_fp, expected.object_fn) == (2, 2, 3)
    assert evaluate_rasters(pred_path, polygons, tile_size=16) == expected
    monkeypatch.setattr(metrics, "STRIP_PIXELS", 1)  # one tile row per strip: buildings cross strips
    feedback = RecordingFeedback()
    from shapely import union_all

    assert evaluate_rasters(pred_path, union_all(polygons), tile_size=16, feedback=feedback) == expected
    assert len(feedback.progress) >= 3 and any("3 strips" in m for m in feedback.infos)


def test_pixel_centre_rule(make_raster):
    pred_path = make_raster(np.zeros((2, 4), np.uint8))
    x0, y0 = NORTH_UP * (0, 0)
    # covers 40 % of pixel (0, 0) (centre outside) and 60 % of pixel (0, 2) (centre inside)
    polygons = [box(x0, y0 - 0.5, x0 + 0.2, y0), box(x0 + 1.0, y0 - 0.5, x0 + 1.3, y0)]
    result = evaluate_rasters(pred_path, polygons, tile_size=2)
    assert (result.tp, result.fn, result.fp) == (0, 1, 0)


def test_probability_raster_threshold_nodata_and_reference_mask(make_raster, tmp_path):
    prob = np.array([[0.9, 0.6, 0.4, np.nan], [0.2, 0.51, 0.7, 0.0]], np.float32)
    ref = np.array([[1, 1, 1, 1], [0, 0, 9, 0]], np.uint8)  # 9 is the reference's nodata: background
    pred_path = make_raster(prob, name="prob.tif", nodata=float("nan"))
    ref_path = make_raster(ref, name="ref.tif", nodata=9)
    result = evaluate_rasters(pred_path, ref_path, threshold=0.5, tile_size=2)
    assert (result.tp, result.fp, result.fn, result.tn) == (2, 2, 2, 2)
    result = evaluate_rasters(pred_path, ref_path, threshold=0.3, tile_size=2)
    assert (result.tp, result.fp, result.fn, result.tn) == (3, 2, 1, 2)


def test_aoi_restricts_the_evaluation(make_raster, scene):
    pred, ref, boxes = scene
    pred_path = make_raster(pred)
    aoi = pixel_box(NORTH_UP, 0, 0, 30, 40)  # the left half
    valid = np.zeros(pred.shape, bool)
    valid[:, :30] = True
    result = evaluate_rasters(pred_path, [pixel_box(NORTH_UP, *b) for b in boxes], tile_size=16, aoi=aoi)
    assert result == evaluate_masks(pred, ref, valid, tile_size=16)
    assert result.tp + result.fp + result.fn + result.tn == 30 * 40


def test_errors_name_the_parameter(make_raster, scene, tmp_path):
    pred, ref, boxes = scene
    pred_path = make_raster(pred)
    shifted = make_raster(ref, name="shifted.tif", transform=NORTH_UP * Affine.translation(1, 0))
    smaller = make_raster(ref[:, :50], name="smaller.tif")
    with pytest.raises(InputError, match="REFERENCE_MASK: .*away from the prediction's pixel grid"):
        evaluate_rasters(pred_path, shifted)
    with pytest.raises(InputError, match="REFERENCE_MASK: .*50x40 px but the prediction is 60x40"):
        evaluate_rasters(pred_path, smaller)
    with pytest.raises(InputError, match="REFERENCE_MASK: .*cannot read"):
        evaluate_rasters(pred_path, str(tmp_path / "missing.tif"))
    with pytest.raises(InputError, match="PREDICTION: .*cannot read"):
        evaluate_rasters(str(tmp_path / "missing.tif"), [])
    far = box(0, 0, 1, 1)
    with pytest.raises(InputError, match="AOI: .*does not overlap"):
        evaluate_rasters(pred_path, [], aoi=far)
    with pytest.raises(InputError, match="TILE_SIZE"):
        evaluate_rasters(pred_path, [], tile_size=0)
    with pytest.raises(InputError, match="IOU_THRESHOLD"):
        evaluate_rasters(pred_path, [], iou_threshold=0)
    feedback = RecordingFeedback()
    result = evaluate_rasters(pred_path, [far], feedback=feedback)  # no building in view: all false positives
    assert result.tp == 0 and result.fp == pred.sum() and result.recall == 1.0 and result.dice == 0.0
    assert any("No reference polygon overlaps" in w for w in feedback.warnings)


def test_cancel(make_raster, scene, monkeypatch):
    pred, ref, boxes = scene
    monkeypatch.setattr(metrics, "STRIP_PIXELS", 1)
    with pytest.raises(CanceledError):
        evaluate_rasters(make_raster(pred), [], tile_size=8, feedback=RecordingFeedback(cancel_after=1))
