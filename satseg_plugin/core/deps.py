"""The Python packages SatSeg needs, lazy imports with an actionable message, and SatSeg's own package folder.

:data:`PACKAGES` is the one list of what SatSeg needs (with the versions it was tested with, the same as the
repository's ``requirements.txt``); the installer, the diagnostics and the missing-package messages read it.
:func:`require` imports a package on first use, so QGIS starts without torch or faiss, and a missing one is
reported with the exact command that installs it for QGIS's own interpreter. :func:`activate_deps_dir` puts
the plugin-owned folder (:func:`deps_dir`) on ``sys.path`` *after* the interpreter's site-packages, so what
QGIS's Python already has (its numpy 1.x) always wins.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import site
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Dict, Iterable, List, Optional, Set, Tuple

from .errors import MissingDependencyError

__all__ = ["Package", "PACKAGES", "OPTIONAL_PACKAGES", "ALL_PACKAGES", "PIP_NAMES", "DEPS_DIR_ENV", "require", "python_interpreter",
           "install_command", "missing_packages", "find_missing", "package_for", "deps_dir",
           "activate_deps_dir", "block_crashing_imports", "setup_imports", "CRASHING_IMPORTS"]


@dataclass(frozen=True)
class Package:
    """One Python package SatSeg uses.

    Attributes:
        module: the import name (``"faiss"``).
        pip_name: the name messages give for ``pip install`` (``"faiss-cpu"``, ``"numpy<2"``).
        requirement: the requirement the installer asks pip for, pinned as SatSeg was tested
            (``requirements.txt``).
        purpose: what SatSeg uses it for, shown to users who are asked to install it.
        optional: the tools work without it (:data:`OPTIONAL_PACKAGES`); the installer offers it unticked.
    """

    module: str
    pip_name: str
    requirement: str
    purpose: str
    optional: bool = False

    @property
    def project(self) -> str:
        """The distribution name without version constraints (``"numpy"`` for ``"numpy<2"``)."""
        name = self.requirement
        for i, char in enumerate(name):
            if char in "<>=!~;[ ":
                return name[:i]
        return name


#: Every package SatSeg imports beside the standard library, qgis and osgeo (one place: keep it in step
#: with requirements.txt, a test compares them).
PACKAGES: Tuple[Package, ...] = (
    Package("numpy", "numpy<2", "numpy<2", "arrays everywhere (QGIS's own numpy 1.x is used, never replaced)"),
    Package("rasterio", "rasterio", "rasterio>=1.3,<1.5", "reading and writing GeoTIFFs (every tool)"),
    Package("affine", "affine<3", "affine<3", "pixel-to-map transforms (comes with rasterio)"),
    Package("shapely", "shapely>=2", "shapely>=2", "polygons: annotations, building outlines, communities"),
    Package("torch", "torch", "torch==2.14.1", "training and running the neural networks"),
    Package("torchvision", "torchvision", "torchvision==0.29.1", "image models used by the scene classifier"),
    Package("segmentation_models_pytorch", "segmentation-models-pytorch", "segmentation-models-pytorch==0.6.0",
            "the U-Net segmentation models"),
    Package("faiss", "faiss-cpu", "faiss-cpu>=1.15", "k-means clustering (ClusterNet, DeepCluster)"),
    Package("sklearn", "scikit-learn", "scikit-learn", "cluster scores (silhouette) and scaling"),
    Package("scipy", "scipy", "scipy", "image filters and connected components"),
    Package("safetensors", "safetensors", "safetensors", "model and feature files"),
    Package("skimage", "scikit-image", "scikit-image", "image measures for cluster maps"),
    Package("matplotlib", "matplotlib", "matplotlib", "training curves and silhouette plots"),
)

#: Packages some options use and every tool works without (requirements.txt lists them under "optional"):
#: the installer offers them unticked, the diagnostics list them as optional, :func:`require` names them.
OPTIONAL_PACKAGES: Tuple[Package, ...] = (
    Package("dask", "dask[distributed]", "dask[distributed]",
            "the Dask scheduler: spreading tiled sweeps over local or remote workers", optional=True),
    Package("distributed", "dask[distributed]", "dask[distributed]",
            "the Dask scheduler's workers (comes with dask[distributed])", optional=True),
    Package("onnx", "onnx", "onnx", "exporting models to ONNX (for Deepness and other tools)", optional=True),
    Package("onnxruntime", "onnxruntime", "onnxruntime", "running ONNX models (.onnx) in Segment raster",
            optional=True),
)
#: Required packages first, then the optional ones.
ALL_PACKAGES: Tuple[Package, ...] = PACKAGES + OPTIONAL_PACKAGES

#: Import name -> the name pip installs, with the version constraint SatSeg was tested with (required packages;
#: :func:`package_for` knows the optional ones too).
PIP_NAMES: Dict[str, str] = {package.module: package.pip_name for package in PACKAGES}

#: Environment variable naming the folder the installer writes to and SatSeg imports from (overrides
#: :func:`deps_dir`'s default).
DEPS_DIR_ENV = "SATSEG_DEPS_DIR"

#: Packages whose import kills the QGIS desktop process, with the reason. triton (which torch._dynamo imports
#: when torchvision, timm or segmentation-models-pytorch load) bundles its own LLVM, whose symbols clash with the
#: libLLVM that Mesa's OpenGL loads into QGIS desktop: segfault on ``import triton`` (seen with QGIS 3.22 on
#: Debian 12, Mesa libLLVM-15). SatSeg never uses torch.compile, triton's only user; torch works without it.
CRASHING_IMPORTS: Dict[str, str] = {
    "triton": "its bundled LLVM clashes with the libLLVM Mesa loads into QGIS desktop (segfault)",
}
#: Set to 1 to let triton import anyway (e.g. a QGIS without Mesa's LLVM and a need for torch.compile).
ALLOW_CRASHING_ENV = "SATSEG_ALLOW_TRITON"

_PTH_DONE: Set[str] = set()


def package_for(module: str) -> Optional[Package]:
    """The :data:`ALL_PACKAGES` entry of import name ``module`` (or of its top-level package), or None."""
    top = module.split(".")[0]
    return next((package for package in ALL_PACKAGES if package.module == top), None)


def _inside_this_python(path: str) -> bool:
    """Whether ``path`` (or what it links to) lies under this interpreter's (or its venv's) prefix."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.exec_prefix, getattr(sys, "base_prefix", sys.prefix),
                                               getattr(sys, "base_exec_prefix", sys.exec_prefix)) if p}
    for candidate in {os.path.abspath(path), os.path.realpath(path)}:
        if any(candidate.startswith(prefix.rstrip(os.sep) + os.sep) for prefix in prefixes):
            return True
    return False


