"""The seeded population time series: files, georeferencing, events and a true flow that explains the motion."""

import json
import os
import time

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from sample_data.generate import main as generate_main
from sample_data.population import (
    EVENTS,
    FLOW_BAND_DESCRIPTIONS,
    POPULATION_PARAMS_NAME,
    TrueLink,
    generate_population_series,
    is_population_up_to_date,
    main,
    population_paths,
    read_true_links,
    render_population_series,
)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("population")
    started = time.perf_counter()
    paths = generate_population_series(str(out))
    return paths, time.perf_counter() - started


@pytest.fixture(scope="module")
def series():
    return render_population_series()


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile, src.descriptions


def test_files_and_georeferencing(written):
    paths, seconds = written
    assert seconds < 2.0
    folder = os.path.dirname(paths["params"])
    assert paths == population_paths(folder, 5)
    assert sorted(os.listdir(folder)) == sorted(os.path.basename(p) for p in paths.values())
    assert [k for k in paths if k.startswith("pop_t")] == [f"pop_t{i}" for i in range(5)]
    assert [k for k in paths if k.startswith("flow_true_t")] == [f"flow_true_t{i}" for i in range(4)]
    for key, path in paths.items():
        if not path.endswith(".tif"):
            continue
        data, profile, descriptions = _read(path)
        assert profile["crs"].to_epsg() == 3035
        t = profile["transform"]
        assert (t.a, t.b, t.d, t.e) == (1000.0, 0.0, 0.0, -1000.0)
        assert (t.c, t.f) == (4_000_000.0, 3_300_000.0)  # the Dutch coast in ETRS89-LAEA
        assert (profile["width"], profile["height"]) == (256, 192)
        if key.startswith("pop_t"):
            assert data.shape == (1, 192, 256) and data.dtype == np.float32 and np.isnan(profile["nodata"])
            sea = np.isnan(data[0])
            assert 0.03 < sea.mean() < 0.2 and sea[:, 0].all() and not sea[:, -1].any()  # a coast on the west
            assert np.nanmin(data) >= 0 and np.nanmax(data) > 1000
        elif key.startswith("flow_true_t"):
            assert data.shape == (2, 192, 256) and descriptions == FLOW_BAND_DESCRIPTIONS
        else:
            assert data.dtype == np.int32 and data.shape == (1, 192, 256) and profile["nodata"] is None


def test_flow_band_descriptions_are_satsegs():
    from satseg_plugin.pipelines.population.flow import BAND_DESCRIPTIONS

    assert FLOW_BAND_DESCRIPTIONS == BAND_DESCRIPTIONS


def test_links_cover_every_event_and_name_communities_present(written, series):
    paths, _ = written
    links = read_true_links(paths["links_true"])
    assert links == series.links and all(isinstance(link, TrueLink) for link in links)
    assert {link.event for link in links} == set(EVENTS)
    ids = [set(np.unique(c).tolist()) - {0} for c in series.communities]
    for link in links:
        assert link.next_frame == link.frame + 1
        assert (link.community == 0) == (link.event == "birth")
        assert (link.next_community == 0) == (link.event == "death")
        if link.community:
            assert link.community in ids[link.frame]
        if link.next_community:
            assert link.next_community in ids[link.next_frame]
    # every community of every frame has a link forward (but the last frame) and backward (but the first)
    for t in range(4):
        assert {link.community for link in links if link.frame == t} - {0} == ids[t]
        assert {link.next_community for link in links if link.frame == t} - {0} == ids[t + 1]
    split = [link for link in links if link.event == "split"]
    merge = [link for link in links if link.event == "merge"]
    assert len(split) == 2 and split[0].community == split[1].community and split[0].frame == 1
    assert len(merge) == 2 and merge[0].next_community == merge[1].next_community and merge[0].frame == 2
    assert [link.next_frame for link in links if link.event == "birth"] == [2]
    assert [link.frame for link in links if link.event == "death"] == [2]
    assert 8 <= len(ids[0]) <= 12


def test_true_flow_explains_the_motion_inside_communities(series):
    for t, flow in enumerate(series.flows):
        defined = ~np.isnan(flow[0])
        assert defined.sum() > 1000
        assert (series.communities[t][defined] > 0).all()
        speed = np.hypot(flow[0], flow[1])[defined]
        assert speed.max() <= 4.5 and np.median(speed) > 1.0
        f1, f2 = np.nan_to_num(series.frames[t]), np.nan_to_num(series.frames[t + 1])
        rows, cols = np.nonzero(defined)
        warped = ndimage.map_coordinates(f2, [rows + flow[1][defined], cols + flow[0][defined]], order=1)
        error = np.abs(warped - f1[defined]).mean()
        unmoved = np.abs(f2[defined] - f1[defined]).mean()
        assert error < 0.5 * unmoved, t  # growth (up to 10 % a frame) is what remains
        # the opposite sign explains nothing
        backwards = ndimage.map_coordinates(f2, [rows - flow[1][defined], cols - flow[0][defined]], order=1)
        assert np.abs(backwards - f1[defined]).mean() > unmoved


def test_blob_speeds_are_one_to_four_pixels_a_frame(written):
    paths, _ = written
    with open(paths["params"]) as handle:
        params = json.load(handle)
    assert params["size"] == [256, 192] and params["frames"] == 5 and params["seed"] == 0
    for blob in params["blobs"]:
        alive = np.array(blob["amplitude"]) > 0
        steps = np.hypot(np.diff(blob["x"]), np.diff(blob["y"]))[alive[:-1] & alive[1:]]
        assert ((steps >= 1.0 - 1e-3) & (steps <= 4.0 + 1e-3)).all(), steps  # positions kept to 4 decimals


def test_same_seed_same_series_other_seed_other_series(series):
    again, other = render_population_series(seed=0), render_population_series(seed=1)
    for a, b in zip(series.frames, again.frames):
        np.testing.assert_array_equal(a, b)
    assert series.links == again.links
    assert not np.array_equal(np.nan_to_num(series.frames[0]), np.nan_to_num(other.frames[0]))


def test_more_frames_and_larger_sizes_scale(series):
    longer = render_population_series(size=(320, 200), frames=7, seed=3)
    assert len(longer.frames) == 7 and len(longer.flows) == 6 and longer.frames[0].shape == (200, 320)
    assert {link.event for link in longer.links} == set(EVENTS)


@pytest.mark.parametrize("kwargs", [dict(size=(50, 50)), dict(frames=2), dict(pixel_size=0.0)])
def test_bad_parameters_are_value_errors(kwargs):
    with pytest.raises(ValueError):
        render_population_series(**kwargs)


def test_command_lines_write_once_then_report_up_to_date(tmp_path, capsys):
    out = str(tmp_path / "pop")
    assert generate_main(["--population", out]) == 0
    assert is_population_up_to_date(out)
    assert os.path.exists(os.path.join(out, POPULATION_PARAMS_NAME))
    assert main(["--out", out]) == 0
    assert "Up to date" in capsys.readouterr().out
    assert not is_population_up_to_date(out, seed=1)
    os.remove(os.path.join(out, "pop_t3.tif"))
    assert not is_population_up_to_date(out)
