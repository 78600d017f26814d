"""Focal + soft Dice loss, the combination the building-segmentation competition work trained with.

The terms are segmentation-models-pytorch's own (:class:`smp.losses.FocalLoss`,
:class:`smp.losses.DiceLoss`); this module adds the shape checks, the weighting and a safe ignore mask.
The math is the pure function :func:`focal_dice_loss`; :class:`FocalDiceLoss` only stores its settings.

Shapes:
    - binary: logits ``(N, 1, H, W)``, target ``(N, 1, H, W)`` (or ``(N, H, W)``) float, 0 or 1
      (or ``ignore_index``); probabilities are ``sigmoid(logits)``.
    - multiclass: logits ``(N, C, H, W)``, target ``(N, H, W)`` long class indices in ``[0, C)``
      (or ``ignore_index``); probabilities are ``softmax(logits, dim=1)``.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
from torch import nn

from ..core.deps import require

__all__ = ["LOSS_MODES", "focal_dice_loss", "FocalDiceLoss"]

#: The supported target layouts.
LOSS_MODES: Tuple[str, ...] = ("binary", "multiclass")


@functools.lru_cache(maxsize=32)
def _terms(mode: str, gamma: float, ignore_index: Optional[int]) -> Tuple[nn.Module, nn.Module]:
    """smp's focal and Dice modules for these settings (stateless, so cached and shared)."""
    losses = require("segmentation_models_pytorch").losses
    # alpha=None: no class-prior weighting (smp's FocalLoss default), as in the competition work.
    focal = losses.FocalLoss(mode=mode, alpha=None, gamma=gamma, ignore_index=ignore_index)
    dice = losses.DiceLoss(mode=mode, from_logits=True, ignore_index=ignore_index)
    return focal, dice


def _check(logits: torch.Tensor, target: torch.Tensor, mode: str, ignore_index: Optional[int]) -> torch.Tensor:
    """Validate shapes and the ignore value; return the target in the layout smp expects."""
    if mode not in LOSS_MODES:
        raise ValueError(f"mode must be one of {', '.join(LOSS_MODES)}, got {mode!r}.")
    if logits.dim() != 4:
        raise ValueError(f"logits must be (N, C, H, W), got shape {tuple(logits.shape)}.")
    n, c, h, w = logits.shape
    if mode == "binary":
        if c != 1:
            raise ValueError(f"binary mode needs logits (N, 1, H, W), got {tuple(logits.shape)}; "
                             "use mode='multiclass' for several output channels.")
        if target.dim() == 3:
            target = target[:, None]
        if tuple(target.shape) != (n, 1, h, w):
            raise ValueError(f"binary target must be (N, 1, H, W) = {(n, 1, h, w)}, got {tuple(target.shape)}.")
        if ignore_index is not None and ignore_index in (0, 1):
            raise ValueError(f"ignore_index {ignore_index} is a real label in binary mode; use e.g. 255.")
        return target
    if c < 2:
        raise ValueError(f"multiclass mode needs logits with at least 2 channels, got {tuple(logits.shape)}; "
                         "use mode='binary' for one output channel.")
    if target.dim() == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if tuple(target.shape) != (n, h, w):
        raise ValueError(f"multiclass target must be (N, H, W) = {(n, h, w)} class indices, "
                         f"got {tuple(target.shape)}.")
    if target.is_floating_point():
        raise ValueError(f"multiclass target must hold integer class indices, got {target.dtype}.")
    if ignore_index is not None and 0 <= ignore_index < c:
        raise ValueError(f"ignore_index {ignore_index} is a real class index (0..{c - 1}); use e.g. 255.")
    return target.long()


