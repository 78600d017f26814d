"""The installer and diagnostics dialogs in a real GUI QgsApplication.

Widgets need a GUI QgsApplication (``QgsApplication([], True)``), while tests/qgis/conftest.py makes one
non-GUI application for the whole pytest session, and Qt allows one application per process. So each
test runs its scenario in a fresh Python process with its own GUI application (offscreen), and the
scenario prints its observations as JSON for the assertions here.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.qgis.conftest import QGIS_PLUGINS, ROOT

PRELUDE = f"""
import json, os, sys, time
BLOCKED = tuple(os.environ.get("BLOCK_MODULES", "").split(",")) if os.environ.get("BLOCK_MODULES") else ()
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
sys.path[:0] = [{ROOT!r}, {QGIS_PLUGINS!r}]
from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
app = QgsApplication([], True)
app.initQgis()
OUT = {{}}

def wait_until(condition, seconds):
    end = time.monotonic() + seconds
    while not condition() and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)
    return condition()
"""


def run_scenario(code: str, tmp_path, block=(), timeout=240) -> dict:
    """Run ``code`` after PRELUDE in a fresh process; return the ``OUT`` dict it prints."""
    script = tmp_path / "scenario.py"
    script.write_text(PRELUDE + textwrap.dedent(code) + "\nprint('OUT=' + json.dumps(OUT))\n")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HOME=str(tmp_path), XDG_RUNTIME_DIR=str(tmp_path),
               BLOCK_MODULES=",".join(block), OMP_NUM_THREADS="1")
    env.pop("SATSEG_DEPS_DIR", None)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=timeout,
                         cwd=str(tmp_path))
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("OUT=")), None)
    assert out.returncode == 0 and line, out.stdout[-3000:] + out.stderr[-3000:]
    return dict(json.loads(line[4:]), _stderr=out.stderr)


def test_installer_dialog_explains_and_installs_in_the_background(tmp_path):
    """Texts and command for a fake missing list; a fake install streams its lines while the GUI keeps running."""
    out = run_scenario(f"""
        from dataclasses import replace
        from qgis.core import QgsApplication
        from satseg_plugin.setup.installer import GpuHint
        from satseg_plugin.ui.dialogs.installer import InstallerDialog
        folder = {str(tmp_path / 'deps')!r}
        dialog = InstallerDialog(missing={{"torch": "torch", "faiss": "faiss-cpu"}}, target=folder,
                                 gpu=GpuHint(True, "NVIDIA GPU found: Test GPU (driver 1).", "cuda"))
        dialog.show()
        OUT["intro"] = dialog.intro.text()
        OUT["rows"] = [[dialog.table.item(r, c).text() for c in range(3)] for r in range(dialog.table.rowCount())]
        OUT["gpu"] = dialog.gpu_label.text()
        OUT["cuda_checked"] = dialog.cuda.isChecked()
        OUT["command_pypi"] = dialog.command.toPlainText()
        dialog.index.setCurrentIndex(dialog.index.findData("pytorch"))
        OUT["command_cuda"] = dialog.command.toPlainText()
        dialog.cpu.setChecked(True)
        OUT["command_cpu"] = dialog.command.toPlainText()
        code = "import time\\nfor i in range(6):\\n    print('line', i, flush=True)\\n    time.sleep(0.25)"
        dialog.plan_hook = lambda plan: replace(plan, command_override=(sys.executable, "-c", code))
        finished = []
        dialog.installFinished.connect(lambda ok, result: finished.append(ok))
        seen = []
        ticker = QTimer()
        ticker.timeout.connect(lambda: seen.append(dialog.log.toPlainText().count("line ")))
        ticker.start(20)
        start = time.monotonic()
        dialog.install_button.click()
        OUT["click_returned_after"] = time.monotonic() - start
        OUT["running"] = dialog.is_running()
        OUT["tasks"] = [t.description() for t in QgsApplication.taskManager().activeTasks()]
        OUT["controls_enabled_while_running"] = [dialog.install_button.isEnabled(), dialog.cancel_button.isEnabled()]
        wait_until(lambda: finished, 60)
        OUT["finished"] = finished
        OUT["ticks"] = len(seen)
        OUT["line_counts_seen"] = sorted(set(seen))
        OUT["log"] = dialog.log.toPlainText()
        OUT["status"] = dialog.status.text()
        OUT["progress"] = dialog.progress.value()
        OUT["install_enabled_after"] = dialog.install_button.isEnabled()
        OUT["log_file"] = dialog.result.log_path
    """, tmp_path)
    assert "faiss-cpu, torch" in out["intro"] and sys.executable in out["intro"]
    assert [row[0] for row in out["rows"]] == ["faiss-cpu", "torch"]
    assert "k-means" in out["rows"][0][1] and out["rows"][0][2] == "missing"
    assert "Test GPU" in out["gpu"] and out["cuda_checked"]  # the hint picks the CUDA build
    pypi = out["command_pypi"]
    assert "--target " + str(tmp_path / "deps") in pypi and "torch==2.14.1" in pypi and "'faiss-cpu>=1.15'" in pypi
    assert "download.pytorch.org" not in pypi and "--user" not in pypi
    assert "--extra-index-url https://download.pytorch.org/whl/cu121" in out["command_cuda"]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in out["command_cpu"]
    # Background: the click returns at once, the task is in QGIS's task manager, the GUI timer kept ticking
    # (every 20 ms over the ~1.5 s run) and saw the log grow line by line.
    assert out["click_returned_after"] < 1.0 and out["running"]
    assert out["tasks"] == ["SatSeg: installing Python packages"]
    assert out["controls_enabled_while_running"] == [False, True]
    assert out["finished"] == [True]
    assert out["ticks"] > 30 and len(out["line_counts_seen"]) >= 4
    assert all(f"line {i}" in out["log"] for i in range(6))
    assert out["status"].startswith("Success") and out["progress"] == 100 and out["install_enabled_after"]
    log_file = out["log_file"]
    assert log_file.startswith(str(tmp_path / "deps")) and "line 5" in open(log_file).read()


def test_installer_dialog_cancel_and_failure(tmp_path):
    out = run_scenario(f"""
        from dataclasses import replace
        from satseg_plugin.setup.installer import GpuHint
        from satseg_plugin.ui.dialogs.installer import InstallerDialog
        dialog = InstallerDialog(missing={{"faiss": "faiss-cpu"}}, target={str(tmp_path / 'deps')!r},
                                 gpu=GpuHint(False, "No NVIDIA GPU found.", "cpu"))
        OUT["cpu_checked"] = dialog.cpu.isChecked()
        slow = "import time\\nprint('started', flush=True)\\ntime.sleep(120)"
        dialog.plan_hook = lambda plan: replace(plan, command_override=(sys.executable, "-c", slow))
        dialog.install_button.click()
        wait_until(lambda: "started" in dialog.log.toPlainText(), 60)
        start = time.monotonic()
        dialog.cancel_button.click()
        wait_until(lambda: not dialog.is_running(), 60)
        OUT["cancel_took"] = time.monotonic() - start
        OUT["canceled"] = [dialog.result.canceled, dialog.result.success]
        OUT["cancel_status"] = dialog.status.text()
        fails = "print('boom', flush=True)\\nraise SystemExit(3)"
        dialog.plan_hook = lambda plan: replace(plan, command_override=(sys.executable, "-c", fails))
        dialog.install_button.click()
        wait_until(lambda: not dialog.is_running(), 60)
        OUT["failed"] = [dialog.result.success, dialog.result.returncode]
        OUT["fail_status"] = dialog.status.text()
        OUT["fail_log"] = dialog.log.toPlainText()
        # Closing a dialog (deleted on close) while it installs cancels the install, and nothing breaks after.
        from qgis.core import QgsApplication
        from satseg_plugin.ui.dialogs.installer import show_installer
        other = show_installer(None, missing={{"faiss": "faiss-cpu"}}, target={str(tmp_path / 'deps2')!r})
        other.plan_hook = lambda plan: replace(plan, command_override=(sys.executable, "-c", slow))
        other.install_button.click()
        wait_until(lambda: "started" in other.log.toPlainText(), 60)
        start = time.monotonic()
        other.close()
        OUT["closed_task_ended"] = wait_until(lambda: not QgsApplication.taskManager().activeTasks(), 30)
        OUT["close_cancel_took"] = time.monotonic() - start
        for _ in range(50):
            app.processEvents()
            time.sleep(0.01)
        log_dir = {str(tmp_path / 'deps2')!r}
        logs = [name for name in os.listdir(log_dir) if name.endswith(".log")]
        OUT["closed_log"] = open(os.path.join(log_dir, logs[0])).read()
    """, tmp_path)
    assert out["cpu_checked"]
    assert out["canceled"] == [True, False] and out["cancel_took"] < 15
    assert out["cancel_status"].startswith("Canceled")
    assert out["failed"] == [False, 3] and out["fail_status"].startswith("Installation failed") and "boom" in out[
        "fail_log"]
    assert out["closed_task_ended"] and out["close_cancel_took"] < 15
    assert "Canceled: pip was stopped." in out["closed_log"] and "Traceback" not in out["_stderr"]


def test_diagnostics_dialog_lists_versions_and_opens_the_installer(tmp_path):
    """With torch and faiss unimportable: the table says so, copies as text, and offers the installer for them."""
    out = run_scenario(f"""
        from qgis.PyQt.QtWidgets import QApplication
        from satseg_plugin.core.deps import activate_deps_dir
        from satseg_plugin.ui.dialogs.diagnostics import DiagnosticsDialog
        folder = {str(tmp_path / 'deps')!r}
        os.makedirs(folder)
        activate_deps_dir(folder)
        start = time.monotonic()
        dialog = DiagnosticsDialog(folder=folder)
        OUT["constructed_after"] = time.monotonic() - start
        OUT["status_before"] = dialog.status.text()
        done = []
        dialog.collected.connect(lambda: done.append(1))
        dialog.show()
        wait_until(lambda: done, 120)
        table = dialog.table
        OUT["cells"] = {{table.item(r, 0).text(): table.item(r, 1).text() if table.item(r, 1) else ""
                        for r in range(table.rowCount())}}
        OUT["status"] = dialog.status.text()
        OUT["install_enabled"] = dialog.install_button.isEnabled()
        dialog.copy_button.click()
        OUT["clipboard"] = QApplication.clipboard().text()
        dialog.install_button.click()
        OUT["installer_missing"] = dialog.installer.missing
        OUT["installer_visible"] = dialog.installer.isVisible()
        OUT["installer_target"] = dialog.installer.target
    """, tmp_path, block=("torch", "faiss"))
    assert out["constructed_after"] < 2.0 and out["status_before"].startswith("Collecting")
    cells = out["cells"]
    assert cells["torch"].startswith("missing") and cells["faiss-cpu"].startswith("missing")
    assert cells["numpy<2"].split()[0].count(".") >= 1  # a version number
    assert "GDAL" in cells["rasterio"] and cells["Interpreter"] and cells["QGIS"].startswith("3.")
    assert cells["Path"] == str(tmp_path / "deps") and cells["On sys.path"].startswith("yes")
    assert "torch missing" in cells["torch devices"]
    assert out["install_enabled"] and "torch" in out["status"]
    clip = out["clipboard"]
    assert "[Packages]" in clip and "torch: missing" in clip and "[sys.path]" in clip and str(tmp_path / "deps") in clip
    assert out["installer_missing"]["torch"] == "torch" and out["installer_missing"]["faiss"] == "faiss-cpu"
    assert out["installer_visible"] and out["installer_target"] == str(tmp_path / "deps")


def test_installer_escapes_names_offers_optional_packages_unticked_and_shows_nothing_missing(tmp_path):
    """Issue 18: "affine<3, ... shapely>=2" read as an HTML tag garbled the message; optional packages (Dask, ONNX)
    are offered unticked and install only when ticked; with nothing missing there is no empty log or 0 % bar."""
    out = run_scenario(f"""
        from satseg_plugin.setup.installer import GpuHint
        from satseg_plugin.ui.dialogs.installer import InstallerDialog
        from qgis.PyQt.QtGui import QTextDocument
        gpu = GpuHint(False, "No NVIDIA GPU found.", "cpu")
        dialog = InstallerDialog(missing={{"affine": "affine<3", "torch": "torch", "shapely": "shapely>=2"}},
                                 target={str(tmp_path / 'deps')!r}, gpu=gpu)
        dialog.show()
        document = QTextDocument()
        document.setHtml(dialog.intro.text())
        OUT["intro_shown"] = document.toPlainText()
        OUT["optional"] = {{name: [box.isChecked(), box.isEnabled(), box.text()]
                           for name, box in dialog.optional_checks.items()}}
        OUT["plan_without"] = list(dialog.plan().requirements)
        onnx = dialog.optional_checks["onnxruntime"]
        onnx.setEnabled(True)
        onnx.setProperty("installed", False)  # as on a machine without onnxruntime
        onnx.setChecked(True)
        OUT["plan_with"] = list(dialog.plan().requirements)
        OUT["command_with"] = dialog.command.toPlainText()
        empty = InstallerDialog(missing={{}}, target={str(tmp_path / 'deps2')!r}, gpu=gpu)
        empty.show()
        app.processEvents()
        OUT["empty_intro"] = empty.intro.text()
        OUT["empty_visible"] = [w.isVisible() for w in (empty.log, empty.progress, empty.command)]
        OUT["empty_install_enabled"] = empty.install_button.isEnabled()
    """, tmp_path)
    assert "affine<3, shapely>=2, torch" in out["intro_shown"], out["intro_shown"]
    assert set(out["optional"]) == {"dask[distributed]", "onnx", "onnxruntime"}
    assert all(not checked for checked, _enabled, _text in out["optional"].values())  # unticked
    assert "Dask" in out["optional"]["dask[distributed]"][2]
    assert not any(req.startswith(("onnx", "dask")) for req in out["plan_without"])
    assert "onnxruntime" in out["plan_with"] and "onnxruntime" in out["command_with"]
    assert "Nothing is missing" in out["empty_intro"]
    assert out["empty_visible"] == [False, False, False] and not out["empty_install_enabled"]


def test_diagnostics_show_a_busy_state_and_list_optional_packages(tmp_path):
    out = run_scenario(f"""
        import threading
        from satseg_plugin.ui.dialogs.diagnostics import DiagnosticsDialog, collect_rows
        release = threading.Event()
        def slow(folder):
            release.wait(30)
            return collect_rows(folder)
        folder = {str(tmp_path / 'deps')!r}
        dialog = DiagnosticsDialog(folder=folder, collect=slow)
        done = []
        dialog.collected.connect(lambda: done.append(1))
        dialog.show()
        app.processEvents()
        OUT["while_collecting"] = [dialog.busy.isVisible(), dialog.table.isVisible(), dialog.status.text()]
        release.set()
        wait_until(lambda: done, 120)
        OUT["after"] = [dialog.busy.isVisible(), dialog.table.isVisible()]
        OUT["optional"] = {{item: value for section, item, value in dialog.rows if section == "Optional packages"}}
        OUT["missing"] = dialog.missing()
    """, tmp_path, block=("onnxruntime",))
    assert out["while_collecting"][:2] == [True, False] and out["while_collecting"][2].startswith("Collecting")
    assert out["after"] == [False, True]
    assert set(out["optional"]) == {"dask", "distributed", "onnx", "onnxruntime"}
    assert out["optional"]["onnxruntime"].startswith("not installed (optional")
    assert "onnxruntime" not in out["missing"]  # an optional package is never reported as missing


def test_first_use_offer_in_the_message_bar(tmp_path):
    out = run_scenario("""
        from qgis.core import QgsSettings
        from qgis.gui import QgsMessageBar
        from qgis.PyQt.QtWidgets import QMainWindow, QPushButton
        from satseg_plugin.ui.dialogs.installer import DONT_ASK_KEY, InstallerDialog, offer_installer
        window = QMainWindow()
        bar = QgsMessageBar(window)
        class Iface:
            def mainWindow(self):
                return window
            def messageBar(self):
                return bar
        iface = Iface()
        OUT["nothing_missing"] = offer_installer(iface, ["json"])
        OUT["offered"] = offer_installer(iface, ["torch", "json"])
        OUT["items"] = len(bar.items())
        OUT["text"] = bar.currentItem().text()
        button = bar.currentItem().findChild(QPushButton, "satsegOfferInstall")
        button.click()
        dialogs = [w for w in QApplication.topLevelWidgets() if isinstance(w, InstallerDialog) and w.isVisible()]
        OUT["dialog_missing"] = dialogs[0].missing if dialogs else None
        OUT["items_after"] = len(bar.items())
        QgsSettings().setValue(DONT_ASK_KEY, True)
        OUT["after_dont_ask"] = offer_installer(iface, ["torch"])
    """, tmp_path, block=("torch",))
    assert out["nothing_missing"] is False and out["offered"] is True and out["items"] == 1
    assert "torch" in out["text"]
    assert out["dialog_missing"] == {"torch": "torch"} and out["items_after"] == 0
    assert out["after_dont_ask"] is False


@pytest.mark.skipif(not os.path.isdir(QGIS_PLUGINS), reason="QGIS's Python plugins folder not found")
def test_dialog_modules_import_without_heavy_packages(tmp_path):
    """The ui modules load (as the plugin's menu would) with torch, faiss and rasterio missing."""
    out = run_scenario("""
        import satseg_plugin.ui.dialogs.installer, satseg_plugin.ui.dialogs.diagnostics
        OUT["heavy_loaded"] = [m for m in ("torch", "faiss", "rasterio") if m in sys.modules]
    """, tmp_path, block=("torch", "faiss", "rasterio"))
    assert out["heavy_loaded"] == []


DESKTOP_SCRIPT = r'''
import json, os, sys, time
from dataclasses import replace
from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins
from satseg_plugin.core.deps import setup_imports
from satseg_plugin.ui.dialogs.diagnostics import show_diagnostics
from satseg_plugin.ui.dialogs.installer import offer_installer, show_installer

OUT = os.environ["SATSEG_CHECK_OUT"]
report = {"plugin_loaded": "satseg_plugin" in plugins}
# What classFactory is to do: the profile's package folder on sys.path, triton kept out.
report["folder"] = setup_imports(QgsApplication.qgisSettingsDirPath())


def start():
    iface.mainWindow().showMaximized()
    report["offered"] = offer_installer(iface, ["satseg_no_such_module"])
    dialog = show_installer(iface.mainWindow(), missing={"faiss": "faiss-cpu"},
                            target=os.path.join(os.environ["HOME"], "deps"))
    code = "import time\nfor i in range(8):\n    print('pip line', i, flush=True)\n    time.sleep(0.3)"
    dialog.plan_hook = lambda plan: replace(plan, command_override=(plan.interpreter, "-c", code))
    dialog.install_button.click()
    report["tasks"] = [t.description() for t in QgsApplication.taskManager().activeTasks()]
    QTimer.singleShot(1200, lambda: installing(dialog))


def installing(dialog):
    QgsApplication.primaryScreen().grabWindow(0).save(os.path.join(OUT, "installer_running.png"))
    report["running_while_grabbed"] = dialog.is_running()
    wait_install(dialog)


def wait_install(dialog):
    if dialog.is_running():
        QTimer.singleShot(200, lambda: wait_install(dialog))
        return
    report["install_status"] = dialog.status.text()
    report["log_lines"] = [ln for ln in dialog.log.toPlainText().splitlines() if ln.startswith("pip line")]
    dialog.grab().save(os.path.join(OUT, "installer_dialog.png"))
    dialog.close()
    diagnostics = show_diagnostics(iface.mainWindow())
    diagnostics.collected.connect(lambda: QTimer.singleShot(300, lambda: finish(diagnostics)))


def finish(diagnostics):
    report["diagnostics"] = {item: value for _section, item, value in diagnostics.rows}
    diagnostics.grab().save(os.path.join(OUT, "diagnostics_dialog.png"))
    with open(os.path.join(OUT, "installer_desktop.json"), "w") as handle:
        json.dump(report, handle, indent=1)
    QTimer.singleShot(200, iface.actionExit().trigger)


QTimer.singleShot(3000, start)
'''


@pytest.mark.desktop
@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("xvfb-run") and shutil.which("qgis")), reason="needs qgis and xvfb-run")
def test_dialogs_in_qgis_desktop(tmp_path):
    """Real QGIS desktop: the install task runs in QGIS's task manager, the diagnostics import every package
    (torchvision included, which needs triton kept out) without killing QGIS, and screenshots are saved."""
    shots = os.path.join(ROOT, "test_output", "desktop")
    os.makedirs(shots, exist_ok=True)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    os.symlink(os.path.join(ROOT, "satseg_plugin"), plugins / "satseg_plugin")
    script = tmp_path / "installer_check.py"
    script.write_text(DESKTOP_SCRIPT)
    site = [p for p in sys.path if p.endswith("site-packages") and sys.prefix in p]
    env = dict(os.environ, HOME=str(tmp_path), QGIS_PLUGINPATH=str(plugins), PYTHONPATH=os.pathsep.join(site),
               SATSEG_CHECK_OUT=shots, XDG_RUNTIME_DIR=str(tmp_path), QGIS_OPTS="", OMP_NUM_THREADS="1")
    env.pop("QT_QPA_PLATFORM", None)
    env.pop("SATSEG_DEPS_DIR", None)
    enable = subprocess.run(["qgis_process.bin", "plugins", "enable", "satseg_plugin"], capture_output=True,
                            text=True, env=dict(env, QT_QPA_PLATFORM="offscreen"), timeout=300)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    report_path = os.path.join(shots, "installer_desktop.json")
    if os.path.exists(report_path):
        os.remove(report_path)
    out = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--nologo", "--noversioncheck",
                          "--code", str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and os.path.exists(report_path), out.stdout[-3000:] + out.stderr[-3000:]
    report = json.load(open(report_path))
    assert report["plugin_loaded"] and report["offered"]
    assert report["folder"].startswith(str(tmp_path)) and "satseg_deps" in report["folder"]
    assert report["tasks"] == ["SatSeg: installing Python packages"] and report["running_while_grabbed"]
    assert report["install_status"].startswith("Success") and len(report["log_lines"]) == 8
    diagnostics = report["diagnostics"]
    assert diagnostics["QGIS"].startswith("3.") and diagnostics["Path"] == report["folder"]
    if importlib.util.find_spec("torchvision") is not None:
        assert not diagnostics["torchvision"].startswith("missing")
    for shot in ("installer_running.png", "installer_dialog.png", "diagnostics_dialog.png"):
        assert os.path.getsize(os.path.join(shots, shot)) > 10_000
