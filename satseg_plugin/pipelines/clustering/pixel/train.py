"""Unsupervised per-pixel features (ClusterNet / DeepCluster) trained on one or more rasters.

Each round: the network's features of a fixed set of crops are clustered with faiss k-means (after optional
PCA whitening and L2 normalisation), every pixel of those crops gets its cluster as a pseudo-label, the head is
re-initialised and the network is trained on the pseudo-labels with class-balanced cross-entropy. Faults of the
original fixed here: the optimiser lives for a whole round (not one batch), the pseudo-labels of a round come
from one k-means on one frozen network (not per batch), the network keeps the input size (same padding), and
crops are drawn anywhere on the raster, edges included.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from rasterio.windows import Window

from ....core.deps import require
from ....core.errors import InputError
from ....core.fit import OomBackoff, choose_precision, seed_everything, write_log
from ....core.kmeans import Whitening, kmeans, l2_normalize, nearest_centroid
from ....core.progress import Feedback, NullFeedback, SubFeedback, check_canceled
from ....core.raster import check_georeferencing, crs_units, model_bands, nodata_flags, open_raster, raster_env
from ....core.scores import nmi
from ....core.staging import Transaction, stages_outputs
from .config import ClusterNetConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["ClusterNetConfig", "ClusterTrainResult", "FeatureTransform", "train_clusternet", "IGNORE_INDEX"]

#: Target value of pixels that take no part in the loss (nodata, padding).
IGNORE_INDEX = -100


@dataclass
class FeatureTransform:
    """What turns raw network features into k-means space: optional whitening, then optional L2 norm."""

    whitening: Optional[Whitening]
    normalize: bool
    #: the whitening as tensors, per device (:meth:`_whitening_on`)
    _on_device: Dict[str, Tuple[Any, Any]] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def fit(cls, features: np.ndarray, whiten: bool, normalize: bool) -> "FeatureTransform":
        """Fit the whitening on ``(n, D)`` features."""
        return cls(Whitening.fit(features) if whiten else None, normalize)

    def apply(self, features: np.ndarray) -> np.ndarray:
        """``(n, D)`` features -> ``(n, d)`` float32 k-means inputs."""
        out = self.whitening.apply(features) if self.whitening is not None else np.asarray(features, np.float32)
        return l2_normalize(out) if self.normalize else np.ascontiguousarray(out, np.float32)

    def apply_tensor(self, features: "torch.Tensor") -> "torch.Tensor":
        """:meth:`apply` on a float32 ``(n, D)`` tensor, on its device (same arithmetic: whitening, then L2
        with the same ``eps``)."""
        torch = require("torch")
        out = features
        if self.whitening is not None:
            mean, matrix = self._whitening_on(features.device)
            out = (out - mean) @ matrix.T
        return torch.nn.functional.normalize(out, dim=1, eps=1e-12) if self.normalize else out

    def _whitening_on(self, device: Any) -> Tuple["torch.Tensor", "torch.Tensor"]:
        """The whitening's mean and matrix as float32 tensors on ``device``, copied there once (a map assigns
        ids block after block: one blocking host-to-device copy per block otherwise)."""
        torch = require("torch")
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = tuple(torch.as_tensor(v, dtype=torch.float32, device=device)
                                         for v in (self.whitening.mean, self.whitening.matrix))
        return self._on_device[key]

    def tensors(self) -> Dict[str, np.ndarray]:
        """The arrays stored in the model file (``extra.*``)."""
        if self.whitening is None:
            return {}
        return {"whiten_mean": np.asarray(self.whitening.mean, np.float32),
                "whiten_matrix": np.asarray(self.whitening.matrix, np.float32)}

    @classmethod
    def from_tensors(cls, extras: Dict[str, np.ndarray], normalize: bool) -> "FeatureTransform":
        """Inverse of :meth:`tensors`."""
        if "whiten_mean" in extras:
            return cls(Whitening(np.asarray(extras["whiten_mean"], np.float32),
                                 np.asarray(extras["whiten_matrix"], np.float32)), normalize)
        return cls(None, normalize)


@dataclass
class ClusterTrainResult:
    """Written paths, the per-round log and the final clustering's summary."""

    model_path: str
    log_path: Optional[str]
    rounds: List[Dict[str, float]] = field(default_factory=list)
    objective: float = 0.0
    cluster_sizes: List[int] = field(default_factory=list)


