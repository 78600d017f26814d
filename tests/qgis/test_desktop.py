"""QGIS desktop under Xvfb with the plugin enabled: the plugin loads, the SatSeg menu opens the
Patch raster dialog, and screenshots are saved into the test output folder."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.qgis.conftest import ROOT

pytestmark = [pytest.mark.desktop, pytest.mark.slow]
SHOTS = os.path.join(ROOT, "test_output", "desktop")


@pytest.mark.skipif(not (shutil.which("xvfb-run") and shutil.which("qgis")), reason="needs qgis and xvfb-run")
def test_desktop_loads_plugin_and_opens_dialog(tmp_path):
    os.makedirs(SHOTS, exist_ok=True)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    os.symlink(os.path.join(ROOT, "satseg_plugin"), plugins / "satseg_plugin")
    site = [p for p in sys.path if p.endswith("site-packages") and sys.prefix in p]
    env = dict(os.environ, HOME=str(tmp_path), QGIS_PLUGINPATH=str(plugins), PYTHONPATH=os.pathsep.join(site),
               SATSEG_CHECK_OUT=SHOTS, XDG_RUNTIME_DIR=str(tmp_path), QGIS_OPTS="")
    env.pop("QT_QPA_PLATFORM", None)
    enable = subprocess.run(["qgis_process.bin", "plugins", "enable", "satseg_plugin"], capture_output=True, text=True,
                            env=dict(env, QT_QPA_PLATFORM="offscreen"), timeout=300)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    report_path = os.path.join(SHOTS, "desktop.json")
    if os.path.exists(report_path):
        os.remove(report_path)
    out = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--nologo", "--noversioncheck",
                          "--code", os.path.join(ROOT, "scripts", "desktop_check.py")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert os.path.exists(report_path), out.stdout[-3000:] + out.stderr[-3000:]
    report = json.load(open(report_path))
    assert report["plugin_loaded"] and report["provider"]
    assert "satseg:patchraster" in report["algorithms"]
    assert "&SatSeg" in report["menus"] and "Patch raster…" in report["satseg_menu"]
    assert report["dialog"] and "Patch raster" in report["dialog"]
    for shot in ("desktop.png", "patch_dialog.png"):
        assert os.path.getsize(os.path.join(SHOTS, shot)) > 10_000
