"""Atomic output folders and files."""

import os

import pytest

from satseg_plugin.core.errors import OutputError
from satseg_plugin.core.staging import MARKER_NAME, StagedDirectory, StagedFile


def test_commit_moves_folder_into_place(tmp_path):
    target = tmp_path / "a" / "b" / "out"
    with StagedDirectory(str(target)) as staged:
        open(staged.staged_path("x.txt"), "w").write("1")
        staged.write_manifest({"kind": "test"})
        assert not target.exists()
        staged.commit()
    assert (target / "x.txt").read_text() == "1" and (target / MARKER_NAME).exists()
    assert [p for p in os.listdir(target.parent) if p.startswith(".satseg-tmp")] == []


def test_failure_leaves_nothing_and_removes_created_parents(tmp_path):
    target = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError):
        with StagedDirectory(str(target)) as staged:
            open(staged.staged_path("x.txt"), "w").write("1")
            raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()


def test_non_empty_folder_is_refused_without_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("user data")
    with pytest.raises(OutputError, match="OUTPUT_DIR: .*not empty"):
        StagedDirectory(str(tmp_path / "out"))
    with pytest.raises(OutputError, match="not written by SatSeg"):
        StagedDirectory(str(tmp_path / "out"), overwrite=True)
    assert (tmp_path / "out" / "mine.txt").read_text() == "user data"


def test_overwrite_replaces_earlier_satseg_output_only_on_commit(tmp_path):
    target = tmp_path / "out"
    for value in ("old", "new"):
        with StagedDirectory(str(target), overwrite=True) as staged:
            open(staged.staged_path("v.txt"), "w").write(value)
            staged.write_manifest({})
            staged.commit()
    assert (target / "v.txt").read_text() == "new"
    with pytest.raises(KeyboardInterrupt):
        with StagedDirectory(str(target), overwrite=True) as staged:
            open(staged.staged_path("v.txt"), "w").write("never")
            raise KeyboardInterrupt
    assert (target / "v.txt").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_unwritable_parent(unwritable_dir):
    with pytest.raises(OutputError, match="OUTPUT_DIR: .*(not writable|cannot)"):
        with StagedDirectory(os.path.join(unwritable_dir, "out")):
            pass


def test_parent_is_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot create folder"):
        with StagedDirectory(str(blocker / "out")):
            pass


def test_staged_file(tmp_path):
    final = tmp_path / "r.tif"
    final.write_text("old")
    with pytest.raises(RuntimeError):
        with StagedFile(str(final)) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError
    assert final.read_text() == "old" and os.listdir(tmp_path) == ["r.tif"]
    staged = StagedFile(str(final))
    with staged as tmp:
        open(tmp, "w").write("new")
        staged.commit()
    assert final.read_text() == "new"
    with pytest.raises(OutputError, match="exists"):
        StagedFile(str(final), overwrite=False, parameter="OUTPUT")


def test_staged_file_moves_and_cleans_companion_files(tmp_path):
    (tmp_path / "out.qpj").write_text("stale")  # an earlier output's companion the new one does not write
    staged = StagedFile(str(tmp_path / "out.shp"), suffix=".shp", companions=(".shx", ".dbf", ".qpj"))
    with staged as tmp:
        for ext in (".shp", ".shx", ".dbf"):
            open(tmp[:-4] + ext, "w").write(ext)
        staged.commit()
    assert sorted(os.listdir(tmp_path)) == ["out.dbf", "out.shp", "out.shx"]
    assert (tmp_path / "out.dbf").read_text() == ".dbf"
    failed = StagedFile(str(tmp_path / "new.shp"), suffix=".shp", companions=(".shx", ".dbf"))
    with pytest.raises(RuntimeError):
        with failed as tmp:
            for ext in (".shp", ".shx", ".dbf"):
                open(tmp[:-4] + ext, "w").write(ext)
            raise RuntimeError("driver failed")
    assert sorted(os.listdir(tmp_path)) == ["out.dbf", "out.shp", "out.shx"]
