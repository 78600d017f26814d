"""Training augmentations for overhead imagery, applied identically to image and label tensors.

Overhead scenes have no "up": every crop is turned into one of the 8 symmetries of the square (a rotation
by a multiple of 90 degrees, then maybe a mirror), which is exact (no resampling, no filled corners). On top
of that, some crops get a small arbitrary rotation and a scale change (ground sampling distance varies
between sensors and flights) as one resampling, and radiometric changes that mimic other acquisitions:
gamma, contrast and brightness, blur and sensor noise, a missing band (multispectral) and to-grey.

Geometric transforms move image and labels together (bilinear for the image, nearest for the labels,
pixels brought in from outside the crop become 0, the band mean, in the image (before the colour changes)
and :data:`IGNORE` in the labels);
radiometric ones touch only the image. Images are normalised (zero mean, unit standard deviation per band
over the training raster), so every colour operation is defined in that space and none assumes 8-bit RGB
or a band count.

All random numbers come from the generator passed in, drawn in a fixed order, so a seed gives the same
batch every time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ...core.errors import check_settings
from ...core.labels import IGNORE

__all__ = ["AugmentConfig", "augment_batch"]

# One row of uniform draws per random choice, per sample (see ``augment_batch``).
_DRAWS = ("turn", "mirror", "rotate", "angle", "scale", "factor", "jitter", "contrast", "brightness", "gamma",
          "exponent", "blur", "sigma", "noise", "noise_std", "drop", "band", "grey")


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the augmentations; each ``*_p`` is a per-crop probability.

    Attributes:
        symmetries: turn each crop into a random one of the 8 symmetries of the square (rectangular crops:
            the 4 that keep their shape).
        rotate_p: probability of a small arbitrary rotation.
        rotate_limit: largest rotation angle in degrees (the 90-degree turns cover the rest).
        scale_p: probability of a scale change.
        scale_range: smallest and largest zoom factor, drawn log-uniformly (0.75 shows more ground, 1.33 less).
        jitter_p: probability of a contrast and brightness change.
        contrast: largest relative contrast change, around each band's mean in the crop.
        brightness: largest brightness shift, in standard deviations.
        gamma_p: probability of a gamma change.
        gamma_range: smallest and largest gamma exponent, drawn log-uniformly.
        blur_p: probability of a gaussian blur.
        blur_sigma: smallest and largest blur standard deviation, in pixels.
        noise_p: probability of additive gaussian noise.
        noise_std: largest noise standard deviation, in standard deviations of the band.
        band_drop_p: probability that one random band is set to 0 (its mean); images with 4 bands or more.
        grey_p: probability that the first three bands are replaced by their mean; images with 3 bands or more.
    """

    symmetries: bool = True
    rotate_p: float = 0.2
    rotate_limit: float = 30.0
    scale_p: float = 0.5
    scale_range: Tuple[float, float] = (0.75, 1.33)
    jitter_p: float = 0.5
    contrast: float = 0.2
    brightness: float = 0.2
    gamma_p: float = 0.3
    gamma_range: Tuple[float, float] = (0.7, 1.5)
    blur_p: float = 0.1
    blur_sigma: Tuple[float, float] = (0.3, 1.5)
    noise_p: float = 0.1
    noise_std: float = 0.1
    band_drop_p: float = 0.1
    grey_p: float = 0.1

    def __post_init__(self) -> None:
        probabilities = ("rotate_p", "scale_p", "jitter_p", "gamma_p", "blur_p", "noise_p", "band_drop_p", "grey_p")
        ranges = ("scale_range", "gamma_range", "blur_sigma")
        check_settings(
            [(name, 0 <= getattr(self, name) <= 1, "between 0 and 1", getattr(self, name)) for name in probabilities]
            + [(name, 0 < getattr(self, name)[0] <= getattr(self, name)[1], "(low, high) with 0 < low <= high",
                getattr(self, name)) for name in ranges]
            + [(name, getattr(self, name) >= 0, "0 or more", getattr(self, name))
               for name in ("rotate_limit", "contrast", "brightness", "noise_std")]
            + [("contrast", self.contrast < 1, "below 1 (1 would flatten a band)", self.contrast)])


