"""Per-frame population communities: channels, window autoencoder, grid DBSCAN (against scikit-learn), records."""

import numpy as np
import pytest
from affine import Affine

torch = pytest.importorskip("torch")
sklearn_cluster = pytest.importorskip("sklearn.cluster")
pytest.importorskip("faiss")

from satseg_plugin.core.errors import CanceledError, InputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.models.nets.window_ae import WindowAE
from satseg_plugin.pipelines.population.autoencoder import (
    encode_pixels,
    normalise_channels,
    pad_channels,
    train_window_ae,
    windows_at,
)
from satseg_plugin.pipelines.population.communities import (
    CommunityConfig,
    community_records,
    dbscan_segments,
    disk_offsets,
    frame_communities,
    grid_dbscan,
    k_report,
    order_segments,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: A rotated, sheared, non-square-pixel grid, so centroids and polygons must go through the whole affine.
TRANSFORM = Affine(30.0, 8.0, 500_000.0, 5.0, -40.0, 6_000_000.0)


def gaussian(shape, centre, sigma, peak):
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    return peak * np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2.0 * sigma ** 2))


def town_frame(size=48, seed=0):
    """Four towns on empty land, each moving its own way; a NaN sea strip on the left."""
    rng = np.random.default_rng(seed)
    population = np.zeros((size, size))
    u, v = np.zeros((size, size), np.float32), np.zeros((size, size), np.float32)
    for centre, sigma, peak in (((12, 14), 3.0, 900.0), ((34, 34), 4.0, 400.0), ((12, 36), 2.5, 250.0),
                                ((36, 12), 3.5, 600.0)):
        town = gaussian((size, size), centre, sigma, peak)
        population += town
        inside = town > 0.05 * peak
        u[inside], v[inside] = rng.normal(size=2)
    population[population < 1.0] = 0.0
    population[:, :3] = np.nan
    return population.astype(np.float32), u, v


def small_config(**changes):
    settings = dict(epochs=8, centres_per_epoch=200, batch_size=50, holdout=100, k=3, k_min=2, k_max=4,
                    eps=2.5, min_samples=5, device="cpu")
    settings.update(changes)
    return CommunityConfig(**settings)


# --------------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("changes,parameter", [({"window": 6}, "WINDOW"), ({"window": 1}, "WINDOW"),
                                               ({"k": 1}, "K"), ({"eps": 0.0}, "EPS"), ({"eps": float("nan")}, "EPS"),
                                               ({"min_samples": 0}, "MIN_SAMPLES"),
                                               ({"k_min": 5, "k_max": 4}, "K_MAX"), ({"epochs": 0}, "EPOCHS"),
                                               ({"clip_quantile": 0.4}, "CLIP_QUANTILE"),
                                               ({"pop_min": -1.0}, "POP_MIN"),
                                               ({"learning_rate": 0.0}, "LEARNING_RATE")])
def test_bad_settings_name_their_parameter(changes, parameter):
    with pytest.raises(InputError, match=f"^{parameter}: must be"):
        CommunityConfig(**changes).validate()


# --------------------------------------------------------------------------------------------- channels

def test_channels_are_normalised_per_frame_so_a_scaled_frame_gives_the_same_channels():
    population, u, v = town_frame()
    first = normalise_channels(population, u, v, clip_quantile=1.0)
    scaled = normalise_channels(population * 50.0, u * 3.0, v * 3.0, clip_quantile=1.0)
    np.testing.assert_allclose(first.channels, scaled.channels, atol=1e-6)
    assert first.high[0] == pytest.approx(float(np.nanmax(population)), rel=1e-6)
    assert scaled.high[0] == pytest.approx(50.0 * float(np.nanmax(population)), rel=1e-6)
    channels = first.channels
    assert channels.shape == (5, 48, 48) and channels.dtype == np.float32
    assert channels.min() >= 0.0 and channels.max() <= 1.0
    assert not first.valid[:, :3].any() and first.valid[:, 3:].all()
    assert (channels[:3, :, :3] == 0).all()  # nodata -> 0
    assert channels[0][first.valid].max() == pytest.approx(1.0) and channels[0][first.valid].min() == 0.0
    np.testing.assert_allclose(channels[3][:, 0], np.linspace(0, 1, 48), atol=1e-6)
    np.testing.assert_allclose(channels[4][0], np.linspace(0, 1, 48), atol=1e-6)