def python_interpreter() -> str:
    """Return the path of the Python interpreter that runs this code.

    Inside QGIS, ``sys.executable`` is often the QGIS binary itself, or whatever ``python3`` comes first on
    ``PATH`` (seen in QGIS desktop: a pyenv shim, i.e. another Python): it is used only when it is a Python
    under this interpreter's prefix; otherwise the interpreter is derived from ``sys.exec_prefix``
    (``bin/python3.X`` on POSIX, ``python.exe`` on Windows / OSGeo4W).
    """
    exe = sys.executable or ""
    if os.path.basename(exe).lower().startswith("python") and _inside_this_python(exe):
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
    spec = package if not any(c in package for c in "<>=[ ") else f'"{package}"'
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
        known = package_for(module)
        package = known.pip_name if known is not None else module.split(".")[0]
        raise MissingDependencyError(package, install_command(package), str(exc)) from exc


def missing_packages(*modules: str) -> Dict[str, str]:
    """Return ``{import name: pip name}`` for each of ``modules`` that cannot be imported.

    This really imports each module (slow for torch, but it catches broken installs too); use
    :func:`find_missing` where start-up time matters.
    """
    missing = {}
    for module in modules:
        try:
            require(module)
        except MissingDependencyError as exc:
            missing[module] = exc.package
    return missing


