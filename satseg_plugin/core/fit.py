"""The training-loop helpers SatSeg's five trainers share; each trainer keeps only its model, loss and sampling.

- :func:`seed_everything`: python, numpy and torch (CPU and every CUDA device) seeded at once, plus the seeded
  numpy and CPU torch generators a trainer draws from.
- :func:`choose_precision` / :class:`Precision`: mixed precision on CUDA (bfloat16 autocast where the GPU has
  bfloat16 units, else float16 with a ``torch.amp.GradScaler``), full precision on the CPU.
- :class:`OomBackoff`: the batch size, halved after each CUDA out-of-memory error and the batch retried.
- :class:`BestModel` and :func:`run_epochs`: the epoch loop with early stopping and cancel-keeps-best.
- :func:`write_log`: the per-epoch CSV log (staged, see :mod:`.staging`); :mod:`.plots` draws the curves.
- :func:`ema_model` and :func:`lookahead`: torch's ``AveragedModel`` and timm's ``Lookahead`` set up the way
  mean teacher and Lookahead's authors start them.

Random draws that end up in tensors on a GPU are made on the CPU and copied over: the same seed then gives the
same draws on every device, and a CPU ``torch.Generator`` never meets a CUDA op (which fails with "Expected a
'cuda' device type for generator but found 'cpu'").

torch and timm are imported lazily, inside the functions, like everywhere in the engine.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar

import numpy as np

from .deps import require
from .device import shrink_batch_after_oom
from .errors import CanceledError
from .progress import Feedback
from .staging import write_csv_rows

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["seed_everything", "split_batches", "Precision", "choose_precision", "OomBackoff", "BestModel",
           "EpochRun", "run_epochs", "FittedSchedule", "write_log", "ema_model", "lookahead"]

T = TypeVar("T")


def seed_everything(seed: int) -> Tuple[np.random.Generator, "torch.Generator"]:
    """Seed python's ``random``, numpy's global generator and torch (the CPU and every CUDA device).

    Args:
        seed: the seed.

    Returns:
        ``(rng, generator)``: a numpy ``Generator`` and a CPU ``torch.Generator``, both seeded with ``seed``, for
        the trainer's own draws (crops, batches, augmentations).
    """
    torch = require("torch")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds the CUDA generators of every device too
    return np.random.default_rng(seed), torch.Generator().manual_seed(seed)


def split_batches(order: np.ndarray, size: int) -> List[np.ndarray]:
    """Split ``order`` into batches of ``size``; a last batch of one joins the previous one (batch norm needs
    two samples to train on batch statistics)."""
    batches = [order[i:i + size] for i in range(0, len(order), size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        last = batches.pop()
        batches[-1] = np.concatenate([batches[-1], last])
    return batches


@dataclass(frozen=True)
class Precision:
    """How a training step computes: the autocast type and, for float16, the gradient scaler.

    Attributes:
        device_type: ``"cuda"`` or ``"cpu"``.
        dtype: the autocast type (None: full float32 precision, no autocast).
        scaler: a ``torch.amp.GradScaler`` with float16 (its gradients would underflow without one).
    """

    device_type: str
    dtype: Optional["torch.dtype"] = None
    scaler: Any = None

    @property
    def name(self) -> str:
        """``float32``, ``bfloat16 autocast`` or ``float16 autocast with gradient scaling``, for the log."""
        if self.dtype is None:
            return "float32"
        return str(self.dtype).replace("torch.", "") + " autocast" + (" with gradient scaling" if self.scaler else "")

    def autocast(self) -> ContextManager[Any]:
        """The context the forward pass runs in (no autocast in full precision)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return require("torch").autocast(device_type=self.device_type, dtype=self.dtype)

    def step(self, loss: "torch.Tensor", optimizer: Any) -> None:
        """Clear the gradients, back-propagate ``loss`` and step ``optimizer``.

        With float16 the loss is scaled before the backward pass; the scaler unscales the gradients, skips the
        step when they overflowed, and adapts the scale.
        """
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def choose_precision(device: "torch.device", amp: bool = True, feedback: Optional[Feedback] = None,
                     training: bool = True) -> Precision:
    """The precision of training on ``device``.

    On CUDA with ``amp``: bfloat16 autocast on GPUs with bfloat16 units (compute capability 8.0, Ampere, and
    later; the capability is asked for directly because ``torch.cuda.is_bf16_supported`` also says yes for
    slow emulated bfloat16), else float16 autocast with a ``GradScaler``. On the CPU, or without ``amp``:
    float32 (autocast on the CPU is slower than float32 for these networks).

    Args:
        device: the training device.
        amp: allow mixed precision.
        feedback: where mixed precision is announced (``Mixed precision: bfloat16 autocast.``).
        training: float16 gets a ``GradScaler`` (inference needs none).
    """
    torch = require("torch")
    if not amp or device.type != "cuda":
        return Precision(device.type)
    if torch.cuda.get_device_capability(device) >= (8, 0):
        chosen = Precision("cuda", torch.bfloat16)
    else:
        chosen = Precision("cuda", torch.float16, torch.amp.GradScaler("cuda") if training else None)
    if feedback is not None:
        feedback.info(f"Mixed precision: {chosen.name}.")
    return chosen


