"""Tracking communities across frames: sparse flow-agreement scores, events, track ids and link accuracy."""

import math

import numpy as np
import pytest

from satseg_plugin.core.errors import CanceledError, InputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.pipelines.population.accuracy import link_accuracy
from satseg_plugin.pipelines.population.pair_scores import score_pairs
from satseg_plugin.pipelines.population.tracks import (
    BIRTH,
    CONTINUE,
    DEATH,
    LINK_FIELDS,
    MERGE,
    SPLIT,
    SPLIT_MERGE,
    Link,
    TrackLine,
    link_frames,
    track_communities,
)


def grid(h=24, w=30):
    return np.zeros((h, w), np.int32)


def flow(shape, u=0.0, v=0.0):
    """A uniform flow ``(u, v)`` in pixels per frame."""
    return np.full(shape, u, np.float32), np.full(shape, v, np.float32)


def joined(rows):
    """The rows of a link table that join two segments, as ``{(segment, next_segment): link}``."""
    return {(r.segment, r.next_segment): r for r in rows if r.segment is not None and r.next_segment is not None}


# --------------------------------------------------------------------------------------------- brute force

def brute_force_scores(seg_a, seg_b, flow_ab, flow_next, min_speed):
    """Per-pair loops over pixels, in plain Python: ``{(a, b): (forward, backward, n_forward, n_backward)}``."""
    h, w = seg_a.shape
    fu, fv = (np.nan_to_num(np.asarray(x, np.float64)) for x in flow_ab)
    gu, gv = (fu, fv) if flow_next is None else (np.nan_to_num(np.asarray(x, np.float64)) for x in flow_next)

    def cos(q, p):
        u1, v1, u2, v2 = fu[q], fv[q], gu[p], gv[p]
        n1, n2 = math.hypot(u1, v1), math.hypot(u2, v2)
        if n1 < min_speed or n2 < min_speed or n1 == 0 or n2 == 0:
            return 1.0
        return max(-1.0, min(1.0, (u1 * u2 + v1 * v2) / (n1 * n2)))

    result = {}
    for a in sorted(set(seg_a[seg_a > 0].tolist())):
        for b in sorted(set(seg_b[seg_b > 0].tolist())):
            fwd = bwd = 0.0
            nf = nb = 0
            for r in range(h):
                for c in range(w):
                    if seg_a[r, c] == a:
                        rr, cc = round(r + float(fv[r, c])), round(c + float(fu[r, c]))
                        if 0 <= rr < h and 0 <= cc < w and seg_b[rr, cc] == b:
                            fwd += cos((r, c), (rr, cc))
                            nf += 1
                    if seg_b[r, c] == b:
                        rr, cc = round(r - float(fv[r, c])), round(c - float(fu[r, c]))
                        if 0 <= rr < h and 0 <= cc < w and seg_a[rr, cc] == a:
                            bwd += cos((rr, cc), (r, c))
                            nb += 1
            if nf or nb:
                result[(a, b)] = (fwd, bwd, nf, nb)
    return result


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_next", [False, True])
@pytest.mark.parametrize("ids", [(1, 5), (70_000, 2**31 - 5)])
def test_sparse_scores_equal_a_per_pair_loop(seed, with_next, ids):
    rng = np.random.default_rng(seed)
    shape = (11, 13)
    labels = np.array([0] + list(range(ids[0], ids[0] + 4)) + [ids[1]], np.int64)
    seg_a = labels[rng.integers(0, labels.size, shape)].astype(np.int32)
    seg_b = labels[rng.integers(0, labels.size, shape)].astype(np.int32)
    flow_ab = tuple((rng.normal(scale=2.0, size=shape)).astype(np.float32) for _ in range(2))
    flow_ab[0][rng.random(shape) < 0.1] = np.nan  # unknown flow reads as still
    flow_ab[1][rng.random(shape) < 0.1] = 0.01    # slower than min_speed: agrees with everything
    flow_next = tuple(rng.normal(scale=2.0, size=shape).astype(np.float32) for _ in range(2)) if with_next else None

    scores = score_pairs(seg_a, seg_b, flow_ab, flow_next, min_speed=0.05)
    truth = brute_force_scores(seg_a, seg_b, flow_ab, flow_next, 0.05)

    got = {(a, b): (f, bw, nf, nb) for a, b, f, bw, nf, nb in zip(
        scores.segment.tolist(), scores.next_segment.tolist(), scores.forward_score.tolist(),
        scores.backward_score.tolist(), scores.forward_overlap.tolist(), scores.backward_overlap.tolist())}
    assert sorted(got) == sorted(truth) and len(got) > 5
    for pair, (fwd, bwd, nf, nb) in truth.items():
        assert got[pair][2:] == (nf, nb)
        assert got[pair][0] == pytest.approx(fwd, abs=1e-9)
        assert got[pair][1] == pytest.approx(bwd, abs=1e-9)
    # negative scores occur, so the cosine sign is really tested
    assert (scores.forward_score < 0).any() and (scores.forward_score > 0).any()
    np.testing.assert_allclose(scores.score, 0.5 * (scores.forward_score + scores.backward_score))
    np.testing.assert_array_equal(scores.overlap, np.maximum(scores.forward_overlap, scores.backward_overlap))


