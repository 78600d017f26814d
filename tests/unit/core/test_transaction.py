"""A run's outputs move into place together or not at all (core/staging.Transaction)."""

import os
import random
import subprocess
import sys

import pytest

from satseg_plugin.core import staging
from satseg_plugin.core.errors import OutputError
from satseg_plugin.core.staging import (
    MARKER_NAME,
    StagedDirectory,
    StagedFile,
    Transaction,
    current_transaction,
    outputs_of,
    readable_path,
    remove_stale_temporaries,
    use_transaction,
)


def snapshot(folder):
    """``{relative path: bytes}`` of every file under ``folder``."""
    found = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = handle.read()
    return found


def temporaries(folder):
    return [name for name in os.listdir(folder) if name.startswith(".satseg-")]


def previous_outputs(tmp_path):
    """A raster with a GDAL sidecar, a shapefile and a SatSeg output folder, as an earlier run left them."""
    (tmp_path / "p.tif").write_bytes(b"old raster")
    (tmp_path / "p.tif.aux.xml").write_bytes(b"old stats")
    for ext in (".shp", ".shx", ".dbf"):
        (tmp_path / f"b{ext}").write_bytes(f"old {ext}".encode())
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / MARKER_NAME).write_text("{}")
    (tmp_path / "dir" / "x.txt").write_text("old patch")


def stage_new_outputs(tmp_path, run):
    """Stage a new raster (no sidecar), shapefile and folder into ``run`` through the staged writers."""
    with use_transaction(run):
        raster = StagedFile(str(tmp_path / "p.tif"), parameter="OUTPUT_PROBABILITY")
        with raster as tmp:
            open(tmp, "wb").write(b"new raster")
            raster.commit()
        shapes = StagedFile(str(tmp_path / "b.shp"), companions=(".shx", ".dbf"))
        with shapes as tmp:
            for ext in (".shp", ".shx", ".dbf"):
                open(tmp[:-4] + ext, "wb").write(f"new {ext}".encode())
            shapes.commit()
        with StagedDirectory(str(tmp_path / "dir"), overwrite=True) as folder:
            open(folder.staged_path("x.txt"), "w").write("new patch")
            folder.write_manifest({})
            folder.commit()


def test_outputs_move_in_only_when_the_run_commits(tmp_path):
    previous_outputs(tmp_path)
    before = snapshot(tmp_path)
    with Transaction() as run:
        stage_new_outputs(tmp_path, run)
        finals = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(".satseg-")}
        assert finals == before  # the writers only handed their outputs over
        assert open(readable_path(str(tmp_path / "p.tif")), "rb").read() == b"old raster"  # not the current run
        with use_transaction(run):
            assert open(readable_path(str(tmp_path / "p.tif")), "rb").read() == b"new raster"
        run.commit()
    assert snapshot(tmp_path) == {"p.tif": b"new raster", "b.shp": b"new .shp", "b.shx": b"new .shx",
                                  "b.dbf": b"new .dbf", "dir/x.txt": b"new patch", f"dir/{MARKER_NAME}": b"{}"}
    assert not temporaries(tmp_path)


