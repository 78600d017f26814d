"""The k-means toolbox shared by pixel clustering (ClusterNet) and scene clustering (DeepCluster).

Built on faiss (``faiss-cpu``; a GPU build is used automatically when ``faiss.get_num_gpus() > 0``):

- :func:`kmeans`: seeded, reproducible k-means; returns centroids, assignments and the objective.
- :func:`nearest_centroid`: batched exact nearest-centroid search, so memory stays bounded.
- :func:`nearest_centroid_tensor`: the same rule on torch tensors, on the device they are on.
- :class:`Whitening`: PCA whitening (with optional dimension reduction) fitted in float64.
- :func:`l2_normalize`, :func:`nmi`: small helpers of the DeepCluster loop.
- :func:`silhouette`: the exact mean silhouette score in O(chunk^2 + n d) memory instead of O(n^2).

faiss and torch are imported lazily through :func:`~.deps.require`, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional, Tuple

import numpy as np

from .deps import require
from .errors import InputError
from .progress import Feedback, NullFeedback, SubFeedback, check_canceled

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "DEFAULT_POINTS_PER_CENTROID",
    "INIT_METHODS",
    "SEEDING_POINTS_PER_CENTROID",
    "MIN_POINTS_PER_CENTROID",
    "KMeansResult",
    "Whitening",
    "kmeans",
    "l2_normalize",
    "nearest_centroid",
    "nearest_centroid_tensor",
    "as_matrix",
]

#: Below this many samples per cluster k-means centroids are poorly estimated (faiss's own threshold).
MIN_POINTS_PER_CENTROID = 39

#: ``init`` values of :func:`kmeans`: scikit-learn's greedy k-means++ seeding, or k random samples.
INIT_METHODS = ("kmeans++", "random")

#: Training sample per centroid (faiss's default): enough to place a centroid, and the Lloyd iterations
#: then cost O(k^2 d) per step whatever the number of samples.
DEFAULT_POINTS_PER_CENTROID = 256

#: Points per centroid that greedy k-means++ seeds from (a random part of the training sample): seeding
#: costs O(k^2 log k d) per point, so a small pool makes restarts cheap, and the Lloyd iterations on the
#: whole sample then place the centroids (the benchmark's objective was no worse than seeding from it all).
SEEDING_POINTS_PER_CENTROID = 32

#: Rows per slice when the squared distance to the chosen centroid is recomputed from the difference.
_EXACT_ROWS = 8192

#: Below this many multiply-adds per iteration (n * k * d) faiss k-means runs on one thread: each iteration
#: opens several OpenMP parallel regions, and on a busy CPU every region can wait a scheduler time slice for
#: a descheduled worker (measured: 8 small runs took 4.7 s with 2 threads on a loaded 2-core machine, 0.03 s
#: with 1), far more than the threads save on so little work.
_SERIAL_WORK = 1 << 24

#: Rows per block when the float64 covariance of :meth:`Whitening.fit` is accumulated.
_COVARIANCE_BATCH = 16384


@dataclass
class KMeansResult:
    """What :func:`kmeans` found.

    Attributes:
        centroids: ``(k, d)`` float32 cluster centres.
        assignments: ``(n,)`` int64 index of the nearest centroid of each sample.
        distances: ``(n,)`` float32 squared L2 distance of each sample to its centroid.
        objective: sum of ``distances`` accumulated in float64 (the inertia; not faiss's internal number,
            which is measured on the training subsample before the last update).
        sizes: ``(k,)`` int64 number of samples assigned to each centroid (0 for a cluster left empty).
        iterations: k-means iterations run per restart.
    """

    centroids: np.ndarray
    assignments: np.ndarray
    distances: np.ndarray
    objective: float
    sizes: np.ndarray
    iterations: int

    @property
    def k(self) -> int:
        """Number of clusters."""
        return int(self.centroids.shape[0])


def as_matrix(x: Any, name: str = "x", parameter: Optional[str] = None, dtype: Any = np.float32) -> np.ndarray:
    """Return ``x`` as a C-contiguous ``(n, d)`` array of finite values of ``dtype``, or raise InputError."""
    array = np.asarray(x)
    if array.ndim != 2:
        raise InputError(f"{name} must be a 2-D array (samples, features), got shape {array.shape}", parameter)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InputError(f"{name} must hold numbers, got dtype {array.dtype}", parameter)
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{name} is empty (shape {array.shape}); there is nothing to cluster", parameter)
    array = np.ascontiguousarray(array, dtype=dtype)
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or infinite values (or values too large for float32); "
                         "mask nodata pixels before clustering", parameter)
    return array


def _use_gpu(faiss: Any, gpu: Optional[bool]) -> bool:
    """Resolve ``gpu`` (None: use one when faiss was built with GPU support and sees a GPU)."""
    available = hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    if gpu and not available:
        raise InputError("a GPU was asked for but faiss sees none; install faiss-gpu or use the CPU", "DEVICE")
    return available if gpu is None else bool(gpu)


@contextlib.contextmanager
def _serial_if_small(faiss: Any, work: int) -> Iterator[None]:
    """Run faiss on one OpenMP thread (of the calling thread) while ``work < _SERIAL_WORK``."""
    if work >= _SERIAL_WORK:
        yield
        return
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def _flat_index(faiss: Any, d: int, gpu: bool) -> Any:
    index = faiss.IndexFlatL2(d)
    return faiss.index_cpu_to_all_gpus(index) if gpu else index


def _assign(x: np.ndarray, centroids: np.ndarray, batch: int, feedback: Feedback,
            gpu: Optional[bool] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row of ``x``; squared distances recomputed from the differences."""
    faiss = require("faiss")
    index = _flat_index(faiss, centroids.shape[1], _use_gpu(faiss, gpu))
    index.add(centroids)
    n = x.shape[0]
    labels = np.empty(n, np.int64)
    distances = np.empty(n, np.float64)
    for start in range(0, n, batch):
        check_canceled(feedback)
        block = x[start:start + batch]
        _, found = index.search(block, 1)
        found = found[:, 0]
        labels[start:start + batch] = found
        # faiss ranks by |x|^2 + |c|^2 - 2 x.c in float32, which cancels badly far from the origin; the
        # distance to the chosen centroid is recomputed from the difference (no cancellation: float32 keeps
        # it to ~1e-7 relative), in slices of _EXACT_ROWS rows so the copies stay small.
        for low in range(0, block.shape[0], _EXACT_ROWS):
            diff = block[low:low + _EXACT_ROWS] - centroids[found[low:low + _EXACT_ROWS]]
            distances[start + low:start + low + diff.shape[0]] = np.einsum("ij,ij->i", diff, diff)
        feedback.set_progress(100.0 * min(start + batch, n) / n)
    return labels, distances


