"""Optical flow between population frames: Horn–Schunck iterated to convergence, flow files and vectors.

:func:`horn_schunck` estimates the displacement of population from one frame to the next, in pixels per
frame: ``u`` along +x (columns, east on a north-up raster), ``v`` along +y (rows, *down*), given at the
pixels of the first frame, so that ``f2(col + u, row + v) ~= f1(col, row)``. It runs in torch on the CPU or
on a CUDA GPU (:func:`~.device.resolve_device`): conjugate gradients (default) or Jacobi on Horn & Schunck's
equations, until the mean change per iteration is below ``tolerance`` px, coarse to fine over
``pyramid_levels``. Both frames are scaled jointly to 0..255 first, so ``alpha`` is in 8-bit grey levels.

Costs: a few tensor operations per iteration on whole frames, which are held in memory (a few Mpx). Why
the solver, the scaling and the pyramid are as they are, with measurements: docs/design.md, "Optical flow".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Optional, Protocol, Tuple, Union

import numpy as np
import rasterio
from affine import Affine

from ...core.deps import require
from ...core.device import resolve_device
from ...core.errors import InputError
from ...core.progress import Feedback, NullFeedback, SubFeedback, check_canceled
from ...core.raster import check_geotiff_name, geotiff_profile, open_raster, raster_env
from ...core.staging import StagedFile
from .config import SOLVERS, FlowConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .frames import FrameSeries

__all__ = [
    "BAND_DESCRIPTIONS",
    "SOLVERS",
    "FlowConfig",
    "FlowResult",
    "FlowVector",
    "FramePair",
    "flow_message",
    "flow_series",
    "flow_to_map",
    "flow_vectors",
    "horn_schunck",
    "read_flow",
    "read_flow_pair",
    "write_flow",
]


#: Band descriptions of a flow GeoTIFF (band 1, band 2).
BAND_DESCRIPTIONS: Tuple[str, str] = ("u (pixels/frame, +column)", "v (pixels/frame, +row)")

#: Frames are scaled so that this percentile of their positive values becomes :data:`_GREY_MAX`.
_ROBUST_PERCENTILE = 99.9
_GREY_MAX = 255.0
#: Iterations between two cancel checks / convergence tests (each test syncs a GPU).
_CHECK_EVERY = 10
#: Coarsest pyramid level kept at least this many pixels on its short side.
_MIN_LEVEL_SIDE = 8


@dataclass
class FlowResult:
    """The flow from one frame to the next.

    Attributes:
        u: ``(H, W)`` float32 displacement along +column, pixels per frame.
        v: ``(H, W)`` float32 displacement along +row (down), pixels per frame.
        iterations: Jacobi iterations run on the finest level.
        change: mean absolute change of ``(u, v)`` in the last checked iteration of the finest level.
        converged: whether ``change`` fell below the tolerance before the iteration limit.
        scale: the factor the counts were multiplied by before the iteration (see the module docstring).
    """

    u: np.ndarray
    v: np.ndarray
    iterations: int
    change: float
    converged: bool = True
    scale: float = 1.0


@dataclass(frozen=True)
class FlowVector:
    """One flow arrow, at the centre of a sampled pixel.

    Attributes:
        x: map x of the pixel centre.
        y: map y of the pixel centre.
        u_px: displacement along +column, pixels per frame.
        v_px: displacement along +row (down), pixels per frame.
        dx_map: displacement along map x, map units per frame.
        dy_map: displacement along map y, map units per frame (north-positive on a north-up raster).
        magnitude: length of the displacement, map units per frame.
        direction_deg: azimuth of the displacement, degrees clockwise from map north (+y), in [0, 360).
    """

    x: float
    y: float
    u_px: float
    v_px: float
    dx_map: float
    dy_map: float
    magnitude: float
    direction_deg: float


# --------------------------------------------------------------------------------------------------
# Horn–Schunck
# --------------------------------------------------------------------------------------------------

def _joint_scale(f1: np.ndarray, f2: np.ndarray) -> float:
    """255 / the robust maximum of both frames' positive values (0 when neither has any)."""
    values = np.concatenate([f1[f1 > 0], f2[f2 > 0]])  # NaN > 0 is False: nodata left out
    if values.size == 0:
        return 0.0
    top = float(np.percentile(values, _ROBUST_PERCENTILE))
    return _GREY_MAX / top if top > 0 else 0.0