# --------------------------------------------------------------------------------------------- events

def test_a_blob_moving_with_the_flow_continues_on_one_track():
    a, b = grid(), grid()
    a[5:10, 5:10] = 1
    b[5:10, 8:13] = 7   # moved 3 columns east
    rows = link_frames(a, b, flow(a.shape, u=3.0))
    assert len(rows) == 1
    link = rows[0]
    assert (link.frame, link.segment, link.next_frame, link.next_segment, link.event) == (0, 1, 1, 7, CONTINUE)
    assert (link.forward_overlap, link.backward_overlap, link.overlap) == (25, 25, 25)
    assert link.score == pytest.approx(25.0)          # cosine 1 on every pixel: score = overlap
    assert link.as_row() == tuple(getattr(link, name) for name in LINK_FIELDS)

    tracking = track_communities([a, b], [flow(a.shape, u=3.0)])
    assert tracking.track_ids == [{1: 1}, {7: 1}]
    assert tracking.lines == [TrackLine(0, 1, 1, 7, CONTINUE, 1)]
    assert tracking.num_tracks == 1


def diverging_flow(shape, row=10, speed=2.0):
    """Rows above ``row`` move up (v < 0), rows from ``row`` on move down."""
    u, v = flow(shape)
    v[:row] = -speed
    v[row:] = speed
    return u, v


def test_a_split_gives_split_links_and_the_best_scoring_child_keeps_the_track():
    a, b = grid(), grid()
    a[5:17, 5:15] = 1        # rows 5..9 move up 2, rows 10..16 move down 2
    b[3:8, 5:15] = 2         # the top part: 50 pixels
    b[12:19, 5:15] = 3       # the bottom part: 70 pixels, a larger id
    f = diverging_flow(a.shape)
    links = joined(link_frames(a, b, f))
    assert set(links) == {(1, 2), (1, 3)}
    assert {link.event for link in links.values()} == {SPLIT}
    assert links[(1, 2)].score == pytest.approx(50.0) and links[(1, 3)].score == pytest.approx(70.0)

    tracking = track_communities([a, b], [f])
    assert tracking.track_ids[1] == {3: 1, 2: 2}   # 3 scores higher, keeps track 1; 2 starts track 2
    assert sorted(tracking.lines) == [TrackLine(0, 1, 1, 2, SPLIT, 2), TrackLine(0, 1, 1, 3, SPLIT, 1)]


