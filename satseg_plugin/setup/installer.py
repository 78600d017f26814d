"""Install the Python packages SatSeg is missing into its own folder, with pip for QGIS's own interpreter.

QGIS-free: the dialog (``ui/dialogs/installer.py``) builds an :class:`InstallPlan` with :func:`make_plan`
and runs :func:`run_install` in a background task; scripts and tests call the same two functions.

It writes only into the plugin-owned folder (:func:`~.deps.deps_dir`, ``pip install --target --no-deps``),
never upgrades, removes or shadows a package the interpreter has (it resolves against the real environment
first and pins what is installed), and installs what it can when one requirement cannot be met. Costs: pip
runs a dry-run resolution, then a download; torch from PyPI on Linux is about 3 GB. The full list of
promises and the reasons (torch indexes, shapely/rasterio from source): docs/design.md, "Installing beside
QGIS".
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace
from typing import List, Mapping, Optional, Sequence, Tuple

from ..core.deps import PACKAGES, find_missing, package_for, python_interpreter

__all__ = ["InstallPlan", "GpuHint", "make_plan", "detect_gpu", "installed_version", "version_satisfies",
           "build_tools_missing", "canonical_name", "constraint_lines", "project_name", "quote_command",
           "release_numbers", "BUILDS", "INDEX_SOURCES", "STATIC_CONSTRAINTS", "PROTECTED", "TORCH_INDEX_BASE",
           "TORCH_INDEX_ENV", "CUDA_TAG", "CUDA_TAG_ENV", "MIN_PIP_FOR_RESOLVE", "CONSTRAINTS_FILE", "REPORT_FILE",
           "LINUX_SOURCE_BUILDS", "torch_index_url"]

#: Torch builds the user can choose.
BUILDS = ("cpu", "cuda")
#: Where torch comes from: plain PyPI (default) or PyTorch's own index for the chosen build.
INDEX_SOURCES = ("pypi", "pytorch")
TORCH_INDEX_BASE = "https://download.pytorch.org/whl"
TORCH_INDEX_ENV = "SATSEG_TORCH_INDEX"
CUDA_TAG = "cu121"
CUDA_TAG_ENV = "SATSEG_TORCH_CUDA"
#: Always in the constraints file: QGIS's and GDAL's bindings are built on numpy 1.x; affine 3 breaks rasterio.
STATIC_CONSTRAINTS = ("numpy<2", "affine<3")
#: Pinned to the installed version when the interpreter has them (never installed a second time).
PROTECTED = ("numpy", "GDAL")
#: Built from source on Linux, against QGIS's own GEOS / GDAL.
LINUX_SOURCE_BUILDS = ("shapely", "rasterio")
#: ``pip install --dry-run --report`` appeared in pip 22.2.
MIN_PIP_FOR_RESOLVE = (22, 2)
CONSTRAINTS_FILE = "satseg-constraints.txt"
REPORT_FILE = "satseg-resolve.json"
_TORCH_PROJECTS = ("torch", "torchvision")

# Runs pip with SatSeg's folder appended to sys.path (after site-packages, as the plugin sees it), so that
# packages installed there earlier count as installed. argv: python -c BOOT FOLDER install ...
_PIP_WITH_FOLDER = ("import runpy, sys; sys.path.append(sys.argv.pop(1)); sys.argv[0] = 'pip'; "
                    "runpy.run_module('pip', run_name='__main__', alter_sys=True)")



def canonical_name(name: str) -> str:
    """PEP 503 normalised project name (``Scikit_Learn`` -> ``scikit-learn``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def release_numbers(version: str) -> Tuple[int, ...]:
    """The release numbers of a version string (``"2.14.1+cu130"`` -> ``(2, 14, 1)``; ``()`` if none)."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def _compare(a: Tuple[int, ...], b: Tuple[int, ...]) -> int:
    width = max(len(a), len(b))
    a, b = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    return (a > b) - (a < b)


def version_satisfies(version: str, requirement: str) -> bool:
    """Whether ``version`` meets the version clauses of ``requirement`` (``"shapely>=2"``, ``"rasterio>=1.3,<1.5"``).

    Compares release numbers only (``2.14.1+cu130`` is ``2.14.1``), which is all SatSeg's pins need.
    """
    clauses = re.findall(r"(==|!=|>=|<=|~=|>|<)\s*([\w.*+!-]+)", requirement)
    have = release_numbers(version)
    for op, wanted in clauses:
        if op in ("==", "!=") and wanted.endswith(".*"):
            prefix = release_numbers(wanted[:-2])
            equal = have[:len(prefix)] == prefix
            ok = equal if op == "==" else not equal
        else:
            cmp = _compare(have, release_numbers(wanted))
            ok = {"==": cmp == 0, "!=": cmp != 0, ">=": cmp >= 0, "<=": cmp <= 0, ">": cmp > 0, "<": cmp < 0,
                  "~=": cmp >= 0 and have[:len(release_numbers(wanted)) - 1] == release_numbers(wanted)[:-1]}[op]
        if not ok:
            return False
    return True


def installed_version(project: str) -> Optional[str]:
    """The version of distribution ``project`` that this interpreter sees, or None."""
    import importlib.metadata as metadata

    try:
        return metadata.version(project)
    except metadata.PackageNotFoundError:
        return None


def torch_index_url(build: str, base: Optional[str] = None) -> str:
    """PyTorch's index for ``build`` (``cpu`` or ``cuda``).

    ``$SATSEG_TORCH_INDEX`` replaces the base URL (a mirror), ``$SATSEG_TORCH_CUDA`` the CUDA tag (``cu121``).
    """
    if build not in BUILDS:
        raise ValueError(f"Unknown torch build {build!r}: choose one of {', '.join(BUILDS)}.")
    base = (base or os.environ.get(TORCH_INDEX_ENV) or TORCH_INDEX_BASE).rstrip("/")
    tag = "cpu" if build == "cpu" else (os.environ.get(CUDA_TAG_ENV) or CUDA_TAG)
    return f"{base}/{tag}"


@dataclass(frozen=True)
class GpuHint:
    """What the machine shows of an NVIDIA GPU, to suggest the torch build.

    Attributes:
        found: an NVIDIA driver is present.
        description: one line for the user (GPU name and driver when ``nvidia-smi`` tells them).
        suggested_build: ``"cuda"`` when a GPU was found, else ``"cpu"``.
    """

    found: bool
    description: str
    suggested_build: str


def detect_gpu(timeout: float = 5.0) -> GpuHint:
    """Look for an NVIDIA GPU (``nvidia-smi``, ``/proc/driver/nvidia``) without importing torch."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=timeout)
            lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
            if out.returncode == 0 and lines:
                gpus = "; ".join(f"{name.strip()} (driver {driver.strip()})" if driver else name.strip()
                                 for name, _, driver in (line.partition(",") for line in lines))
                return GpuHint(True, f"NVIDIA GPU found: {gpus}. The CUDA build can use it.", "cuda")
        except (OSError, subprocess.SubprocessError):
            pass
    if os.path.exists("/proc/driver/nvidia/version"):
        return GpuHint(True, "An NVIDIA driver is loaded (/proc/driver/nvidia); the CUDA build can use the GPU.",
                       "cuda")
    if sys.platform == "darwin":
        return GpuHint(False, "macOS: the standard torch build uses the Apple GPU (MPS); choose CPU.", "cpu")
    return GpuHint(False, "No NVIDIA GPU found: the CPU build is the right choice.", "cpu")


@dataclass(frozen=True)
class InstallPlan:
    """What to install, where, and how (built by :func:`make_plan`, run by :func:`run_install`).

    Attributes:
        interpreter: the Python that pip runs under: QGIS's own (:func:`~.deps.python_interpreter`).
        target: SatSeg's package folder (``pip install --target``).
        missing: ``{import name: pip name}`` of what the interpreter cannot import.
        requirements: the requirements handed to pip (pinned as SatSeg was tested).
        constraints: lines of the constraints file (``numpy<2``, ``numpy==<installed>``, ...).
        build: torch build, ``"cpu"`` or ``"cuda"``.
        index_source: ``"pypi"`` or ``"pytorch"`` (PyTorch's index for ``build`` is added).
        source_builds: projects built from source (``--no-binary``).
        outdated: ``(project, installed version, requirement)`` of packages the interpreter has in a
            version other than the one SatSeg was tested with; they are used as they are.
        warnings: things the user should know before installing.
        resolve_first: resolve against the installed packages and install with ``--no-deps`` (needs pip
            22.2); when False, or with an older pip, a single ``pip install --target`` installs the
            dependencies too.
        pip_prefix: the command that runs pip (default ``[interpreter, "-m", "pip"]``).
        command_override: run exactly this command instead of pip (tests, custom set-ups).
        python_version: ``(major, minor)`` the interpreter must have (QGIS's own); :func:`run_install` stops
            before pip runs when it has another. None: not checked.
    """

    interpreter: str
    target: str
    missing: Mapping[str, str] = field(default_factory=dict)
    requirements: Tuple[str, ...] = ()
    constraints: Tuple[str, ...] = STATIC_CONSTRAINTS
    build: str = "cpu"
    index_source: str = "pypi"
    source_builds: Tuple[str, ...] = ()
    outdated: Tuple[Tuple[str, str, str], ...] = ()
    warnings: Tuple[str, ...] = ()
    resolve_first: bool = True
    pip_prefix: Optional[Tuple[str, ...]] = None
    command_override: Optional[Tuple[str, ...]] = None
    python_version: Optional[Tuple[int, int]] = None

    @property
    def is_empty(self) -> bool:
        """Nothing to install."""
        return not self.requirements and not self.command_override

    @property
    def constraints_path(self) -> str:
        """Where :func:`run_install` writes :attr:`constraints`."""
        return os.path.join(self.target, CONSTRAINTS_FILE)

    @property
    def installs_torch(self) -> bool:
        """torch or torchvision is among the requirements."""
        return any(canonical_name(project_name(req)) in _TORCH_PROJECTS for req in self.requirements)

    @property
    def torch_index(self) -> Optional[str]:
        """The extra index torch comes from, or None for plain PyPI (and when torch is not installed).

        "CPU only" on Linux takes PyTorch's CPU index even with "PyPI": PyPI's Linux torch is the 3 GB CUDA
        build, and the CPU index's ``+cpu`` wheels rank above it for the same pin (PEP 440 local versions).
        """
        if not self.installs_torch:
            return None
        if self.index_source == "pytorch" or (self.build == "cpu" and sys.platform.startswith("linux")):
            return torch_index_url(self.build)
        return None

    def pip(self, with_folder: bool = False) -> List[str]:
        """The command that runs pip; ``with_folder`` lets pip see packages already in :attr:`target`."""
        if self.pip_prefix:
            return list(self.pip_prefix)
        if with_folder:
            return [self.interpreter, "-c", _PIP_WITH_FOLDER, self.target]
        return [self.interpreter, "-m", "pip"]

    def _common_args(self) -> List[str]:
        args = ["--disable-pip-version-check", "--no-input", "--progress-bar", "off", "--prefer-binary",
                "-c", self.constraints_path]
        if self.torch_index:
            args += ["--extra-index-url", self.torch_index]
        if self.source_builds:
            args += ["--no-binary", ",".join(self.source_builds)]
        return args

    def resolve_command(self, report_path: str) -> List[str]:
        """``pip install --dry-run --report`` against the installed packages (nothing is written but the report)."""
        return [*self.pip(with_folder=True), "install", "--dry-run", "--report", report_path,
                *self._common_args(), *self.requirements]

    def install_command(self, pinned: Optional[Sequence[str]] = None) -> List[str]:
        """``pip install --target``: of exactly ``pinned`` (``name==version``, no dependencies) when given,
        else of :attr:`requirements` with their dependencies (the single-step form one can run by hand)."""
        command = [*self.pip(), "install", "--target", self.target, "--no-warn-script-location"]
        if pinned is not None:
            return [*command, "--no-deps", "--upgrade", *self._common_args(), *pinned]
        return [*command, *self._common_args(), *self.requirements]

    def describe(self) -> str:
        """The plan as text for the user: what, where, and the pip commands."""
        if self.command_override:
            return quote_command(self.command_override)
        if self.is_empty:
            return "Nothing to install."
        lines = [f"# constraints ({self.constraints_path}): {'  '.join(self.constraints)}"]
        if self.resolve_first:
            lines += ["# 1. resolve against the packages QGIS's Python already has:",
                      quote_command(self.resolve_command(os.path.join(self.target, REPORT_FILE))),
                      "# 2. install exactly the resolved packages (name==version), nothing else:",
                      quote_command(self.install_command(["<resolved packages>"]))]
        else:
            lines.append(quote_command(self.install_command()))
        return "\n".join(lines)


def project_name(requirement: str) -> str:
    """The project of a requirement line (``"numpy<2"`` -> ``"numpy"``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return match.group(1) if match else requirement.strip()


def quote_command(command: Sequence[str]) -> str:
    """A command as one line the user can paste into this platform's shell."""
    if os.name == "nt":
        return subprocess.list2cmdline(list(command))
    return " ".join(shlex.quote(part) for part in command)


_BUILD_TOOLS = {"shapely": ("geos-config", "libgeos-dev"), "rasterio": ("gdal-config", "libgdal-dev")}


def build_tools_missing(projects: Sequence[str]) -> List[str]:
    """Debian/Ubuntu packages missing to build ``projects`` (shapely, rasterio) from source, [] when none."""
    missing = [package for name in projects for tool, package in [_BUILD_TOOLS.get(name, ("", ""))]
               if tool and not shutil.which(tool)]
    if projects and not (shutil.which("cc") or shutil.which("gcc")):
        missing.append("build-essential")
    if projects and not _has_python_headers():
        missing.append(f"python{sys.version_info[0]}-dev")
    return missing


def _has_python_headers() -> bool:
    import sysconfig

    include = sysconfig.get_paths().get("include") or ""
    return os.path.exists(os.path.join(include, "Python.h"))


def make_plan(target: str, build: str = "cpu", index_source: str = "pypi",
              missing: Optional[Mapping[str, str]] = None, modules: Optional[Sequence[str]] = None,
              requirements: Optional[Sequence[str]] = None, interpreter: Optional[str] = None,
              source_builds: Optional[Sequence[str]] = None) -> InstallPlan:
    """Plan the installation of what SatSeg is missing.

    Args:
        target: SatSeg's package folder (``deps.deps_dir(profile)``).
        build: ``"cpu"`` or ``"cuda"`` torch build.
        index_source: ``"pypi"`` (default) or ``"pytorch"`` (adds PyTorch's index for ``build``).
        missing: ``{import name: pip name}`` to install; default: found with :func:`~.deps.find_missing`.
        modules: import names to check when ``missing`` is not given (default: every package SatSeg uses).
        requirements: install exactly these requirements instead (``missing`` is then only informative).
        interpreter: the Python to install for (default: QGIS's own, :func:`~.deps.python_interpreter`).
        source_builds: projects to build from source; default: shapely and rasterio on Linux when the tools to
            build them are installed (:func:`build_tools_missing`), none elsewhere.

    Raises:
        ValueError: unknown ``build`` or ``index_source``.
    """
    if build not in BUILDS:
        raise ValueError(f"Unknown torch build {build!r}: choose one of {', '.join(BUILDS)}.")
    if index_source not in INDEX_SOURCES:
        raise ValueError(f"Unknown package index {index_source!r}: choose one of {', '.join(INDEX_SOURCES)}.")
    if missing is None:
        missing = find_missing(modules)
    missing = dict(missing)
    warnings: List[str] = []
    outdated: List[Tuple[str, str, str]] = []
    if requirements is None:
        reqs: List[str] = []
        for module, pip_name in missing.items():
            package = package_for(module)
            requirement = package.requirement if package else pip_name
            if requirement not in reqs:
                reqs.append(requirement)
        checked = [package for package in PACKAGES if modules is None or package.module in modules]
        for package in checked:
            if package.module in missing:
                continue
            version = installed_version(package.project)
            if version and not version_satisfies(version, package.requirement):
                outdated.append((package.project, version, package.requirement))
        requirements = reqs
    for project, version, requirement in outdated:
        warnings.append(f"{project} {version} is installed; SatSeg was tested with {requirement}. The installed "
                        f"one is used (the installer never replaces installed packages); if a tool fails, "
                        f"upgrade it where it was installed.")
    here = {canonical_name(package.project): (package.project, installed_version(package.project))
            for package in PACKAGES}
    here.update({canonical_name(name): (name, installed_version(name)) for name in PROTECTED})
    constraints = constraint_lines({key: value for key, value in here.items() if value[1]})
    wanted = {canonical_name(project_name(req)) for req in requirements}
    buildable = tuple(name for name in LINUX_SOURCE_BUILDS if canonical_name(name) in wanted)
    linux = sys.platform.startswith("linux")
    if source_builds is None:  # default: on Linux, build when the tools are there
        source_builds = buildable if linux and not build_tools_missing(buildable) else ()
    source_builds = tuple(name for name in source_builds if canonical_name(name) in wanted)
    lacking = build_tools_missing(source_builds)
    if lacking:
        warnings.append(f"{' and '.join(source_builds)} will be built against QGIS's own GEOS/GDAL, which needs "
                        f"{' '.join(lacking)}: install them first or the installation fails.")
    wheels = [name for name in buildable if name not in source_builds]
    if linux and wheels:
        warnings.append(f"{' and '.join(wheels)} will come from PyPI wheels, which carry their own GEOS/GDAL; "
                        "inside QGIS these can clash with QGIS's copies (seen on Debian 12: shapely fails). "
                        "Building them against QGIS's libraries avoids that (needs libgeos-dev libgdal-dev "
                        "build-essential python3-dev).")
    plan = InstallPlan(interpreter=interpreter or python_interpreter(), target=os.path.abspath(target),
                       python_version=None if interpreter else (sys.version_info[0], sys.version_info[1]),
                       missing=missing, requirements=tuple(requirements), constraints=tuple(constraints),
                       build=build, index_source=index_source, source_builds=source_builds,
                       outdated=tuple(outdated), warnings=tuple(warnings))
    if plan.installs_torch and index_source == "pypi" and build == "cpu" and sys.platform.startswith("linux"):
        note = (f"CPU only: torch comes from PyTorch's CPU index ({plan.torch_index}, about 200 MB), not from "
                "PyPI, whose torch is the CUDA build on Linux (about 3 GB with its NVIDIA libraries).")
        plan = replace(plan, warnings=plan.warnings + (note,))
    return plan


def constraint_lines(installed: Mapping[str, Tuple[str, str]]) -> List[str]:
    """Constraints for what an interpreter with ``installed`` has: :data:`STATIC_CONSTRAINTS`, the protected
    packages pinned to their installed versions, and SatSeg's tested versions of the packages it lacks (so
    that pip never backtracks through, say, every torch release because another package accepts any)."""
    lines = list(STATIC_CONSTRAINTS)
    protected = [canonical_name(name) for name in PROTECTED]
    lines += [f"{installed[name][0]}=={installed[name][1]}" for name in protected if name in installed]
    lines += [package.requirement for package in PACKAGES
              if canonical_name(package.project) not in installed and canonical_name(package.project) not in protected
              and any(op in package.requirement for op in "<>=")]
    return lines