class OomBackoff:
    """A batch size that halves after each CUDA out-of-memory error, and the retry of the failed batch.

    Args:
        batch_size: the batch size to start with.
        feedback: where each retry is announced (a warning).
        unit: what a batch holds, for the messages (``"crop"``, ``"patch"``).
        advice: what the user can change when even ``minimum`` items do not fit.
        minimum: the smallest usable batch.
    """

    def __init__(self, batch_size: int, feedback: Feedback, unit: str, advice: str, minimum: int = 1) -> None:
        self.batch_size, self.feedback, self.unit, self.advice = int(batch_size), feedback, unit, advice
        self.minimum = int(minimum)

    def _shrink(self, failed: int) -> None:
        self.batch_size = shrink_batch_after_oom(min(self.batch_size, failed), self.feedback, self.unit,
                                                 self.advice, self.minimum)

    def run(self, step: Callable[[int], T]) -> T:
        """``step(batch_size)``, called again with half the batch size after each CUDA out-of-memory error.

        Raises:
            DeviceError: when a batch of ``minimum`` items does not fit.
        """
        torch = require("torch")
        while True:
            try:
                return step(self.batch_size)
            except torch.cuda.OutOfMemoryError:
                pass  # shrink outside the except block: its traceback still holds the failed batch's tensors
            self._shrink(self.batch_size)

    def run_batch(self, batch: np.ndarray, step: Callable[[np.ndarray], T]) -> List[T]:
        """``step(batch)``; after a CUDA out-of-memory error, ``step`` on pieces of the halved batch size.

        Args:
            batch: the positions of one batch (split with :func:`split_batches` when it does not fit).
            step: trains on the positions it is given.

        Returns:
            The results of ``step``: one, or one per piece after an out-of-memory error.
        """
        torch = require("torch")
        results: List[T] = []
        pending = [batch]
        while pending:
            piece = pending.pop(0)
            parts = split_batches(piece, self.batch_size)
            if len(parts) > 1:  # cut at an earlier, larger batch size
                pending = parts + pending
                continue
            try:
                results.append(step(piece))
                continue
            except torch.cuda.OutOfMemoryError:
                pass
            self._shrink(len(piece))
            pending.insert(0, piece)
        return results


class BestModel:
    """The best weights so far (copied to the CPU), the epoch that made them and its score.

    Args:
        ties_to_later: an equal score replaces the kept weights (the later epoch wins); otherwise only a higher
            score does.
    """

    def __init__(self, ties_to_later: bool = False) -> None:
        self.ties_to_later = ties_to_later
        self.score: Any = None
        self.epoch = 0
        self.state: Optional[Dict[str, "torch.Tensor"]] = None
        self.info: Dict[str, Any] = {}

    def offer(self, score: Any, model: "torch.nn.Module", epoch: int, **info: Any) -> bool:
        """Keep ``model``'s weights when ``score`` (a number or a tuple, higher is better) beats the kept one.

        Args:
            score: the epoch's score.
            model: the network whose ``state_dict`` is copied.
            epoch: the 1-based epoch.
            **info: anything to remember with the weights (e.g. the tuned threshold).

        Returns:
            True when the weights were kept.
        """
        better = self.score is None or score > self.score or (self.ties_to_later and score == self.score)
        if better:
            self.score, self.epoch, self.info = score, epoch, dict(info)
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return better

    def restore(self, model: "torch.nn.Module") -> None:
        """Load the kept weights into ``model`` (strictly)."""
        if self.state is None:
            raise RuntimeError("no weights were kept: offer() was never called")
        model.load_state_dict(self.state)


