"""The window autoencoder of the population communities: its input channels, its training and the pixel codes.

A frame's channels (population, flow u and v, row and column; :func:`normalise_channels`) are cut into
``window x window`` windows around pixels (:func:`pad_channels`, :func:`windows_at`); a
:class:`~..models.nets.window_ae.WindowAE` learns to reconstruct the population and flow channels of windows
around random populated pixels (:func:`train_window_ae`), and the code of the window centred on a pixel is
that pixel's feature vector (:func:`encode_pixels`). :mod:`.communities` clusters the codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Optional, Protocol, Tuple

import numpy as np

from ...core.deps import require
from ...core.errors import InputError
from ...core.fit import OomBackoff, choose_precision, seed_everything
from ...core.progress import Feedback, NullFeedback, track

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ...models.nets.window_ae import WindowAE

__all__ = ["CHANNELS", "AutoencoderSettings", "FrameChannels", "TrainedWindowAE", "normalise_channels",
           "pad_channels", "windows_at", "train_window_ae", "encode_pixels"]

#: The channels of a frame stack, in order; the first three are reconstructed by the autoencoder.
CHANNELS = ("population", "u", "v", "row", "column")

#: Channels the autoencoder reconstructs (population, u, v); row and column are inputs only.
_RECONSTRUCTED = 3


class AutoencoderSettings(Protocol):
    """The settings :func:`train_window_ae` reads (:class:`.communities.CommunityConfig` has them all)."""

    window: int
    latent: int
    hidden: Tuple[int, ...]
    epochs: int
    centres_per_epoch: int
    batch_size: int
    learning_rate: float
    holdout: int
    seed: int


@dataclass
class FrameChannels:
    """A frame's normalised channel stack.

    Attributes:
        channels: ``(5, H, W)`` float32 in ``[0, 1]``: population, u, v, row, column (see :data:`CHANNELS`);
            population, u and v are 0 on nodata pixels.
        valid: ``(H, W)`` bool, True where the population is finite.
        low, high: ``(3,)`` clip bounds (raw units) of population, u and v; a channel is all 0 when they meet.
    """

    channels: np.ndarray
    valid: np.ndarray
    low: np.ndarray
    high: np.ndarray


def normalise_channels(population: np.ndarray, u: np.ndarray, v: np.ndarray,
                       clip_quantile: float = 0.999) -> FrameChannels:
    """Clip and min-max normalise one frame's channels, on its own valid pixels.

    Population, u and v are clipped to their ``[1 - q, q]`` quantiles over the valid pixels and scaled to
    ``[0, 1]``; nodata pixels become 0. Flow that is NaN on a valid pixel (the next frame is nodata there)
    counts as no motion (0 pixels/frame) before scaling. Row and column become ``row / (H - 1)`` and
    ``column / (W - 1)``.

    Args:
        population: ``(H, W)`` population counts, NaN = nodata.
        u, v: ``(H, W)`` flow in pixels/frame.
        clip_quantile: ``q`` (1.0: no clipping).

    Returns:
        The :class:`FrameChannels`.
    """
    pop = np.asarray(population, dtype=np.float32)
    height, width = pop.shape
    valid = np.isfinite(pop)
    channels = np.zeros((len(CHANNELS), height, width), np.float32)
    low, high = np.zeros(_RECONSTRUCTED), np.zeros(_RECONSTRUCTED)
    for index, raw in enumerate((pop, u, v)):
        values = np.asarray(raw, dtype=np.float32)[valid].astype(np.float64)
        values[~np.isfinite(values)] = 0.0
        if values.size == 0:
            continue
        if clip_quantile < 1.0:
            lo, hi = np.quantile(values, [1.0 - clip_quantile, clip_quantile])
        else:
            lo, hi = values.min(), values.max()
        low[index], high[index] = lo, hi
        if hi > lo:
            channels[index][valid] = ((np.clip(values, lo, hi) - lo) / (hi - lo)).astype(np.float32)
    channels[3] = (np.arange(height, dtype=np.float32) / max(height - 1, 1))[:, None]
    channels[4] = (np.arange(width, dtype=np.float32) / max(width - 1, 1))[None, :]
    return FrameChannels(channels=channels, valid=valid, low=low, high=high)


def pad_channels(channels: np.ndarray, window: int) -> np.ndarray:
    """Pad ``(C, H, W)`` channels by ``window // 2`` on each side, by reflection (the edge is not repeated)."""
    r = window // 2
    return np.pad(channels, ((0, 0), (r, r), (r, r)), mode="reflect")


