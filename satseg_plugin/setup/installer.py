"""Install the Python packages SatSeg is missing into its own folder, with pip for QGIS's own interpreter.

QGIS-free: the dialog (``ui/installer_dialog.py``) builds an :class:`InstallPlan` with :func:`make_plan`
and runs :func:`run_install` in a background task; scripts and tests call the same two functions.

What the installer promises:

* It only writes into the plugin-owned folder (:func:`~.deps.deps_dir`, ``pip install --target``); it never
  runs ``sudo``, never uses ``--user`` or ``--break-system-packages`` and never upgrades or removes a
  package the interpreter already has.
* The folder comes *after* the interpreter's site-packages on ``sys.path``, so an installed package
  always wins over the folder. The installer therefore resolves against what is installed: first
  ``pip install --dry-run --report`` in the real environment (the folder included), so that a package
  the interpreter has (QGIS's numpy 1.x) is used rather than installed again; a package pip would want in
  a different version than the installed one (which would be shadowed) is pinned to the installed version
  and resolution runs again. Then exactly the resolved packages are installed with
  ``--target <folder> --no-deps``. numpy is never installed when the interpreter has one
  (``numpy==<installed>`` in the constraints file) and never as 2.x (``numpy<2``, ``affine<3``).
* torch comes from plain PyPI by default (on Linux that is the CUDA build, which also runs on the CPU, about
  3 GB with its NVIDIA libraries; on Windows and macOS it is the CPU build). With ``index_source="pytorch"``
  PyTorch's own index is added (``--extra-index-url``) for the chosen build:
  ``https://download.pytorch.org/whl/cpu`` (small, CPU only) or ``.../cu121`` (CUDA). ``$SATSEG_TORCH_INDEX``
  replaces ``https://download.pytorch.org/whl`` (a mirror; download.pytorch.org may be unreachable where only
  PyPI is allowed) and ``$SATSEG_TORCH_CUDA`` the CUDA tag: PyTorch publishes each torch release for a few
  tags only (cu121 stops at torch 2.5), and when the tag has no build of the pinned torch, pip takes PyPI's.
* On Linux, shapely and rasterio are built from source against the GEOS and GDAL that QGIS itself uses
  when the tools for that are installed (``libgeos-dev``, ``libgdal-dev``, a C compiler, Python headers):
  PyPI's wheels bundle their own GEOS/GDAL, which can clash with QGIS's inside the QGIS process. Without
  the tools the wheels are used and the plan says what that risks.
* A requirement that cannot be met beside the installed packages (e.g. faiss-cpu>=1.15 needs numpy>=1.25,
  while Debian 12's QGIS has numpy 1.24.2) does not block the others: the packages are then resolved one by
  one, the rest is installed, and the result names what was left out with pip's reason.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core.deps import PACKAGES, find_missing, package_for, python_interpreter

__all__ = ["InstallPlan", "InstallResult", "GpuHint", "make_plan", "run_install", "detect_gpu",
           "installed_version", "version_satisfies", "build_tools_missing", "canonical_name", "BUILDS",
           "INDEX_SOURCES", "STATIC_CONSTRAINTS", "TORCH_INDEX_BASE", "TORCH_INDEX_ENV", "CUDA_TAG", "CUDA_TAG_ENV",
           "MIN_PIP_FOR_RESOLVE", "torch_index_url"]

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
#: Packaging tools: the installed ones are kept whatever version pip would like (not needed to run SatSeg).
_TOOLING = ("pip", "setuptools", "wheel")
_MAX_RESOLVE_ROUNDS = 3

# Runs pip with SatSeg's folder appended to sys.path (after site-packages, as the plugin sees it), so that
# packages installed there earlier count as installed. argv: python -c BOOT FOLDER install ...
_PIP_WITH_FOLDER = ("import runpy, sys; sys.path.append(sys.argv.pop(1)); sys.argv[0] = 'pip'; "
                    "runpy.run_module('pip', run_name='__main__', alter_sys=True)")
# Prints [[distribution name, version], ...] for what the interpreter has (without SatSeg's folder), in
# sys.path order: when a package is installed twice, the first is the one that imports.
_LIST_DISTRIBUTIONS = ("import importlib.metadata as m, json, sys; print(json.dumps({'python': sys.version_info[:2], "
                       "'dists': [[d.metadata['Name'], d.version] for d in m.distributions() if d.metadata['Name']]}))")

LogCallback = Callable[[str], None]


def canonical_name(name: str) -> str:
    """PEP 503 normalised project name (``Scikit_Learn`` -> ``scikit-learn``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _release(version: str) -> Tuple[int, ...]:
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
    have = _release(version)
    for op, wanted in clauses:
        if op in ("==", "!=") and wanted.endswith(".*"):
            prefix = _release(wanted[:-2])
            equal = have[:len(prefix)] == prefix
            ok = equal if op == "==" else not equal
        else:
            cmp = _compare(have, _release(wanted))
            ok = {"==": cmp == 0, "!=": cmp != 0, ">=": cmp >= 0, "<=": cmp <= 0, ">": cmp > 0, "<": cmp < 0,
                  "~=": cmp >= 0 and have[:len(_release(wanted)) - 1] == _release(wanted)[:-1]}[op]
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
        return any(canonical_name(_project(req)) in _TORCH_PROJECTS for req in self.requirements)

    @property
    def torch_index(self) -> Optional[str]:
        """The extra index torch comes from, or None for plain PyPI (and when torch is not installed)."""
        if self.index_source == "pytorch" and self.installs_torch:
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
            return _quote(self.command_override)
        if self.is_empty:
            return "Nothing to install."
        lines = [f"# constraints ({self.constraints_path}): {'  '.join(self.constraints)}"]
        if self.resolve_first:
            lines += ["# 1. resolve against the packages QGIS's Python already has:",
                      _quote(self.resolve_command(os.path.join(self.target, REPORT_FILE))),
                      "# 2. install exactly the resolved packages (name==version), nothing else:",
                      _quote(self.install_command(["<resolved packages>"]))]
        else:
            lines.append(_quote(self.install_command()))
        return "\n".join(lines)


@dataclass(frozen=True)
class InstallResult:
    """Outcome of :func:`run_install`.

    Attributes:
        success: pip finished and installed everything (or there was nothing to do).
        log_path: the log file written into the target folder.
        canceled: the user canceled (pip was killed).
        returncode: pip's exit status (of the step that ended the run), None when not run.
        installed: ``name==version`` of what was installed.
        message: what happened, for the user.
        failed: requirements that could not be installed (the rest may have been: see ``installed``).
    """

    success: bool
    log_path: str
    canceled: bool = False
    returncode: Optional[int] = None
    installed: Tuple[str, ...] = ()
    message: str = ""
    failed: Tuple[str, ...] = ()


def _project(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return match.group(1) if match else requirement.strip()


def _quote(command: Sequence[str]) -> str:
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
    constraints = _constraint_lines({key: value for key, value in here.items() if value[1]})
    wanted = {canonical_name(_project(req)) for req in requirements}
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
    if plan.installs_torch and index_source == "pypi" and sys.platform.startswith("linux"):
        note = ("torch from PyPI is the CUDA build on Linux (about 3 GB with its NVIDIA libraries; it runs on the "
                "CPU too). For the small CPU-only build choose PyTorch's index.")
        if build == "cpu":
            plan = replace(plan, warnings=plan.warnings + (note,))
    return plan


class _Log:
    """Writes lines to the log file and the callback."""

    def __init__(self, path: str, callback: Optional[LogCallback]) -> None:
        self.path = path
        self.callback = callback
        self.handle = open(path, "w", encoding="utf-8")  # closed in close()

    def __call__(self, line: str) -> None:
        line = line.rstrip("\r\n")
        self.handle.write(line + "\n")
        self.handle.flush()
        if self.callback is not None:
            self.callback(line)

    def close(self) -> None:
        self.handle.close()


def _kill(proc: subprocess.Popen) -> None:
    """Stop ``proc`` and its children (pip runs build back-ends as subprocesses)."""
    if proc.poll() is not None:
        return
    if os.name == "nt":
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(proc.pid)], capture_output=True)
    else:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except OSError:
            proc.terminate()
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
    proc.wait()