def test_clipping_keeps_one_extreme_pixel_from_squeezing_the_rest():
    population = np.tile(np.arange(100, dtype=np.float32), (10, 1))
    population[0, 0] = 1e6  # one city far above the rest
    flat = np.zeros_like(population)
    plain = normalise_channels(population, flat, flat, clip_quantile=1.0)
    clipped = normalise_channels(population, flat, flat, clip_quantile=0.99)
    assert plain.channels[0][5, 99] < 1e-3  # min-max alone: every other pixel near 0
    assert clipped.channels[0][5, 99] > 0.99 and clipped.channels[0][0, 0] == 1.0
    assert clipped.high[0] == pytest.approx(np.quantile(population, 0.99))


def test_nan_flow_on_a_valid_pixel_counts_as_no_motion():
    population = np.ones((8, 8), np.float32)
    u = np.tile(np.linspace(-2, 2, 8, dtype=np.float32), (8, 1))
    with_nan = u.copy()
    with_nan[4, 4] = np.nan
    channels = normalise_channels(population, with_nan, u, clip_quantile=1.0).channels
    zero = normalise_channels(population, np.where(np.isnan(with_nan), 0, with_nan), u, clip_quantile=1.0).channels
    np.testing.assert_array_equal(channels, zero)
    assert channels[1, 4, 4] == pytest.approx(0.5)  # 0 px/frame in [-2, 2]


def test_windows_are_padded_by_reflection_and_centred_on_their_pixel():
    channels = np.random.default_rng(0).random((5, 9, 11)).astype(np.float32)
    padded = pad_channels(channels, 5)
    rows, cols = np.array([0, 4, 8, 0]), np.array([0, 5, 10, 10])
    windows = windows_at(padded, rows, cols, 5)
    assert windows.shape == (4, 5, 5, 5)
    for i, (r, c) in enumerate(zip(rows, cols)):
        np.testing.assert_array_equal(windows[i, :, 2, 2], channels[:, r, c])
    # corner (0, 0): row -1 is row 1, column -2 is column 2 (reflection without repeating the edge)
    np.testing.assert_array_equal(windows[0, :, 1, 0], channels[:, 1, 2])
    np.testing.assert_array_equal(windows[0, :, 0, 4], channels[:, 2, 2])


# --------------------------------------------------------------------------------------------- autoencoder

def test_encoding_in_strips_equals_encoding_every_window_at_once():
    rng = np.random.default_rng(1)
    channels = rng.random((5, 20, 23)).astype(np.float32)
    pixels = rng.random((20, 23)) < 0.6
    torch.manual_seed(0)
    model = WindowAE(window=7).eval()
    rows, cols = np.nonzero(pixels)
    with torch.no_grad():
        expected = model.encode(torch.from_numpy(windows_at(pad_channels(channels, 7), rows, cols, 7))).numpy()
    feedback = RecordingFeedback()
    codes = encode_pixels(model, channels, pixels, tile_pixels=3 * 23, feedback=feedback)  # 7 strips of 3 rows
    assert codes.shape == (int(pixels.sum()), 16) and codes.dtype == np.float32
    np.testing.assert_allclose(codes, expected, rtol=1e-5, atol=1e-5)
    assert len(feedback.progress) == 7 and feedback.progress[-1] == pytest.approx(100.0)


def test_autoencoder_learns_and_reports_held_out_error_far_below_the_mean_window():
    population, u, v = town_frame()
    stack = normalise_channels(population, u, v)
    populated = stack.valid & (np.nan_to_num(population) > 0)
    config = small_config(epochs=60, centres_per_epoch=500, batch_size=50)
    trained = train_window_ae(stack.channels, populated, config)
    assert trained.holdout == 100
    assert trained.mse < 0.25 * trained.baseline_mse  # measured: 0.09
    assert trained.mse_std > 0 and np.isfinite(trained.mse_std)
    assert len(trained.losses) == 60 and np.mean(trained.losses[-5:]) < 0.5 * trained.losses[0]
    again = train_window_ae(stack.channels, populated, small_config(epochs=3))
    same = train_window_ae(stack.channels, populated, small_config(epochs=3))
    assert again.losses == same.losses and again.mse == same.mse  # seeded


