"""Semi-supervised scene classification (siCluster's first stage): a mean teacher over image patches.

A person labels a sample of patches as urban / rural / uninhabited (soft labels from polygons, see
:func:`.scene_data.soft_labels`); the rest stay unlabelled. A ResNet-18 student learns from the labels
(soft-label cross-entropy) and from every patch through a consistency loss: its softmax must agree with that
of a teacher whose weights are an exponential moving average (EMA) of the student's, each seeing the patch
under a different random augmentation (Tarvainen & Valpola, 2017). The teacher is the model kept: it is the
smoother of the two, and the validation score, measured on a seeded stratified hold-out of labelled patches
every epoch (after its batch-norm statistics are re-measured for its own weights), picks its best epoch.

Faults of the original fixed here: the optimiser covers every parameter (the head too), a starting model is
loaded strictly (a wrong file is an error, never silently ignored), and the split and every random draw are
seeded.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ....core.deps import require
from ....core.errors import InputError
from ....core.fit import (
    BestModel,
    OomBackoff,
    choose_precision,
    ema_model,
    lookahead,
    run_epochs,
    seed_everything,
    split_batches,
    write_log,
)
from ....core.progress import Feedback, NullFeedback, SubFeedback, check_canceled
from ....core.staging import Transaction, stages_outputs
from .config import SceneTrainConfig
from .data import load_patches

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["SceneTrainConfig", "SceneTrainResult", "augment_scenes", "stratified_split", "sigmoid_rampup",
           "pretrain_scene"]

#: Training patches per epoch on which the teacher's batch-norm statistics are measured.
_PRECISE_BN_PATCHES = 1024


@dataclass
class SceneTrainResult:
    """What :func:`pretrain_scene` wrote and found.

    Attributes:
        model_path: the written scene model file.
        log_path: the per-epoch CSV log, if one was asked for.
        class_names: the classes, in output order.
        probabilities: ``(n, C)`` float32 softmax of the kept teacher for every patch (no augmentation).
        predicted: ``(n,)`` int64 argmax of ``probabilities``.
        val_accuracy: accuracy of the kept teacher on the validation patches (NaN without validation).
        best_epoch: the epoch whose teacher was kept (1-based).
        train_indices: positions of the patches trained on (labelled and unlabelled).
        val_indices: positions of the validation patches.
        history: one dict per epoch (the CSV log's rows).
    """

    model_path: str
    log_path: Optional[str]
    class_names: List[str]
    probabilities: np.ndarray
    predicted: np.ndarray
    val_accuracy: float
    best_epoch: int
    train_indices: np.ndarray
    val_indices: np.ndarray
    history: List[Dict[str, Any]] = field(default_factory=list)


def augment_scenes(images: "torch.Tensor", generator: "torch.Generator", radiometric: bool = True,
                   brightness: float = 0.2, contrast: float = 0.2, grey_p: float = 0.1) -> "torch.Tensor":
    """Augment a batch of normalised patches, each sample drawn independently.

    Random horizontal and vertical flips, a rotation by a multiple of 90 degrees (square patches only),
    and with ``radiometric``: contrast scaled by ``1 +- contrast`` around each band's mean, brightness
    shifted by ``+- brightness`` (normalised units, any band count), and with probability ``grey_p`` the
    first three bands replaced by their mean.

    Args:
        images: ``(N, C, H, W)`` float tensor (any device).
        generator: CPU generator every random draw comes from.
        radiometric: also apply the colour augmentations.
        brightness: largest brightness shift.
        contrast: largest relative contrast change.
        grey_p: probability of the to-grey transform.

    Returns:
        A new ``(N, C, H, W)`` tensor.
    """
    torch = require("torch")
    n = images.shape[0]
    draws = torch.rand((n, 6), generator=generator).to(images.device)
    out = images.clone()
    for column, dim in ((0, -1), (1, -2)):
        chosen = draws[:, column] < 0.5
        if chosen.any():
            out[chosen] = out[chosen].flip(dim)
    if out.shape[-1] == out.shape[-2]:
        turns = (draws[:, 2] * 4).long().clamp_(max=3)
        for k in (1, 2, 3):
            chosen = turns == k
            if chosen.any():
                out[chosen] = torch.rot90(out[chosen], k, dims=(-2, -1))
    if radiometric:
        scale = (1 + (2 * draws[:, 3] - 1) * contrast)[:, None, None, None]
        shift = ((2 * draws[:, 4] - 1) * brightness)[:, None, None, None]
        centre = out.mean(dim=(-2, -1), keepdim=True)
        out = (out - centre) * scale + centre + shift
        if out.shape[1] >= 3:
            chosen = draws[:, 5] < grey_p
            if chosen.any():
                grey = out[chosen, :3].mean(dim=1, keepdim=True)
                out[chosen, :3] = grey.expand(-1, 3, -1, -1)
    return out


def sigmoid_rampup(current: float, length: float) -> float:
    """Mean teacher's ramp-up ``exp(-5 (1 - t)^2)`` with ``t = current / length`` clipped to [0, 1]."""
    if length <= 0:
        return 1.0
    t = min(max(current / length, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def stratified_split(classes: np.ndarray, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of labelled samples into training and validation positions.

    Each class gives ``round(fraction * count)`` samples to validation, at least one when it has two or more
    samples and ``fraction > 0``, and always keeps at least one for training.

    Args:
        classes: ``(m,)`` class of each labelled sample.
        fraction: share held out, in ``[0, 1)``.
        seed: seed of the draw.

    Returns:
        ``(train, val)``: sorted positions into ``classes``.
    """
    rng = np.random.default_rng(seed)
    train: List[np.ndarray] = []
    val: List[np.ndarray] = []
    for cls in np.unique(classes):
        members = rng.permutation(np.flatnonzero(classes == cls))
        take = int(round(fraction * len(members)))
        if fraction > 0 and len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        else:
            take = 0
        val.append(members[:take])
        train.append(members[take:])
    return np.sort(np.concatenate(train)).astype(np.int64), np.sort(np.concatenate(val)).astype(np.int64)


@contextmanager
def _batch_statistics(model: "torch.nn.Module") -> Iterator[None]:
    """Run ``model`` with batch statistics in its batch norms without touching their running buffers.

    The teacher sees the batch the way the student does (train-mode normalisation, as in the original mean
    teacher), while its running buffers stay untouched (``update_bn`` re-measures them before evaluation).
    """
    torch = require("torch")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    flags = [m.track_running_stats for m in norms]
    model.train()
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, flag in zip(norms, flags):
            m.track_running_stats = flag
        model.train(was_training)


def _checked(batches: List[np.ndarray], feedback: Feedback) -> Iterator[np.ndarray]:
    """``batches``, with a cancel check before each."""
    for batch in batches:
        check_canceled(feedback)
        yield batch


def _predict(model: "torch.nn.Module", images: np.ndarray, positions: np.ndarray, device: "torch.device",
             batch_size: int, feedback: Feedback) -> np.ndarray:
    """Eval-mode softmax ``(len(positions), C)`` float32 of the patches at ``positions``."""
    torch = require("torch")
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(positions), batch_size):
            check_canceled(feedback)
            x = torch.from_numpy(images[positions[start:start + batch_size]]).to(device)
            out.append(torch.softmax(model(x).float(), dim=1).cpu().numpy())
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out).astype(np.float32)


def _check_labels(labels: Any, n: int, names: List[str]) -> np.ndarray:
    """Validate the ``(n, C)`` soft labels; return them as float64."""
    target = np.asarray(labels, dtype=np.float64)
    if target.shape != (n, len(names)):
        raise InputError(f"labels must have one row per patch and one column per class ({n} x {len(names)}), "
                         f"got shape {target.shape}.", "LABELS")
    if not np.all(np.isfinite(target)) or (target < 0).any():
        raise InputError("labels must be finite fractions of 0 or more (all zeros: unlabelled).", "LABELS")
    labelled = target.sum(axis=1) > 0
    if not labelled.any():
        raise InputError("no patch is labelled: draw urban / rural / uninhabited polygons over some patches "
                         "(their footprints must overlap the polygons).", "LABELS")
    counts = np.bincount(target[labelled].argmax(axis=1), minlength=len(names))
    for name, count in zip(names, counts):
        if count == 0:
            raise InputError(f"class '{name}' has no labelled patch (no patch is mostly '{name}'); label at least "
                             "one patch of every class, or drop the class.", "LABELS")
    return target


@stages_outputs
def pretrain_scene(patch_paths: Sequence[str], labels: Any, class_names: Sequence[str], model_path: str,
                   config: SceneTrainConfig = SceneTrainConfig(), device: str = "auto",
                   feedback: Optional[Feedback] = None, log_path: Optional[str] = None,
                   transaction: Optional[Transaction] = None) -> SceneTrainResult:
    """Train a scene classifier with a mean teacher and write the teacher as a SatSeg ``scene`` model.

    Every epoch visits each training patch (labelled or not) once, in seeded random batches. For a batch:
    the student sees one augmentation and the teacher another; the loss is the soft-label cross-entropy of
    the student on the batch's labelled patches plus ``consistency_weight * ramp-up`` times the mean squared
    difference of the student's and the teacher's softmax over all of the batch (both networks normalise with
    batch statistics, as in the original); one RAdam (+ Lookahead) step updates every student parameter, head
    included; the teacher's parameters then take an EMA step. After the epoch the teacher's batch-norm
    statistics are measured on (up to 1024) training patches ("precise BN", ``torch.optim.swa_utils.update_bn``), it is
    scored on the validation patches (accuracy of its argmax against the labels' argmax) and kept when it is
    the best so far (ties: the lower validation loss, then the later epoch).

    Args:
        patch_paths: the patch files (same size and bands).
        labels: ``(n, C)`` soft labels per patch (fractions, see :func:`.scene_data.soft_labels`); all-zero
            rows are unlabelled. Rows are divided by their sum for the cross-entropy.
        class_names: the C class names (e.g. ``["urban", "rural", "uninhabited"]``).
        model_path: the scene model file to write.
        config: training settings.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        feedback: progress per batch and cancel (checked at every batch).
        log_path: CSV with one row per epoch.
        transaction: stage the outputs into this run's transaction and leave the commit to its owner
            (default: the current run's, else they are moved into place together when this returns).

    Returns:
        The :class:`SceneTrainResult`.

    Raises:
        InputError: bad settings, labels or class names (``LABELS``, ``CLASSES``, ...), unreadable or
            mismatched patches (``PATCH_INDEX``), a starting model with other bands (``INIT_WEIGHTS``).
        CheckpointError: the starting model cannot be loaded or does not fit (strict loading).
        CanceledError: when the user cancels; nothing is written.
    """
    torch = require("torch")
    from ....core.device import describe_device, resolve_device
    from ....core.version import __version__
    from ....models.checkpoint import ModelMetadata, load_checkpoint, model_tensors, save_checkpoint
    from ....models.nets.scene import SCENE_ARCHITECTURE, build_scene_model, scene_model_from_checkpoint

    swa_utils = require("torch.optim.swa_utils")

    feedback = feedback or NullFeedback()
    config.validate()
    names = [str(c) for c in class_names]
    if len(names) < 2 or len(set(names)) != len(names):
        raise InputError(f"give at least two distinct class names, got {names}.", "CLASSES")
    paths = [str(p) for p in patch_paths]
    target = _check_labels(labels, len(paths), names)
    labelled = target.sum(axis=1) > 0
    soft = np.zeros_like(target, dtype=np.float32)
    soft[labelled] = target[labelled] / target[labelled].sum(axis=1, keepdims=True)
    hard = target.argmax(axis=1)

    torch_device = resolve_device(device)
    feedback.info(f"Device: {describe_device(torch_device)}")
    init = load_checkpoint(config.init_weights, kind="scene") if config.init_weights else None
    stack = load_patches(paths, config.bands, SubFeedback(feedback, 0.0, 5.0))
    if init is not None and init.metadata.in_channels != stack.in_channels:
        raise InputError(f"'{config.init_weights}' reads {init.metadata.in_channels} band(s) but the patches have "
                         f"{stack.in_channels}; choose a scene model trained on the same bands.", "INIT_WEIGHTS")
    images = stack.normalized()

    labelled_pos = np.flatnonzero(labelled)
    train_lab, val_lab = stratified_split(hard[labelled_pos], config.val_fraction, config.seed)
    val_idx = labelled_pos[val_lab]
    train_idx = np.setdiff1d(np.arange(len(paths)), val_idx)
    feedback.info(f"{len(paths)} patches: {int(labelled.sum())} labelled ({len(val_idx)} held out for validation), "
                  f"{int((~labelled).sum())} unlabelled; classes "
                  + ", ".join(f"{n}: {c}" for n, c in zip(names, np.bincount(hard[labelled], minlength=len(names)))))
    if len(train_idx) < 2:
        raise InputError("fewer than two patches are left for training; label more patches or lower "
                         "VAL_FRACTION.", "LABELS")

    rng, generator = seed_everything(config.seed)
    if init is not None:
        student = scene_model_from_checkpoint(init, num_classes=len(names))
        feedback.info(f"Started from the weights in {config.init_weights} (loaded strictly).")
        if init.metadata.classes != names:
            kept = "its head is kept" if len(init.metadata.classes) == len(names) else "only its backbone is used"
            feedback.warning(f"the starting model's classes {init.metadata.classes} differ from {names}; {kept}.")
    else:
        student = build_scene_model(len(names), stack.in_channels)
    student.to(torch_device)
    ema = ema_model(student, config.ema_decay)  # ema.module: the teacher, the network kept and written
    # every student parameter, the head included (the original left the head out of the optimiser)
    inner = torch.optim.RAdam(student.parameters(), lr=config.learning_rate)
    optimizer = lookahead(inner, k=5, alpha=0.5) if config.lookahead else inner
    precision = choose_precision(torch_device, feedback=feedback)
    backoff = OomBackoff(config.batch_size, feedback, "patch", "Use smaller patches or DEVICE=cpu.", minimum=2)
    soft_t = torch.from_numpy(soft)
    hard_t = torch.from_numpy(hard)

    def augmented(x: "torch.Tensor") -> "torch.Tensor":
        return augment_scenes(x, generator) if config.augment else x

    # patches whose batch-norm statistics the teacher is evaluated with (a seeded subset of large sets)
    bn_idx = np.sort(rng.permutation(train_idx)[:_PRECISE_BN_PATCHES])
    span = (5.0, 97.0)
    per_epoch = (span[1] - span[0]) / config.epochs
    history: List[Dict[str, Any]] = []
    best = BestModel(ties_to_later=True)

    def train_step(batch: np.ndarray, weight: float) -> Tuple["torch.Tensor", ...]:
        """One student step on ``batch`` and the teacher's EMA step; returns the (device) sums to log."""
        x = torch.from_numpy(images[batch]).to(torch_device)
        with precision.autocast():
            logits = student(augmented(x)).float()
            with torch.no_grad(), _batch_statistics(ema.module):
                teacher_logits = ema(augmented(x)).float()
        # the labelled rows are chosen on the host: a boolean mask on the device would wait for the GPU
        mine = labelled[batch]
        if mine.any():
            rows = torch.from_numpy(np.flatnonzero(mine)).to(torch_device)
            chosen = logits.index_select(0, rows)
            # F.cross_entropy takes class probabilities as targets: the soft labels
            supervised = torch.nn.functional.cross_entropy(chosen, soft_t[batch[mine]].to(torch_device))
            correct = (chosen.argmax(1) == hard_t[batch[mine]].to(torch_device)).sum()
        else:
            supervised = logits.sum() * 0.0
            correct = torch.zeros((), dtype=torch.long, device=torch_device)
        consistency = torch.nn.functional.mse_loss(torch.softmax(logits, dim=1), torch.softmax(teacher_logits, dim=1))
        loss = supervised + weight * consistency
        precision.step(loss, optimizer)
        ema.update_parameters(student)
        return torch.stack([loss.detach(), supervised.detach(), consistency.detach()]), correct

    def epoch_step(epoch: int) -> None:
        started = time.perf_counter()
        student.train()
        sums = torch.zeros(3, dtype=torch.float64, device=torch_device)  # read back once per epoch
        correct = torch.zeros((), dtype=torch.long, device=torch_device)
        seen = steps = 0
        weight = 0.0
        batches = split_batches(rng.permutation(train_idx), backoff.batch_size)
        for i, batch in enumerate(batches):
            check_canceled(feedback)
            weight = config.consistency_weight * sigmoid_rampup(epoch - 1 + i / len(batches), config.rampup_epochs)
            for losses, right in backoff.run_batch(batch, lambda piece: train_step(piece, weight)):
                sums += losses.double()
                correct += right
                steps += 1
            seen += int(labelled[batch].sum())
            feedback.set_progress(span[0] + per_epoch * (epoch - 1 + (i + 1) / len(batches)))

        # "precise BN" (Wu & Johnson): the running statistics a network collects while it trains trail its
        # weights, and an EMA teacher's weights differ from the student's anyway; evaluated with such statistics
        # a teacher that classifies perfectly with batch statistics can score at chance level after a short run.
        # update_bn re-measures them as a cumulative average over the patches at bn_idx.
        swa_utils.update_bn((torch.from_numpy(images[b]) for b in _checked(split_batches(bn_idx, config.batch_size),
                                                                           feedback)), ema.module, torch_device)
        val_accuracy, val_loss = float("nan"), float("nan")
        if len(val_idx):
            probs = _predict(ema.module, images, val_idx, torch_device, config.batch_size, feedback)
            val_accuracy = float((probs.argmax(axis=1) == hard[val_idx]).mean())
            val_loss = float(-(soft[val_idx] * np.log(np.clip(probs, 1e-12, None))).sum(axis=1).mean())
        key = (0.0, 0.0) if not len(val_idx) else (val_accuracy, -val_loss)
        improved = best.offer(key, ema.module, epoch, accuracy=val_accuracy)
        mean = (sums / steps).tolist()
        row = {"epoch": epoch, "loss": mean[0], "supervised_loss": mean[1], "consistency_loss": mean[2],
               "consistency_weight": weight, "train_accuracy": int(correct) / seen if seen else float("nan"),
               "val_accuracy": val_accuracy, "val_loss": val_loss, "best": int(improved),
               "seconds": round(time.perf_counter() - started, 3)}
        history.append(row)
        feedback.info(f"Epoch {epoch}/{config.epochs}: loss {row['loss']:.4f} (supervised "
                      f"{row['supervised_loss']:.4f}, consistency {row['consistency_loss']:.4f} x {weight:.2f}), "
                      f"train accuracy {row['train_accuracy']:.3f}, validation accuracy {val_accuracy:.3f}")

    run_epochs(config.epochs, epoch_step, feedback)
    teacher = ema.module
    best.restore(teacher)
    best_epoch, best_accuracy = best.epoch, best.info["accuracy"]
    probabilities = _predict(teacher, images, np.arange(len(paths)), torch_device, config.batch_size, feedback)
    predicted = probabilities.argmax(axis=1).astype(np.int64)
    check_canceled(feedback)
    counts = np.bincount(hard[labelled], minlength=len(names))
    metadata = ModelMetadata(
        kind="scene", architecture=SCENE_ARCHITECTURE, encoder="torchvision", in_channels=stack.in_channels,
        classes=names, bands=list(stack.bands), mean=[float(v) for v in stack.mean],
        std=[float(v) for v in stack.std], patch_size=stack.height, pixel_size=stack.pixel_size,
        crs_wkt=stack.crs_wkt, crs_units=stack.crs_units,
        metrics={"val_accuracy": None if math.isnan(best_accuracy) else best_accuracy, "best_epoch": best_epoch,
                 "epochs": config.epochs, "labelled": int(labelled.sum()), "unlabelled": int((~labelled).sum()),
                 "val_patches": int(len(val_idx)), "train_patches": int(len(train_idx))},
        extra={"train_config": asdict(config), "patch_width": stack.width, "patch_height": stack.height,
               "class_counts": {n: int(c) for n, c in zip(names, counts)}, "patch_count": len(paths),
               "teacher": "mean-teacher EMA", "satseg_version": __version__})
    save_checkpoint(model_path, model_tensors(teacher.cpu()), metadata, parameter="OUTPUT_MODEL")
    written_log = write_log(log_path, history)
    feedback.set_progress(100.0)
    feedback.info(f"Kept the teacher of epoch {best_epoch} (validation accuracy {best_accuracy:.3f}); model "
                  f"written to {model_path}.")
    return SceneTrainResult(model_path=os.path.abspath(model_path), log_path=written_log, class_names=names,
                            probabilities=probabilities, predicted=predicted, val_accuracy=best_accuracy,
                            best_epoch=best_epoch, train_indices=train_idx.astype(np.int64),
                            val_indices=val_idx.astype(np.int64), history=history)
