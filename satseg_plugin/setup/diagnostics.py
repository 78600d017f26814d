"""What SatSeg sees of its environment: package versions, interpreter, devices (for the About dialog and bug reports)."""

from __future__ import annotations

import importlib
import platform
import sys
from typing import Dict, List, Tuple

from ..core.deps import OPTIONAL_PACKAGES, PIP_NAMES, install_command, python_interpreter
from ..core.version import __version__

__all__ = ["package_report", "optional_package_report", "environment_report"]


def package_report() -> List[Tuple[str, str, str]]:
    """``(pip name, version or 'missing', install command or '')`` for every package SatSeg uses."""
    rows = []
    for module, pip_name in PIP_NAMES.items():
        try:
            version = getattr(importlib.import_module(module), "__version__", "installed")
            rows.append((pip_name, str(version), ""))
        except ImportError:
            rows.append((pip_name, "missing", install_command(pip_name)))
    return rows


def optional_package_report() -> List[Tuple[str, str, str]]:
    """``(import name, version or 'not installed (optional: ...)', install command or '')`` for each optional
    package (:data:`~..core.deps.OPTIONAL_PACKAGES`); a missing one is never an error."""
    rows = []
    for package in OPTIONAL_PACKAGES:
        try:
            version = getattr(importlib.import_module(package.module), "__version__", "installed")
            rows.append((package.module, str(version), ""))
        except ImportError:
            rows.append((package.module, f"not installed (optional: {package.purpose})",
                         install_command(package.pip_name)))
    return rows


def environment_report() -> Dict[str, str]:
    """SatSeg version, Python, interpreter path and the compute devices torch can use."""
    report = {"SatSeg": __version__, "Python": sys.version.split()[0], "Interpreter": python_interpreter(),
              "Platform": platform.platform()}
    try:
        torch = importlib.import_module("torch")
        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            report["Devices"] = "cpu, " + ", ".join(f"cuda:{i} ({n})" for i, n in enumerate(names))
        else:
            report["Devices"] = f"cpu only (torch CUDA build: {torch.version.cuda or 'no'})"
    except ImportError:
        report["Devices"] = "unknown (torch missing)"
    return report
