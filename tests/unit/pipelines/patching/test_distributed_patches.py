"""write_patches on a Dask cluster: groups of patch rows as work units, the same patches and index as in-process."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("distributed")

from satseg_plugin.core.errors import CanceledError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.core.staging import MARKER_NAME
from satseg_plugin.pipelines.patching import patches
from satseg_plugin.pipelines.patching.patches import PatchConfig, write_patches


@pytest.fixture(scope="module")
def raster(tmp_path_factory):
    from tests.conftest import write_raster

    data = np.random.default_rng(0).integers(1, 255, (3, 200, 300), dtype="uint8")
    data[:, 40:80, 0:200] = 0  # patches skipped for nodata in several rows
    return write_raster(str(tmp_path_factory.mktemp("raster") / "in.tif"), data, nodata=0)


def _folder(result):
    """Every file of an output folder: name -> bytes (the index with the paths made relative)."""
    out = {}
    for name in sorted(os.listdir(result.output_dir)):
        with open(os.path.join(result.output_dir, name), "rb") as handle:
            out[name] = handle.read()
    manifest = json.loads(out.pop(MARKER_NAME))
    for patch in manifest["patches"]:
        patch["path"] = os.path.basename(patch["path"])
    return out, manifest


@pytest.mark.parametrize("config", [PatchConfig(patch_width=32, patch_height=24, edge="pad", workers=2),
                                    PatchConfig(patch_width=40, patch_height=40, sample_count=9, seed=4)],
                         ids=["all", "sample"])
def test_local_cluster_writes_the_same_patches_and_index(raster, tmp_path, monkeypatch, config):
    here = write_patches(raster, str(tmp_path / "here"), config)
    monkeypatch.setattr(patches, "UNIT_PATCHES", 25)
    fb = RecordingFeedback()
    spread = write_patches(raster, str(tmp_path / "spread"), config, fb, scheduler="local:2")
    assert any("groups of patch rows run as Dask work units" in m for m in fb.infos)
    assert fb.progress == sorted(fb.progress) and fb.progress[-1] == 100
    files_here, index_here = _folder(here)
    files_spread, index_spread = _folder(spread)
    assert files_spread == files_here  # byte for byte
    assert index_spread == index_here
    assert [r.patch_id for r in spread.records] == [r.patch_id for r in here.records]
    assert (spread.candidates, spread.skipped_mask) == (here.candidates, here.skipped_mask)
    if not config.sample_count:
        assert spread.skipped_nodata == here.skipped_nodata > 0
    assert sorted(os.listdir(tmp_path)) == ["here", "spread"]  # no staging folder left


def test_row_groups_keep_whole_rows():
    from satseg_plugin.core.grid import patch_grid

    windows, _ = patch_grid((0, 0, 100, 50), (10, 10), (10, 10), "shift")
    groups = patches._row_groups(windows, 25)
    assert [len(g) for g in groups] == [20, 20, 10]
    assert [w for g in groups for w in g] == windows
    assert all(len({w.row for w in g}) == len(g) // 10 for g in groups)


def test_cancel_on_the_cluster_leaves_no_folder(raster, tmp_path, monkeypatch):
    monkeypatch.setattr(patches, "UNIT_PATCHES", 10)
    with pytest.raises(CanceledError):
        write_patches(raster, str(tmp_path / "out"), PatchConfig(patch_width=20, patch_height=20),
                      RecordingFeedback(cancel_after=1), scheduler="local:1")
    assert os.listdir(tmp_path) == []