def windows_at(padded: np.ndarray, rows: np.ndarray, cols: np.ndarray, window: int) -> np.ndarray:
    """Windows centred on pixels ``(rows, cols)`` of the unpadded frame.

    Args:
        padded: ``(C, H + 2r, W + 2r)`` output of :func:`pad_channels` (``r = window // 2``).
        rows, cols: ``(N,)`` pixel indices in the unpadded frame.
        window: window side.

    Returns:
        ``(N, C, window, window)`` float32.
    """
    offsets = np.arange(window)
    r_index = np.asarray(rows)[:, None, None] + offsets[None, :, None]
    c_index = np.asarray(cols)[:, None, None] + offsets[None, None, :]
    return np.ascontiguousarray(padded[:, r_index, c_index].transpose(1, 0, 2, 3))


@dataclass
class TrainedWindowAE:
    """A trained autoencoder and how well it reconstructs held-out windows.

    Attributes:
        model: the trained :class:`~..models.window_ae.WindowAE` (in eval mode).
        mse: mean over held-out windows of their reconstruction MSE (population, u, v; normalised units).
        mse_std: standard deviation of the per-window MSE over the held-out windows.
        baseline_mse: MSE of predicting every held-out window by their mean window (what the autoencoder
            must beat to have learned anything).
        holdout: number of held-out windows (0 when the frame was too small to hold any out: the MSE is
            then measured on training centres).
        losses: mean training loss of each epoch.
    """

    model: "WindowAE"
    mse: float
    mse_std: float
    baseline_mse: float
    holdout: int
    losses: List[float] = field(default_factory=list)


