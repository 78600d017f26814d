"""Run an :class:`~.installer.InstallPlan`: pip for QGIS's interpreter, into SatSeg's folder only.

:func:`run_install` streams pip's output to a log file and a callback, polls for cancel (killing pip and
whatever it started), resolves against the installed packages first when pip can (``--dry-run --report``,
pinning what is installed), and installs exactly the resolved packages; when resolving everything together
fails it tries each requirement on its own and installs what it can. :mod:`.installer` says what the
installer promises and builds the plan.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import traceback
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core.deps import PACKAGES
from .installer import (
    MIN_PIP_FOR_RESOLVE,
    PROTECTED,
    REPORT_FILE,
    InstallPlan,
    canonical_name,
    constraint_lines,
    project_name,
    quote_command,
    release_numbers,
)

__all__ = ["InstallResult", "LogCallback", "run_install"]

#: Packaging tools: the installed ones are kept whatever version pip would like (not needed to run SatSeg).
_TOOLING = ("pip", "setuptools", "wheel")
_MAX_RESOLVE_ROUNDS = 3

# Prints [[distribution name, version], ...] for what the interpreter has (without SatSeg's folder), in
# sys.path order: when a package is installed twice, the first is the one that imports.
_LIST_DISTRIBUTIONS = ("import importlib.metadata as m, json, sys; print(json.dumps({'python': sys.version_info[:2], "
                       "'dists': [[d.metadata['Name'], d.version] for d in m.distributions() if d.metadata['Name']]}))")

LogCallback = Callable[[str], None]


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
    return release_numbers(match.group(1)) if out.returncode == 0 and match else None


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


def _protected_pins(plan: InstallPlan, installed: Mapping[str, Tuple[str, str]]) -> List[str]:
    """The constraints to write: SatSeg's redone for what ``plan.interpreter`` really has (the plan's were made
    in this process), plus any the plan adds for other projects."""
    known = {canonical_name(package.project) for package in PACKAGES} | {canonical_name(name) for name in PROTECTED}
    return constraint_lines(installed) + [line for line in plan.constraints
                                           if canonical_name(project_name(line)) not in known]


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
        log("$ " + quote_command(plan.command_override))  # tests and custom set-ups: run it as it is
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
        log("$ " + quote_command(command))
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
    log("$ " + quote_command(command))
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
        log("$ " + quote_command(command))
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
