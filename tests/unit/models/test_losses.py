"""Focal + soft Dice loss: hand-computed values, ignore mask, gradients, edge cases."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")

from satseg_plugin.models.losses import FocalDiceLoss, focal_dice_loss

IGNORE = 255


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_binary_focal(logits, target, gamma=2.0):
    """Mean of -(1 - p_t)^gamma log(p_t) over the given pixels (Lin et al. 2017, no alpha)."""
    p = sigmoid(np.asarray(logits, float))
    t = np.asarray(target, float)
    pt = np.where(t == 1, p, 1 - p)
    return float(np.mean(-((1 - pt) ** gamma) * np.log(pt)))


def np_binary_dice_loss(logits, target):
    p = sigmoid(np.asarray(logits, float))
    t = np.asarray(target, float)
    return float(1 - 2 * (p * t).sum() / (p.sum() + t.sum()))


def np_multiclass(logits, target, gamma=2.0):
    """smp's multiclass terms: one-vs-rest sigmoid focal averaged over classes; softmax Dice averaged over
    classes, a class absent from the target adding 0. logits (C, P), target (P,)."""
    logits, target = np.asarray(logits, float), np.asarray(target)
    classes = logits.shape[0]
    focal = np.mean([np_binary_focal(logits[c], target == c, gamma) for c in range(classes)])
    e = np.exp(logits - logits.max(0))
    soft = e / e.sum(0)
    dice = []
    for c in range(classes):
        t = (target == c).astype(float)
        dice.append(0.0 if t.sum() == 0 else 1 - 2 * (soft[c] * t).sum() / (soft[c].sum() + t.sum()))
    return float(focal), float(np.mean(dice))


LOGITS_2x2 = [[2.0, -1.0], [0.0, 3.0]]
TARGET_2x2 = [[1.0, 0.0], [1.0, 0.0]]


def binary_2x2():
    return torch.tensor(LOGITS_2x2)[None, None], torch.tensor(TARGET_2x2)[None, None]


def test_binary_2x2_matches_hand_computation():
    logits, target = binary_2x2()
    focal = np_binary_focal(LOGITS_2x2, TARGET_2x2)
    dice = np_binary_dice_loss(LOGITS_2x2, TARGET_2x2)
    # by hand: p = sigmoid([2, -1, 0, 3]) = [.8808, .2689, .5, .9526]; Dice = 2 * 1.3808 / (2.6023 + 2)
    assert dice == pytest.approx(1 - 2 * (0.880797 + 0.5) / (0.880797 + 0.268941 + 0.5 + 0.952574 + 2), abs=1e-5)
    assert float(focal_dice_loss(logits, target, dice_weight=0)) == pytest.approx(focal, rel=1e-5)
    assert float(focal_dice_loss(logits, target, focal_weight=0)) == pytest.approx(dice, rel=1e-5)
    combined = focal_dice_loss(logits, target, focal_weight=0.7, dice_weight=0.3)
    assert float(combined) == pytest.approx(0.7 * focal + 0.3 * dice, rel=1e-5)
    # gamma = 0 is plain binary cross-entropy
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert float(focal_dice_loss(logits, target, gamma=0.0, dice_weight=0)) == pytest.approx(float(bce), rel=1e-5)


def test_binary_ignored_pixel_matches_hand_computation_without_it():
    logits, target = binary_2x2()
    target[0, 0, 1, 1] = IGNORE  # the (3.0 logit, 0 target) pixel
    kept_logits, kept_target = [2.0, -1.0, 0.0], [1.0, 0.0, 1.0]
    expected = np_binary_focal(kept_logits, kept_target) + np_binary_dice_loss(kept_logits, kept_target)
    assert float(focal_dice_loss(logits, target, ignore_index=IGNORE)) == pytest.approx(expected, rel=1e-5)
    # (N, H, W) binary targets are accepted too
    assert float(focal_dice_loss(logits, target[:, 0], ignore_index=IGNORE)) == pytest.approx(expected, rel=1e-5)


def test_multiclass_matches_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 2, 3)
    target = torch.tensor([[[0, 1, 2], [2, 1, 0]]])  # class 3 absent: its Dice adds 0
    focal, dice = np_multiclass(logits[0].reshape(4, -1).numpy(), target.reshape(-1).numpy())
    got_focal = focal_dice_loss(logits, target, mode="multiclass", dice_weight=0)
    got_dice = focal_dice_loss(logits, target, mode="multiclass", focal_weight=0)
    assert float(got_focal) == pytest.approx(focal, rel=1e-5)
    assert float(got_dice) == pytest.approx(dice, rel=1e-5)


@pytest.mark.parametrize("mode", ["binary", "multiclass"])
def test_ignored_pixels_do_not_change_loss_or_get_gradient(mode):
    torch.manual_seed(1)
    channels = 1 if mode == "binary" else 3
    logits = torch.randn(2, channels, 8, 8)
    if mode == "binary":
        target = (torch.rand(2, 1, 8, 8) > 0.5).float()
        ignored = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
        ignored[:, :, :3] = True
    else:
        target = torch.randint(0, 3, (2, 8, 8))
        ignored = torch.zeros(2, 8, 8, dtype=torch.bool)
        ignored[:, :3] = True
    target[ignored] = IGNORE
    spread = ignored if mode == "binary" else ignored[:, None].expand_as(logits)

    base = focal_dice_loss(logits, target, mode=mode, ignore_index=IGNORE)
    changed_logits = logits.clone()
    changed_logits[spread] = torch.randn(int(spread.sum())) * 10  # anything at ignored pixels
    changed = focal_dice_loss(changed_logits, target, mode=mode, ignore_index=IGNORE)
    assert float(changed) == pytest.approx(float(base), rel=1e-6)

    leaf = logits.clone().requires_grad_(True)
    focal_dice_loss(leaf, target, mode=mode, ignore_index=IGNORE).backward()
    assert torch.all(leaf.grad[spread] == 0)
    assert torch.isfinite(leaf.grad).all() and leaf.grad[~spread].abs().sum() > 0


def test_gradients_flow_through_both_terms():
    logits, target = binary_2x2()
    for weights in ({"dice_weight": 0}, {"focal_weight": 0}, {}):
        leaf = logits.clone().requires_grad_(True)
        focal_dice_loss(leaf, target, **weights).backward()
        assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0


def test_perfect_prediction_gives_near_zero_loss():
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    target[0, 0, 0, 0] = 1.0
    logits = (target * 2 - 1) * 30
    assert float(focal_dice_loss(logits, target, focal_weight=0)) < 1e-6
    assert float(focal_dice_loss(logits, target)) < 1e-6
    classes = torch.randint(0, 3, (2, 8, 8))
    one_hot = torch.nn.functional.one_hot(classes, 3).permute(0, 3, 1, 2).float()
    assert float(focal_dice_loss(one_hot * 60 - 30, classes, mode="multiclass", focal_weight=0)) < 1e-6


def test_all_pixels_ignored_gives_zero_not_nan():
    logits = torch.randn(1, 1, 4, 4, requires_grad=True)
    loss = focal_dice_loss(logits, torch.full((1, 1, 4, 4), float(IGNORE)), ignore_index=IGNORE)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_module_matches_function():
    logits, target = binary_2x2()
    module = FocalDiceLoss(gamma=1.5, focal_weight=2.0, dice_weight=0.5, ignore_index=IGNORE)
    expected = focal_dice_loss(logits, target, gamma=1.5, focal_weight=2.0, dice_weight=0.5, ignore_index=IGNORE)
    assert float(module(logits, target)) == pytest.approx(float(expected))
    assert "ignore_index=255" in repr(module)


def test_bad_arguments_raise_value_errors():
    logits, target = binary_2x2()
    with pytest.raises(ValueError, match="mode"):
        FocalDiceLoss(mode="multilabel")
    with pytest.raises(ValueError, match="binary target must be"):
        focal_dice_loss(logits, target[:, :, :1])
    with pytest.raises(ValueError, match="ignore_index 1 is a real label"):
        focal_dice_loss(logits, target, ignore_index=1)
    with pytest.raises(ValueError, match="outside 0..1.*set ignore_index"):
        focal_dice_loss(logits, torch.full_like(target, float(IGNORE)))
    with pytest.raises(ValueError, match="mode='multiclass'"):
        focal_dice_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="integer class indices"):
        focal_dice_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2), mode="multiclass")
    with pytest.raises(ValueError, match="outside 0..2 other than ignore_index 255"):
        focal_dice_loss(torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), 3), mode="multiclass", ignore_index=IGNORE)