def train_window_ae(channels: np.ndarray, centres: np.ndarray, config: AutoencoderSettings,
                    device: Optional["torch.device"] = None, feedback: Optional[Feedback] = None) -> TrainedWindowAE:
    """Train a WindowAE on windows around random pixels of ``centres``.

    ``config.holdout`` centres (at most a fifth of them) are set aside first; each epoch then draws
    ``config.centres_per_epoch`` fresh centres (with replacement) from the rest, in batches of
    ``config.batch_size``. The loss is the MSE of the population, u and v channels of the window.
    Seeded with ``config.seed`` (numpy Generator for the centres, ``torch.manual_seed`` for the weights).

    Args:
        channels: ``(5, H, W)`` normalised channels (:func:`normalise_channels`).
        centres: ``(H, W)`` bool, the pixels windows may be centred on (at least one).
        config: the settings.
        device: torch device (None: the CPU).
        feedback: progress (0..100 over the epochs) and cancel, checked every epoch.

    Returns:
        The :class:`TrainedWindowAE`.

    Raises:
        InputError: when ``centres`` holds no pixel.
        CanceledError: when the user cancels.
    """
    torch = require("torch")
    from ...models.nets.window_ae import WindowAE  # lazy: torch loads only when training

    feedback = feedback or NullFeedback()
    device = device or torch.device("cpu")
    pool = np.flatnonzero(np.asarray(centres, bool))
    if pool.size == 0:
        raise InputError("no pixel to train the autoencoder on: the frame has no populated pixel.", "FRAMES")
    width, window = channels.shape[2], config.window
    rng, _ = seed_everything(config.seed)
    held = min(config.holdout, pool.size // 5)
    order = rng.permutation(pool.size)
    hold, train = (pool[order[:held]], pool[order[held:]]) if held else (pool, pool)
    padded = pad_channels(channels, window)

    def batch(flat: np.ndarray) -> "torch.Tensor":
        return torch.from_numpy(windows_at(padded, flat // width, flat % width, window)).to(device)

    model = WindowAE(window, len(CHANNELS), _RECONSTRUCTED, config.latent, config.hidden).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    # float32 even on a GPU: autocast costs more than it saves on layers a few hundred wide
    precision = choose_precision(device, amp=False)
    backoff = OomBackoff(config.batch_size, feedback, "window", "Lower WINDOW or use DEVICE=cpu.")
    losses: List[float] = []
    model.train()
    for _epoch in track(range(config.epochs), feedback):
        windows = batch(train[rng.integers(0, train.size, config.centres_per_epoch)])  # one gather per epoch
        total = torch.zeros((), dtype=torch.float64, device=device)  # read back once per epoch
        start = 0
        while start < windows.shape[0]:
            def step(size: int, first: int = start) -> Tuple["torch.Tensor", int]:
                x = windows[first:first + size]
                loss = torch.nn.functional.mse_loss(model(x), x[:, :_RECONSTRUCTED])
                precision.step(loss, optimiser)
                return loss.detach().double() * x.shape[0], x.shape[0]

            weighted, count = backoff.run(step)
            total += weighted
            start += count
        losses.append(float(total) / windows.shape[0])
    model.eval()
    per_window, targets = [], []
    with torch.no_grad():
        for start in range(0, hold.size, 4096):
            x = batch(hold[start:start + 4096])
            target = x[:, :_RECONSTRUCTED]
            per_window.append(((model(x) - target) ** 2).flatten(1).mean(dim=1).cpu().numpy())
            targets.append(target.flatten(1).cpu().numpy().astype(np.float64))
    errors = np.concatenate(per_window).astype(np.float64)
    stacked = np.concatenate(targets)
    baseline = float(((stacked - stacked.mean(axis=0)) ** 2).mean())
    return TrainedWindowAE(model=model, mse=float(errors.mean()), mse_std=float(errors.std()), baseline_mse=baseline,
                           holdout=int(held), losses=losses)


def encode_pixels(model: "WindowAE", channels: np.ndarray, pixels: np.ndarray, device: Optional["torch.device"] = None,
                  tile_pixels: int = 65536, feedback: Optional[Feedback] = None) -> np.ndarray:
    """Codes of the windows centred on the chosen pixels, one strip of rows at a time.

    Each strip of ``max(1, tile_pixels // W)`` rows is cut from the reflection-padded stack and turned into
    windows with ``torch.nn.functional.unfold``, so at most one strip's windows exist at once (the windows of a
    whole 1796 x 1105 frame would take 2 GB).

    Args:
        model: a trained WindowAE.
        channels: ``(C, H, W)`` normalised channels.
        pixels: ``(H, W)`` bool, the pixels to encode.
        device: torch device (None: where the model's weights are).
        tile_pixels: pixels per strip (memory: ``C * window^2 * 4`` bytes per pixel).
        feedback: progress (0..100 over the strips) and cancel, checked every strip.

    Returns:
        ``(n, D)`` float32 codes of the ``n`` chosen pixels, in row-major order (``np.flatnonzero(pixels)``).

    Raises:
        CanceledError: when the user cancels.
    """
    torch = require("torch")
    feedback = feedback or NullFeedback()
    device = device or next(model.parameters()).device
    window = model.window
    height, width = pixels.shape
    padded = pad_channels(channels, window)
    strip = max(1, int(tile_pixels) // width)
    starts = range(0, height, strip)
    out = np.empty((int(np.count_nonzero(pixels)), model.latent), np.float32)
    done = 0
    model.eval()
    with torch.no_grad():
        for top in track(starts, feedback):
            bottom = min(top + strip, height)
            chosen = np.flatnonzero(pixels[top:bottom])
            if chosen.size == 0:
                continue
            block = torch.from_numpy(padded[:, top:bottom + window - 1]).to(device)
            # (1, C * w * w, rows * W): column j is the window of pixel j of the strip, flattened as (C, w, w)
            columns = torch.nn.functional.unfold(block[None], kernel_size=window)[0]
            x = columns[:, torch.as_tensor(chosen, device=device)].T.reshape(-1, channels.shape[0], window, window)
            out[done:done + chosen.size] = model.encode(x).cpu().numpy()
            done += chosen.size
    return out
