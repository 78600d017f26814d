"""Output paths are refused when they name an input, another output, or a cleared folder holding an input."""

import os

import pytest

from satseg_plugin.core.errors import OutputError
from satseg_plugin.core.paths import check_outputs, same_file_key


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()
    return str(path)


def test_output_equal_to_the_input_is_refused(tmp_path):
    source = touch(tmp_path / "a.tif")
    with pytest.raises(OutputError) as err:
        check_outputs({"INPUT": source}, {"OUTPUT_PROBABILITY": str(tmp_path / "a.tif")})
    assert err.value.parameter == "OUTPUT_PROBABILITY" and "INPUT" in str(err.value)


def test_links_and_dot_dot_are_resolved(tmp_path):
    source = touch(tmp_path / "data" / "a.tif")
    os.symlink(tmp_path / "data", tmp_path / "link")
    for alias in (tmp_path / "link" / "a.tif", tmp_path / "data" / ".." / "data" / "a.tif"):
        with pytest.raises(OutputError):
            check_outputs({"INPUT": [source]}, {"OUTPUT": str(alias)})
    assert same_file_key(str(tmp_path / "link" / "a.tif")) == same_file_key(source)


def test_two_outputs_with_one_name_are_refused(tmp_path):
    touch(tmp_path / "a.tif")
    with pytest.raises(OutputError) as err:
        check_outputs({"INPUT": str(tmp_path / "a.tif")},
                      {"OUTPUT_PROBABILITY": str(tmp_path / "p.tif"), "OUTPUT_MASK": str(tmp_path / "p.tif")})
    assert err.value.parameter == "OUTPUT_MASK" and "OUTPUT_PROBABILITY" in str(err.value)


def test_cleared_folder_holding_an_input_is_refused_only_when_cleared(tmp_path):
    patch = touch(tmp_path / "patches" / "p_0_0.tif")
    with pytest.raises(OutputError) as err:
        check_outputs({"INPUT": patch}, {"OUTPUT_DIR": str(tmp_path / "patches")}, cleared_folders=["OUTPUT_DIR"])
    assert "OVERWRITE" in str(err.value)
    check_outputs({"INPUT": patch}, {"OUTPUT_DIR": str(tmp_path / "patches")})  # adding files is fine
    check_outputs({"INPUT": patch}, {"OUTPUT_DIR": str(tmp_path / "patches2")}, cleared_folders=["OUTPUT_DIR"])


def test_distinct_paths_virtual_and_empty_ones_pass(tmp_path):
    source = touch(tmp_path / "a.tif")
    check_outputs({"INPUT": source, "MODEL": ["/vsizip/m.zip/m.satseg"], "MASK": None},
                  {"OUTPUT": str(tmp_path / "b.tif"), "OUTPUT_POLYGONS": "", "OUTPUT_MASK": None})
    assert same_file_key("/vsicurl/http://x/a.tif") == "/vsicurl/http://x/a.tif"


def test_layers_of_one_geopackage_are_told_apart(tmp_path):
    gpkg = touch(tmp_path / "project.gpkg")
    labels = f"{gpkg}|layername=labels"
    check_outputs({"LABELS": labels}, {"OUTPUT": f"{gpkg}|layername=buildings"})  # another layer: fine
    check_outputs({}, {"A": f"{gpkg}|layername=a", "B": f"{gpkg}|layername=b"})
    for output in (f"{gpkg}|layername=Labels", gpkg):  # the input layer itself (SQLite ignores case), whole file
        with pytest.raises(OutputError, match="never writes over its inputs") as err:
            check_outputs({"LABELS": labels}, {"OUTPUT": output})
        assert err.value.parameter == "OUTPUT"
    with pytest.raises(OutputError, match="never writes over its inputs"):  # an input read as the whole file
        check_outputs({"LABELS": gpkg}, {"OUTPUT": f"{gpkg}|layername=buildings"})
    with pytest.raises(OutputError, match="also given as A"):
        check_outputs({}, {"A": gpkg, "B": f"{gpkg}|layername=b"})
    link = tmp_path / "link.gpkg"
    os.symlink(gpkg, link)
    assert same_file_key(f"{link}|layername=X") == same_file_key(f"{gpkg}|layername=x")