def augment_batch(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                  config: AugmentConfig = AugmentConfig()) -> Tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch, each crop with its own random draws.

    Order: square symmetries, rotation and zoom (one resampling), gamma, contrast and brightness, to-grey,
    blur, noise, band dropout. Gamma needs values in ``[0, 1]`` and normalised bands are not: each band of a
    crop is min-max rescaled to ``[0, 1]``, raised to the power, and mapped back to its own minimum and
    maximum, so the band's range is kept and only the distribution of values inside it changes.

    Args:
        images: ``(N, C, H, W)`` float, normalised; any band count, any device.
        labels: ``(N, H, W)`` uint8 or integer class labels (:data:`IGNORE` where unknown), same device.
        generator: the CPU torch generator all random draws come from (reproducible runs).
        config: what to apply.

    Returns:
        New ``(images, labels)`` of the same shapes and dtypes; the inputs are not modified.

    Raises:
        ValueError: the shapes do not match ``(N, C, H, W)`` and ``(N, H, W)``.
    """
    if images.ndim != 4 or labels.shape != (images.shape[0],) + tuple(images.shape[-2:]):
        raise ValueError(f"augment_batch needs images (N, C, H, W) and labels (N, H, W), got "
                         f"{tuple(images.shape)} and {tuple(labels.shape)}.")
    n, bands, height, width = images.shape
    draws = dict(zip(_DRAWS, torch.rand((len(_DRAWS), n), generator=generator, dtype=torch.float64)))
    out, lab = images.clone(), labels.clone()
    if config.symmetries:
        _square_symmetries(out, lab, draws["turn"], draws["mirror"])
    _rotate_and_zoom(out, lab, draws, config)
    _gamma(out, draws["gamma"] < config.gamma_p, _log_uniform(draws["exponent"], config.gamma_range))

    chosen = draws["jitter"] < config.jitter_p
    scale = torch.where(chosen, 1 + (2 * draws["contrast"] - 1) * config.contrast, 1.0)
    shift = torch.where(chosen, (2 * draws["brightness"] - 1) * config.brightness, 0.0)
    if chosen.any():
        scale, shift = (v.to(out.device, out.dtype)[:, None, None, None] for v in (scale, shift))
        centre = out.mean(dim=(-2, -1), keepdim=True)
        out.sub_(centre).mul_(scale).add_(centre + shift)

    if bands >= 3:
        chosen = (draws["grey"] < config.grey_p).to(out.device)
        out[chosen, :3] = out[chosen, :3].mean(dim=1, keepdim=True)

    sigmas = config.blur_sigma[0] + draws["sigma"] * (config.blur_sigma[1] - config.blur_sigma[0])
    for i in torch.nonzero(draws["blur"] < config.blur_p).flatten().tolist():
        # Kernel of +-3 sigma, as large as reflect padding allows on this crop.
        size = min(2 * math.ceil(3 * float(sigmas[i])) + 1, 2 * min(height, width) - 1)
        if size >= 3:
            out[i] = TF.gaussian_blur(out[i], [size, size], [float(sigmas[i])] * 2)

    chosen = torch.nonzero(draws["noise"] < config.noise_p).flatten()
    if len(chosen):
        std = (draws["noise_std"][chosen] * config.noise_std).float()[:, None, None, None]
        noise = torch.randn((len(chosen), bands, height, width), generator=generator) * std
        out[chosen.to(out.device)] += noise.to(out.device, out.dtype)

    if bands >= 4:
        chosen = torch.nonzero(draws["drop"] < config.band_drop_p).flatten()
        dropped = (draws["band"][chosen] * bands).long().clamp_(max=bands - 1)
        out[chosen.to(out.device), dropped.to(out.device)] = 0.0
    return out, lab


def _log_uniform(u: torch.Tensor, bounds: Tuple[float, float]) -> torch.Tensor:
    """Map uniform draws in ``[0, 1)`` to ``[low, high)`` so that ``x`` and ``1/x`` are equally likely."""
    low, high = math.log(bounds[0]), math.log(bounds[1])
    return torch.exp(low + u * (high - low))


def _square_symmetries(images: torch.Tensor, labels: torch.Tensor, turn: torch.Tensor,
                       mirror: torch.Tensor) -> None:
    """Turn by ``k`` quarter turns, then mirror left-right, in place; rectangles only turn by 0 or 2."""
    square = images.shape[-1] == images.shape[-2]
    turns = (turn * 4).long().clamp_(max=3) if square else 2 * (turn * 2).long().clamp_(max=1)
    for k in (1, 2, 3):
        chosen = (turns == k).to(images.device)
        if chosen.any():
            images[chosen] = torch.rot90(images[chosen], k, dims=(-2, -1))
            labels[chosen] = torch.rot90(labels[chosen], k, dims=(-2, -1))
    chosen = (mirror < 0.5).to(images.device)
    images[chosen] = images[chosen].flip(-1)
    labels[chosen] = labels[chosen].flip(-1)


def _rotate_and_zoom(images: torch.Tensor, labels: torch.Tensor, draws: Dict[str, torch.Tensor],
                     config: AugmentConfig) -> None:
    """Small rotation and zoom about the crop centre as one affine resampling per chosen crop, in place.

    One warp instead of a rotation followed by a resize and a centre crop: the result is the same geometry
    (zoom in crops, zoom out pads) with one interpolation, so the image is blurred once, not twice. Labels are
    IGNORE wherever the image was blended with the fill, not only where their nearest source pixel is outside.
    """
    rotate = draws["rotate"] < config.rotate_p
    zoom = draws["scale"] < config.scale_p
    angles = torch.where(rotate, (2 * draws["angle"] - 1) * config.rotate_limit, 0.0)
    factors = torch.where(zoom, _log_uniform(draws["factor"], config.scale_range), 1.0)
    ones = images.new_ones((1,) + images.shape[-2:])
    for i in torch.nonzero(rotate | zoom).flatten().tolist():
        warp = dict(angle=float(angles[i]), translate=[0, 0], scale=float(factors[i]), shear=[0.0, 0.0])
        # A band of ones warped with the image: below 0.99 where the fill shows in the pixel.
        warped = TF.affine(torch.cat([images[i], ones]), **warp, interpolation=InterpolationMode.BILINEAR, fill=0.0)
        label = TF.affine(labels[i][None].to(torch.uint8), **warp, interpolation=InterpolationMode.NEAREST,
                          fill=IGNORE)[0]
        images[i] = warped[:-1]
        labels[i] = label.masked_fill_(warped[-1] < 0.99, IGNORE).to(labels.dtype)


def _gamma(images: torch.Tensor, chosen: torch.Tensor, exponents: torch.Tensor) -> None:
    """Gamma on each chosen crop's per-band min-max rescaled values, mapped back to the band's range, in place.

    Constant bands stay as they are (their range is 0, every value maps to the minimum).
    """
    index = torch.nonzero(chosen).flatten().to(images.device)
    if not len(index):
        return
    selected = images[index]
    low = selected.amin(dim=(-2, -1), keepdim=True)
    span = selected.amax(dim=(-2, -1), keepdim=True) - low
    unit = ((selected - low) / span.clamp_min(1e-6)).clamp_(0.0, 1.0)
    exponent = exponents[chosen].to(images.device, images.dtype)[:, None, None, None]
    images[index] = low + unit.pow(exponent) * span
