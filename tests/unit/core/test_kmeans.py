"""The k-means toolbox: faiss k-means, batched nearest centroid, PCA whitening, NMI and the exact silhouette."""

import numpy as np
import pytest

from satseg_plugin.core.errors import CanceledError, InputError
from satseg_plugin.core.kmeans import (
    KMeansResult,
    Whitening,
    kmeans,
    l2_normalize,
    nearest_centroid,
    nearest_centroid_tensor,
)
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.core.scores import nmi, silhouette

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def blobs(n_per=200, k=5, d=8, spread=0.3, seed=0):
    """``k`` tight Gaussian blobs whose centres are at least ~10 apart: ``(x float32, true labels)``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(k, d))
    truth = np.repeat(np.arange(k), n_per)
    x = centres[truth] + rng.normal(scale=spread, size=(k * n_per, d))
    order = rng.permutation(truth.size)
    return x[order].astype(np.float32), truth[order]


def brute_force(x, centroids):
    """Squared L2 from every sample to every centroid, in float64."""
    x64, c64 = np.asarray(x, np.float64), np.asarray(centroids, np.float64)
    return ((x64[:, None, :] - c64[None, :, :]) ** 2).sum(axis=2)


# --------------------------------------------------------------------------------------------- kmeans

def test_kmeans_recovers_separated_blobs_exactly():
    x, truth = blobs()
    result = kmeans(x, 5, seed=0, nredo=3)
    assert isinstance(result, KMeansResult)
    # purity 1.0 both ways: every cluster holds one true blob and every blob lands in one cluster
    contingency = np.zeros((5, 5), int)
    np.add.at(contingency, (result.assignments, truth), 1)
    assert (contingency > 0).sum(axis=1).tolist() == [1] * 5
    assert sorted(contingency.max(axis=0).tolist()) == [200] * 5
    assert result.sizes.tolist() == [200] * 5
    assert nmi(result.assignments, truth) == pytest.approx(1.0)


def test_kmeans_result_types_and_objective_is_the_recomputed_inertia():
    x = np.random.default_rng(1).normal(size=(2000, 6)).astype(np.float32)
    result = kmeans(x, 12, niter=10, seed=3)
    assert result.centroids.shape == (12, 6) and result.centroids.dtype == np.float32
    assert result.assignments.shape == (2000,) and result.assignments.dtype == np.int64
    assert result.distances.dtype == np.float32 and result.sizes.dtype == np.int64
    assert result.k == 12 and result.iterations == 10
    squared = brute_force(x, result.centroids)
    own = squared[np.arange(2000), result.assignments]
    assert result.objective == pytest.approx(own.sum(), rel=1e-6)  # float32 differences, summed in float64
    np.testing.assert_allclose(result.distances, own, rtol=1e-5, atol=1e-6)
    # each sample's centroid is its nearest (up to float32 ties)
    assert np.all(own <= squared.min(axis=1) * (1 + 1e-5) + 1e-6)
    assert result.sizes.tolist() == np.bincount(result.assignments, minlength=12).tolist()


def test_kmeans_same_seed_same_result():
    x = np.random.default_rng(2).normal(size=(3000, 5)).astype(np.float32)
    first, second = kmeans(x, 8, seed=7), kmeans(x, 8, seed=7)
    np.testing.assert_array_equal(first.centroids, second.centroids)
    np.testing.assert_array_equal(first.assignments, second.assignments)
    assert first.objective == second.objective


def test_kmeans_with_one_cluster_finds_the_mean():
    x = np.random.default_rng(3).normal(loc=5.0, size=(500, 4))
    result = kmeans(x, 1, max_points_per_centroid=None)  # trained on every sample
    np.testing.assert_allclose(result.centroids[0], x.mean(axis=0), rtol=1e-5)
    assert result.assignments.tolist() == [0] * 500
    # by default on a sample of 256 (per centroid): the sample's mean, within its standard error of 1 / 16
    sampled = kmeans(x, 1)
    sample = np.sort(np.random.default_rng(0).choice(500, 256, replace=False))
    np.testing.assert_allclose(sampled.centroids[0], x[sample].mean(axis=0), rtol=1e-5)
    assert np.abs(sampled.centroids[0] - x.mean(axis=0)).max() < 0.25


def test_kmeans_subsampled_training_still_assigns_every_sample():
    x, _ = blobs(n_per=300, k=4)
    result = kmeans(x, 4, max_points_per_centroid=40, nredo=3)
    assert result.assignments.shape == (1200,) and result.sizes.sum() == 1200


def test_kmeans_accepts_spherical_on_unit_rows():
    x = l2_normalize(np.random.default_rng(4).normal(size=(800, 6)).astype(np.float32))
    result = kmeans(x, 6, spherical=True)
    np.testing.assert_allclose(np.linalg.norm(result.centroids, axis=1), 1.0, rtol=1e-5)


def test_kmeans_plus_plus_seeding_beats_random_seeding_on_uneven_clusters():
    # one big blob and five small ones: random seeds land mostly in the big blob, D^2 seeding finds the rest
    rng = np.random.default_rng(13)
    truth = np.repeat(np.arange(6), [3000, 15, 15, 15, 15, 15])
    x = (20.0 * np.eye(6)[truth] + rng.normal(scale=0.5, size=(truth.size, 6))).astype(np.float32)
    plus = sum(kmeans(x, 6, seed=seed, init="kmeans++").objective for seed in range(4))
    random = sum(kmeans(x, 6, seed=seed, init="random").objective for seed in range(4))
    assert plus < 0.8 * random
    with pytest.raises(InputError, match="kmeans\\+\\+"):
        kmeans(x, 6, init="k-means++")


def test_more_clusters_than_samples_names_num_clusters():
    x = np.zeros((10, 3), np.float32)
    with pytest.raises(InputError, match="NUM_CLUSTERS") as info:
        kmeans(x, 11)
    assert info.value.parameter == "NUM_CLUSTERS"
    assert "sample more pixels" in str(info.value)
    with pytest.raises(InputError, match="NUM_CLUSTERS"):
        kmeans(x, 0)


@pytest.mark.parametrize("bad", [np.zeros(10), np.zeros((0, 3)), np.array([[1.0, np.nan]] * 4),
                                 np.array([["a", "b"]] * 4)])
def test_kmeans_rejects_bad_arrays(bad):
    with pytest.raises(InputError):
        kmeans(bad, 2)


def test_kmeans_warns_when_clusters_have_few_samples():
    feedback = RecordingFeedback()
    kmeans(np.random.default_rng(5).normal(size=(100, 2)), 10, feedback=feedback)
    assert any("fewer than 39 per cluster" in message for message in feedback.warnings)
    assert feedback.progress[-1] == pytest.approx(100.0)


# ----------------------------------------------------------------------------------- nearest_centroid

@pytest.mark.parametrize("n, batch", [(1000, 128), (1000, 1000), (1000, 999), (1000, 4096), (7, 1)])
def test_nearest_centroid_matches_brute_force_across_batch_boundaries(n, batch):
    rng = np.random.default_rng(n + batch)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    centroids = rng.normal(size=(17, 6)).astype(np.float32)
    labels, distances = nearest_centroid(x, centroids, batch=batch)
    assert labels.dtype == np.int64 and distances.dtype == np.float32 and labels.shape == (n,)
    squared = brute_force(x, centroids)
    expected = squared.argmin(axis=1)
    # any disagreement must be a float32 tie
    differ = labels != expected
    np.testing.assert_allclose(squared[differ, labels[differ]], squared[differ, expected[differ]], rtol=1e-5)
    np.testing.assert_allclose(distances, squared.min(axis=1), rtol=1e-5, atol=1e-6)


def test_nearest_centroid_is_exact_far_from_the_origin():
    # |x|^2 + |c|^2 - 2 x.c in float32 loses everything at 1e4 offsets; the returned distances do not
    rng = np.random.default_rng(6)
    x = (1e4 + rng.normal(size=(300, 3))).astype(np.float32)
    centroids = x[:5].copy()
    labels, distances = nearest_centroid(x, centroids)
    assert distances[:5].tolist() == [0.0] * 5 and labels[:5].tolist() == list(range(5))
    np.testing.assert_allclose(distances, brute_force(x, centroids)[np.arange(300), labels], rtol=1e-4)


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_nearest_centroid_tensor_matches_the_faiss_search(offset):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = (offset + rng.normal(size=(5000, 6))).astype(np.float32)
    centroids = (offset + rng.normal(size=(17, 6))).astype(np.float32)
    labels = nearest_centroid_tensor(torch.from_numpy(x), torch.from_numpy(centroids))
    assert labels.dtype == torch.int64 and labels.shape == (5000,)
    squared = brute_force(x, centroids)
    expected = squared.argmin(axis=1)
    differ = labels.numpy() != expected  # any disagreement must be a float32 tie
    assert differ.mean() < 1e-3
    np.testing.assert_allclose(squared[differ, labels.numpy()[differ]], squared[differ, expected[differ]],
                               rtol=1e-4)
    with pytest.raises(InputError):
        nearest_centroid_tensor(torch.from_numpy(x), torch.from_numpy(centroids[:, :3]))


def test_nearest_centroid_checks_shapes_and_cancels():
    x = np.zeros((50, 3), np.float32)
    with pytest.raises(InputError, match="features"):
        nearest_centroid(x, np.zeros((2, 4)))
    with pytest.raises(InputError):
        nearest_centroid(x, np.zeros((2, 3)), batch=0)
    with pytest.raises(CanceledError):
        nearest_centroid(x, np.zeros((2, 3)), batch=10, feedback=RecordingFeedback(cancel_after=2))


# ----------------------------------------------------------------------------------------- whitening

def correlated(n=5000, d=6, seed=7):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) * np.linspace(0.5, 4.0, d)
    return (rng.normal(size=(n, d)) @ mixing.T + 20.0).astype(np.float32)


def test_whitening_gives_identity_covariance_on_the_fitted_data():
    x = correlated()
    white = Whitening.fit(x)
    assert white.d_in == white.d_out == 6 and white.matrix.dtype == np.float32
    y = white.apply(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(np.cov(y, rowvar=False, bias=True), np.eye(6), atol=1e-3)


def test_whitening_reduces_to_the_leading_principal_axes():
    x = correlated()
    white = Whitening.fit(x, dim=3)
    y = white.apply(x)
    assert y.shape == (5000, 3)
    np.testing.assert_allclose(np.cov(y, rowvar=False, bias=True), np.eye(3), atol=1e-3)
    values, vectors = np.linalg.eigh(np.cov(x.astype(np.float64), rowvar=False, bias=True))
    top = vectors[:, ::-1][:, :3].T
    rows = white.matrix / np.linalg.norm(white.matrix, axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs((rows * top).sum(axis=1)), 1.0, atol=1e-4)  # same axes, same order
    np.testing.assert_allclose(1.0 / np.linalg.norm(white.matrix, axis=1) ** 2, values[::-1][:3], rtol=1e-4)


def test_whitening_checks_its_arguments():
    x = correlated(n=100)
    with pytest.raises(InputError):
        Whitening.fit(x, dim=7)
    with pytest.raises(InputError):
        Whitening.fit(x[:1])
    with pytest.raises(InputError, match="fitted on 6"):
        Whitening.fit(x).apply(x[:, :5])


# --------------------------------------------------------------------------------- small helpers

def test_l2_normalize_gives_unit_rows_and_keeps_zero_rows():
    x = np.random.default_rng(8).normal(size=(20, 5))
    x[3] = 0.0
    y = l2_normalize(x)
    assert y.dtype == np.float64
    norms = np.linalg.norm(y, axis=1)
    assert norms[3] == 0.0
    np.testing.assert_allclose(np.delete(norms, 3), 1.0, rtol=1e-12)
    assert l2_normalize(np.array([[3, 4]])).tolist() == [[pytest.approx(0.6), pytest.approx(0.8)]]


def test_nmi_of_a_renamed_labelling_is_one():
    labels = np.random.default_rng(9).integers(0, 6, 500)
    renamed = np.array([5, 3, 0, 1, 4, 2])[labels] + 10
    assert nmi(labels, renamed) == pytest.approx(1.0)
    assert nmi(labels, np.random.default_rng(10).integers(0, 6, 500)) < 0.05
    with pytest.raises(InputError):
        nmi(labels, labels[:-1])


# ---------------------------------------------------------------------------------------- silhouette

def silhouette_cases():
    rng = np.random.default_rng(11)
    x, truth = blobs(n_per=60, k=4, d=5, spread=2.0)
    noise = rng.normal(size=(300, 4))
    singleton = truth.copy()
    singleton[0] = 99  # a cluster of one sample scores 0, as in scikit-learn
    ties = np.repeat(rng.normal(size=(40, 3)), 2, axis=0)  # duplicated points: a = 0 for some samples
    return {
        "blobs": (x, truth),
        "blobs float64 odd labels": (x.astype(np.float64), np.array([-1, 5, 9, 12])[truth]),
        "random labels": (noise, rng.integers(0, 3, 300)),
        "two clusters": (noise, (noise[:, 0] > 0).astype(int)),
        "singleton cluster": (x, singleton),
        "duplicates": (ties, np.repeat(np.arange(40) % 5, 2)),
    }


@pytest.mark.parametrize("chunk", [4096, 37])
@pytest.mark.parametrize("case", list(silhouette_cases()))
def test_silhouette_equals_scikit_learn(case, chunk):
    x, labels = silhouette_cases()[case]
    expected = sklearn_metrics.silhouette_score(np.asarray(x, np.float64), labels)
    assert silhouette(x, labels, chunk=chunk) == pytest.approx(expected, abs=1e-5)


def test_silhouette_sample_is_seeded_and_large_samples_mean_everything():
    x, labels = blobs(n_per=100, k=3, d=4, spread=3.0)
    full = silhouette(x, labels)
    assert silhouette(x, labels, sample=10_000) == pytest.approx(full, abs=1e-12)
    part = silhouette(x, labels, sample=120, seed=1)
    assert part == silhouette(x, labels, sample=120, seed=1)
    assert part != silhouette(x, labels, sample=120, seed=2)
    assert part == pytest.approx(full, abs=0.1)


def test_silhouette_rejects_undefined_cases_and_cancels():
    x = np.random.default_rng(12).normal(size=(30, 2))
    with pytest.raises(InputError, match="clusters"):
        silhouette(x, np.zeros(30, int))
    with pytest.raises(InputError, match="labels"):
        silhouette(x, np.zeros(29, int))
    with pytest.raises(CanceledError):
        silhouette(x, np.arange(30) % 3, chunk=5, feedback=RecordingFeedback(cancel_after=2))


def test_spherical_restarts_keep_the_most_similar_centroids():
    """Spherical training scores restarts by inner product (higher is better): the kept restart is never worse
    than the first one alone."""
    rng = np.random.default_rng(21)
    directions = l2_normalize(rng.normal(size=(8, 5)))
    x = l2_normalize((directions[rng.integers(0, 8, 4000)] + rng.normal(scale=0.35, size=(4000, 5))).astype(np.float32))
    one = kmeans(x, 8, seed=2, nredo=1, spherical=True, max_points_per_centroid=None)
    best = kmeans(x, 8, seed=2, nredo=6, spherical=True, max_points_per_centroid=None)
    assert best.objective <= one.objective * (1 + 1e-6)