class _Solver:
    """Tensor kernels of one Horn–Schunck run.

    The kernels are written as sums of shifted slices: on the CPU, torch's 2 x 2 / 3 x 3 convolutions with one
    or two channels are several times slower than these memory-bound sums (measured 198 ms against 18 ms for
    the averaging of a 1796 x 1105 flow on one thread).
    """

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        self.F = torch.nn.functional

    def derivatives(self, f1: "torch.Tensor", f2: "torch.Tensor") -> Tuple["torch.Tensor", ...]:
        """Horn & Schunck's ``Ex, Ey, Et`` (first differences averaged over the 2 x 2 x 2 cube) of
        ``(1, 1, H, W)`` frames, each ``(1, 1, H, W)``; the last row and column are replicated."""
        pad = (0, 1, 0, 1)
        a = self.F.pad(f1, pad, mode="replicate")
        b = self.F.pad(f2, pad, mode="replicate")
        s, d = a + b, b - a
        tl, tr, bl, br = (s[..., :-1, :-1], s[..., :-1, 1:], s[..., 1:, :-1], s[..., 1:, 1:])
        ex = (tr - tl + br - bl) * 0.25
        ey = (bl - tl + br - tr) * 0.25
        et = (d[..., :-1, :-1] + d[..., :-1, 1:] + d[..., 1:, :-1] + d[..., 1:, 1:]) * 0.25
        return ex, ey, et

    def smooth(self, flow: "torch.Tensor") -> "torch.Tensor":
        """Horn–Schunck local average of a ``(1, 2, H, W)`` flow (replicated borders).

        The kernel (1/6 edge neighbours, 1/12 corners, 0 centre) is ``([1 2 1]^T [1 2 1] - 4 delta) / 12``:
        two separable passes minus the centre.
        """
        p = self.F.pad(flow, (1, 1, 1, 1), mode="replicate")
        cols = self.torch.add(p[..., :-2, :], p[..., 2:, :]).add_(p[..., 1:-1, :], alpha=2.0)
        out = self.torch.add(cols[..., :-2], cols[..., 2:]).add_(cols[..., 1:-1], alpha=2.0)
        return out.sub_(flow, alpha=4.0).mul_(1.0 / 12.0)

    def warp(self, image: "torch.Tensor", flow: "torch.Tensor") -> "torch.Tensor":
        """Sample ``image`` at ``(col + u, row + v)`` (bilinear, border values outside)."""
        torch = self.torch
        _, _, h, w = image.shape
        rows = torch.arange(h, dtype=torch.float32, device=image.device).view(h, 1)
        cols = torch.arange(w, dtype=torch.float32, device=image.device).view(1, w)
        gx = (cols + flow[0, 0]) * (2.0 / max(w - 1, 1)) - 1.0
        gy = (rows + flow[0, 1]) * (2.0 / max(h - 1, 1)) - 1.0
        grid = torch.stack([gx, gy], dim=-1).unsqueeze(0)
        return self.F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)

    def resize_flow(self, flow: "torch.Tensor", h: int, w: int) -> "torch.Tensor":
        """Upsample a coarse flow to ``h x w`` and rescale its pixel units."""
        _, _, hc, wc = flow.shape
        up = self.F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        scale = self.torch.tensor([w / wc, h / hc], dtype=self.torch.float32, device=flow.device)
        return up * scale.view(1, 2, 1, 1)


class _Step(Protocol):
    """One solver's state between iterations: :meth:`step` advances it, :attr:`flow` is the estimate."""

    flow: "torch.Tensor"

    def step(self, measure: bool) -> float:
        """Advance one iteration; return the mean absolute change of the flow (NaN unless ``measure``)."""
        ...


def _dot_channels(grad: "torch.Tensor", x: "torch.Tensor") -> "torch.Tensor":
    """``Ex x_u + Ey x_v`` per pixel, ``(1, 1, H, W)``."""
    return (grad * x).sum(dim=1, keepdim=True)


class _JacobiStep:
    """Horn & Schunck's own update: ``u = ubar - Ex (Ex ubar + Ey vbar + Et') / (alpha^2 + Ex^2 + Ey^2)``."""

    def __init__(self, solver: _Solver, grad: "torch.Tensor", et: "torch.Tensor", alpha: float,
                 flow0: "torch.Tensor") -> None:
        self.solver, self.grad, self.et = solver, grad, et
        self.inv = 1.0 / (alpha ** 2 + (grad * grad).sum(dim=1, keepdim=True))
        self.flow = flow0.clone()

    def step(self, measure: bool) -> float:
        bar = self.solver.smooth(self.flow)
        residual = _dot_channels(self.grad, bar).add_(self.et).mul_(self.inv)
        new = bar.addcmul_(self.grad, residual, value=-1.0)
        change = float((new - self.flow).abs().mean()) if measure else float("nan")
        self.flow = new
        return change