@dataclass
class EpochRun:
    """How :func:`run_epochs` ended.

    Attributes:
        epochs_run: epochs completed.
        canceled: the user canceled and the best weights so far were kept.
        stopped_early: ``patience`` epochs passed without a better score.
    """

    epochs_run: int = 0
    canceled: bool = False
    stopped_early: bool = False


def run_epochs(epochs: int, epoch: Callable[[int], None], feedback: Feedback, best: Optional[BestModel] = None,
               patience: Optional[int] = None, metric: str = "validation score",
               keep_best_on_cancel: bool = False, stop: Optional[Callable[[int], Optional[str]]] = None) -> EpochRun:
    """Call ``epoch(1) .. epoch(epochs)``, stopping early or on cancel.

    Args:
        epochs: the most epochs.
        epoch: trains and evaluates one epoch (offering its model to ``best``); checks cancel itself.
        feedback: where early stops and kept models are announced.
        best: the kept weights (needed for ``patience`` and ``keep_best_on_cancel``).
        patience: stop after this many epochs without better kept weights (None: never).
        metric: what ``best`` scores, for the messages (``"validation Dice"``).
        keep_best_on_cancel: on cancel after weights were kept, return (``canceled``) instead of raising, so
            the caller saves the best model so far.
        stop: called with the epoch number after each epoch; a returned message ends the run early (it is logged
            and ``stopped_early`` is set), e.g. a schedule that ran out of time or a smoothed patience rule.

    Raises:
        CanceledError: on cancel, unless the best weights are kept.
    """
    run = EpochRun()
    since_best = 0
    try:
        for number in range(1, epochs + 1):
            epoch(number)
            run.epochs_run = number
            reason = stop(number) if stop is not None else None
            if reason:
                feedback.info(reason)
                run.stopped_early = True
                break
            if best is None or patience is None:
                continue
            since_best = 0 if best.epoch == number else since_best + 1
            if since_best >= patience:
                feedback.info(f"Early stop: no better {metric} for {patience} epochs.")
                run.stopped_early = True
                break
    except CanceledError:
        if not keep_best_on_cancel or best is None or best.state is None:
            raise
        run.canceled = True
        score = f" {best.score:.4f}" if isinstance(best.score, float) else ""
        feedback.warning(f"Canceled during epoch {run.epochs_run + 1}: keeping the best model so far "
                         f"(epoch {best.epoch}, {metric}{score}).")
    return run