def nearest_centroid(x: Any, centroids: Any, batch: int = 65536,
                     feedback: Optional[Feedback] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Find the nearest centroid (squared L2) of every sample, ``batch`` samples at a time.

    Args:
        x: ``(n, d)`` samples.
        centroids: ``(k, d)`` centroids.
        batch: samples searched at once; memory is O(batch * (k + d)).
        feedback: progress (0..100 over the batches) and cancel, checked between batches.

    Returns:
        ``(labels, sq_distances)``: ``(n,)`` int64 centroid indices and ``(n,)`` float32 squared distances.

    Raises:
        InputError: when the arrays are not 2-D finite numbers of the same width, or ``batch < 1``.
        CanceledError: when the user cancels.
    """
    data = as_matrix(x)
    centres = as_matrix(centroids, "centroids")
    if centres.shape[1] != data.shape[1]:
        raise InputError(f"samples have {data.shape[1]} features but centroids have {centres.shape[1]}; "
                         "use the centroids computed on features of the same kind")
    if batch < 1:
        raise InputError(f"batch must be at least 1, got {batch}")
    labels, distances = _assign(data, centres, int(batch), feedback or NullFeedback())
    return labels, distances.astype(np.float32)


def nearest_centroid_tensor(x: "torch.Tensor", centroids: "torch.Tensor") -> "torch.Tensor":
    """Index of the nearest centroid (squared L2) of every row of ``x``, on ``x``'s device.

    Hand-written because faiss-cpu cannot search tensors on a GPU, and on the CPU one ``addmm`` + ``argmax``
    over a block of pixels is about 4x faster than faiss's search plus the copies around it (for the
    cluster map's few centroids: ``k`` ~ 20, ``d`` ~ 35). ``|x - c|^2 = |x|^2 - 2 (x.c - |c|^2 / 2)`` and
    ``|x|^2`` is the same for every centroid, so the nearest centroid maximises ``x.c - |c|^2 / 2``; both are
    first moved by the centroids' mean (distances do not change), so the products stay small and float32 does
    not cancel far from the origin. Ties within float32 rounding may resolve differently from faiss's.

    Args:
        x: ``(n, d)`` float32 tensor.
        centroids: ``(k, d)`` float32 tensor on the same device.

    Returns:
        ``(n,)`` int64 tensor on ``x``'s device.
    """
    if x.ndim != 2 or centroids.ndim != 2 or x.shape[1] != centroids.shape[1]:
        raise InputError(f"samples {tuple(x.shape)} and centroids {tuple(centroids.shape)} must be (n, d) and (k, d)")
    centre = centroids.mean(dim=0)
    centred = centroids - centre
    half_norms = 0.5 * (centred * centred).sum(dim=1)
    return ((x - centre) @ centred.T).sub_(half_norms).argmax(dim=1)


def kmeans(x: Any, k: int, niter: int = 20, seed: int = 0, nredo: int = 5,
           max_points_per_centroid: Optional[int] = DEFAULT_POINTS_PER_CENTROID, spherical: bool = False,
           feedback: Optional[Feedback] = None, gpu: Optional[bool] = None, init: str = "kmeans++") -> KMeansResult:
    """Cluster ``x`` into ``k`` groups: seeded restarts on a training sample, then every sample assigned.

    The recipe (faiss's own, with scikit-learn's stronger seeding):

    1. Training sample: at most ``k * max_points_per_centroid`` samples, drawn with ``seed`` (256 per
       centroid, faiss's default, estimates a centroid well; more samples only cost time).
    2. ``nredo`` restarts on the sample, each seeded by greedy k-means++ (``sklearn.cluster.kmeans_plusplus``:
       of ``2 + log k`` D^2-drawn candidates per step, the one that lowers the objective most; faiss's plain
       k-means++ left a 25 % higher objective at k = 100 in the benchmark) on a random
       ``SEEDING_POINTS_PER_CENTROID`` points per centroid of the sample, then ``niter`` faiss Lloyd
       iterations on the whole sample; the restart with the lowest sample objective wins.
    3. One exact nearest-centroid pass of faiss over all samples.

    On 10^6 x 32 features this is more than 10x faster than scikit-learn's ``KMeans()`` for an objective as
    low (``kmeans`` section of bench/RESULTS.md): the Lloyd iterations touch the sample only, and the restarts
    make up for the sample. The same data, ``k`` and ``seed`` give the same result on the same machine and
    library versions. faiss re-splits clusters that become empty during training; a cluster can still end up
    empty in the final assignment (its ``sizes`` entry is 0).

    Args:
        x: ``(n, d)`` samples (converted to contiguous float32).
        k: number of clusters, ``1 <= k <= n``.
        niter: Lloyd iterations per restart (faiss stops sooner only if the objective stops changing).
        seed: random seed of the training sample and the seeding.
        nredo: restarts; the one with the best objective on the training sample is kept (the lowest sum of
            squared distances; with ``spherical``, the highest sum of inner products).
        max_points_per_centroid: train on a random sample of at most ``k * max_points_per_centroid``
            samples; None trains on every sample.
        spherical: normalise centroids to unit length after each update (training then assigns by inner
            product). The final assignment is by L2, which agrees when the rows of ``x`` have unit norm.
        feedback: progress, warnings and cancel (checked between restarts and between assignment batches;
            a faiss training call itself cannot be interrupted).
        gpu: use faiss's GPU index (None: when faiss sees a GPU).
        init: ``"kmeans++"`` (greedy k-means++ as above: it finds small clusters that random seeds miss) or
            ``"random"`` (faiss's classic seeding: k random samples).

    Returns:
        A :class:`KMeansResult`.

    Raises:
        InputError: on a bad array, an unknown ``init`` or out-of-range ``k``, ``niter``, ``nredo`` or
            ``max_points_per_centroid``.
        CanceledError: when the user cancels.
        MissingDependencyError: when faiss (or, for ``"kmeans++"``, scikit-learn) is not installed.
    """
    feedback = feedback or NullFeedback()
    data = as_matrix(x)
    n, d = data.shape
    k = int(k)
    if k < 1:
        raise InputError(f"the number of clusters must be at least 1, got {k}", "NUM_CLUSTERS")
    if k > n:
        raise InputError(f"asked for {k} clusters but only {n} samples were given; lower NUM_CLUSTERS or "
                         "sample more pixels", "NUM_CLUSTERS")
    if niter < 1 or nredo < 1:
        raise InputError(f"niter and nredo must be at least 1, got niter={niter}, nredo={nredo}")
    if init not in INIT_METHODS:
        raise InputError(f"unknown k-means initialisation {init!r}; use one of {', '.join(INIT_METHODS)}")
    if max_points_per_centroid is not None and max_points_per_centroid < 1:
        raise InputError(f"max_points_per_centroid must be at least 1 or None, got {max_points_per_centroid}")
    if n < k * MIN_POINTS_PER_CENTROID:
        feedback.warning(f"only {n} samples for {k} clusters (fewer than {MIN_POINTS_PER_CENTROID} per cluster): "
                         "the centroids will be noisy; sample more pixels or lower NUM_CLUSTERS")
    faiss = require("faiss")
    on_gpu = _use_gpu(faiss, gpu)
    sample = data
    if max_points_per_centroid is not None and n > k * max_points_per_centroid:
        rows = np.random.default_rng(seed).choice(n, k * int(max_points_per_centroid), replace=False)
        sample = data[np.sort(rows)]
    m = sample.shape[0]
    best: Optional[Tuple[float, np.ndarray, int]] = None
    for redo in range(int(nredo)):
        check_canceled(feedback)
        trainer = faiss.Kmeans(d, k, niter=int(niter), seed=int(seed) + redo, spherical=bool(spherical),
                               max_points_per_centroid=m // k + 1, min_points_per_centroid=1, verbose=False,
                               gpu=on_gpu)
        start = None
        if init == "kmeans++" and k > 1:
            rng = np.random.default_rng((int(seed) * 1009 + redo) % 2**32)
            pool = sample
            if m > k * SEEDING_POINTS_PER_CENTROID:
                pool = sample[np.sort(rng.choice(m, k * SEEDING_POINTS_PER_CENTROID, replace=False))]
            start, _ = require("sklearn.cluster").kmeans_plusplus(pool, k, random_state=int(rng.integers(2**31)))
            start = np.ascontiguousarray(start, np.float32)
        with _serial_if_small(faiss, m * k * d):
            trainer.train(sample, init_centroids=start)
        objective = float(trainer.obj[-1]) if len(trainer.obj) else 0.0
        # spherical training searches by inner product: its objective is a similarity, higher is better
        if best is None or (objective > best[0] if spherical else objective < best[0]):
            best = (objective, np.ascontiguousarray(trainer.centroids, np.float32).reshape(k, d), len(trainer.obj))
        feedback.set_progress(80.0 * (redo + 1) / nredo)
    _, centroids, iterations = best
    labels, distances = _assign(data, centroids, 65536, SubFeedback(feedback, 80.0, 100.0), on_gpu)
    return KMeansResult(centroids=centroids, assignments=labels, distances=distances.astype(np.float32),
                        objective=float(distances.sum()), sizes=np.bincount(labels, minlength=k).astype(np.int64),
                        iterations=iterations or int(niter))


@dataclass
class Whitening:
    """PCA whitening: centre, project on the leading principal axes, scale each to unit variance.

    Attributes:
        mean: ``(d,)`` float32 mean of the fitted data.
        matrix: ``(d_out, d)`` float32; row ``i`` is principal axis ``i`` divided by ``sqrt(eigenvalue_i + eps)``.
    """

    mean: np.ndarray
    matrix: np.ndarray

    @property
    def d_in(self) -> int:
        """Input dimension."""
        return int(self.matrix.shape[1])

    @property
    def d_out(self) -> int:
        """Output dimension."""
        return int(self.matrix.shape[0])

    def apply(self, x: Any) -> np.ndarray:
        """Whiten ``x`` ``(n, d_in)``: return ``(x - mean) @ matrix.T`` as float32 ``(n, d_out)``."""
        data = as_matrix(x)
        if data.shape[1] != self.d_in:
            raise InputError(f"features have {data.shape[1]} dimensions but the whitening was fitted on "
                             f"{self.d_in}; fit it on features of the same kind")
        return np.ascontiguousarray((data - self.mean) @ self.matrix.T, dtype=np.float32)

    @classmethod
    def fit(cls, x: Any, dim: Optional[int] = None, eps: float = 1e-5) -> Whitening:
        """Fit PCA whitening on ``x``.

        On the fitted data, the output covariance (population, divided by ``n``) is the identity up to
        ``eigenvalue / (eigenvalue + eps)``. Axes are ordered by decreasing variance and their signs fixed
        (largest component positive), so the same data always gives the same matrix.

        faiss's ``PCAMatrix(d_in, d_out, eigen_power=-0.5)`` is not used: it divides by the square root of
        the eigenvalues of the *unnormalised* scatter matrix (``n`` times the covariance), so its output
        variance is ``1/n`` rather than 1 and ``epsilon`` does not act on the covariance scale; it also
        trains on at most ``1000 * d`` samples and in float32. With ``d <= 512`` a float64 covariance and
        ``numpy.linalg.eigh`` are cheap and exact.

        Args:
            x: ``(n, d)`` samples, ``n >= 2``.
            dim: output dimension (``1..d``); None keeps ``d``.
            eps: added to each eigenvalue before the square root, so near-constant axes are not blown up.

        Returns:
            The fitted :class:`Whitening`.

        Raises:
            InputError: on a bad array, ``n < 2``, ``dim`` out of range or ``eps < 0``.
        """
        data = as_matrix(x)
        n, d = data.shape
        dim = d if dim is None else int(dim)
        if n < 2:
            raise InputError(f"whitening needs at least 2 samples, got {n}")
        if not 1 <= dim <= d:
            raise InputError(f"the whitened dimension must be between 1 and {d}, got {dim}")
        if eps < 0:
            raise InputError(f"eps must be non-negative, got {eps}")
        mean = np.zeros(d, np.float64)
        for start in range(0, n, _COVARIANCE_BATCH):
            mean += data[start:start + _COVARIANCE_BATCH].sum(axis=0, dtype=np.float64)
        mean /= n
        covariance = np.zeros((d, d), np.float64)
        for start in range(0, n, _COVARIANCE_BATCH):
            block = data[start:start + _COVARIANCE_BATCH].astype(np.float64) - mean
            covariance += block.T @ block
        covariance /= n
        values, vectors = np.linalg.eigh(covariance)
        order = np.argsort(values)[::-1][:dim]
        values, vectors = np.clip(values[order], 0.0, None), vectors[:, order].T
        signs = np.sign(vectors[np.arange(dim), np.abs(vectors).argmax(axis=1)])
        matrix = vectors * signs[:, None] / np.sqrt(values + eps)[:, None]
        return cls(mean=mean.astype(np.float32), matrix=np.ascontiguousarray(matrix, dtype=np.float32))


def l2_normalize(x: Any, eps: float = 1e-12) -> np.ndarray:
    """Scale each row of ``x`` to unit L2 norm (rows with norm below ``eps`` are divided by ``eps``).

    Args:
        x: ``(..., d)`` array; float arrays keep their dtype, others become float32.
        eps: smallest norm divided by, so zero rows stay zero instead of becoming NaN.

    Returns:
        The normalised array, same shape.
    """
    array = np.asarray(x)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    return array / np.maximum(norms, eps).astype(array.dtype)