def test_a_merge_gives_merge_links_and_keeps_the_best_scoring_parents_track():
    a, b = grid(), grid()
    a[3:8, 5:15] = 1         # moves down 2 -> rows 5..9 (50 pixels)
    a[12:19, 5:15] = 2       # moves up 2 -> rows 10..16 (70 pixels)
    b[5:17, 5:15] = 4
    u, v = flow(a.shape)
    v[:10], v[10:] = 2.0, -2.0
    rows = link_frames(a, b, (u, v))
    links = joined(rows)
    assert set(links) == {(1, 4), (2, 4)} and len(rows) == 2
    assert {link.event for link in links.values()} == {MERGE}

    tracking = track_communities([a, b], [(u, v)])
    assert tracking.track_ids == [{1: 1, 2: 2}, {4: 2}]
    assert {line.track_id for line in tracking.lines} == {2}


def test_approaching_communities_merge_by_default_but_not_under_the_original_next_flow_rule():
    a, b = grid(6, 20), grid(6, 20)
    a[:, 2:8], a[:, 12:18] = 1, 2          # 1 moves 2 east, 2 moves 2 west: they meet
    b[:, 4:16] = 3
    u, v = flow(a.shape)
    u[:, :10], u[:, 10:] = 2.0, -2.0
    drift = flow(a.shape, u=1.0)           # afterwards the merged community drifts east, against 2's motion
    same = track_communities([a, b, b], [(u, v), drift])
    assert {(r.segment, r.next_segment, r.event) for r in same.links if r.frame == 0} == {(1, 3, MERGE),
                                                                                           (2, 3, MERGE)}
    nxt = track_communities([a, b, b], [(u, v), drift], compare="next")
    assert {(r.segment, r.next_segment, r.event) for r in nxt.links if r.frame == 0} == {(1, 3, CONTINUE),
                                                                                          (2, None, DEATH)}
    assert same.track_ids[1] == nxt.track_ids[1] == {3: 1}   # equal scores: the smaller parent id wins


def test_split_and_merge_at_once_is_split_plus_merge():
    a, b = grid(4, 15), grid(4, 15)
    a[:, 0:10], a[:, 10:15] = 1, 2
    b[:, 0:4], b[:, 4:15] = 1, 2
    tracking = track_communities([a, b], [flow(a.shape)])   # still: cosines count as 1
    links = joined(tracking.links)
    assert {pair: link.event for pair, link in links.items()} == {(1, 1): SPLIT, (1, 2): SPLIT_MERGE,
                                                                  (2, 2): MERGE}
    assert [links[p].score for p in [(1, 1), (1, 2), (2, 2)]] == pytest.approx([16.0, 24.0, 20.0])
    # (1, 2) scores best: segment 2 takes track 1; segment 1 is left without a parent track -> new track 3
    assert tracking.track_ids[1] == {2: 1, 1: 3}
    assert sorted(tracking.lines) == [TrackLine(0, 1, 1, 1, SPLIT, 3), TrackLine(0, 1, 1, 2, SPLIT_MERGE, 1),
                                      TrackLine(0, 2, 1, 2, MERGE, 1)]


def test_births_and_deaths_get_their_own_rows_and_births_start_tracks():
    a, b = grid(), grid()
    a[2:6, 2:6] = 1
    a[15:20, 20:25] = 2       # vanishes
    b[2:6, 2:6] = 1
    b[15:20, 2:8] = 2         # appears
    rows = link_frames(a, b, flow(a.shape), frame=3)
    assert [(r.frame, r.segment, r.next_frame, r.next_segment, r.event, r.score, r.overlap) for r in rows] == [
        (3, 1, 4, 1, CONTINUE, 16.0, 16), (3, 2, 4, None, DEATH, 0.0, 0), (3, None, 4, 2, BIRTH, 0.0, 0)]
    tracking = track_communities([a, b], [flow(a.shape)])
    assert tracking.track_ids == [{1: 1, 2: 2}, {1: 1, 2: 3}]
    assert tracking.event_counts() == {CONTINUE: 1, SPLIT: 0, MERGE: 0, SPLIT_MERGE: 0, BIRTH: 1, DEATH: 1}


