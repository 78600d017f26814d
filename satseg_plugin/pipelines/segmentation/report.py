"""How good a freshly trained model is, said plainly: scores on the held-out blocks and what to do about them.

After training, the best model predicts every validation block whole (its tiles assembled into one mask per
block), and the masks are scored as ``satseg:evaluatesegmentation`` scores a result: pixel Dice/IoU and the
per-object F1 (objects matched one to one at IoU >= 0.5). The report then turns the numbers into advice: too few
labelled objects, a validation set too small to trust, a model too weak to use, objects that merge or break
apart, and where on the raster the model does worst (the blocks a user should label next).

The thresholds of the advice are rules of thumb from the development set (``bench/RESULTS.md``, section
``quality-real``): below ~30 training objects no recipe generalised there, and a validation Dice under 0.5 gave
masks that need redrawing rather than checking.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...core.labels import IGNORE
from ...core.scores import dice, f1, iou, precision, recall
from .evaluate import object_scores

__all__ = ["MIN_TRAIN_OBJECTS", "MIN_VAL_OBJECTS", "WEAK_DICE", "WEAK_OBJECT_F1", "BlockScore", "ValidationReport",
           "score_block", "build_report"]

#: Fewer labelled objects than this in the training blocks: the labels are too few (a warning).
MIN_TRAIN_OBJECTS = 30
#: Fewer reference objects than this in the validation blocks: the validation scores are rough (a warning).
MIN_VAL_OBJECTS = 10
#: A validation Dice under this: the model is too weak to use without redrawing its output (a warning).
WEAK_DICE = 0.5
#: A per-object F1 under this (with an acceptable Dice): objects merge or break apart (a warning).
WEAK_OBJECT_F1 = 0.3


@dataclass(frozen=True)
class BlockScore:
    """Counts of one validation block.

    Attributes:
        centre: the block's centre in map coordinates (the raster's CRS).
        tp, fp, fn: foreground pixel counts (ignored pixels left out).
        object_tp, object_fp, object_fn: matched, spurious and missed objects.
    """

    centre: Tuple[float, float]
    tp: int
    fp: int
    fn: int
    object_tp: int
    object_fp: int
    object_fn: int

    @property
    def dice(self) -> float:
        """Pixel Dice of the block (1 when the block has no foreground in either mask)."""
        return dice(self.tp, self.fp, self.fn)


def score_block(pred: np.ndarray, truth: np.ndarray, centre: Tuple[float, float]) -> BlockScore:
    """Score one assembled validation block.

    Args:
        pred: ``(H, W)`` predicted class ids (0 background).
        truth: ``(H, W)`` reference class ids with :data:`IGNORE` where unknown.
        centre: the block's centre in map coordinates.
    """
    valid = truth != IGNORE
    p, t = (pred > 0) & valid, (truth > 0) & valid
    objects = object_scores(p, t)
    return BlockScore(centre, int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum()),
                      objects.tp, objects.fp, objects.fn)


@dataclass
class ValidationReport:
    """Scores of the kept model on the held-out blocks, and the warnings drawn from them.

    Attributes:
        dice, iou: foreground pixel scores over all validation blocks (all classes together).
        object_f1, object_precision, object_recall: per-object scores (IoU >= 0.5).
        val_objects: reference objects in the validation blocks (connected components, as evaluation counts them).
        train_objects: labelled polygons in the training blocks.
        blocks: validation blocks scored.
        warnings: plain-language warnings, each with what to do.
    """

    dice: float
    iou: float
    object_f1: float
    object_precision: float
    object_recall: float
    val_objects: int
    train_objects: int
    blocks: int
    warnings: List[str] = field(default_factory=list)

    def metrics(self) -> Dict[str, Any]:
        """The numbers for the model file's ``metrics``: the scores prefixed ``heldout_`` (they are measured on
        whole validation blocks after small objects are removed, so they differ from the per-epoch ``val_dice``)."""
        values = asdict(self)
        values.pop("warnings")
        return {(k if k.endswith("_objects") else "heldout_" + k): v for k, v in values.items()}

    def summary(self) -> str:
        """One line for the log."""
        return (f"Held-out blocks ({self.blocks}, {self.val_objects} reference objects): pixel Dice {self.dice:.3f}, "
                f"IoU {self.iou:.3f}, per-object F1 {self.object_f1:.3f} (precision {self.object_precision:.2f}, "
                f"recall {self.object_recall:.2f}); trained on {self.train_objects} labelled objects.")


def build_report(blocks: Sequence[BlockScore], train_objects: int, pretrained: bool,
                 units: Optional[str] = None) -> ValidationReport:
    """Sum the blocks' counts into a :class:`ValidationReport` and write its warnings.

    Args:
        blocks: the scored validation blocks.
        train_objects: labelled polygons in the training blocks.
        pretrained: the encoder started from pretrained weights (ImageNet, a file or another model).
        units: the map units of the block centres, for the messages.
    """
    tp, fp, fn = (sum(getattr(b, k) for b in blocks) for k in ("tp", "fp", "fn"))
    otp, ofp, ofn = (sum(getattr(b, k) for b in blocks) for k in ("object_tp", "object_fp", "object_fn"))
    report = ValidationReport(dice(tp, fp, fn), iou(tp, fp, fn), f1(otp, ofp, ofn), precision(otp, ofp),
                              recall(otp, ofn), otp + ofn, train_objects, len(blocks))
    warn = report.warnings.append
    if train_objects < MIN_TRAIN_OBJECTS:
        warn(f"Few labels: {train_objects} labelled objects in the training blocks. With fewer than "
             f"{MIN_TRAIN_OBJECTS} a model rarely works on unseen ground: draw more polygons (50-100 is a good "
             "start), spread over every kind of ground in the raster, each object outlined whole.")
    if report.val_objects < MIN_VAL_OBJECTS:
        warn(f"The validation blocks hold only {report.val_objects} objects, so the scores above are rough: label "
             "objects in more places, or raise VAL_FRACTION.")
    if report.dice < WEAK_DICE:
        worst = sorted(blocks, key=lambda b: b.dice)[:3]
        where = "; ".join(f"({b.centre[0]:.1f}, {b.centre[1]:.1f}) Dice {b.dice:.2f}" for b in worst)
        hint = "" if pretrained else (" Training started from random weights: ENCODER_WEIGHTS=imagenet (or a file), "
                                      "or an encoder pretrained on this raster (satseg:pretrainencoder) helps most "
                                      "with few labels.")
        warn(f"The model is weak (held-out Dice {report.dice:.2f} < {WEAK_DICE}): check and redraw its output before "
             f"using it. Draw more polygons where it does worst, around the block centres{f' ({units})' if units else ''}"
             f" {where}.{hint}")
    elif report.object_f1 < WEAK_OBJECT_F1 and report.val_objects:
        warn(f"Pixels are found (Dice {report.dice:.2f}) but few objects are outlined right (per-object F1 "
             f"{report.object_f1:.2f}): predicted objects merge with their neighbours or break into pieces. Outline "
             "touching objects as separate polygons, raise MIN_AREA when segmenting to drop small fragments, and "
             "check the result before counting objects.")
    return report
