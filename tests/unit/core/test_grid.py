"""Patch grid offsets for every edge mode."""

import pytest

from satseg_plugin.core.errors import InputError
from satseg_plugin.core.grid import axis_offsets, patch_grid


@pytest.mark.parametrize("edge, expected, beyond", [
    ("drop", [0, 4], False),
    ("shift", [0, 4, 6], False),
    ("pad", [0, 4, 8], True),
])
def test_axis_offsets_edge_modes(edge, expected, beyond):
    assert axis_offsets(0, 10, 4, 4, edge) == (expected, beyond)


@pytest.mark.parametrize("edge", ["drop", "shift", "pad"])
def test_exact_fit_has_no_extra_patch(edge):
    assert axis_offsets(0, 12, 4, 4, edge) == ([0, 4, 8], False)


def test_overlap_stride_and_region_start():
    offsets, beyond = axis_offsets(10, 10, 4, 2, "shift")
    assert offsets == [10, 12, 14, 16] and not beyond
    offsets, beyond = axis_offsets(10, 11, 4, 2, "shift")
    assert offsets == [10, 12, 14, 16, 17]


def test_pad_with_stride_larger_than_patch_never_starts_past_the_end():
    offsets, beyond = axis_offsets(0, 105, 10, 30, "pad")
    assert offsets == [0, 30, 60, 90] and all(o < 105 for o in offsets) and not beyond


def test_patch_larger_than_region():
    assert axis_offsets(0, 3, 4, 4, "drop") == ([], False)
    assert axis_offsets(0, 3, 4, 4, "shift") == ([0], True)
    assert axis_offsets(0, 3, 4, 4, "pad") == ([0], True)


def test_every_pixel_is_covered_in_shift_and_pad():
    for edge in ("shift", "pad"):
        for length in range(1, 40):
            offsets, _ = axis_offsets(0, length, 7, 5, edge)
            covered = {p for o in offsets for p in range(o, o + 7)}
            assert set(range(length)) <= covered, (edge, length)


@pytest.mark.parametrize("kwargs, match", [
    (dict(patch=0, stride=1, edge="pad"), "patch size"),
    (dict(patch=4, stride=0, edge="pad"), "stride"),
    (dict(patch=4, stride=-3, edge="pad"), "stride"),
    (dict(patch=4, stride=4, edge="wrap"), "edge mode"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(InputError, match=match):
        axis_offsets(0, 10, **kwargs)


def test_patch_grid_is_row_major_with_grid_indices():
    windows, beyond = patch_grid((0, 0, 10, 6), (4, 3), (4, 3), "shift")
    assert not beyond
    assert [(w.row, w.col, w.x_off, w.y_off) for w in windows] == [
        (0, 0, 0, 0), (0, 1, 4, 0), (0, 2, 6, 0), (1, 0, 0, 3), (1, 1, 4, 3), (1, 2, 6, 3)]