class FittedSchedule:
    """The learning-rate factor per optimiser step: warm-up then cosine decay, or steps; fitted to a time limit.

    torch's ``CosineAnnealingLR`` and ``OneCycleLR`` fix the schedule's length up front. With a wall-time limit the
    length is only known once the first epochs have been timed, so this is a ``LambdaLR`` over a length that
    :meth:`fit_time` may shorten (never lengthen: the learning rate never climbs back), and the run ends with the
    learning rate annealed instead of being cut in the middle of the schedule.

    Args:
        optimizer: the optimiser whose learning rates are scaled.
        total_steps: the schedule's length in optimiser steps.
        kind: ``cosine`` (linear warm-up over ``warmup`` of the steps, then cosine to zero) or ``step`` (times
            ``gamma`` every ``step_every`` steps).
        warmup: share of the steps spent warming up (``cosine``).
        step_every, gamma: the ``step`` schedule.
        max_seconds: wall-time limit of the run (0: none).
    """

    def __init__(self, optimizer: Any, total_steps: int, kind: str = "cosine", warmup: float = 0.05,
                 step_every: int = 1, gamma: float = 0.1, max_seconds: float = 0.0) -> None:
        lr_scheduler = require("torch.optim.lr_scheduler")
        self.total = max(1, int(total_steps))
        self.kind, self.gamma, self.step_every = kind, gamma, max(1, int(step_every))
        self.warmup = max(1, int(round(warmup * self.total))) if kind == "cosine" else 0
        self.max_seconds = float(max_seconds)
        self.steps = 0
        self.scheduler = lr_scheduler.LambdaLR(optimizer, self.factor)

    def factor(self, step: int) -> float:
        """The learning-rate factor at optimiser step ``step`` (0-based)."""
        if self.kind == "step":
            return self.gamma ** (step // self.step_every)
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def step(self) -> None:
        """Advance by one optimiser step."""
        self.steps += 1
        self.scheduler.step()

    @property
    def finished(self) -> bool:
        """Every step of the schedule has been taken."""
        return self.steps >= self.total

    def fit_time(self, elapsed: float) -> Optional[int]:
        """Shorten the schedule so that it ends within the time limit, at the pace of the steps so far.

        Args:
            elapsed: seconds since the first step, everything included (validation too).

        Returns:
            The new length when it was shortened, else None.
        """
        if not self.max_seconds or not self.steps:
            return None
        fits = int(self.max_seconds / (elapsed / self.steps))
        if fits >= self.total:
            return None
        self.total = max(self.steps, fits)
        return self.total


def write_log(path: Optional[str], rows: Sequence[Mapping[str, Any]], parameter: str = "OUTPUT_LOG") -> Optional[str]:
    """Write the per-epoch rows as a CSV file (staged); None when no path was asked for or no epoch ran."""
    return write_csv_rows(path, rows, parameter) if path and rows else None


@dataclass
class _WarmedDecay:
    """``multi_avg_fn`` of :func:`ema_model`: the EMA with mean teacher's warm-up of the decay.

    The update count is kept here, on the host: ``AveragedModel``'s own count is a tensor, and reading it on a
    GPU would wait for the device at every step.
    """

    decay: float
    updates: Any = field(default_factory=lambda: itertools.count(1))

    def __call__(self, averaged: List["torch.Tensor"], current: List["torch.Tensor"], n_averaged: Any) -> None:
        swa_utils = require("torch.optim.swa_utils")
        step = next(self.updates)
        swa_utils.get_ema_multi_avg_fn(min(self.decay, 1.0 - 1.0 / (step + 1)))(averaged, current, n_averaged)


def ema_model(model: "torch.nn.Module", decay: float) -> "torch.nn.Module":
    """An exponential moving average of ``model``'s parameters (torch's ``AveragedModel``).

    After the ``n``-th ``update_parameters(model)``: ``ema = d * ema + (1 - d) * model`` with
    ``d = min(decay, 1 - 1 / (n + 1))`` (mean teacher's warm-up: the first averages are plain means; the first
    update averages with the starting weights, not a copy of the model). Buffers are not averaged: they are
    copied from ``model`` at each update (re-measure batch-norm statistics with ``update_bn`` before evaluating).
    The average lives on ``model``'s device; its ``n_averaged`` count stays on the CPU (do not move the wrapper,
    move ``model`` before), so updates never read a GPU tensor back.

    Args:
        model: the trained network (the average starts as a copy of it).
        decay: the EMA decay in ``[0, 1)``.

    Returns:
        The ``AveragedModel``; ``.module`` is the averaged network, with gradients off.
    """
    swa_utils = require("torch.optim.swa_utils")
    averaged = swa_utils.AveragedModel(model, multi_avg_fn=_WarmedDecay(float(decay)), use_buffers=False)
    averaged.update_parameters(model)  # update 0 copies (the weights are equal): update 1 is the first average
    averaged.module.requires_grad_(False)
    return averaged


def lookahead(optimizer: "torch.optim.Optimizer", k: int = 5, alpha: float = 0.5) -> "torch.optim.Optimizer":
    """timm's ``Lookahead`` (Zhang et al., 2019) around ``optimizer``, slow weights starting at the initial ones.

    Every ``k`` steps of ``optimizer`` the slow weights move ``alpha`` of the way to the fast ones and the fast
    ones restart there. timm creates each slow copy at the first slow update, from the fast weights of that
    moment, which makes its first slow update a no-op; the paper starts the slow weights at the initial weights.
    A one-shot hook after the inner optimiser's first step (which creates its own state first: Adam and RAdam
    only do that while a parameter has no state) stores the initial weights as timm's slow copies.

    Args:
        optimizer: the inner optimiser.
        k: fast steps per slow update (at least 1).
        alpha: slow step size in ``[0, 1]``.

    Raises:
        ValueError: on a bad ``k`` or ``alpha`` (from timm).
    """
    timm_optim = require("timm.optim")
    wrapped = timm_optim.Lookahead(optimizer, alpha=alpha, k=k)
    start = [(p, p.detach().clone()) for group in optimizer.param_groups for p in group["params"]]

    def anchor(inner: Any, _args: Any, _kwargs: Any) -> None:
        for param, initial in start:
            if param.grad is not None:  # the parameters timm updates (it skips those without a gradient)
                inner.state[param].setdefault("lookahead_slow_buff", initial)
        start.clear()
        handle.remove()

    handle = optimizer.register_step_post_hook(anchor)
    return wrapped
