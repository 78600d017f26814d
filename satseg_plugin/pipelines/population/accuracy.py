"""How well predicted community links match true ones: recall, precision and event accuracy.

Predicted segments are mapped to the true community that covers most of their pixels, so a link table from
:func:`.tracks.track_communities` can be scored against the sample data's true links.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from ...core.errors import InputError
from .pair_scores import check_segments, sum_by_pair
from .tracks import BIRTH, DEATH, Link

__all__ = ["LinkAccuracy", "link_accuracy"]


@dataclass
class LinkAccuracy:
    """How well predicted links match true ones (on the level of true communities).

    Attributes:
        true_links: true links (rows joining two communities).
        predicted_links: distinct predicted links after mapping segments to true communities (links with an
            end that maps to no community count one each).
        found: true links that some predicted link maps onto.
        false_links: predicted links that are not true links.
        recall: ``found / true_links`` (share of true links found).
        precision: ``found / predicted_links``.
        events_total: true rows scored for events (links, births and deaths).
        events_correct: true rows whose event the prediction got right.
        event_accuracy: ``events_correct / events_total``.
    """

    true_links: int
    predicted_links: int
    found: int
    false_links: int
    recall: float
    precision: float
    events_total: int
    events_correct: int
    event_accuracy: float


def _segment_id(value: Any) -> Optional[int]:
    """A segment id from a table cell: None, "", 0 and NaN mean no segment."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = float(value)
    if math.isnan(number) or number == 0:
        return None
    return int(number)


def _as_row(item: Any) -> Tuple[int, Optional[int], int, Optional[int], str, float]:
    """``(frame, segment, next_frame, next_segment, event, score)`` of a row given as an object, mapping or tuple.

    Objects (a :class:`Link`, the sample data's ``TrueLink``) and mappings (``csv.DictReader`` rows) may name
    the segments ``community``/``next_community``, as the sample data's true-links CSV does.
    """
    if isinstance(item, Link):
        values = (item.frame, item.segment, item.next_frame, item.next_segment, item.event, item.score)
    elif isinstance(item, Mapping) or hasattr(item, "frame"):
        get = item.get if isinstance(item, Mapping) else lambda name, default=None: getattr(item, name, default)
        values = (get("frame"), get("segment", get("community")), get("next_frame"),
                  get("next_segment", get("next_community")), get("event", ""), get("score", 0.0))
    else:
        values = tuple(item) + (0.0,) * (6 - len(tuple(item)))
    frame, seg, next_frame, next_seg, event, score = values[:6]
    return (int(frame), _segment_id(seg), int(next_frame), _segment_id(next_seg), str(event).strip(),
            float(score or 0.0))


def _majority(pred: np.ndarray, truth: np.ndarray) -> Dict[int, int]:
    """Each predicted segment -> the true community (> 0) covering most of its pixels (ties: smaller id)."""
    both = (pred > 0) & (truth > 0)
    keys, _, counts = sum_by_pair(pred[both], truth[both], np.ones(int(both.sum()), np.float64))
    segs, comms = keys >> 32, keys & 0xFFFFFFFF
    order = np.lexsort((comms, -counts, segs))
    segs, comms = segs[order], comms[order]
    first = np.ones(segs.size, bool)
    first[1:] = segs[1:] != segs[:-1]
    return dict(zip(segs[first].tolist(), comms[first].tolist()))


def link_accuracy(pred_links: Sequence[Any], true_links: Sequence[Any], pred_segments: Sequence[np.ndarray],
                  true_segments: Sequence[np.ndarray]) -> LinkAccuracy:
    """Score predicted links against true links, through the true communities the segments cover.

    Each predicted segment of each frame stands for the true community that covers most of its pixels
    (background left out; a segment over background only stands for none). A predicted link then joins two
    true communities; several predicted links onto the same pair count once. Events are scored per true row:
    a true link by the event of the best-scoring predicted link mapped onto it, a true birth (death) as
    right when some predicted segment stands for the community and no predicted link maps into (out of) it.
    "split+merge" only matches "split+merge".

    Args:
        pred_links: predicted rows (:class:`Link`).
        true_links: true rows: objects or mappings with ``frame, segment|community, next_frame,
            next_segment|next_community, event`` (e.g. ``csv.DictReader`` rows; empty cells and 0 mean
            none) or tuples in that order.
        pred_segments: predicted segment rasters, one per frame.
        true_segments: true community rasters (0 = background), one per frame, on the same grid.

    Returns:
        Recall, precision, false links and event accuracy.

    Raises:
        InputError: when the frame counts or grids of the two raster lists differ (SEGMENTS).
    """
    if len(pred_segments) != len(true_segments):
        raise InputError(f"{len(pred_segments)} predicted and {len(true_segments)} true segment rasters; give "
                         "one of each per frame.", "SEGMENTS")
    mapping: List[Dict[int, int]] = []
    for t, (pred, truth) in enumerate(zip(pred_segments, true_segments)):
        pred = check_segments(pred, f"predicted frame {t}")
        truth = check_segments(truth, f"true frame {t}", pred.shape)
        mapping.append(_majority(pred.ravel(), truth.ravel()))

    def community(frame: int, seg: Optional[int]) -> Optional[int]:
        if seg is None or not 0 <= frame < len(mapping):
            return None
        return mapping[frame].get(seg)

    truth_rows = [_as_row(item) for item in true_links]
    true_pairs = {(f, a, nf, b): event for f, a, nf, b, event, _ in truth_rows if a is not None and b is not None}
    predicted: Dict[Tuple[int, int, int, int], Tuple[float, str]] = {}
    unmapped = 0
    covered: Set[Tuple[int, int]] = set()
    for t, frame_map in enumerate(mapping):
        covered.update((t, c) for c in frame_map.values())
    for f, a, nf, b, event, score in (_as_row(item) for item in pred_links):
        if a is None or b is None:
            continue
        key = (f, community(f, a), nf, community(nf, b))
        if key[1] is None or key[3] is None:
            unmapped += 1
        elif key not in predicted or score > predicted[key][0]:
            predicted[key] = (score, event)
    found = sum(1 for key in predicted if key in true_pairs)
    n_predicted = len(predicted) + unmapped
    into = {(nf, b) for _, _, nf, b in predicted}
    out_of = {(f, a) for f, a, _, _ in predicted}

    correct = 0
    total = 0
    for f, a, nf, b, event, _ in truth_rows:
        if a is not None and b is not None:
            total += 1
            correct += int(predicted.get((f, a, nf, b), (0.0, None))[1] == event)
        elif b is not None and event == BIRTH:
            total += 1
            correct += int((nf, b) in covered and (nf, b) not in into)
        elif a is not None and event == DEATH:
            total += 1
            correct += int((f, a) in covered and (f, a) not in out_of)
    return LinkAccuracy(
        true_links=len(true_pairs), predicted_links=n_predicted, found=found, false_links=n_predicted - found,
        recall=found / len(true_pairs) if true_pairs else float("nan"),
        precision=found / n_predicted if n_predicted else float("nan"),
        events_total=total, events_correct=correct, event_accuracy=correct / total if total else float("nan"))
