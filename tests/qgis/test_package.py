"""`make package`'s ZIP installs as a QGIS plugin, even under another folder name (relative imports only)."""

import os
import subprocess
import sys
import zipfile

from tests.qgis.conftest import ROOT, qgis_process_runner


def test_zip_installs_under_another_name(tmp_path):
    target = tmp_path / "satseg_plugin.zip"
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "package.py"), str(target)], check=True,
                   capture_output=True)
    names = zipfile.ZipFile(target).namelist()
    assert "satseg_plugin/metadata.txt" in names and "satseg_plugin/resources/styles/patch_index.qml" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    plugins = tmp_path / "plugins"
    zipfile.ZipFile(target).extractall(plugins)
    os.rename(plugins / "satseg_plugin", plugins / "satseg_renamed")
    run = qgis_process_runner(tmp_path / "home", plugins, plugin_name="satseg_renamed")
    listed = run("list").stdout
    assert "satseg:patchraster" in listed
