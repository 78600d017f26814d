"""Lazy imports of heavy packages with an actionable message when one is missing.

QGIS must start even when torch or faiss are not installed; an algorithm that needs one imports it
through :func:`require` and the user reads which package is missing and the exact command that
installs it for QGIS's own Python interpreter.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Dict

from .errors import MissingDependencyError

__all__ = ["PIP_NAMES", "require", "python_interpreter", "install_command", "missing_packages"]

#: Import name -> the name pip installs, with the version constraint SatSeg was tested with.
PIP_NAMES: Dict[str, str] = {
    "numpy": "numpy<2",
    "rasterio": "rasterio",
    "affine": "affine<3",
    "shapely": "shapely>=2",
    "torch": "torch",
    "torchvision": "torchvision",
    "segmentation_models_pytorch": "segmentation-models-pytorch",
    "faiss": "faiss-cpu",
    "sklearn": "scikit-learn",
    "scipy": "scipy",
    "safetensors": "safetensors",
    "skimage": "scikit-image",
    "matplotlib": "matplotlib",
}


def python_interpreter() -> str:
    """Return the path of the Python interpreter that runs this code.

    Inside QGIS, ``sys.executable`` is often the QGIS binary itself, so the interpreter is derived from
    ``sys.exec_prefix`` (``bin/python3.X`` on POSIX, ``python.exe`` on Windows / OSGeo4W).
    """
    exe = sys.executable or ""
    if os.path.basename(exe).lower().startswith("python"):
        return exe
    if os.name == "nt":
        return os.path.join(sys.exec_prefix, "python.exe")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for name in (version, "python3"):
        candidate = os.path.join(sys.exec_prefix, "bin", name)
        if os.path.exists(candidate):
            return candidate
    return os.path.join(sys.exec_prefix, "bin", version)


def install_command(package: str) -> str:
    """The shell command that installs ``package`` for the running interpreter."""
    spec = package if not any(c in package for c in "<>=") else f'"{package}"'
    return f"{python_interpreter()} -m pip install --user {spec}"


def require(module: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the package to install.

    Args:
        module: the import name (``"faiss"``, ``"segmentation_models_pytorch"``).

    Returns:
        The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        package = PIP_NAMES.get(top, top)
        raise MissingDependencyError(package, install_command(package), str(exc)) from exc


def missing_packages(*modules: str) -> Dict[str, str]:
    """Return ``{import name: pip name}`` for each of ``modules`` that cannot be imported."""
    missing = {}
    for module in modules:
        try:
            require(module)
        except MissingDependencyError as exc:
            missing[module] = exc.package
    return missing
