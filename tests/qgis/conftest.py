"""Real QGIS for tests: one QgsApplication with Processing, the plugin loaded through classFactory,
and a helper that runs the real ``qgis_process`` binary with the plugin enabled in a throwaway profile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QGIS_PLUGINS = "/usr/share/qgis/python/plugins"
if QGIS_PLUGINS not in sys.path:
    sys.path.append(QGIS_PLUGINS)

qgis_core = pytest.importorskip("qgis.core")


@pytest.fixture(scope="session")
def session_plugin():
    """The SatSeg plugin object, created through ``classFactory`` in a GUI QgsApplication (offscreen) with
    Processing."""
    from qgis.core import QgsApplication

    app = QgsApplication([], True)  # GUI app (offscreen): the dock tests need widgets
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    import satseg_plugin

    plugin = satseg_plugin.classFactory(None)
    plugin.initProcessing()
    plugin.app = app
    yield plugin
    plugin.unload()


@pytest.fixture
def qgis_app(session_plugin):
    """The running QgsApplication, with the ``satseg`` provider registered."""
    session_plugin.initProcessing()  # in case a test unloaded it
    return session_plugin.app


@pytest.fixture
def run_alg(qgis_app):
    """``run_alg(alg_id, params, feedback=None)`` through ``processing.run`` in a fresh context."""
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject

    def run(alg_id, params, feedback=None, context=None):
        context = context or QgsProcessingContext()
        context.setProject(QgsProject.instance())
        return processing.run(alg_id, params, context=context, feedback=feedback or QgsProcessingFeedback())

    return run


def qgis_process_bin() -> str:
    exe = shutil.which("qgis_process.bin") or "/usr/lib/qgis/qgis_process.bin"
    if not os.path.exists(exe):
        pytest.skip("qgis_process.bin not installed")
    return exe


def qgis_process_runner(home, plugins, plugin_name: str = "satseg_plugin"):
    """A function running ``qgis_process.bin ARGS`` with HOME=``home`` (a throwaway profile), plugins from
    the folder ``plugins``, the venv's packages on PYTHONPATH, and plugin ``plugin_name`` enabled."""
    site = [p for p in sys.path if p.endswith("site-packages") and sys.prefix in p]
    env = dict(os.environ, HOME=str(home), QGIS_PLUGINPATH=str(plugins), QT_QPA_PLATFORM="offscreen",
               PYTHONPATH=os.pathsep.join(site + [os.environ.get("PYTHONPATH", "")]).strip(os.pathsep),
               QGIS_OPTS="", XDG_RUNTIME_DIR=str(home))

    def run(*args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
        out = subprocess.run([qgis_process_bin(), *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"qgis_process {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out

    run("plugins", "enable", plugin_name)
    return run


@pytest.fixture(scope="session")
def qgis_process(tmp_path_factory):
    """Run ``qgis_process.bin ARGS`` with the plugin enabled, in a throwaway HOME/profile.

    The plugin folder is reached through a symlink in a fresh QGIS_PLUGINPATH folder (as a user's
    symlinked checkout would be).
    """
    home = tmp_path_factory.mktemp("qgis_home")
    plugins = tmp_path_factory.mktemp("plugins")
    os.symlink(os.path.join(ROOT, "satseg_plugin"), plugins / "satseg_plugin")
    return qgis_process_runner(home, plugins)


def train_on_scene(scene: dict, settings: dict, **outputs) -> dict:
    """``satseg:trainsegmentation`` through ``processing.run`` on a generated scene (``sample_data.generate``)
    and its building footprints, with ``settings`` and the output paths ``outputs``; returns its results."""
    import processing

    return processing.run("satseg:trainsegmentation", dict(
        settings, INPUT=scene["scene"], LABELS=scene["buildings"] + "|layername=buildings", **outputs))


def parse_json_output(stdout: str) -> dict:
    """The JSON document qgis_process --json prints (skipping any log lines before it)."""
    return json.loads(stdout[stdout.index("{"):])


def add_model_child(model, child_id: str, alg_id: str, sources: dict, outputs=()) -> None:
    """Add ``alg_id`` as child ``child_id`` of a Processing ``model``, as the modeler dialog does: ``sources``
    for the given inputs, every other input at its default value, and ``outputs`` exposed as model outputs
    named ``<child_id>_<output>``."""
    from qgis.core import (
        QgsApplication,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
    )

    step = QgsProcessingModelChildAlgorithm(alg_id)
    step.setChildId(child_id)
    for name, source in sources.items():
        step.addParameterSources(name, [source])
    for definition in QgsApplication.processingRegistry().algorithmById(alg_id).parameterDefinitions():
        if definition.name() not in sources and not definition.isDestination() and \
                definition.defaultValue() is not None:
            step.addParameterSources(definition.name(),
                                     [QgsProcessingModelChildParameterSource.fromStaticValue(definition.defaultValue())])
    model_outputs = {}
    for output in outputs:
        out = QgsProcessingModelOutput(f"{child_id}_{output}")
        out.setChildId(child_id)
        out.setChildOutputName(output)
        model_outputs[f"{child_id}_{output}"] = out
    step.setModelOutputs(model_outputs)
    model.addChildAlgorithm(step)