def test_flow_pointing_away_gives_no_link():
    a, b = grid(), grid()
    a[5:10, 5:10] = 1
    b[5:10, 8:13] = 1
    east, west = flow(a.shape, u=3.0), flow(a.shape, u=-3.0)
    assert joined(link_frames(a, b, east, flow_next=east))     # agreeing: linked
    rows = link_frames(a, b, east, flow_next=west)              # b moves on westwards: cosine -1
    assert [(r.segment, r.next_segment, r.event) for r in rows] == [(1, None, DEATH), (None, 1, BIRTH)]
    assert score_pairs(a, b, east, west).score.tolist() == [-25.0]


def test_still_communities_link_even_with_noise_flow_below_min_speed():
    a = grid()
    a[5:10, 5:10] = 1
    rng = np.random.default_rng(0)
    noise, noise_next = (tuple(rng.normal(scale=0.01, size=a.shape).astype(np.float32) for _ in range(2))
                         for _ in range(2))
    link = joined(link_frames(a, a, noise, noise_next))[(1, 1)]
    assert link.score == pytest.approx(25.0) and link.event == CONTINUE
    # without the threshold the noise directions would be scored: the sum of random cosines is far from 25
    assert score_pairs(a, a, noise, noise_next, min_speed=0.0).score[0] < 20.0


def test_score_is_the_mean_of_the_two_passes_not_the_max():
    # forward: segment 1 (columns 0-1) moves 5 east into the east-moving part of 2: +20
    # backward: columns 2-4 of segment 2 are pulled back into 1 but move on westwards: -30
    a, b = grid(10, 12), grid(10, 12)
    a[:, 0:2] = 1
    b[:, 2:9] = 1
    u, v = flow(a.shape)
    u[:, 0:2], u[:, 2:4], u[:, 4] = 5.0, 2.0, 3.0
    gu, gv = flow(a.shape, u=1.0)
    gu[:, 2:5] = -1.0
    scores = score_pairs(a, b, (u, v), (gu, gv))
    assert (scores.forward_score[0], scores.backward_score[0]) == (20.0, -30.0)
    assert (scores.forward_overlap[0], scores.backward_overlap[0]) == (20, 30)
    assert scores.score[0] == -5.0          # max would be +20 and link them
    assert not joined(link_frames(a, b, (u, v), (gu, gv)))


def test_the_backward_pass_finds_a_link_the_forward_pass_misses():
    a, b = grid(10, 12), grid(10, 12)
    a[:, 5] = 1
    b[:, 3:8] = 2
    u, v = flow(a.shape, u=1.0)
    u[:, 5] = 4.0           # overshoots: the forward pass lands in column 9, outside segment 2
    link = joined(link_frames(a, b, (u, v)))[(1, 2)]
    assert (link.forward_overlap, link.backward_overlap) == (0, 10)
    assert link.score == pytest.approx(5.0) and link.event == CONTINUE


def test_links_through_a_few_boundary_pixels_are_dropped():
    a, b = grid(), grid()
    a[5:15, 5:15] = 1                      # 100 pixels moving 2 east
    b[5:15, 7:17] = 1
    b[13:15, 16] = 0
    b[13:23, 16:26] = 2                    # a neighbour that 2 of 1's landing pixels fall into
    f = flow(a.shape, u=2.0)
    scores = score_pairs(a, b, f)
    noise = list(zip(scores.segment.tolist(), scores.next_segment.tolist())).index((1, 2))
    assert scores.overlap[noise] == 2 and scores.score[noise] > 0
    assert set(joined(link_frames(a, b, f))) == {(1, 1)}                      # 2 / 98 < 20 %: dropped
    assert set(joined(link_frames(a, b, f, min_fraction=0.0))) == {(1, 1), (1, 2)}
    assert set(joined(link_frames(a, b, f, min_fraction=0.0, min_overlap=3))) == {(1, 1)}


def test_a_small_split_off_child_is_kept_by_the_default_thresholds():
    a, b = grid(), grid()
    a[5:15, 5:15] = 1                      # 100 pixels moving 2 east
    b[5:15, 7:17] = 1
    b[5:8, 14:17] = 2                      # a 9-pixel piece splits off at a corner
    links = joined(link_frames(a, b, flow(a.shape, u=2.0)))
    assert set(links) == {(1, 1), (1, 2)} and links[(1, 2)].overlap == 9
    assert {link.event for link in links.values()} == {SPLIT}


