"""Architecture rules, read from the source with ``ast``.

The plugin is built in layers that only point down::

    plugin.py / __init__.py
    ui          (may also use setup)
    processing
    pipelines   (patching, segmentation, clustering, population: never each other)
    models
    core        (no QGIS, no Qt)

``setup`` (installer, diagnostics) is used only by ``ui`` and ``plugin.py``; Processing algorithms never import
each other; no module imports another module's ``_private`` names; the module import graph has no cycle.
"""

import ast
import os
import subprocess
import sys
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGIN = os.path.join(ROOT, "satseg_plugin")
FORBIDDEN = ("qgis", "PyQt5", "PyQt6", "PySide2", "PySide6", "processing", "sip")
#: Layer rank of each top-level package: a module may import only from packages of a lower rank (or its own).
RANK = {"core": 0, "models": 1, "pipelines": 2, "processing": 3, "ui": 4, "plugin": 5, "__init__": 5}
#: Packages outside the ranking, with the packages allowed to import them.
SIDE_PACKAGES = {"setup": {"ui", "plugin", "setup"}}
QGIS_FREE = ("core", "models", "pipelines", "setup")


def module_name(path: str) -> str:
    rel = os.path.relpath(path, PLUGIN)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def plugin_modules() -> Dict[str, str]:
    """Dotted module name (inside satseg_plugin) -> file path, for every module of the plugin."""
    found = {}
    for dirpath, _dirs, files in os.walk(PLUGIN):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                found[module_name(path)] = path
    return found


MODULES = plugin_modules()


def is_package(module: str) -> bool:
    return MODULES.get(module, "").endswith("__init__.py")


def imports(module: str) -> Iterator[Tuple[int, str, List[str], int]]:
    """(level, module, imported names, line) of every import statement, lazy ones inside functions too."""
    path = MODULES[module]
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", [alias.name for alias in node.names], node.lineno


def resolve(module: str, level: int, target: str) -> str:
    """The dotted name inside satseg_plugin that a relative import of ``module`` points at."""
    package = module.split(".") if is_package(module) else module.split(".")[:-1]
    if level > 1:
        package = package[: len(package) - (level - 1)]
    return ".".join(package + ([target] if target else []))


def internal_imports(module: str) -> Iterator[Tuple[str, List[str], int]]:
    """(target module, imported names, line) of every import of another plugin module.

    ``from .pkg import mod`` counts as an import of ``pkg.mod`` when ``mod`` is a module."""
    for level, target, names, line in imports(module):
        if level == 0:
            continue
        resolved = resolve(module, level, target)
        submodules = [f"{resolved}.{n}" if resolved else n for n in names]
        if names and all(s in MODULES for s in submodules):
            for sub in submodules:
                yield sub, [], line
        else:
            yield resolved, names, line


def top(module: str) -> str:
    return module.split(".")[0]


def test_every_module_sits_in_a_known_layer():
    unknown = sorted({top(m) for m in MODULES} - set(RANK) - set(SIDE_PACKAGES) - {""})
    assert unknown == []


def test_imports_point_down_only():
    offenders = []
    for module in MODULES:
        if not module:
            continue
        for target, _names, line in internal_imports(module):
            source_top, target_top = top(module), top(target)
            if source_top == target_top:
                continue
            if target_top in SIDE_PACKAGES:
                allowed = source_top in SIDE_PACKAGES[target_top]
            elif source_top in SIDE_PACKAGES:
                allowed = RANK.get(target_top, 99) == RANK["core"]
            else:
                allowed = RANK.get(target_top, 99) < RANK.get(source_top, -1)
            if not allowed:
                offenders.append(f"{module}:{line} imports {target}")
    assert offenders == []


def test_pipelines_do_not_import_each_other():
    offenders = []
    for module in MODULES:
        parts = module.split(".")
        if parts[0] != "pipelines" or len(parts) < 3:
            continue
        for target, _names, line in internal_imports(module):
            tparts = target.split(".")
            if tparts[0] == "pipelines" and len(tparts) > 1 and tparts[1] != parts[1]:
                offenders.append(f"{module}:{line} imports {target}")
    assert offenders == []


def test_processing_algorithms_do_not_import_each_other():
    offenders = [f"{module}:{line} imports {target}" for module in MODULES
                 if module.startswith("processing.algorithms.")
                 for target, _names, line in internal_imports(module)
                 if target.startswith("processing.algorithms.")]
    assert offenders == []


def test_no_private_names_from_other_modules():
    offenders = [f"{module}:{line} imports {name} from {target}" for module in MODULES
                 for target, names, line in internal_imports(module) if target != module
                 for name in names if name.startswith("_") and not name.startswith("__")]
    assert offenders == []


def test_module_import_graph_has_no_cycle():
    """Also lazy imports: a cycle hidden inside a function is still two modules that need each other."""
    graph: Dict[str, Set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _names, _line in internal_imports(module):
            if target in MODULES and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    cycles = []
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


def test_no_module_over_600_lines():
    long = {m: n for m, path in MODULES.items() if (n := sum(1 for _ in open(path, encoding="utf-8"))) > 600}
    assert long == {}


@pytest.mark.parametrize("folder", QGIS_FREE)
def test_qgis_free_packages(folder):
    offenders = [(m, target) for m in MODULES if top(m) == folder
                 for level, target, _names, _line in imports(m) if level == 0 and target.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_qgis_free_packages_import_without_qgis_on_the_path():
    """Importing every module of core/, models/, pipelines/ and setup/ works when qgis and PyQt cannot be imported."""
    names = sorted(m for m in MODULES if top(m) in QGIS_FREE)
    code = (
        "import sys, importlib\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {FORBIDDEN!r}: raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module('satseg_plugin.' + name)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_plugin_uses_relative_imports_only():
    offenders = [(m, target) for m in MODULES for level, target, _names, _line in imports(m)
                 if level == 0 and target.startswith("satseg_plugin")]
    assert offenders == []