def find_missing(modules: Optional[Iterable[str]] = None) -> Dict[str, str]:
    """``{import name: pip name}`` for each module the import system cannot find, without importing any.

    Fast enough for QGIS start-up (no torch import); a package that is present but broken is not
    reported here (:func:`missing_packages` imports and catches those).

    Args:
        modules: import names; default every module of :data:`PACKAGES`.
    """
    names = [package.module for package in PACKAGES] if modules is None else list(modules)
    missing = {}
    for module in names:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package is missing, or sys.modules holds None
            found = False
        if not found:
            package = package_for(module)
            missing[module] = package.pip_name if package else module.split(".")[0]
    return missing


def deps_dir(profile_dir: Optional[str] = None) -> str:
    """The plugin-owned folder the installer writes packages into and SatSeg imports them from.

    ``$SATSEG_DEPS_DIR`` when set (used as is); otherwise ``<profile>/python/satseg_deps/pythonX.Y``
    for a QGIS profile folder, or ``<user data>/satseg/deps/pythonX.Y`` without one. The Python version
    is part of the path because compiled packages only work with the Python they were built for.

    Args:
        profile_dir: the QGIS profile folder (``QgsApplication.qgisSettingsDirPath()``), if known.
    """
    override = os.environ.get(DEPS_DIR_ENV, "").strip()
    if override:
        return os.path.abspath(os.path.expanduser(override))
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if profile_dir:
        return os.path.join(os.path.abspath(profile_dir), "python", "satseg_deps", version)
    if os.name == "nt":
        base = os.environ.get("APPDATA") or os.path.expanduser("~")
    else:
        base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "satseg", "deps", version)


def _is_site_dir(path: str) -> bool:
    return os.path.basename(os.path.normpath(path)) in ("site-packages", "dist-packages")


def activate_deps_dir(path: str, sys_path: Optional[List[str]] = None) -> int:
    """Put SatSeg's package folder on ``sys.path`` right after the last site-packages folder.

    Packages the interpreter already has (QGIS's numpy, GDAL) therefore win; the folder only provides
    what is missing. ``.pth`` files in the folder are processed once (as ``site`` would). Calling it again
    leaves the entry where it is and picks up ``.pth`` files and packages installed since.

    Args:
        path: the folder (it need not exist yet: the installer may create it later in the session).
        sys_path: the list to change (default ``sys.path``).

    Returns:
        The folder's index in the list.
    """
    entries = sys.path if sys_path is None else sys_path
    path = os.path.abspath(path)
    if path in entries:
        index = entries.index(path)
    else:
        sites = [i for i, entry in enumerate(entries) if _is_site_dir(entry)]
        index = sites[-1] + 1 if sites else len(entries)
        entries.insert(index, path)
    if entries is sys.path and os.path.isdir(path):
        # A folder first seen while missing is cached as "no finder": forget that, then run new .pth files.
        sys.path_importer_cache.pop(path, None)
        importlib.invalidate_caches()
        for name in sorted(os.listdir(path)):
            pth = os.path.join(path, name)
            if name.endswith(".pth") and not name.startswith(".") and pth not in _PTH_DONE:
                _PTH_DONE.add(pth)
                site.addpackage(path, name, None)
    return index


def block_crashing_imports() -> List[str]:
    """Make the packages of :data:`CRASHING_IMPORTS` unimportable in this process (``import`` raises ImportError).

    Only for the QGIS process (``classFactory``); packages already imported are left alone, and
    ``$SATSEG_ALLOW_TRITON=1`` turns this off.

    Returns:
        The packages blocked now.
    """
    if os.environ.get(ALLOW_CRASHING_ENV, "").strip() == "1":
        return []
    blocked = []
    for name in CRASHING_IMPORTS:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  (the import system's "not importable" marker)
            blocked.append(name)
    return blocked


def setup_imports(profile_dir: Optional[str] = None) -> str:
    """What the plugin does once when QGIS loads it: SatSeg's package folder on ``sys.path`` (after
    site-packages) and :func:`block_crashing_imports`.

    Args:
        profile_dir: the QGIS profile folder (``QgsApplication.qgisSettingsDirPath()``).

    Returns:
        The package folder.
    """
    folder = deps_dir(profile_dir)
    activate_deps_dir(folder)
    block_crashing_imports()
    return folder