def _stream(command: Sequence[str], log: Callable[[str], None],
            cancel_check: Callable[[], bool]) -> Tuple[Optional[int], bool]:
    """Run ``command``, sending each output line to ``log``; ``(returncode, canceled)``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    kwargs = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {"start_new_session": True}
    try:
        proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, text=True, encoding="utf-8", errors="replace",
                                bufsize=1, **kwargs)
    except OSError as exc:
        log(f"Could not start {command[0]}: {exc}")
        return None, False
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, name="satseg-pip-output", daemon=True)
    reader.start()
    canceled = False
    exited_at: Optional[float] = None
    while True:
        if not canceled and cancel_check():
            canceled = True
            log("Canceling: stopping pip...")
            _kill(proc)
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            # A child that outlives the command (and holds its output open) must not keep us waiting.
            if exited_at is None and proc.poll() is not None:
                exited_at = time.monotonic()
            if exited_at is not None and time.monotonic() - exited_at > 5:
                log("(output still open after the command ended: stopped reading)")
                break
            continue
        if line is None:
            break
        log(line)
    reader.join(timeout=1)
    return proc.wait(), canceled


def _pip_version(plan: InstallPlan) -> Optional[Tuple[int, ...]]:
    try:
        out = subprocess.run([*plan.pip(), "--version"], capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"pip (\d+(?:\.\d+)*)", out.stdout)
    return _release(match.group(1)) if out.returncode == 0 and match else None


def _installed_distributions(interpreter: str) -> Tuple[Tuple[int, ...], Dict[str, Tuple[str, str]]]:
    """``interpreter``'s Python version and ``{canonical name: (name, version)}`` of what it has (SatSeg's
    folder not included)."""
    out = subprocess.run([interpreter, "-c", _LIST_DISTRIBUTIONS], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip() or "could not list installed packages")
    answer = json.loads(out.stdout)
    installed: Dict[str, Tuple[str, str]] = {}
    for name, version in answer["dists"]:
        installed.setdefault(canonical_name(name), (name, version))
    return tuple(answer["python"]), installed


def _constraint_lines(installed: Mapping[str, Tuple[str, str]]) -> List[str]:
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


def _protected_pins(plan: InstallPlan, installed: Mapping[str, Tuple[str, str]]) -> List[str]:
    """The constraints to write: SatSeg's redone for what ``plan.interpreter`` really has (the plan's were made
    in this process), plus any the plan adds for other projects."""
    known = {canonical_name(package.project) for package in PACKAGES} | {canonical_name(name) for name in PROTECTED}
    return _constraint_lines(installed) + [line for line in plan.constraints
                                           if canonical_name(_project(line)) not in known]


def _write_constraints(plan: InstallPlan, lines: Sequence[str]) -> None:
    with open(plan.constraints_path, "w", encoding="utf-8") as handle:
        handle.write("# Written by SatSeg's installer: versions pip must respect.\n")
        handle.write("\n".join(lines) + "\n")


def run_install(plan: InstallPlan, log_callback: Optional[LogCallback] = None,
                cancel_check: Optional[Callable[[], bool]] = None,
                progress_callback: Optional[Callable[[float], None]] = None) -> InstallResult:
    """Run ``plan``: pip for the plan's interpreter, into the plan's folder only.

    Streams every output line to ``log_callback`` (from the calling thread) and into
    ``<target>/satseg-install-<time>.log``. ``cancel_check`` is polled several times a second; when it
    returns True pip (and whatever it started) is killed.

    Args:
        plan: from :func:`make_plan`.
        log_callback: receives each line of output.
        cancel_check: returns True to cancel.
        progress_callback: receives the progress, 0 to 1.

    Returns:
        :class:`InstallResult` with the log file's path.
    """
    cancel_check = cancel_check or (lambda: False)
    progress = progress_callback or (lambda _fraction: None)
    os.makedirs(plan.target, exist_ok=True)
    log = _Log(os.path.join(plan.target, time.strftime("satseg-install-%Y%m%d-%H%M%S.log")), log_callback)
    try:
        log(f"SatSeg installer, {time.strftime('%Y-%m-%d %H:%M:%S')}")
        log(f"Python: {plan.interpreter}")
        log(f"Folder: {plan.target}")
        try:
            result = _run(plan, log, cancel_check, progress)
        except Exception as exc:  # anything unexpected ends the run with the reason in the log
            for line in traceback.format_exc().splitlines():
                log(line)
            result = InstallResult(False, "", message=f"The installer stopped on an unexpected error: {exc!r}")
        log(result.message)
    finally:
        log.close()
    return replace(result, log_path=log.path)


def _run(plan: InstallPlan, log: _Log, cancel_check: Callable[[], bool],
         progress: Callable[[float], None]) -> InstallResult:
    def ended(code: Optional[int], canceled: bool, what: str) -> InstallResult:
        if canceled:
            return InstallResult(False, "", True, code, (), "Canceled: pip was stopped.")
        return InstallResult(False, "", False, code, (), f"{what} failed (exit status {code}): see the log above.")

    if plan.command_override:
        log("$ " + _quote(plan.command_override))  # tests and custom set-ups: run it as it is
        code, canceled = _stream(plan.command_override, log, cancel_check)
        progress(1.0)
        if code != 0 or canceled:
            return ended(code, canceled, "The command")
        return InstallResult(True, "", False, code, (), "Done.")
    if plan.is_empty:
        progress(1.0)
        return InstallResult(True, "", message="Nothing to install: SatSeg has every package it needs.")
    log(f"Requirements: {' '.join(plan.requirements)}")
    version = _pip_version(plan)
    if version is None:
        return InstallResult(False, "", message=(
            f"pip is not available for {plan.interpreter}. Install pip for this Python first (Debian/Ubuntu: "
            "sudo apt install python3-pip; OSGeo4W: the python3-pip package), then try again."))
    log(f"pip {'.'.join(map(str, version))}")
    progress(0.05)
    python, installed = _installed_distributions(plan.interpreter)
    if plan.python_version and python != tuple(plan.python_version):
        return InstallResult(False, "", message=(
            f"{plan.interpreter} is Python {'.'.join(map(str, python))}, but QGIS runs Python "
            f"{'.'.join(map(str, plan.python_version))}: packages installed with it would not load in QGIS. "
            f"Set the interpreter to QGIS's own Python."))
    extra: List[str] = _protected_pins(plan, installed)
    if not plan.resolve_first or version < MIN_PIP_FOR_RESOLVE:
        if plan.resolve_first:
            log("This pip cannot resolve before installing (needs pip 22.2): installing with dependencies.")
        _write_constraints(plan, extra)
        command = plan.install_command()
        log("$ " + _quote(command))
        code, canceled = _stream(command, log, cancel_check)
        progress(1.0)
        if code != 0 or canceled:
            return ended(code, canceled, "pip install")
        return InstallResult(True, "", False, code, plan.requirements,
                             f"Installed {', '.join(plan.requirements)} into {plan.target}.")
    status, pinned, reasons = _resolve(plan, plan.requirements, extra, installed, log, cancel_check)
    failed: Dict[str, List[str]] = {}
    if status == "failed":
        if len(plan.requirements) == 1:
            failed[plan.requirements[0]] = reasons
        else:
            log("Resolving everything together failed: trying each package on its own to find the ones that "
                "cannot be installed here.")
            possible = []
            for requirement in plan.requirements:
                alone, _pins, why = _resolve(plan, (requirement,), extra, installed, log, cancel_check)
                if alone == "canceled":
                    return ended(None, True, "")
                if alone == "ok":
                    possible.append(requirement)
                else:
                    failed[requirement] = why
            if possible:
                status, pinned, reasons = _resolve(plan, tuple(possible), extra, installed, log, cancel_check)
            if not possible or status == "failed":
                failed.update({req: reasons for req in possible})
    if status == "canceled":
        return ended(None, True, "")
    progress(0.4)
    not_installed = _describe_failures(failed, installed)
    if status == "failed" or (failed and not pinned):
        return InstallResult(False, "", message="Nothing was installed. " + not_installed)
    if not pinned:
        progress(1.0)
        return InstallResult(True, "", message="Nothing to install: the installed packages already satisfy SatSeg.")
    if cancel_check():
        return ended(None, True, "")
    log(f"Installing {len(pinned)} packages: {' '.join(pinned)}")
    command = plan.install_command(pinned)
    log("$ " + _quote(command))
    code, canceled = _stream(command, log, cancel_check)
    progress(1.0)
    if code != 0 or canceled:
        return ended(code, canceled, "pip install")
    message = f"Installed {len(pinned)} packages into {plan.target}."
    if failed:
        return InstallResult(False, "", False, code, tuple(pinned), f"{message} {not_installed}", tuple(failed))
    return InstallResult(True, "", False, code, tuple(pinned), message)


def _resolve(plan: InstallPlan, requirements: Sequence[str], extra: List[str],
             installed: Mapping[str, Tuple[str, str]], log: Callable[[str], None],
             cancel_check: Callable[[], bool]) -> Tuple[str, List[str], List[str]]:
    """Resolve ``requirements`` against the installed packages: ``(status, name==version to install, reasons)``.

    ``status`` is ``"ok"``, ``"failed"`` (``reasons`` holds pip's explanation) or ``"canceled"``. A package
    pip wants in another version than the installed one is pinned to the installed version in ``extra``
    (the installed copy would shadow a new one) and the resolution runs again. When those pins make it
    impossible (Debian ships e.g. mpmath with version 0.0.0 in its metadata, and setuptools older than torch
    asks for), it runs once more without them and leaves those packages as installed (logged). pip,
    setuptools and wheel are never installed when the interpreter has them.
    """
    report_path = os.path.join(plan.target, REPORT_FILE)
    plan = replace(plan, requirements=tuple(requirements))
    added: List[str] = []
    relaxed = False
    for _round in range(_MAX_RESOLVE_ROUNDS + 1):
        if cancel_check():
            return "canceled", [], []
        _write_constraints(plan, extra)
        command = plan.resolve_command(report_path)
        log("$ " + _quote(command))
        if os.path.exists(report_path):
            os.remove(report_path)
        reasons: List[str] = []

        def keep(line: str) -> None:
            text = line.strip()
            if ("depends on" in text or text.startswith("ERROR:")) and "dependency-resolution" not in text:
                if text not in reasons:
                    reasons.append(text)
            log(line)

        code, canceled = _stream(command, keep, cancel_check)
        if canceled:
            return "canceled", [], []
        if code != 0 or not os.path.exists(report_path):
            if added and not relaxed:
                log("Keeping every installed version makes this impossible: resolving again without those pins "
                    "(the installed versions stay the ones QGIS imports).")
                for pin in added:
                    extra.remove(pin)
                relaxed = True
                continue
            return "failed", [], reasons[:4] or [f"pip exited with status {code}"]
        with open(report_path, encoding="utf-8") as handle:
            items = [(item["metadata"]["name"], item["metadata"]["version"]) for item in json.load(handle)["install"]]
        # Already installed in the same version (pip missed it): nothing to do.
        items = [(name, version) for name, version in items
                 if installed.get(canonical_name(name), ("", ""))[1] != version]
        kept = [(name, version) for name, version in items if canonical_name(name) in installed
                and (relaxed or canonical_name(name) in _TOOLING)]
        items = [item for item in items if item not in kept]
        shadowed = [(name, installed[canonical_name(name)][1]) for name, _version in items
                    if canonical_name(name) in installed]
        if not shadowed:
            for name, wanted in kept:
                log(f"{name}: the installed {installed[canonical_name(name)][1]} is used (pip would like {wanted}).")
            return "ok", [f"{name}=={version}" for name, version in items], []
        for name, version in shadowed:
            log(f"{name} {version} is already installed and would win over a new copy: keeping {version}.")
            extra.append(f"{name}=={version}")
            added.append(f"{name}=={version}")
    return "failed", [], ["no versions work with the packages already installed"]


def _describe_failures(failed: Mapping[str, Sequence[str]], installed: Mapping[str, Tuple[str, str]]) -> str:
    """One paragraph: which requirements cannot be installed and why (pip's words), with a numpy hint."""
    if not failed:
        return ""
    parts = [f"{req} ({'; '.join(why) if why else 'see the log'})" for req, why in failed.items()]
    text = "Could not install: " + ", ".join(parts) + "."
    numpy = installed.get("numpy")
    if numpy and any("numpy" in line for why in failed.values() for line in why):
        text += (f" QGIS's Python has numpy {numpy[1]}, which SatSeg never replaces (QGIS and GDAL are built on "
                 "it); a newer numpy 1.x for QGIS's Python, installed where that numpy is, would let these install.")
    return text
