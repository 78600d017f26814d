"""Scene data: the patch stack (statistics over valid pixels, size checks, memory cap) and soft labels from
polygons, checked against hand-made squares. ``write_scene_patches`` is the synthetic patch set the scene
training and DeepCluster tests share."""

import os
from typing import List, Optional, Sequence

import numpy as np
import pytest
import rasterio
from affine import Affine

shapely = pytest.importorskip("shapely")
from shapely.geometry import Polygon, box

from satseg_plugin.core.errors import CanceledError, InputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.pipelines.clustering.scene.data import PatchStack, load_patches, soft_labels

KINDS = ("urban", "rural", "uninhabited")


def scene_patch(kind: str, rng: np.random.Generator, size: int = 32, variant: int = 0) -> np.ndarray:
    """A ``(3, size, size)`` uint8 patch of one of three visually distinct kinds.

    urban: a light street grid (variant 1: orange roofs); rural: green fields with stripes at a random
    angle (variant 1: yellow fields); uninhabited: dark noise.
    """
    y, x = np.mgrid[:size, :size]
    noise = rng.normal(0, 8, (3, size, size))
    if kind == "urban":
        px, py = rng.integers(0, 8, 2)
        streets = ((x + px) % 8 < 2) | ((y + py) % 8 < 2)
        colour = np.array([210, 210, 200]) if variant == 0 else np.array([225, 140, 90])
        image = np.where(streets[None], 70, colour[:, None, None])
    elif kind == "rural":
        angle = rng.uniform(0, np.pi)
        stripes = ((x * np.cos(angle) + y * np.sin(angle)) // 3) % 2
        colour = np.array([60, 150, 50]) if variant == 0 else np.array([190, 180, 70])
        image = colour[:, None, None] + 35 * stripes[None]
    else:
        image = 30 + rng.normal(0, 12, (3, size, size))
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def write_scene_patches(folder: str, kinds: Sequence[str], size: int = 32, seed: int = 0,
                        variants: Optional[Sequence[int]] = None) -> List[str]:
    """Write one georeferenced GeoTIFF patch per entry of ``kinds`` (side by side on a UTM grid)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, kind in enumerate(kinds):
        data = scene_patch(kind, rng, size, 0 if variants is None else variants[i])
        path = os.path.join(folder, f"patch_{i:03d}.tif")
        transform = Affine(0.5, 0, 500000.0 + i * size * 0.5, 0, -0.5, 5000000.0)
        with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                           crs="EPSG:32633", transform=transform) as dst:
            dst.write(data)
        paths.append(path)
    return paths


def _write(path, data, nodata=None):
    data = np.asarray(data)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype.name, crs="EPSG:32633", nodata=nodata,
                       transform=Affine(2.0, 0, 0, 0, -2.0, 100.0)) as dst:
        dst.write(data)
    return str(path)


# ---------------------------------------------------------------------------------------------- load_patches

def test_stack_statistics_exclude_nodata(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(1, 200, (3, 8, 8)).astype(np.uint16) for _ in range(3)]
    arrays[1][:, :2, :] = 0  # two nodata rows
    arrays[2][:, 5, 5] = 0
    paths = [_write(tmp_path / f"p{i}.tif", a, nodata=0) for i, a in enumerate(arrays)]
    stack = load_patches(paths)
    assert isinstance(stack, PatchStack)
    assert stack.data.shape == (3, 3, 8, 8) and stack.data.dtype == np.float32
    assert (stack.count, stack.in_channels, stack.height, stack.width) == (3, 3, 8, 8)
    assert stack.bands == (1, 2, 3) and stack.paths == [os.path.abspath(p) for p in paths]
    assert stack.valid.sum() == 3 * 64 - 16 - 1 and not stack.valid[1, :2].any() and not stack.valid[2, 5, 5]
    values = np.concatenate([a.reshape(3, -1)[:, (a != 0).all(axis=0).ravel()] for a in arrays], axis=1).astype(float)
    np.testing.assert_allclose(stack.mean, values.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stack.std, values.std(axis=1), rtol=1e-10)
    assert stack.pixel_size == (2.0, 2.0) and stack.crs_units == "metre" and "32633" in stack.crs_wkt

    norm = stack.normalized()
    assert norm.shape == stack.data.shape and norm.dtype == np.float32
    valid = norm.transpose(1, 0, 2, 3)[:, stack.valid]
    np.testing.assert_allclose(valid.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(valid.std(axis=1), 1, atol=1e-5)
    assert (norm[1, :, :2] == 0).all()  # nodata becomes the mean
    other = stack.normalized(mean=[0, 0, 0], std=[2, 2, 2])
    np.testing.assert_allclose(other[0], arrays[0] / 2.0)
    with pytest.raises(InputError):
        stack.normalized(mean=[0, 0], std=[1, 1])


def test_band_subset_and_nan_pixels(tmp_path):
    data = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4) + 1
    data[:, 0, 0] = np.nan
    path = _write(tmp_path / "f.tif", data)
    stack = load_patches([path, path], bands=[2, 1])
    assert stack.bands == (2, 1)
    np.testing.assert_array_equal(stack.data[0, 0, 1:], data[1, 1:])
    assert not stack.valid[:, 0, 0].any() and stack.valid.sum() == 2 * 15
    assert stack.mean[0] == pytest.approx(np.nanmean(data[1]))
    assert np.isfinite(stack.normalized()).all()
    with pytest.raises(InputError) as err:
        load_patches([path], bands=[3])
    assert err.value.parameter == "BANDS"


def test_patches_must_share_size_and_bands(tmp_path):
    good = _write(tmp_path / "a.tif", np.ones((3, 8, 8), np.uint8))
    small = _write(tmp_path / "small.tif", np.ones((3, 4, 8), np.uint8))
    fewer = _write(tmp_path / "fewer.tif", np.ones((2, 8, 8), np.uint8))
    for bad in (small, fewer):
        with pytest.raises(InputError) as err:
            load_patches([good, good, bad, small])
        assert err.value.parameter == "PATCH_INDEX"
        assert os.path.abspath(bad) in str(err.value) and os.path.abspath(good) in str(err.value)


def test_memory_cap_empty_missing_and_all_nodata(tmp_path):
    path = _write(tmp_path / "a.tif", np.ones((3, 8, 8), np.uint8))
    with pytest.raises(InputError) as err:
        load_patches([path] * 10, max_bytes=10 * 3 * 8 * 8 * 4 - 1)
    assert err.value.parameter == "INPUT" and "too many patches for memory" in str(err.value)
    assert "SAMPLE" in str(err.value)
    assert load_patches([path] * 10, max_bytes=10 * 3 * 8 * 8 * 4).count == 10
    for paths in ([], [str(tmp_path / "missing.tif")], [path, str(tmp_path / "missing.tif")]):
        with pytest.raises(InputError) as err:
            load_patches(paths)
        assert err.value.parameter == "PATCH_INDEX"
    empty = _write(tmp_path / "empty.tif", np.zeros((3, 8, 8), np.uint8), nodata=0)
    with pytest.raises(InputError) as err:
        load_patches([empty])
    assert err.value.parameter == "PATCH_INDEX" and "nodata" in str(err.value)


def test_load_reports_progress_and_cancels(tmp_path):
    paths = write_scene_patches(str(tmp_path), ["urban", "rural", "uninhabited", "urban"], size=16)
    feedback = RecordingFeedback()
    load_patches(paths, feedback=feedback)
    assert feedback.progress == [25.0, 50.0, 75.0, 100.0]
    with pytest.raises(CanceledError):
        load_patches(paths, feedback=RecordingFeedback(cancel_after=2))


def test_synthetic_kinds_differ(tmp_path):
    stack = load_patches(write_scene_patches(str(tmp_path), KINDS, size=16))
    brightness = stack.data.mean(axis=(1, 2, 3))
    green = stack.data[:, 1].mean(axis=(1, 2)) - stack.data[:, 0].mean(axis=(1, 2))
    assert brightness[0] > brightness[1] > brightness[2] and green[1] > 50 > green[0]


# ----------------------------------------------------------------------------------------------- soft_labels

def test_soft_label_fractions_on_squares():
    footprints = [box(0, 0, 10, 10), box(10, 0, 20, 10), box(20, 0, 30, 10), box(30, 0, 40, 10),
                  box(100, 100, 110, 110)]
    geometries = [box(0, 0, 5, 10),            # fp0: half class 0
                  box(5, 0, 7.5, 10),          # fp0: a quarter class 1
                  box(10, 0, 16, 10),          # fp1: class 0 twice, overlapping: union 8 x 10 = 0.8
                  box(14, 0, 18, 10),
                  box(20, 0, 30, 10),          # fp2: all class 0 ...
                  box(25, 0, 30, 10),          # ... and half class 1: 1.5 -> divided by the sum
                  box(35, -5, 45, 5),          # fp3: a quarter class 2 (crosses the footprint's corner)
                  None, Polygon()]             # skipped
    classes = [0, 1, 0, 0, 0, 1, 2, 1, 2]
    labels = soft_labels(footprints, geometries, classes, 3)
    expected = np.array([[0.5, 0.25, 0], [0.8, 0, 0], [2 / 3, 1 / 3, 0], [0, 0, 0.25], [0, 0, 0]])
    np.testing.assert_allclose(labels, expected, atol=1e-12)
    assert labels.shape == (5, 3) and labels.dtype == np.float64


def test_soft_labels_accept_rings_and_repair_invalid_polygons():
    ring = ((0, 0), (10, 0), (10, 10), (0, 10), (0, 0))
    bow_tie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # self-intersecting: two triangles of 25 each
    assert not bow_tie.is_valid
    labels = soft_labels([ring], [bow_tie], [1], 2)
    np.testing.assert_allclose(labels, [[0, 0.5]])
    assert soft_labels([], [bow_tie], [0], 2).shape == (0, 2)
    np.testing.assert_array_equal(soft_labels([ring], [], [], 2), [[0, 0]])
    np.testing.assert_allclose(soft_labels([ring], [box(0, 0, 10, 10)], np.array([1.0]), 2), [[0, 1]])


@pytest.mark.parametrize("geometries, classes, num_classes", [
    ([box(0, 0, 1, 1)], [0, 1], 2),   # one class per geometry
    ([box(0, 0, 1, 1)], [2], 2),      # out of range
    ([box(0, 0, 1, 1)], [-1], 2),
    ([box(0, 0, 1, 1)], [0.5], 2),    # not an index
    ([box(0, 0, 1, 1)], [0], 0),
])
def test_soft_label_errors_name_labels(geometries, classes, num_classes):
    with pytest.raises(InputError) as err:
        soft_labels([box(0, 0, 10, 10)], geometries, classes, num_classes)
    assert err.value.parameter == "LABELS"