class _Sources:
    """The training rasters, their bands and pooled normalisation statistics; draws random crops."""

    def __init__(self, paths: Sequence[str], bands: Optional[Sequence[int]], feedback: Feedback) -> None:
        if not paths:
            raise InputError("give at least one raster (or a patch index).", "INPUT")
        self.paths = [os.path.abspath(p) for p in paths]
        self.datasets = []
        try:
            for i, path in enumerate(self.paths):
                src = open_raster(path)
                self.datasets.append(src)
                if i == 0:
                    check_georeferencing(src, feedback)
                    self.bands = model_bands(src, bands, feedback=feedback)
                elif max(self.bands) > src.count:
                    raise InputError(f"'{os.path.basename(path)}' has {src.count} band(s) but bands {self.bands} "
                                     "are used; give rasters with the same bands.", "INPUT")
        except Exception:
            self.close()
            raise
        first = self.datasets[0]
        self.res = (abs(first.res[0]), abs(first.res[1]))
        self.crs = first.crs
        self.areas = np.array([d.width * d.height for d in self.datasets], float)
        self.mean, self.std = self._statistics()

    def close(self) -> None:
        for src in self.datasets:
            src.close()

    def _statistics(self) -> Tuple[np.ndarray, np.ndarray]:
        """Pooled mean/std over up to 32 evenly spread rasters (4 Mpx in all), nodata excluded."""
        from ....core.normalization import band_statistics

        chosen = np.unique(np.linspace(0, len(self.datasets) - 1, min(32, len(self.datasets))).astype(int))
        means, variances, weights = [], [], []
        for i in chosen:
            src = self.datasets[i]
            try:
                mean, std = band_statistics(src, self.bands, max_pixels=max(4_000_000 // len(chosen), 65536))
            except InputError:
                continue  # an all-nodata patch says nothing about the statistics
            means.append(mean)
            variances.append(std ** 2)
            weights.append(self.areas[i])
        if not means:
            raise InputError("every raster given holds only nodata; give rasters with valid pixels.", "INPUT")
        w = np.asarray(weights) / np.sum(weights)
        mean = np.sum(np.asarray(means) * w[:, None], axis=0)
        var = np.sum((np.asarray(variances) + (np.asarray(means) - mean) ** 2) * w[:, None], axis=0)
        return mean, np.maximum(np.sqrt(var), 1e-6)

    def crop(self, rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray]:
        """A random crop: normalised ``(C, size, size)`` float32 and its valid mask ``(size, size)``.

        Rasters smaller than the crop are padded (padding is invalid); origins are uniform over every
        position a crop can take, so edge pixels are drawn as often as any others.
        """
        i = int(rng.choice(len(self.datasets), p=self.areas / self.areas.sum()))
        src = self.datasets[i]
        x = int(rng.integers(0, max(src.width - size, 0) + 1))
        y = int(rng.integers(0, max(src.height - size, 0) + 1))
        w, h = min(size, src.width), min(size, src.height)
        window = Window(x, y, w, h)
        data = src.read(list(self.bands), window=window).astype(np.float32)
        valid = ~nodata_flags(src, self.bands, window, data)
        image = np.zeros((len(self.bands), size, size), np.float32)
        mask = np.zeros((size, size), bool)
        norm = (data - self.mean[:, None, None].astype(np.float32)) / self.std[:, None, None].astype(np.float32)
        image[:, :h, :w] = np.where(valid, norm, 0.0)
        mask[:h, :w] = valid
        return image, mask


def _features(model, images: np.ndarray, device, batch_size: int, feedback: Feedback) -> np.ndarray:
    """Eval-mode features ``(N, D, H, W)`` float32 of normalised crops, batch by batch."""
    torch = require("torch")
    out = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            check_canceled(feedback)
            x = torch.from_numpy(images[start:start + batch_size]).to(device)
            out.append(model.features(x).float().cpu().numpy())
    return np.concatenate(out)


def _pixels(features: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(N, D, H, W)`` features and ``(N, H, W)`` valid mask -> ``(n_valid, D)`` float32 rows."""
    return np.ascontiguousarray(features.transpose(0, 2, 3, 1)[valid], np.float32)


def _cluster(features: np.ndarray, valid: np.ndarray, config: ClusterNetConfig, rng: np.random.Generator,
             seed: int) -> Tuple[FeatureTransform, np.ndarray, float, np.ndarray]:
    """Fit the transform and k-means on a pixel sample; returns (transform, centroids, objective, sizes)."""
    rows = _pixels(features, valid)
    if len(rows) < config.num_clusters:
        raise InputError(f"only {len(rows)} valid pixels were sampled, fewer than NUM_CLUSTERS "
                         f"({config.num_clusters}). Lower NUM_CLUSTERS or give rasters with more valid pixels.",
                         "NUM_CLUSTERS")
    if len(rows) > config.sample_pixels:
        rows = rows[np.sort(rng.choice(len(rows), config.sample_pixels, replace=False))]
    transform = FeatureTransform.fit(rows, config.whiten, config.normalize)
    result = kmeans(transform.apply(rows), config.num_clusters, niter=config.kmeans_iterations, seed=seed)
    return transform, result.centroids, float(result.objective), np.asarray(result.sizes)


def _assign(features: np.ndarray, valid: np.ndarray, transform: FeatureTransform,
            centroids: np.ndarray) -> np.ndarray:
    """Cluster of every pixel ``(N, H, W)`` int64; invalid pixels get :data:`IGNORE_INDEX`."""
    labels = np.full(valid.shape, IGNORE_INDEX, np.int64)
    if valid.any():
        labels[valid], _ = nearest_centroid(transform.apply(_pixels(features, valid)), centroids)
    return labels


@stages_outputs
def train_clusternet(sources: Sequence[str], model_path: str, config: ClusterNetConfig = ClusterNetConfig(),
                     device: str = "auto", feedback: Optional[Feedback] = None,
                     log_path: Optional[str] = None, transaction: Optional[Transaction] = None) -> ClusterTrainResult:
    """Train a ClusterNet without labels and write it, with its final centroids, as a SatSeg model file.

    Args:
        sources: raster paths (e.g. the patches of a patch index); all must have the bands used.
        model_path: the model file to write (``.satseg``).
        config: training settings.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        feedback: progress per batch, cancel (checked at every batch, so at every round), log.
        log_path: CSV with one row per round (objective, cluster sizes, NMI with the previous round, loss).
        transaction: stage the outputs into this run's transaction and leave the commit to its owner
            (default: the current run's, else they are moved into place together when this returns).

    Returns:
        The written paths and per-round log. A cancel raises :class:`CanceledError` and writes nothing.
    """
    torch = require("torch")
    from ....core.device import describe_device, resolve_device
    from ....core.version import __version__
    from ....models.checkpoint import ModelMetadata, model_tensors, save_checkpoint
    from ....models.nets.clusternet import build_clusternet
    from ....models.registry import input_multiple

    feedback = feedback or NullFeedback()
    config.validate()
    torch_device = resolve_device(device)
    feedback.info(f"Device: {describe_device(torch_device)}")
    multiple = input_multiple(config.architecture, config.encoder)
    if config.patch_size % multiple:
        raise InputError(f"{config.architecture} with {config.encoder} needs crops that are a multiple of "
                         f"{multiple} px; {config.patch_size} is not.", "PATCH_SIZE")
    rng, generator = seed_everything(config.seed)
    precision = choose_precision(torch_device, feedback=feedback)
    backoff = OomBackoff(config.batch_size, feedback, "crop", "Lower PATCH_SIZE, choose a smaller ENCODER, or use "
                         "DEVICE=cpu.")
    size, k = config.patch_size, config.num_clusters
    history: List[Dict[str, float]] = []

    with raster_env():
        data = _Sources(sources, config.bands, feedback)
        try:
            feedback.info(f"{len(data.paths)} raster(s), bands {list(data.bands)}; band statistics (mean / std): "
                          + ", ".join(f"b{b}: {m:.2f} / {s:.2f}" for b, m, s in zip(data.bands, data.mean, data.std)))
            model = build_clusternet(config.architecture, config.encoder, len(data.bands), config.feature_dim, k,
                                     config.band_share)
            model.to(torch_device)

            def draw(n: int) -> Tuple[np.ndarray, np.ndarray]:
                crops = [data.crop(rng, size) for _ in range(n)]
                return np.stack([c[0] for c in crops]), np.stack([c[1] for c in crops])

            probe_images, probe_valid = draw(min(8, config.crops_per_round))
            if not probe_valid.any():
                probe_images, probe_valid = draw(config.crops_per_round)
            previous: Optional[np.ndarray] = None
            per_round = 100.0 / (config.rounds + 1)
            for round_index in range(1, config.rounds + 1):
                sub = SubFeedback(feedback, (round_index - 1) * per_round, round_index * per_round)
                images, valid = draw(config.crops_per_round)
                if not valid.any():
                    raise InputError("the crops drawn hold no valid pixel: the rasters are all nodata (or their "
                                     "nodata value is wrong).", "INPUT")
                feats = images if config.bootstrap and round_index == 1 else \
                    _features(model, images, torch_device, config.batch_size, sub)
                transform, centroids, objective, sizes = _cluster(feats, valid, config, rng, config.seed + round_index)
                targets = _assign(feats, valid, transform, centroids)
                probe_feats = probe_images if feats is images else \
                    _features(model, probe_images, torch_device, config.batch_size, sub)
                probe = _assign(probe_feats, probe_valid, transform, centroids)[probe_valid]
                stability = nmi(previous, probe) if previous is not None else float("nan")
                previous = probe
                del feats, probe_feats
                counts = np.bincount(targets[valid], minlength=k).astype(float)
                weights = None
                if config.balance:
                    present = counts > 0
                    weights = np.zeros(k)
                    weights[present] = counts[present].sum() / (present.sum() * counts[present])
                    weights = torch.as_tensor(weights, dtype=torch.float32, device=torch_device)
                loss_fn = torch.nn.CrossEntropyLoss(weight=weights, ignore_index=IGNORE_INDEX)
                model.reset_head(generator)
                # one optimiser for the whole round: its moments carry across batches (the original reset them)
                optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
                model.train()

                def train_step(batch_size: int) -> "torch.Tensor":
                    idx = rng.choice(len(images), min(batch_size, len(images)), replace=False)
                    x = torch.from_numpy(images[idx])
                    y = torch.from_numpy(targets[idx])
                    flips = [d for d, flip in ((-1, rng.random() < 0.5), (-2, rng.random() < 0.5)) if flip]
                    if flips:  # the same flip on image and pseudo-labels keeps them registered
                        x, y = x.flip(flips), y.flip(flips)
                    with precision.autocast():
                        logits = model(x.to(torch_device))
                    loss = loss_fn(logits.float(), y.to(torch_device))
                    precision.step(loss, optimizer)
                    return loss.detach()

                losses = []  # on the device: read back once per round, not once per step
                for step in range(config.steps_per_round):
                    check_canceled(sub)
                    losses.append(backoff.run(train_step))
                    sub.set_progress(100.0 * (step + 1) / config.steps_per_round)
                row = {"round": round_index, "objective": objective, "loss": float(torch.stack(losses).double().mean()),
                       "nmi_previous": stability, "clusters_used": int((sizes > 0).sum()),
                       "largest_cluster_share": float(sizes.max() / max(sizes.sum(), 1)),
                       "smallest_cluster_share": float(sizes.min() / max(sizes.sum(), 1))}
                history.append(row)
                feedback.info(f"Round {round_index}/{config.rounds}: k-means objective {objective:.4g}, "
                              f"clusters used {row['clusters_used']}/{k} (largest {row['largest_cluster_share']:.1%}), "
                              f"NMI with previous round {stability:.3f}, loss {row['loss']:.4f}")

            # final clustering of the trained network's features, stored with the model
            check_canceled(feedback)
            images, valid = draw(config.crops_per_round)
            feats = _features(model, images, torch_device, config.batch_size, feedback)
            transform, centroids, objective, sizes = _cluster(feats, valid, config, rng, config.seed)
            del feats
            crs = data.crs
            metadata = ModelMetadata(
                kind="clusternet", architecture=config.architecture, encoder=config.encoder,
                in_channels=len(data.bands), classes=[f"cluster {i}" for i in range(1, k + 1)], bands=list(data.bands),
                mean=[float(v) for v in data.mean], std=[float(v) for v in data.std], patch_size=size,
                pixel_size=data.res, crs_wkt=crs.to_wkt() if crs else None, crs_units=crs_units(crs),
                metrics={"objective": objective, "rounds": len(history),
                         "final_nmi_previous": history[-1]["nmi_previous"] if history else None},
                extra={"feature_dim": config.feature_dim, "band_share": config.band_share,
                       "normalize": config.normalize, "whiten": config.whiten, "input_multiple": multiple, "train_config": asdict(config),
                       "sources": data.paths[:100], "source_count": len(data.paths),
                       "cluster_sizes": [int(s) for s in sizes], "satseg_version": __version__})
        finally:
            data.close()
    extras = {"centroids": np.asarray(centroids, np.float32), **transform.tensors()}
    tensors = model_tensors(model.cpu(), {name: torch.from_numpy(a) for name, a in extras.items()})
    save_checkpoint(model_path, tensors, metadata, parameter="OUTPUT_MODEL")
    written_log = write_log(log_path, history)
    feedback.set_progress(100.0)
    feedback.info(f"Final k-means objective {objective:.4g}; model written to {model_path}.")
    return ClusterTrainResult(os.path.abspath(model_path), written_log, history, objective,
                              [int(s) for s in sizes])