def test_training_cancels_between_epochs():
    population, u, v = town_frame()
    stack = normalise_channels(population, u, v)
    feedback = RecordingFeedback(cancel_after=2)
    with pytest.raises(CanceledError):
        train_window_ae(stack.channels, stack.valid, small_config(epochs=50), feedback=feedback)
    assert len(feedback.progress) == 2


# --------------------------------------------------------------------------------------------- grid DBSCAN

def sklearn_dbscan(mask, eps, min_samples):
    rows, cols = np.nonzero(mask)
    fitted = sklearn_cluster.DBSCAN(eps=eps, min_samples=min_samples).fit(np.stack([rows, cols], 1).astype(float))
    core = np.zeros(mask.shape, bool)
    core[rows[fitted.core_sample_indices_], cols[fitted.core_sample_indices_]] = True
    labels = np.full(mask.shape, -2)
    labels[rows, cols] = fitted.labels_
    return labels, core


def random_mask(seed, shape):
    rng = np.random.default_rng(seed)
    ndimage = pytest.importorskip("scipy.ndimage")
    field = ndimage.gaussian_filter(rng.random(shape), 1.5)
    return (field > np.quantile(field, rng.uniform(0.4, 0.8))) | (rng.random(shape) < rng.uniform(0.0, 0.1))