@pytest.mark.parametrize("error", [RuntimeError("engine failed"), KeyboardInterrupt()])
def test_a_failed_run_keeps_every_previous_output(tmp_path, error):
    previous_outputs(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(type(error)):
        with Transaction() as run:
            stage_new_outputs(tmp_path, run)
            raise error
    assert snapshot(tmp_path) == before and not temporaries(tmp_path)


def test_a_failure_at_any_step_of_the_commit_restores_everything(tmp_path, monkeypatch):
    previous_outputs(tmp_path)
    before = snapshot(tmp_path)
    real_replace = os.replace
    for fail_at in range(1, 12):  # 5 moves aside (p.tif, its sidecar, 3 shapefile parts, dir) + 5 moves in
        calls = [0]

        def replace(src, dst, fail_at=fail_at):
            calls[0] += 1
            if calls[0] == fail_at:
                raise OSError(28, "No space left on device")
            return real_replace(src, dst)

        with Transaction() as run:
            stage_new_outputs(tmp_path, run)
            monkeypatch.setattr(os, "replace", replace)
            try:
                run.commit()
            except OutputError as exc:
                assert "previous outputs were left as they were" in str(exc)
                assert snapshot(tmp_path) == before, fail_at
            else:  # fail_at beyond the last move: the commit went through; the new outputs are the "before"
                before = snapshot(tmp_path)
                assert before["p.tif"] == b"new raster"
            monkeypatch.setattr(os, "replace", real_replace)
        assert not temporaries(tmp_path), fail_at


def test_random_faults_in_writers_keep_previous_outputs(tmp_path):
    previous_outputs(tmp_path)
    before = snapshot(tmp_path)
    rng = random.Random(14)
    for _trial in range(10):
        fail_at, step = rng.randint(1, 3), [0]

        def hit():
            step[0] += 1
            if step[0] == fail_at:
                raise OSError(5, "I/O error (injected)")

        with pytest.raises(OSError), Transaction() as run, use_transaction(run):
            staged = StagedFile(str(tmp_path / "p.tif"))
            with staged as tmp:
                hit()
                open(tmp, "wb").write(b"half")
                hit()
                staged.commit()
            hit()
        assert snapshot(tmp_path) == before and not temporaries(tmp_path)


def test_without_a_transaction_writers_commit_on_their_own(tmp_path):
    staged = StagedFile(str(tmp_path / "a.csv"))
    with staged as tmp:
        open(tmp, "w").write("x")
        staged.commit()
    assert (tmp_path / "a.csv").read_text() == "x" and current_transaction() is None


def test_outputs_of_commits_alone_or_joins_the_callers_run(tmp_path):
    with outputs_of() as own:
        assert current_transaction() is own
        staging.write_csv_rows(str(tmp_path / "a.csv"), [{"a": 1}])
        assert not (tmp_path / "a.csv").exists()
    assert (tmp_path / "a.csv").exists()
    with Transaction() as run:
        with outputs_of(run):
            staging.write_csv_rows(str(tmp_path / "b.csv"), [{"a": 1}])
        assert not (tmp_path / "b.csv").exists() and run.finals() == [str(tmp_path / "b.csv")]
        run.commit()
    assert (tmp_path / "b.csv").exists()


def test_staging_the_same_output_again_keeps_the_last_version(tmp_path):
    with Transaction() as run, use_transaction(run):
        for epoch in range(3):  # a trainer saving its best model at every better epoch
            staged = StagedFile(str(tmp_path / "m.satseg"))
            with staged as tmp:
                open(tmp, "w").write(f"epoch {epoch}")
                staged.commit()
        assert len(temporaries(tmp_path)) == 1
        run.commit()
    assert (tmp_path / "m.satseg").read_text() == "epoch 2" and not temporaries(tmp_path)


def test_temporary_names_carry_the_process_and_run(tmp_path):
    run = Transaction()
    name = os.path.basename(run.temporary_file(str(tmp_path / "b.gpkg")))
    assert name.startswith(f".satseg-tmp-{os.getpid()}-{run.run_id}-") and name.endswith("b.gpkg")
    run.rollback()


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_of_a_killed_process_are_cleaned_by_the_next_run(tmp_path):
    pid = dead_pid()
    (tmp_path / f".satseg-tmp-{pid}-abcd1234-1-p.tif").write_text("half-written")
    (tmp_path / f".satseg-tmp-{pid}-abcd1234-2-out").mkdir()
    (tmp_path / f".satseg-tmp-{pid}-abcd1234-old-m.tif").write_text("moved aside, never replaced")
    (tmp_path / f".satseg-tmp-{pid}-abcd1234-old-k.tif").write_text("moved aside, replaced")
    (tmp_path / "k.tif").write_text("new k")
    (tmp_path / f".satseg-tmp-{os.getpid()}-abcd1234-1-live.tif").write_text("a run of this process")
    staged = StagedFile(str(tmp_path / "q.tif"))
    with staged as tmp:
        open(tmp, "w").write("q")
        staged.commit()
    assert sorted(os.listdir(tmp_path)) == [f".satseg-tmp-{os.getpid()}-abcd1234-1-live.tif", "k.tif", "m.tif",
                                            "q.tif"]
    assert (tmp_path / "m.tif").read_text() == "moved aside, never replaced"
    assert remove_stale_temporaries(str(tmp_path)) == []


def test_open_runs_are_discarded_at_exit(tmp_path):
    run = Transaction()
    with use_transaction(run):
        staged = StagedFile(str(tmp_path / "p.tif"))
        with staged as tmp:
            open(tmp, "w").write("x")
            staged.commit()
    assert temporaries(tmp_path)
    staging._discard_open_transactions()
    assert not os.listdir(tmp_path)


def test_a_killed_process_leaves_nothing_after_the_next_run(tmp_path):
    code = ("import os, sys; from satseg_plugin.core.staging import Transaction, StagedFile, use_transaction\n"
            "run = Transaction()\n"
            "with use_transaction(run):\n"
            f"    s = StagedFile({str(tmp_path / 'p.tif')!r})\n"
            "    tmp = s.__enter__(); open(tmp, 'w').write('half')\n"
            "os._exit(9)  # like SIGKILL: no atexit\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    subprocess.run([sys.executable, "-c", code], cwd=root, check=False)
    assert len(temporaries(tmp_path)) == 1
    with Transaction() as run:
        run.temporary_file(str(tmp_path / "other.tif"))
    assert not temporaries(tmp_path)


# checked before a run starts (core/paths.check_destinations): the right kind, in a folder that can be written

def test_destinations_of_the_wrong_kind_or_place_are_refused(tmp_path):
    from satseg_plugin.core.paths import check_destinations

    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    check_destinations({"OUTPUT": str(tmp_path / "new" / "deeper" / "a.tif")}, {"OUTPUT_DIR": str(tmp_path / "d")})
    cases = [({"OUTPUT": str(tmp_path / "folder")}, {}, "OUTPUT: .*is a folder"),
             ({}, {"OUTPUT_DIR": str(tmp_path / "file.txt")}, "OUTPUT_DIR: .*is a file, not a folder"),
             ({"OUTPUT_PLOT": str(tmp_path / "file.txt" / "c.png")}, {}, "OUTPUT_PLOT: .*is a file, so"),
             ({}, {"OUTPUT_DIR": str(tmp_path / "file.txt" / "sub" / "d")}, "OUTPUT_DIR: .*is a file, so")]
    for files, folders, message in cases:
        with pytest.raises(OutputError, match=message):
            check_destinations(files, folders)
    check_destinations({"OUTPUT": "/vsimem/a.tif"})  # GDAL's virtual files are not on a disk


def test_destinations_in_an_unwritable_folder_are_refused(unwritable_dir):
    from satseg_plugin.core.paths import check_destinations

    with pytest.raises(OutputError, match="OUTPUT: .*not writable"):
        check_destinations({"OUTPUT": os.path.join(unwritable_dir, "a.tif")})


@pytest.fixture(params=[False, True], ids=["gdal-return-codes", "gdal-exceptions"])
def gdal_exceptions(request):
    """GDAL's Python exceptions off, then on (process-wide: another plugin may have turned them on)."""
    pytest.importorskip("osgeo.gdal")
    from osgeo import gdal, ogr, osr

    modules = (gdal, ogr, osr)  # one switch per module before GDAL 3.7
    was = [m.GetUseExceptions() for m in modules]
    for module in modules:
        (module.UseExceptions if request.param else module.DontUseExceptions)()
    yield request.param
    for module, on in reversed(list(zip(modules, was))):  # GDAL keeps the modules' handlers on a stack
        (module.UseExceptions if on else module.DontUseExceptions)()


def gpkg(path, layer, count, geometry="POINT (1 2)"):
    """A GeoPackage with one layer of ``count`` features (a ``v`` field numbering them)."""
    from osgeo import ogr, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    data = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    target = data.CreateLayer(layer, srs, ogr.wkbPoint)
    target.CreateField(ogr.FieldDefn("v", ogr.OFTInteger))
    for i in range(count):
        feature = ogr.Feature(target.GetLayerDefn())
        feature.SetField("v", i)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(geometry))
        target.CreateFeature(feature)
    data = None
    return str(path)


def layers_of(path):
    """``{layer: (feature count, field values of v, EPSG code)}``."""
    from osgeo import ogr

    data = ogr.Open(str(path))
    found = {}
    for i in range(data.GetLayerCount()):
        layer = data.GetLayer(i)
        found[layer.GetName()] = (layer.GetFeatureCount(), [f.GetField("v") for f in layer] if
                                  layer.GetLayerDefn().GetFieldIndex("v") >= 0 else None,
                                  layer.GetSpatialRef().GetAuthorityCode(None))
    return found


def test_a_staged_layer_goes_into_an_existing_geopackage_and_keeps_its_other_layers(tmp_path, gdal_exceptions):
    final = gpkg(tmp_path / "project.gpkg", "roads", 2)
    with Transaction() as run:
        run.stage_layer(final, "buildings", gpkg(run.temporary_file(final), "x", 3))
        run.commit()
    assert layers_of(final) == {"roads": (2, [0, 1], "32633"), "buildings": (3, [0, 1, 2], "32633")}
    with Transaction() as run:  # the same layer again: replaced, not appended to
        run.stage_layer(final, "buildings", gpkg(run.temporary_file(final), "x", 1))
        run.commit()
    assert layers_of(final) == {"roads": (2, [0, 1], "32633"), "buildings": (1, [0], "32633")}
    with Transaction() as run:  # SQLite's table names ignore case: "Buildings" is that layer too
        run.stage_layer(final, "Buildings", gpkg(run.temporary_file(final), "x", 2))
        run.commit()
    assert layers_of(final) == {"roads": (2, [0, 1], "32633"), "Buildings": (2, [0, 1], "32633")}
    assert not temporaries(tmp_path)


def test_staged_layers_of_a_new_geopackage_all_arrive(tmp_path, gdal_exceptions):
    final = str(tmp_path / "new.gpkg")
    with Transaction() as run:
        run.stage_layer(final, "tracks", gpkg(run.temporary_file(final), "tracks", 2))
        run.stage_layer(final, "events", gpkg(run.temporary_file(final), "x", 4))
        run.commit()
    assert {k: v[0] for k, v in layers_of(final).items()} == {"tracks": 2, "events": 4}
    assert not temporaries(tmp_path)


def test_a_failed_or_unwritable_layer_leaves_the_geopackage_and_every_other_output_as_they_were(tmp_path,
                                                                                            gdal_exceptions):
    previous_outputs(tmp_path)
    final = gpkg(tmp_path / "project.gpkg", "roads", 2)
    before = snapshot(tmp_path)
    with pytest.raises(RuntimeError):  # the run fails before its commit
        with Transaction() as run:
            stage_new_outputs(tmp_path, run)
            run.stage_layer(final, "buildings", gpkg(run.temporary_file(final), "x", 3))
            raise RuntimeError("engine failed")
    assert snapshot(tmp_path) == before and not temporaries(tmp_path)
    (tmp_path / "zz_notes.gpkg").write_text("not a GeoPackage")
    before = snapshot(tmp_path)
    with Transaction() as run:  # the commit fails at the layer (after the files moved in): all moved back
        stage_new_outputs(tmp_path, run)
        run.stage_layer(final, "buildings", gpkg(run.temporary_file(final), "x", 3))
        notes = str(tmp_path / "zz_notes.gpkg")
        run.stage_layer(notes, "buildings", gpkg(run.temporary_file(notes), "x", 3))
        with pytest.raises(OutputError, match="previous outputs were left as they were"):
            run.commit()
    # project.gpkg was written first, in a transaction rolled back when zz_notes.gpkg failed
    assert snapshot(tmp_path) == before and not temporaries(tmp_path)
