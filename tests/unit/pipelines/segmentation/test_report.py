"""The plain-language report after training: held-out scores summed over blocks, and the warnings they raise."""

import numpy as np

from satseg_plugin.core.labels import IGNORE
from satseg_plugin.pipelines.segmentation.report import (
    MIN_TRAIN_OBJECTS,
    MIN_VAL_OBJECTS,
    build_report,
    score_block,
)


def _squares(shape, corners, side=10, value=1):
    mask = np.zeros(shape, np.uint8)
    for y, x in corners:
        mask[y:y + side, x:x + side] = value
    return mask


def test_block_scores_count_pixels_and_objects_and_leave_ignored_pixels_out():
    truth = _squares((64, 64), [(2, 2), (30, 30), (50, 5)])
    pred = _squares((64, 64), [(2, 2), (31, 31)])  # one exact, one shifted by a pixel (IoU 0.68), one missed
    pred[40:44, 50:54] = 1  # a spurious object
    truth[55:, :] = IGNORE  # unknown rows: the missed object's lower half does not count
    block = score_block(pred, truth, (5.0, 6.0))
    assert block.centre == (5.0, 6.0)
    assert (block.object_tp, block.object_fp, block.object_fn) == (2, 1, 1)
    assert block.tp == 100 + 81 and block.fp == 19 + 16 and block.fn == 19 + 50
    assert 0 < block.dice < 1


def test_report_sums_blocks_and_stays_quiet_for_a_good_model():
    truth = _squares((64, 64), [(2, 2), (30, 30), (2, 40), (40, 2), (45, 45)])
    blocks = [score_block(truth.copy(), truth, (float(i), 0.0)) for i in range(3)]
    report = build_report(blocks, train_objects=80, pretrained=True, units="metre")
    assert report.dice == 1.0 and report.object_f1 == 1.0 and report.val_objects == 15 and report.blocks == 3
    assert report.warnings == []
    assert report.metrics()["heldout_object_f1"] == 1.0 and report.metrics()["train_objects"] == 80
    assert "15 reference objects" in report.summary()


def test_report_warns_about_few_labels_a_small_validation_set_and_a_weak_model_with_where():
    truth = _squares((64, 64), [(2, 2), (30, 30)])
    empty = np.zeros_like(truth)
    blocks = [score_block(empty, truth, (100.0, 200.0)), score_block(empty, truth, (300.0, 400.0))]
    report = build_report(blocks, train_objects=MIN_TRAIN_OBJECTS - 1, pretrained=False, units="metre")
    assert report.val_objects == 4 < MIN_VAL_OBJECTS
    text = " ".join(report.warnings)
    assert len(report.warnings) == 3
    assert f"{MIN_TRAIN_OBJECTS - 1} labelled objects" in text and "draw more polygons" in text
    assert "only 4 objects" in text
    assert "weak" in text and "(100.0, 200.0) Dice 0.00" in text and "(metre)" in text
    assert "ENCODER_WEIGHTS=imagenet" in text  # random start: say what helps most
    assert "ENCODER_WEIGHTS" not in " ".join(build_report(blocks, 100, pretrained=True).warnings)


def test_report_warns_when_pixels_are_right_but_objects_merge():
    truth = _squares((64, 64), [(2, 2), (2, 13), (30, 30), (30, 41), (50, 2), (50, 13)])
    merged = truth.copy()
    merged[2:12, 12] = merged[30:40, 40] = merged[50:60, 12] = 1  # neighbours joined by one column of pixels
    report = build_report([score_block(merged, truth, (0.0, 0.0))] * 2, 100, pretrained=True)
    assert report.dice > 0.9 and report.object_f1 == 0.0
    assert len(report.warnings) == 1 and "merge" in report.warnings[0]
