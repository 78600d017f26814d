"""Architecture rules: engine/ and models/ never import QGIS or Qt; the plugin uses relative imports only."""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGIN = os.path.join(ROOT, "satseg_plugin")
FORBIDDEN = ("qgis", "PyQt5", "PyQt6", "PySide2", "PySide6", "processing", "sip")


def python_files(folder):
    for dirpath, _dirs, files in os.walk(os.path.join(PLUGIN, folder)):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def imported_modules(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.level if hasattr(node, "level") else 0, alias.name
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or ""


@pytest.mark.parametrize("folder", ["engine", "models"])
def test_core_packages_are_qgis_free(folder):
    offenders = [(os.path.relpath(path, ROOT), name) for path in python_files(folder)
                 for level, name in imported_modules(path) if level == 0 and name.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_core_packages_import_without_qgis_on_the_path():
    """Importing every engine/models module works when qgis and PyQt cannot be imported at all."""
    code = (
        "import sys, importlib, pkgutil\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {FORBIDDEN!r}: raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "import satseg_plugin.engine as e, satseg_plugin.models as m\n"
        "for pkg in (e, m):\n"
        "    for info in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(pkg.__name__ + '.' + info.name)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_plugin_uses_relative_imports_only():
    offenders = [(os.path.relpath(path, ROOT), name) for path in python_files("")
                 for level, name in imported_modules(path) if level == 0 and name.startswith("satseg_plugin")]
    assert offenders == []