# --------------------------------------------------------------------------------------------- tracks

def moving_scene():
    """Four frames: community 1 drifts east, splits at frame 2; community 2 is still and dies at frame 3;
    community 3 is born at frame 1. Returns ``(segments, flows, true_links, true_segments)``."""
    shape = (30, 40)
    segs = [np.zeros(shape, np.int32) for _ in range(4)]
    segs[0][4:14, 2:10] = 1
    segs[1][4:14, 4:12] = 1
    segs[2][4:8, 6:14] = 1
    segs[2][10:14, 6:14] = 2       # the split; row 8-9 pixels landed in the gap
    segs[3][4:8, 8:16] = 1
    segs[3][10:14, 8:16] = 2
    for t in range(3):
        segs[t][20:26, 30:36] = 9 if t != 1 else 8   # still community 2 (ids differ per frame)
    segs[1][22:28, 2:8] = 3
    segs[2][22:28, 2:8] = 4
    segs[3][22:28, 2:8] = 3
    flows = []
    for _ in range(3):
        u, v = flow(shape)
        u[2:16, 0:20] = 2.0
        flows.append((u, v))
    truth = [(0, 1, 1, 1, CONTINUE), (0, 9, 1, 8, CONTINUE), (0, None, 1, 3, BIRTH),
             (1, 1, 2, 1, SPLIT), (1, 1, 2, 2, SPLIT), (1, 8, 2, 9, CONTINUE), (1, 3, 2, 4, CONTINUE),
             (2, 1, 3, 1, CONTINUE), (2, 2, 3, 2, CONTINUE), (2, 9, 3, None, DEATH), (2, 4, 3, 3, CONTINUE)]
    return segs, flows, truth


def test_track_ids_follow_first_appearance_and_link_accuracy_is_perfect_on_a_known_scene():
    segs, flows, truth = moving_scene()
    feedback = RecordingFeedback()
    tracking = track_communities(segs, flows, feedback)
    rows = [(r.frame, r.segment, r.next_frame, r.next_segment, r.event) for r in tracking.links]
    assert len(rows) == len(truth) == 11 and set(rows) == set(truth)
    assert tracking.track_ids == [{1: 1, 9: 2}, {1: 1, 3: 3, 8: 2}, {1: 1, 2: 4, 4: 3, 9: 2}, {1: 1, 2: 4, 3: 3}]
    assert len(tracking.lines) == 9 and all(line.track_id == tracking.track_ids[line.next_frame][line.next_segment]
                                            for line in tracking.lines)
    assert feedback.progress == pytest.approx([100 / 3, 200 / 3, 100.0])
    assert any("4 tracks" in message for message in feedback.infos)

    accuracy = link_accuracy(tracking.links, truth, segs, segs)
    assert (accuracy.true_links, accuracy.found, accuracy.false_links) == (9, 9, 0)
    assert accuracy.recall == 1.0 and accuracy.precision == 1.0
    assert (accuracy.events_total, accuracy.events_correct) == (11, 11)