def focal_dice_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, focal_weight: float = 1.0,
                    dice_weight: float = 1.0, mode: str = "binary",
                    ignore_index: Optional[int] = None) -> torch.Tensor:
    """``focal_weight * focal + dice_weight * (1 - soft Dice)`` over the pixels that are not ignored.

    Focal loss (Lin et al. 2017) is the mean over the counted pixels of ``-(1 - p_t)^gamma * log(p_t)`` with
    ``p_t = sigmoid(logit)`` for a positive pixel and ``1 - sigmoid(logit)`` for a negative one. In
    multiclass mode smp computes it one-vs-rest per class channel (sigmoid of each logit against
    ``target == class``) and averages over classes.

    Soft Dice is ``2 * sum(p * t) / (sum(p) + sum(t))`` over the whole batch, per class (binary: the
    foreground only; multiclass: every class, from the softmax), averaged over classes; a class absent
    from the counted target pixels adds 0 (its Dice is undefined), so the Dice term of a batch without any
    foreground is 0 and only the focal term penalises false positives there.

    Ignored pixels (``target == ignore_index``, e.g. nodata or outside the area where labels are complete)
    count in neither term: smp drops them from the focal mean and zeroes them in both Dice sums. When a
    batch has no counted pixel at all, smp's focal mean would be NaN (mean of nothing), so the loss is 0
    instead, still attached to the graph so ``backward()`` works.

    Args:
        logits: raw model outputs, ``(N, 1, H, W)`` (binary) or ``(N, C, H, W)`` (multiclass).
        target: ``(N, 1, H, W)`` float 0/1 (binary; ``(N, H, W)`` accepted) or ``(N, H, W)`` long class indices
            (multiclass).
        gamma: focal strength (0 gives binary cross-entropy).
        focal_weight: weight of the focal term.
        dice_weight: weight of the Dice term.
        mode: ``"binary"`` or ``"multiclass"``.
        ignore_index: target value of pixels that must not count (e.g. 255), or None.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: for a bad mode, mismatched shapes, target values out of range (other than
            ``ignore_index``), or an ``ignore_index`` that is a real label.
    """
    target = _check(logits, target, mode, ignore_index)
    upper = 1 if mode == "binary" else logits.shape[1] - 1
    bad = (target < 0) | (target > upper)
    counted = target != ignore_index if ignore_index is not None else torch.ones_like(bad)
    any_bad, any_counted = torch.stack([(bad & counted).any(), counted.any()]).tolist()  # one device sync
    if any_bad:
        raise ValueError(f"the {mode} target holds values outside 0..{upper}"
                         + (f" other than ignore_index {ignore_index}" if ignore_index is not None else "")
                         + "; set ignore_index to the value of pixels that must not count (e.g. 255).")
    if not any_counted:
        return logits.sum() * 0.0
    focal, dice = _terms(mode, float(gamma), ignore_index)
    loss = logits.new_zeros(())
    if focal_weight:
        loss = loss + focal_weight * focal(logits, target)
    if dice_weight:
        loss = loss + dice_weight * dice(logits, target)
    return loss


class FocalDiceLoss(nn.Module):
    """``nn.Module`` form of :func:`focal_dice_loss` (same arguments, stored at construction).

    Example:
        >>> loss_fn = FocalDiceLoss(mode="binary", ignore_index=255)
        >>> loss = loss_fn(model(images), labels.float()[:, None])
    """

    def __init__(self, gamma: float = 2.0, focal_weight: float = 1.0, dice_weight: float = 1.0,
                 mode: str = "binary", ignore_index: Optional[int] = None) -> None:
        super().__init__()
        if mode not in LOSS_MODES:
            raise ValueError(f"mode must be one of {', '.join(LOSS_MODES)}, got {mode!r}.")
        self.gamma = float(gamma)
        self.focal_weight = float(focal_weight)
        self.dice_weight = float(dice_weight)
        self.mode = mode
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss of ``logits`` against ``target`` (shapes as in :func:`focal_dice_loss`)."""
        return focal_dice_loss(logits, target, gamma=self.gamma, focal_weight=self.focal_weight,
                               dice_weight=self.dice_weight, mode=self.mode, ignore_index=self.ignore_index)

    def extra_repr(self) -> str:
        return (f"mode={self.mode!r}, gamma={self.gamma}, focal_weight={self.focal_weight}, "
                f"dice_weight={self.dice_weight}, ignore_index={self.ignore_index}")