class _ConjugateGradientStep:
    """Preconditioned conjugate gradients on the same Horn–Schunck equations.

    The Jacobi update is the block-Jacobi method for the linear system
    ``alpha^2 (u - ubar) + Ex (Ex u + Ey v + Et') = 0`` (and the same for ``v``); with replicated borders
    ``u - ubar`` is a symmetric graph Laplacian, so the system is symmetric positive definite and conjugate
    gradients, preconditioned by the same pointwise 2 x 2 blocks ``alpha^2 I + g g^T``, converge to the same
    flow in far fewer iterations (measured: 140 against more than 5,000 for a blob of sigma 6 px moved
    1.8 px). Jacobi needs O(size^2) iterations to carry the flow along the isophotes (the aperture problem),
    conjugate gradients O(size).
    """

    def __init__(self, solver: _Solver, grad: "torch.Tensor", et: "torch.Tensor", alpha: float,
                 flow0: "torch.Tensor") -> None:
        self.solver, self.grad, self.a2 = solver, grad, alpha ** 2
        self.inv = 1.0 / (self.a2 + (grad * grad).sum(dim=1, keepdim=True))
        self.flow = flow0.clone()
        self.r = (-grad * et).sub_(self._apply(self.flow))
        self.z = self._precondition(self.r)
        self.p = self.z.clone()
        self.rz = float(solver.torch.dot(self.r.reshape(-1), self.z.reshape(-1)))

    def _apply(self, x: "torch.Tensor") -> "torch.Tensor":
        """The system matrix times ``x``: ``alpha^2 (x - xbar) + g (g . x)``."""
        out = self.solver.smooth(x).sub_(x).mul_(-self.a2)
        return out.addcmul_(self.grad, _dot_channels(self.grad, x))

    def _precondition(self, r: "torch.Tensor") -> "torch.Tensor":
        """``(alpha^2 I + g g^T)^-1 r = (r - g (g . r) / (alpha^2 + |g|^2)) / alpha^2`` (Sherman–Morrison)."""
        scaled = _dot_channels(self.grad, r).mul_(self.inv)
        return self.solver.torch.addcmul(r, self.grad, scaled, value=-1.0).mul_(1.0 / self.a2)

    def step(self, measure: bool) -> float:
        dot = self.solver.torch.dot
        ap = self._apply(self.p)
        curvature = float(dot(self.p.reshape(-1), ap.reshape(-1)))
        rate = self.rz / curvature if curvature > 0 else 0.0  # 0 once the residual is exactly 0
        change = rate * float(self.p.abs().mean()) if measure else float("nan")
        self.flow.add_(self.p, alpha=rate)
        self.r.add_(ap, alpha=-rate)
        self.z = self._precondition(self.r)
        rz = float(dot(self.r.reshape(-1), self.z.reshape(-1)))
        self.p.mul_(rz / self.rz if self.rz > 0 else 0.0).add_(self.z)
        self.rz = rz
        return abs(change)


def _iterate(solver: _Solver, f1: "torch.Tensor", f2: "torch.Tensor", flow0: "torch.Tensor", config: FlowConfig,
             feedback: Feedback, span: Tuple[float, float]) -> Tuple["torch.Tensor", int, float]:
    """Solve one level about ``flow0`` (``f2`` is warped by it); returns the flow, iterations and last change."""
    ex, ey, et = solver.derivatives(f1, solver.warp(f2, flow0) if bool(flow0.abs().max() > 0) else f2)
    grad = solver.torch.cat([ex, ey], dim=1)  # (1, 2, H, W)
    # linearised about flow0: Ex u + Ey v + Et' = 0 with Et' = Et - Ex u0 - Ey v0
    et = et - (grad * flow0).sum(dim=1, keepdim=True)
    kind = _ConjugateGradientStep if config.solver == "cg" else _JacobiStep
    state: _Step = kind(solver, grad, et, config.alpha, flow0)
    lo, hi = span
    done, change = 0, float("inf")
    while done < config.iterations:
        steps = min(_CHECK_EVERY, config.iterations - done)
        for step in range(steps):
            measured = state.step(measure=step == steps - 1)
        change = measured
        done += steps
        check_canceled(feedback)
        feedback.set_progress(lo + (hi - lo) * done / config.iterations)
        if change < config.tolerance:
            break
    feedback.set_progress(hi)
    return state.flow, done, change