def test_link_accuracy_on_relabelled_over_segmented_predictions():
    shape = (10, 20)
    true = [np.zeros(shape, np.int32) for _ in range(2)]
    true[0][0:4, 0:4], true[0][0:4, 10:16], true[0][6:10, 0:4] = 1, 2, 4
    true[1][0:4, 0:4], true[1][0:4, 10:16], true[1][6:10, 10:14], true[1][6:10, 0:4] = 1, 2, 3, 4
    pred = [np.zeros(shape, np.int32) for _ in range(2)]
    pred[0][0:4, 0:4], pred[0][0:4, 10:16], pred[0][6:10, 0:4] = 10, 20, 50
    pred[1][0:4, 0:3], pred[1][0:4, 10:13], pred[1][0:4, 13:16] = 11, 21, 22   # 2 split in two pieces
    pred[1][6:10, 10:14], pred[1][6:10, 0:4], pred[1][0:2, 18:20] = 30, 51, 40  # 40 lies on background
    true_rows = [  # as csv.DictReader gives them
        {"frame": "0", "community": "1", "next_frame": "1", "next_community": "1", "event": "continue"},
        {"frame": "0", "community": "2", "next_frame": "1", "next_community": "2", "event": "continue"},
        {"frame": "0", "community": "4", "next_frame": "1", "next_community": "4", "event": "continue"},
        {"frame": "0", "community": "", "next_frame": "1", "next_community": "3", "event": "birth"},
    ]
    pred_rows = [Link(0, 10, 1, 11, 5.0, 5, CONTINUE), Link(0, 20, 1, 21, 3.0, 3, SPLIT),
                 Link(0, 20, 1, 22, 2.0, 2, SPLIT), Link(0, 20, 1, 40, 0.5, 1, SPLIT),
                 Link(0, 50, 1, None, 0.0, 0, DEATH), Link(0, None, 1, 51, 0.0, 0, BIRTH),
                 Link(0, None, 1, 30, 0.0, 0, BIRTH)]
    accuracy = link_accuracy(pred_rows, true_rows, pred, true)
    # mapped: (1,1) continue, (2,2) split (twice, counted once), 20->40 has no community: a false link
    assert (accuracy.true_links, accuracy.predicted_links, accuracy.found, accuracy.false_links) == (3, 3, 2, 1)
    assert accuracy.recall == pytest.approx(2 / 3) and accuracy.precision == pytest.approx(2 / 3)
    # events: (1,1) right, (2,2) wrong (split), (4,4) missed, birth of 3 right
    assert (accuracy.events_total, accuracy.events_correct) == (4, 2)
    assert accuracy.event_accuracy == 0.5


# --------------------------------------------------------------------------------------------- bad input

def test_bad_inputs_name_the_parameter():
    seg = grid()
    f = flow(seg.shape)
    cases = [
        (lambda: track_communities([seg], []), "SEGMENTS", "at least two frames"),
        (lambda: track_communities([seg, grid(10, 10)], [f]), "SEGMENTS", "share one grid"),
        (lambda: track_communities([seg, seg.astype(np.float32)], [f]), "SEGMENTS", "integer"),
        (lambda: track_communities([seg, seg - 1], [f]), "SEGMENTS", "negative"),
        (lambda: track_communities([seg, seg, seg], [f]), "FLOWS", "need 2 flows"),
        (lambda: track_communities([seg, seg], [flow((5, 5))]), "FLOWS", "shape"),
        (lambda: track_communities([seg, seg], [f[0]]), "FLOWS", "pair"),
        (lambda: track_communities([seg, seg], [f], compare="previous"), "COMPARE", "same, next"),
        (lambda: link_frames(seg, seg, f, min_overlap=0), "MIN_OVERLAP", ">= 1"),
        (lambda: link_frames(seg, seg, f, min_fraction=1.5), "MIN_FRACTION", "between 0 and 1"),
        (lambda: link_accuracy([], [], [seg], [seg, seg]), "SEGMENTS", "one of each"),
    ]
    for call, parameter, text in cases:
        with pytest.raises(InputError, match=text) as info:
            call()
        assert info.value.parameter == parameter and str(info.value).startswith(parameter + ":")


def test_nan_flow_reads_as_still_and_the_callers_arrays_are_untouched():
    a = grid()
    a[5:10, 5:10] = 1
    u, v = flow(a.shape, u=np.nan, v=np.nan)
    link = joined(link_frames(a, a, (u, v)))[(1, 1)]
    assert link.score == pytest.approx(25.0)
    assert np.isnan(u).all() and np.isnan(v).all()


def test_cancel_stops_between_frame_pairs():
    segs, flows, _ = moving_scene()
    feedback = RecordingFeedback(cancel_after=1)
    with pytest.raises(CanceledError):
        track_communities(segs, flows, feedback)
    assert len(feedback.progress) == 1