@pytest.mark.parametrize("eps,min_samples", [(0.5, 1), (1.0, 3), (1.5, 4), (2.0, 2), (2.5, 9), (3.0, 12),
                                             (5.0, 20), (5.0, 1), (4.2, 40)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grid_dbscan_matches_sklearn(eps, min_samples, seed):
    mask = random_mask(seed, (40, 37))
    labels, core = grid_dbscan(mask, eps, min_samples)
    expected, expected_core = sklearn_dbscan(mask, eps, min_samples)
    np.testing.assert_array_equal(core, expected_core)
    assert labels.dtype == np.int32 and (labels[~mask] == 0).all()
    np.testing.assert_array_equal(labels[mask] == 0, expected[mask] == -1)  # same noise
    ours, theirs = labels[core], expected[core]
    mapping = dict(zip(ours.tolist(), theirs.tolist()))
    assert len(mapping) == len(set(theirs.tolist())) == len(set(ours.tolist()))  # same partition of the cores
    assert [mapping[o] for o in ours.tolist()] == theirs.tolist()
    assert sorted(mapping) == list(range(1, len(mapping) + 1))
    # a border pixel may differ from sklearn only by taking another cluster that has a core within eps
    offsets = disk_offsets(eps)
    for r, c in zip(*np.nonzero(mask & ~core & (labels > 0))):
        near = {int(expected[r + dr, c + dc]) for dr, dc in offsets
                if 0 <= r + dr < mask.shape[0] and 0 <= c + dc < mask.shape[1] and core[r + dr, c + dc]}
        assert mapping[int(labels[r, c])] in near
        assert expected[r, c] in near


def test_eps_is_inclusive_and_cores_join_across_gaps_up_to_eps():
    mask = np.zeros((12, 20), bool)
    mask[2, 2] = mask[5, 6] = True  # exactly 5 apart (3-4-5)
    labels, core = grid_dbscan(mask, 5.0, 2)
    assert core[2, 2] and core[5, 6] and labels[2, 2] == labels[5, 6] == 1
    labels, core = grid_dbscan(mask, 4.99, 2)
    assert not core.any() and not labels.any()
    # two 3 x 3 blocks 6 columns apart: no pixel path, one cluster at eps 6, two at eps 5.9
    mask = np.zeros((12, 20), bool)
    mask[4:7, 2:5] = mask[4:7, 10:13] = True
    assert grid_dbscan(mask, 6.0, 4)[0].max() == 1
    assert grid_dbscan(mask, 5.9, 4)[0].max() == 2


def test_segments_are_unique_across_labels_and_separate_blobs_of_one_label_split():
    labels = np.full((40, 60), -1, np.int16)
    labels[5:15, 5:15] = 0
    labels[25:35, 45:55] = 0  # far from the first: same k-means label, another segment
    labels[5:15, 30:40] = 1
    labels[20, 20] = 1  # a lone pixel: noise
    feedback = RecordingFeedback()
    segments = dbscan_segments(labels, eps=2.0, min_samples=5, feedback=feedback)
    assert segments.dtype == np.int32
    assert sorted(np.unique(segments).tolist()) == [0, 1, 2, 3]
    for sid in (1, 2, 3):
        assert np.unique(labels[segments == sid]).size == 1  # a segment never mixes k-means labels
    assert segments[10, 10] != segments[30, 50] and labels[10, 10] == labels[30, 50]
    assert segments[20, 20] == 0 and (segments[labels < 0] == 0).all()
    assert len(feedback.progress) == 2  # one step per label


def test_order_segments_by_decreasing_population_then_position():
    segments = np.array([[5, 5, 0, 9], [0, 7, 7, 9]], np.int32)
    population = np.array([[1, 1, 50, 3], [0, 2, 2, np.nan]], np.float32)
    ordered = order_segments(segments, population)
    # 7 holds 4, 9 holds 3, 5 holds 2
    np.testing.assert_array_equal(ordered, [[3, 3, 0, 2], [0, 1, 1, 2]])
    tied = order_segments(np.array([[4, 0, 2]], np.int32), np.array([[1, 0, 1]], np.float32))
    np.testing.assert_array_equal(tied, [[1, 0, 2]])  # equal populations: first in raster order first


# --------------------------------------------------------------------------------------------- records

def test_records_sum_population_and_find_the_centroid_of_a_symmetric_blob_in_map_coordinates():
    shape = (30, 40)
    population = gaussian(shape, (10, 12), 2.0, 100.0).astype(np.float32)
    segments = np.zeros(shape, np.int32)
    segments[5:16, 7:18] = 1  # symmetric around (10, 12)
    segments[20:24, 25:27] = 2
    segments[20:24, 32:34] = 2  # two pieces: one MultiPolygon
    population[20:24, 25:34] = np.arange(36, dtype=np.float32).reshape(4, 9)
    labels = np.where(segments == 1, 4, np.where(segments == 2, 7, -1)).astype(np.int16)
    records = community_records(segments, labels, population, TRANSFORM, pixel_area_m2=1234.0)
    assert [r.segment_id for r in records] == [1, 2]
    first, second = records
    assert first.population == pytest.approx(float(population[segments == 1].sum(dtype=np.float64)), rel=1e-9)
    assert second.population == pytest.approx(float(population[segments == 2].sum(dtype=np.float64)), rel=1e-9)
    assert (first.kmeans_label, second.kmeans_label) == (4, 7)
    assert (first.pixels, second.pixels) == (121, 16)
    assert first.area_km2 == pytest.approx(121 * 1234.0 / 1e6)
    x, y = TRANSFORM * (12.5, 10.5)  # the centre of pixel (row 10, column 12)
    assert (first.centroid_x, first.centroid_y) == (pytest.approx(x, abs=1e-6), pytest.approx(y, abs=1e-6))
    pixel_area = abs(TRANSFORM.determinant)
    assert first.geometry.geom_type == "Polygon" and first.geometry.area == pytest.approx(121 * pixel_area)
    assert second.geometry.geom_type == "MultiPolygon" and len(second.geometry.geoms) == 2
    assert second.geometry.is_valid and second.geometry.area == pytest.approx(16 * pixel_area)
    assert first.geometry.contains(pytest.importorskip("shapely.geometry").Point(first.centroid_x, first.centroid_y))


# --------------------------------------------------------------------------------------------- one frame

def test_frame_communities_finds_the_towns_with_unique_ordered_ids():
    population, u, v = town_frame()
    feedback = RecordingFeedback()
    result = frame_communities(population, u, v, TRANSFORM, 900.0, small_config(), feedback, report_k=True)
    segments, labels = result.segments, result.kmeans_labels
    assert segments.dtype == np.int32 and labels.dtype == np.int16 and segments.shape == population.shape
    populated = np.nan_to_num(population) > 0
    np.testing.assert_array_equal(labels >= 0, populated)  # exactly the populated pixels are clustered
    assert result.clustered_pixels == int(populated.sum())
    assert (segments[~populated] == 0).all()
    ids = [r.segment_id for r in result.records]
    assert ids == list(range(1, len(ids) + 1)) and sorted(np.unique(segments[segments > 0]).tolist()) == ids
    populations = [r.population for r in result.records]
    assert populations == sorted(populations, reverse=True)
    for record in result.records:
        inside = segments == record.segment_id
        assert record.population == pytest.approx(float(population[inside].sum(dtype=np.float64)), rel=1e-6)
        assert np.unique(labels[inside]).tolist() == [record.kmeans_label]
    # each town's peak lies in a segment, and the four peaks are not all in one
    peaks = [segments[12, 14], segments[34, 34], segments[12, 36], segments[36, 12]]
    assert all(p > 0 for p in peaks) and len(set(peaks)) >= 2
    assert result.ae_mse < result.ae_baseline_mse
    assert [row["k"] for row in result.k_report] == [2, 3, 4]
    assert all(-1.0 <= row["silhouette"] <= 1.0 and row["inertia"] > 0 for row in result.k_report)
    assert feedback.progress == sorted(feedback.progress) and feedback.progress[-1] == 100.0
    assert any("communities" in message for message in feedback.infos)
    again = frame_communities(population, u, v, TRANSFORM, 900.0, small_config())
    np.testing.assert_array_equal(again.segments, segments)  # deterministic on the CPU
    np.testing.assert_array_equal(again.kmeans_labels, labels)


def test_k_report_peaks_at_the_number_of_separated_groups():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=8.0, size=(4, 16))
    codes = (centres[np.repeat(np.arange(4), 300)] + rng.normal(size=(1200, 16))).astype(np.float32)
    rows = k_report(codes, 2, 7, seed=0, sample=600)
    assert [row["k"] for row in rows] == [2, 3, 4, 5, 6, 7]
    best = max(rows, key=lambda row: row["silhouette"])
    assert best["k"] == 4
    inertia = [row["inertia"] for row in rows]
    assert inertia[2] < 0.2 * inertia[1]  # the elbow at 4


def test_frame_communities_cancels_and_reports_progress():
    population, u, v = town_frame()
    feedback = RecordingFeedback(cancel_after=3)
    with pytest.raises(CanceledError):
        frame_communities(population, u, v, TRANSFORM, 900.0, small_config(epochs=40), feedback)
    assert len(feedback.progress) == 3 and max(feedback.progress) < 60.0


@pytest.mark.parametrize("case,parameter,text", [
    ("all_nodata", "FRAMES", "only nodata"),
    ("negative", "FRAMES", "negative population"),
    ("too_small", "WINDOW", "smaller than the 7-pixel window"),
    ("few_populated", "K", "fewer than K = 3"),
    ("unpopulated", "FRAMES", "no pixel with population above POP_MIN"),
    ("flow_grid", "FRAMES", "not on the frame's grid"),
    ("pixel_area", "FRAMES", "pixel area"),
])
def test_bad_frames_are_refused_with_what_to_do(case, parameter, text):
    population, u, v = town_frame(size=16)
    area = 900.0
    if case == "all_nodata":
        population[:] = np.nan
    elif case == "negative":
        population[5, 5] = -200.0
    elif case == "too_small":
        population, u, v = population[:6, :], u[:6, :], v[:6, :]
    elif case == "few_populated":
        population[:] = 0.0
        population[3, 3:5] = 10.0
    elif case == "unpopulated":
        population[:] = 0.0
    elif case == "flow_grid":
        u = u[:, :-1]
    elif case == "pixel_area":
        area = 0.0
    with pytest.raises(InputError, match=f"^{parameter}: .*{text}"):
        frame_communities(population, u, v, TRANSFORM, area, small_config(), name="pop_t0")