def horn_schunck(f1: np.ndarray, f2: np.ndarray, config: Optional[FlowConfig] = None,
                 feedback: Optional[Feedback] = None) -> FlowResult:
    """Horn–Schunck optical flow from ``f1`` to ``f2``, iterated to convergence (optionally coarse-to-fine).

    Args:
        f1: ``(H, W)`` population of the earlier frame; NaN counts as 0.
        f2: ``(H, W)`` population of the later frame, on the same grid.
        config: the settings (defaults: :class:`FlowConfig`).
        feedback: progress and cancel, checked every few iterations.

    Returns:
        The flow in pixels per frame at the pixels of ``f1`` (``u`` +column, ``v`` +row), finite everywhere.

    Raises:
        InputError: when the frames differ in shape or are smaller than 2 x 2 pixels, or a setting is invalid.
        DeviceError: when a CUDA device was asked for and none is available.
        CanceledError: when the user cancels.
    """
    config = config or FlowConfig()
    feedback = feedback or NullFeedback()
    config.validate()
    a, b = np.asarray(f1, np.float32), np.asarray(f2, np.float32)
    if a.ndim != 2 or a.shape != b.shape:
        raise InputError(f"the two frames must be 2-D arrays of one shape, got {a.shape} and {b.shape}.", "FRAMES")
    h, w = a.shape
    if h < 2 or w < 2:
        raise InputError(f"frames of {w} x {h} pixels are too small for optical flow (2 x 2 at least).", "FRAMES")
    scale = _joint_scale(a, b)
    if scale == 0.0:
        feedback.info("Both frames are empty (no positive population): the flow is zero.")
        zero = np.zeros((h, w), np.float32)
        feedback.set_progress(100.0)
        return FlowResult(zero, zero.copy(), 0, 0.0, True, 0.0)
    torch = require("torch")
    device = resolve_device(config.device)
    solver = _Solver(torch)
    with torch.inference_mode():
        levels = [(torch.from_numpy(np.nan_to_num(a * scale, nan=0.0)).to(device).view(1, 1, h, w),
                   torch.from_numpy(np.nan_to_num(b * scale, nan=0.0)).to(device).view(1, 1, h, w))]
        for _ in range(1, int(config.pyramid_levels)):
            _, _, lh, lw = levels[-1][0].shape
            if min(lh, lw) // 2 < _MIN_LEVEL_SIDE:
                break
            size = ((lh + 1) // 2, (lw + 1) // 2)
            levels.append(tuple(solver.F.interpolate(x, size=size, mode="area") for x in levels[-1]))
        if len(levels) < config.pyramid_levels:
            feedback.info(f"Optical flow uses {len(levels)} pyramid level(s): a coarser level would be smaller "
                          f"than {_MIN_LEVEL_SIDE} pixels.")
        weights = [x[0].numel() for x in levels]
        total, start = float(sum(weights)), 0.0
        flow = None
        for index in range(len(levels) - 1, -1, -1):
            l1, l2 = levels[index]
            _, _, lh, lw = l1.shape
            flow0 = (torch.zeros((1, 2, lh, lw), dtype=torch.float32, device=device) if flow is None
                     else solver.resize_flow(flow, lh, lw))
            end = start + 100.0 * weights[index] / total
            flow, iterations, change = _iterate(solver, l1, l2, flow0, config, feedback, (start, end))
            start = end
        u = flow[0, 0].float().cpu().numpy()
        v = flow[0, 1].float().cpu().numpy()
    converged = change < config.tolerance
    if not converged:
        feedback.warning(f"Optical flow did not converge in {iterations} iterations (last change {change:.2g} px "
                         f"per iteration, tolerance {config.tolerance:g}). Raise ITERATIONS or TOLERANCE.")
    return FlowResult(np.ascontiguousarray(u), np.ascontiguousarray(v), iterations, change, converged, scale)


def flow_series(series: "FrameSeries", config: Optional[FlowConfig] = None,
                feedback: Optional[Feedback] = None) -> List[FlowResult]:
    """The flow of every consecutive pair of a :class:`~.frames.FrameSeries` (``len(series) - 1`` results).

    Args:
        series: the frames.
        config: the Horn–Schunck settings.
        feedback: progress over all pairs, and cancel.

    Returns:
        ``flows[t]`` is the flow from frame ``t`` to frame ``t + 1``.
    """
    feedback = feedback or NullFeedback()
    pairs = len(series.arrays) - 1
    flows: List[FlowResult] = []
    for t in range(pairs):
        check_canceled(feedback)
        sub = SubFeedback(feedback, 100.0 * t / pairs, 100.0 * (t + 1) / pairs)
        result = horn_schunck(series.arrays[t], series.arrays[t + 1], config, sub)
        feedback.info(flow_message(series.names[t], series.names[t + 1], result))
        flows.append(result)
    return flows


def flow_message(from_name: str, to_name: str, result: FlowResult) -> str:
    """The log line of one pair's flow."""
    return (f"Flow {from_name} -> {to_name}: {result.iterations} iterations, last change {result.change:.2g} px, "
            f"mean speed {float(np.mean(np.hypot(result.u, result.v))):.3g} px/frame.")


# --------------------------------------------------------------------------------------------------
# Flow files
# --------------------------------------------------------------------------------------------------

FlowLike = Union[FlowResult, Tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class FramePair:
    """The two frames a flow goes between, as recorded in the flow file's GDAL tags.

    Attributes:
        from_index, to_index: the frames' positions in the series the flow was computed from.
        from_file, to_file: the frames' file names (without folder).
        from_name, to_name: the frames' names in that series (:attr:`~.frames.FrameSeries.names`).
    """

    from_index: int
    to_index: int
    from_file: str
    to_file: str
    from_name: str
    to_name: str

    def describe(self) -> str:
        """``frame 0 'a.tif' -> frame 1 'b.tif'``."""
        return f"frame {self.from_index} '{self.from_file}' -> frame {self.to_index} '{self.to_file}'"


#: GDAL tag of each :class:`FramePair` field in a flow file.
_PAIR_TAGS = {name: f"satseg_{name}" for name in FramePair.__dataclass_fields__}


def _components(flow: FlowLike) -> Tuple[np.ndarray, np.ndarray]:
    if isinstance(flow, FlowResult):
        return flow.u, flow.v
    u, v = flow
    return np.asarray(u), np.asarray(v)


def write_flow(path: str, flow: FlowLike, grid: Any, nodata_mask: Optional[np.ndarray] = None,
               parameter: str = "OUTPUT", overwrite: bool = True, pair: Optional[FramePair] = None) -> str:
    """Write a flow as a 2-band float32 GeoTIFF on a frame grid (staged: nothing half-written).

    Args:
        path: the ``.tif`` to write.
        flow: a :class:`FlowResult` or a ``(u, v)`` pair of ``(H, W)`` arrays in pixels per frame.
        grid: anything with ``crs`` and ``transform`` (a :class:`~.frames.FrameSeries`, a rasterio dataset);
            its ``width``/``height``, when present, must match the flow.
        nodata_mask: ``(H, W)`` True where the flow is nodata (e.g. ``series.nodata_mask(t, t + 1)``);
            written as NaN in both bands, like NaN already in the flow.
        parameter: the Processing parameter of ``path``, named in errors.
        overwrite: replace an existing file.
        pair: the frames the flow goes between, recorded in the file's tags (flow files are otherwise alike,
            so this is what lets :func:`read_flow_pair` tell flows given in the wrong order).

    Returns:
        The absolute path written.
    """
    check_geotiff_name(path, parameter)
    u, v = _components(flow)
    height, width = u.shape
    if v.shape != u.shape:
        raise InputError(f"u and v differ in shape: {u.shape} and {v.shape}.", parameter)
    if (getattr(grid, "width", width), getattr(grid, "height", height)) != (width, height):
        raise InputError(f"the flow ({width} x {height}) is not on the grid given ({grid.width} x {grid.height}).",
                         parameter)
    data = np.stack([u, v]).astype(np.float32)
    if nodata_mask is not None:
        data[:, np.asarray(nodata_mask, bool)] = np.nan
    transform = grid.transform
    profile = geotiff_profile(width, height, 2, "float32", grid.crs, transform, float("nan"))
    staged = StagedFile(path, overwrite=overwrite, parameter=parameter, suffix=".tif")
    with raster_env(), staged as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            for band, text in enumerate(BAND_DESCRIPTIONS, start=1):
                dst.set_band_description(band, text)
                dst.set_band_unit(band, "pixel/frame")
            # map units per frame = (a u + b v, d u + e v) through the linear part of the geotransform
            dst.update_tags(satseg_flow="u v pixels/frame, u along +column, v along +row",
                            satseg_map_dx=f"{transform.a!r}*u + {transform.b!r}*v",
                            satseg_map_dy=f"{transform.d!r}*u + {transform.e!r}*v")
            if isinstance(flow, FlowResult):
                dst.update_tags(satseg_iterations=flow.iterations, satseg_change=f"{flow.change:.6g}")
            if pair is not None:
                dst.update_tags(**{tag: str(getattr(pair, name)) for name, tag in _PAIR_TAGS.items()})
        staged.commit()
    return staged.path


def read_flow(path: str, parameter: str = "FLOW") -> Tuple[np.ndarray, np.ndarray]:
    """Read a flow GeoTIFF written by :func:`write_flow`: ``(u, v)`` float32 with NaN for nodata.

    Raises:
        InputError: when the file cannot be opened or does not have two bands.
    """
    with raster_env(), open_raster(path, parameter) as src:
        if src.count != 2:
            raise InputError(f"'{path}' has {src.count} band(s); a flow raster has two (u, v in pixels/frame). "
                             "Give a flow raster written by SatSeg's optical flow.", parameter)
        data = src.read(masked=True).astype(np.float32)
        values = np.asarray(data.data, np.float32)
        values[np.ma.getmaskarray(data)] = np.nan
    return values[0], values[1]


def read_flow_pair(path: str, parameter: str = "FLOW") -> Optional[FramePair]:
    """The frames a flow file records (:func:`write_flow`'s ``pair``), or None for files without them."""
    with raster_env(), open_raster(path, parameter) as src:
        tags = src.tags()
    if not all(tag in tags for tag in _PAIR_TAGS.values()):
        return None
    values = {name: tags[tag] for name, tag in _PAIR_TAGS.items()}
    try:
        return FramePair(**dict(values, from_index=int(values["from_index"]), to_index=int(values["to_index"])))
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------------
# Flow vectors
# --------------------------------------------------------------------------------------------------

def flow_to_map(u: np.ndarray, v: np.ndarray, transform: Affine) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel displacements to map displacements ``(dx, dy)`` through the linear part of ``transform``."""
    return transform.a * u + transform.b * v, transform.d * u + transform.e * v


def flow_vectors(u: np.ndarray, v: np.ndarray, transform: Affine, step: int = 10,
                 min_magnitude: float = 0.0) -> List[FlowVector]:
    """Sample the flow on a ``step``-pixel grid as arrows in map coordinates.

    Pixels sampled: rows and columns ``step // 2, step // 2 + step, ...``; nodata (NaN) pixels are skipped.

    Args:
        u: ``(H, W)`` displacement along +column, pixels per frame.
        v: ``(H, W)`` displacement along +row, pixels per frame.
        transform: the frames' geotransform (any affine: the directions go through it).
        step: spacing of the sampled pixels.
        min_magnitude: leave out arrows shorter than this many *pixels* per frame.

    Returns:
        One :class:`FlowVector` per kept sample, row by row.
    """
    if int(step) < 1:
        raise InputError(f"must be at least 1 pixel, got {step}.", "STEP")
    step = int(step)
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    rows = np.arange(step // 2, u.shape[0], step)
    cols = np.arange(step // 2, u.shape[1], step)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    su, sv = u[rr, cc].ravel(), v[rr, cc].ravel()
    rr, cc = rr.ravel(), cc.ravel()
    keep = np.isfinite(su) & np.isfinite(sv) & (np.hypot(su, sv) >= min_magnitude)
    su, sv, rr, cc = su[keep], sv[keep], rr[keep], cc[keep]
    x = transform.c + transform.a * (cc + 0.5) + transform.b * (rr + 0.5)
    y = transform.f + transform.d * (cc + 0.5) + transform.e * (rr + 0.5)
    dx, dy = flow_to_map(su, sv, transform)
    magnitude = np.hypot(dx, dy)
    direction = np.where(magnitude > 0, np.degrees(np.arctan2(dx, dy)) % 360.0, 0.0)
    return [FlowVector(*map(float, values)) for values in zip(x, y, su, sv, dx, dy, magnitude, direction)]
