"""Blending weights and tile layout of seamless inference."""

import numpy as np

from satseg_plugin.pipelines.segmentation.segment import hann_window, tile_origins


def test_hann_window_is_positive_symmetric_and_peaks_in_the_middle():
    w = hann_window(64)
    assert w.shape == (64, 64) and (w > 0).all()
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert w[32, 32] > 0.99 and w[0, 0] < 0.01


def test_tile_origins_cover_region():
    assert tile_origins(0, 100, 64, 48) == [0, 36]
    assert tile_origins(10, 30, 64, 48) == [10]
    for length in range(1, 300, 7):
        starts = tile_origins(0, length, 64, 48)
        covered = {p for s in starts for p in range(s, s + 64)}
        assert set(range(length)) <= covered


def test_blended_overlaps_reconstruct_a_smooth_field_exactly():
    """Tiles that each predict the same underlying field blend back to that field (no seams)."""
    tile, stride, length = 32, 24, 100
    field = np.sin(np.linspace(0, 6, length))[:, None] * np.cos(np.linspace(0, 4, length))[None, :]
    acc = np.zeros_like(field)
    wsum = np.zeros_like(field)
    w = hann_window(tile)
    for y in tile_origins(0, length, tile, stride):
        for x in tile_origins(0, length, tile, stride):
            acc[y:y + tile, x:x + tile] += field[y:y + tile, x:x + tile] * w
            wsum[y:y + tile, x:x + tile] += w
    np.testing.assert_allclose(acc / wsum, field, atol=1e-6)
