"""The dependency installer's engine: package list, plans, pip commands, the real pip run, cancel."""

import importlib.metadata
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from satseg_plugin.core import deps
from satseg_plugin.core.deps import PACKAGES, activate_deps_dir, deps_dir, find_missing
from satseg_plugin.setup import installer
from satseg_plugin.setup.installer import make_plan, version_satisfies
from satseg_plugin.setup.pip_runner import run_install

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
FORBIDDEN_FLAGS = ("--user", "--break-system-packages", "sudo", "--ignore-installed", "--force-reinstall")


def _requirements_txt():
    """``{project: requirement}`` of requirements.txt's package lines."""
    out = {}
    for line in open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8"):
        line = line.split("#")[0].split(";")[0].strip()  # environment markers say where a pin applies
        if line and not line.startswith("-"):
            out[installer.canonical_name(re.match(r"[A-Za-z0-9._-]+", line).group(0))] = line
    return out


def _optional_in_requirements_txt():
    """The projects requirements.txt lists after its "# optional" comment (up to "# test tools")."""
    out, inside = set(), False
    for line in open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8"):
        if line.startswith("#"):
            inside = line.lower().startswith("# optional") or (inside and not line.lower().startswith("# test"))
            continue
        line = line.split("#")[0].strip()
        if inside and line:
            out.add(installer.canonical_name(re.match(r"[A-Za-z0-9._-]+", line).group(0)))
    return out


def test_package_list_matches_requirements_txt():
    """The installer asks for exactly the versions the project was verified with."""
    pinned = _requirements_txt()
    for package in PACKAGES:
        assert pinned.get(installer.canonical_name(package.project)) == package.requirement, package
    assert deps.PIP_NAMES["faiss"] == "faiss-cpu" and deps.PIP_NAMES["numpy"] == "numpy<2"


def test_optional_packages_match_requirements_txt_and_stay_optional():
    """requirements.txt's optional block is exactly OPTIONAL_PACKAGES; none of them is required, and the default
    check (start-up, the installer's list) never reports them."""
    pinned, optional = _requirements_txt(), _optional_in_requirements_txt()
    assert optional == {"dask", "onnx", "onnxruntime"}
    assert {installer.canonical_name(p.project) for p in deps.OPTIONAL_PACKAGES} == optional
    for package in deps.OPTIONAL_PACKAGES:
        assert package.optional and pinned[installer.canonical_name(package.project)] == package.requirement
        assert package.module not in deps.PIP_NAMES
    assert not {p.module for p in deps.OPTIONAL_PACKAGES} & {p.module for p in PACKAGES}
    assert deps.package_for("onnxruntime.capi").pip_name == "onnxruntime"
    assert deps.package_for("distributed").pip_name == "dask[distributed]"


def test_require_names_an_optional_package_that_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # the import system's "not importable"
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(deps.MissingDependencyError, match="'onnxruntime'") as info:
        deps.require("onnxruntime")
    assert info.value.command.endswith("install --user onnxruntime")
    with pytest.raises(deps.MissingDependencyError, match=r"'dask\[distributed\]'") as info:
        deps.require("distributed")
    assert info.value.command.endswith('install --user "dask[distributed]"')
    assert find_missing(["onnxruntime", "json"]) == {"onnxruntime": "onnxruntime"}
    assert not {"onnx", "onnxruntime", "dask", "distributed"} & set(find_missing())  # start-up checks required only


@pytest.fixture
def fake_find_spec(monkeypatch):
    """Make ``importlib.util.find_spec`` report the given top-level modules as absent (nothing is imported)."""

    def install(absent):
        real = importlib.util.find_spec

        def find_spec(name, package=None):
            if name.split(".")[0] in absent:
                return None
            return real(name, package)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return install


def test_find_missing_uses_the_import_system_without_importing(fake_find_spec, monkeypatch):
    fake_find_spec({"torch", "faiss"})
    everything = find_missing()
    assert everything["torch"] == "torch" and everything["faiss"] == "faiss-cpu"
    assert find_missing(["torch", "json", "faiss", "segmentation_models_pytorch"]) == {
        "torch": "torch", "faiss": "faiss-cpu"}
    monkeypatch.setitem(sys.modules, "safetensors", None)  # a blocked module counts as missing
    assert find_missing(["safetensors"]) == {"safetensors": "safetensors"}
    assert find_missing(["no_such_pkg.sub"]) == {"no_such_pkg.sub": "no_such_pkg"}


def test_plan_installs_the_missing_packages_with_constraints(fake_find_spec, monkeypatch, tmp_path):
    fake_find_spec({"torch", "faiss"})
    monkeypatch.setattr(installer, "installed_version", {"numpy": "1.24.2", "GDAL": "3.6.2"}.get)
    plan = make_plan(str(tmp_path), modules=["numpy", "torch", "faiss", "json"], source_builds=())
    assert plan.missing == {"torch": "torch", "faiss": "faiss-cpu"}
    assert plan.requirements == ("torch==2.14.1", "faiss-cpu>=1.15")
    assert {"numpy<2", "affine<3", "numpy==1.24.2", "GDAL==3.6.2"} <= set(plan.constraints)
    # SatSeg's tested versions of what is not installed bound pip's search (no backtracking through torch releases)
    assert {"torch==2.14.1", "torchvision==0.29.1", "segmentation-models-pytorch==0.6.0"} <= set(plan.constraints)
    assert not any(req.startswith("numpy") for req in plan.requirements)
    assert plan.target == str(tmp_path) and plan.constraints_path.startswith(str(tmp_path))


def test_commands_run_pip_of_this_interpreter_into_the_folder(tmp_path, monkeypatch):
    folder = str(tmp_path / "deps")
    plan = make_plan(folder, missing={"faiss": "faiss-cpu"}, source_builds=())
    assert plan.interpreter == deps.python_interpreter()
    install = plan.install_command(["faiss-cpu==1.15.0", "packaging==24.0"])
    assert install[:6] == [deps.python_interpreter(), "-m", "pip", "install", "--target", folder]
    assert {"--no-deps", "--upgrade"} <= set(install) and install[-2:] == ["faiss-cpu==1.15.0", "packaging==24.0"]
    assert install[install.index("-c") + 1] == plan.constraints_path
    resolve = plan.resolve_command(str(tmp_path / "r.json"))
    assert resolve[0] == deps.python_interpreter() and folder in resolve  # pip sees packages already there
    assert {"--dry-run", "--report"} <= set(resolve) and resolve[-1] == "faiss-cpu>=1.15"
    single = plan.install_command()
    assert "--no-deps" not in single and single[-1] == "faiss-cpu>=1.15"
    for command in (install, resolve, single, plan.describe().split()):
        assert not set(command) & set(FORBIDDEN_FLAGS)
    # Inside QGIS sys.executable is the QGIS binary: pip must still run under Python.
    monkeypatch.setattr(sys, "executable", "/usr/bin/qgis")
    embedded = make_plan(folder, missing={"faiss": "faiss-cpu"})
    assert os.path.basename(embedded.interpreter).startswith("python")
    assert embedded.install_command([])[0] == embedded.interpreter


def _index_args(plan):
    command = plan.install_command()
    return [command[i + 1] for i, arg in enumerate(command) if arg in ("--index-url", "--extra-index-url")]


def test_build_choice_changes_the_torch_index(tmp_path, monkeypatch):
    monkeypatch.delenv(installer.TORCH_INDEX_ENV, raising=False)
    monkeypatch.delenv(installer.CUDA_TAG_ENV, raising=False)
    torch_missing = {"torch": "torch", "torchvision": "torchvision"}
    cpu = make_plan(str(tmp_path), "cpu", "pytorch", missing=torch_missing)
    cuda = make_plan(str(tmp_path), "cuda", "pytorch", missing=torch_missing)
    assert _index_args(cpu) == ["https://download.pytorch.org/whl/cpu"]
    assert _index_args(cuda) == ["https://download.pytorch.org/whl/cu121"]
    assert _index_args(make_plan(str(tmp_path), "cuda", missing=torch_missing)) == []  # default: plain PyPI
    assert _index_args(make_plan(str(tmp_path), "cuda", "pytorch", missing={"faiss": "faiss-cpu"})) == []
    monkeypatch.setenv(installer.TORCH_INDEX_ENV, "https://mirror.example/torch/")
    monkeypatch.setenv(installer.CUDA_TAG_ENV, "cu126")
    assert _index_args(make_plan(str(tmp_path), "cuda", "pytorch", missing=torch_missing)) == [
        "https://mirror.example/torch/cu126"]
    with pytest.raises(ValueError, match="cpu, cuda"):
        make_plan(str(tmp_path), "rocm", missing=torch_missing)
    with pytest.raises(ValueError, match="pypi, pytorch"):
        make_plan(str(tmp_path), "cpu", "conda", missing=torch_missing)


def test_plain_pypi_cpu_choice_on_linux_warns_about_the_cuda_build(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(installer, "installed_version", lambda project: None)  # any numpy (Debian 13: 2.x)
    plan = make_plan(str(tmp_path), "cpu", missing={"torch": "torch"})
    assert any("CUDA build on Linux" in warning for warning in plan.warnings)
    assert not make_plan(str(tmp_path), "cpu", "pytorch", missing={"torch": "torch"}).warnings


def test_cpu_only_from_pypi_takes_the_cpu_torch_index_on_linux(tmp_path, monkeypatch):
    """"CPU only" + "PyPI" must not fetch the 3 GB CUDA build of torch (issue 18)."""
    monkeypatch.delenv(installer.TORCH_INDEX_ENV, raising=False)
    monkeypatch.setattr(installer, "installed_version", lambda project: None)
    torch_missing = {"torch": "torch", "torchvision": "torchvision"}
    monkeypatch.setattr(sys, "platform", "linux")
    assert _index_args(make_plan(str(tmp_path), "cpu", "pypi", missing=torch_missing)) == [
        "https://download.pytorch.org/whl/cpu"]
    assert _index_args(make_plan(str(tmp_path), "cpu", "pypi", missing={"faiss": "faiss-cpu"})) == []
    assert _index_args(make_plan(str(tmp_path), "cuda", "pypi", missing=torch_missing)) == []
    monkeypatch.setattr(sys, "platform", "win32")  # PyPI's torch is the CPU build there
    assert _index_args(make_plan(str(tmp_path), "cpu", "pypi", missing=torch_missing)) == []


def test_source_builds_on_linux_only_for_requested_projects(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(installer, "installed_version", lambda project: None)  # any numpy (Debian 13: 2.x)
    monkeypatch.setattr(installer, "build_tools_missing", lambda projects: [])
    plan = make_plan(str(tmp_path), missing={"shapely": "shapely>=2", "faiss": "faiss-cpu"})
    assert plan.source_builds == ("shapely",) and not plan.warnings
    command = plan.install_command()
    assert command[command.index("--no-binary") + 1] == "shapely"
    assert make_plan(str(tmp_path), missing={"faiss": "faiss-cpu"}).source_builds == ()
    # Without the build tools: wheels by default, with a warning; asked for anyway: a warning naming the tools.
    monkeypatch.setattr(installer, "build_tools_missing", lambda projects: ["libgeos-dev"] if projects else [])
    wheels = make_plan(str(tmp_path), missing={"shapely": "shapely>=2"})
    assert wheels.source_builds == () and "--no-binary" not in wheels.install_command()
    assert any("PyPI wheels" in warning for warning in wheels.warnings)
    forced = make_plan(str(tmp_path), missing={"shapely": "shapely>=2"}, source_builds=("shapely", "rasterio"))
    assert forced.source_builds == ("shapely",) and any("libgeos-dev" in warning for warning in forced.warnings)
    monkeypatch.setattr(sys, "platform", "win32")
    windows = make_plan(str(tmp_path), missing={"shapely": "shapely>=2"})
    assert windows.source_builds == () and not windows.warnings


def test_build_tools_missing_names_debian_packages(monkeypatch):
    monkeypatch.setattr(installer.shutil, "which", lambda tool: None if tool == "gdal-config" else "/usr/bin/" + tool)
    assert installer.build_tools_missing(["shapely", "rasterio"])[:1] == ["libgdal-dev"]
    assert installer.build_tools_missing([]) == []
    monkeypatch.setattr(installer.shutil, "which", lambda tool: None)
    assert {"libgeos-dev", "build-essential"} <= set(installer.build_tools_missing(["shapely"]))


def test_outdated_installed_package_is_reported_not_replaced(tmp_path, monkeypatch):
    monkeypatch.setattr(installer, "installed_version", {"shapely": "1.8.5", "numpy": "1.24.2"}.get)
    plan = make_plan(str(tmp_path), missing={})
    assert plan.outdated == (("shapely", "1.8.5", "shapely>=2"),)
    assert plan.is_empty and any("shapely 1.8.5 is installed" in warning for warning in plan.warnings)


@pytest.mark.parametrize("version, requirement, ok", [
    ("1.26.4", "numpy<2", True), ("2.0.1", "numpy<2", False), ("2.2.0", "shapely>=2", True),
    ("1.8.5", "shapely>=2", False), ("1.4.4", "rasterio>=1.3,<1.5", True), ("1.5.0", "rasterio>=1.3,<1.5", False),
    ("2.14.1+cu130", "torch==2.14.1", True), ("2.13.0", "torch==2.14.1", False), ("1.15", "faiss-cpu>=1.15", True),
    ("0.24.0", "scikit-image", True), ("3.6.2", "x==3.6.*", True), ("3.7.0", "x~=3.6", True), ("4.0", "x~=3.6", False),
])
def test_version_satisfies(version, requirement, ok):
    assert version_satisfies(version, requirement) is ok


def test_deps_dir_in_the_profile_or_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(deps.DEPS_DIR_ENV, raising=False)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    profile = tmp_path / "profiles" / "default"
    assert deps_dir(str(profile)) == str(profile / "python" / "satseg_deps" / version)
    assert deps_dir().endswith(os.path.join("satseg", "deps", version))
    monkeypatch.setenv(deps.DEPS_DIR_ENV, str(tmp_path / "mine"))
    assert deps_dir(str(profile)) == str(tmp_path / "mine")


def test_folder_goes_after_site_packages():
    path = ["", "/usr/lib/python3.11", "/venv/lib/python3.11/site-packages", "/usr/lib/python3/dist-packages",
            "/usr/share/qgis/python/plugins"]
    assert activate_deps_dir("/deps", path) == 4
    assert path[3:5] == ["/usr/lib/python3/dist-packages", "/deps"]
    assert activate_deps_dir("/deps", path) == 4 and path.count("/deps") == 1
    assert activate_deps_dir("/deps2", ["/a", "/b"]) == 2


def test_gpu_hint_from_nvidia_smi(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA A100-SXM4-40GB, 535.104.05'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    hint = installer.detect_gpu()
    assert hint.found and hint.suggested_build == "cuda" and "A100" in hint.description and "535" in hint.description


def test_gpu_hint_without_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: False if p.startswith("/proc/driver/nvidia") else real_exists(p))
    monkeypatch.setattr(sys, "platform", "linux")
    hint = installer.detect_gpu()
    assert not hint.found and hint.suggested_build == "cpu"
    monkeypatch.setattr(os.path, "exists", lambda p: p == "/proc/driver/nvidia/version" or real_exists(p))
    assert installer.detect_gpu().suggested_build == "cuda"


FAKE_PIP = """
import json, sys
args = sys.argv[1:]
if args == ["--version"]:
    print("pip {version} from fake")
    sys.exit(0)
with open({calls!r}, "a") as handle:
    handle.write(json.dumps(args) + "\\n")
constraints = open(args[args.index("-c") + 1]).read()
if "--dry-run" in args:
    if "bad" in args:  # a requirement that cannot be met here
        print("    bad 1.0 depends on numpy>=9")
        print("ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/dependency-resolution")
        sys.exit(1)
    if "needsnew" in args:  # needs a newer packaging than the installed one, whatever happens
        if "packaging==" in constraints:
            print("    needsnew 1.0 depends on packaging>=99")
            sys.exit(1)
        items = [("needsnew", "1.0"), ("packaging", "99.0")]
    elif "tool" in args:  # wants a newer setuptools than the installed one
        items = [("tool", "1.0"), ("setuptools", "999.0")]
    else:
        items = [("foo", "1.0")] if "foo" in args else []
    if "packaging==" not in constraints and "foo" in args:  # pip would like another packaging than the installed
        items.append(("packaging", "99.0"))
    report = {{"install": [{{"metadata": {{"name": n, "version": v}}}} for n, v in items]}}
    json.dump(report, open(args[args.index("--report") + 1], "w"))
    print("Would install", " ".join(n + "-" + v for n, v in items))
else:
    print("Successfully installed", " ".join(a for a in args if "==" in a))
"""


def _fake_pip(tmp_path, version="23.0.1"):
    calls = tmp_path / "calls.jsonl"
    script = tmp_path / "fake_pip.py"
    script.write_text(FAKE_PIP.format(version=version, calls=str(calls)))
    return (sys.executable, str(script)), calls


def test_resolution_keeps_installed_packages_and_installs_only_the_rest(tmp_path):
    """A package pip wants in another version than the installed one is pinned, resolved again and not installed."""
    from dataclasses import replace

    prefix, calls = _fake_pip(tmp_path)
    plan = replace(make_plan(str(tmp_path / "deps"), requirements=["foo"], source_builds=()), pip_prefix=prefix)
    lines = []
    result = run_install(plan, lines.append)
    assert result.success, "\n".join(lines)
    runs = [json.loads(line) for line in calls.read_text().splitlines()]
    assert ["--dry-run" in run for run in runs] == [True, True, False]
    assert runs[-1][-1] == "foo==1.0" and "packaging==99.0" not in runs[-1]
    assert {"--target", "--no-deps"} <= set(runs[-1]) and result.installed == ("foo==1.0",)
    constraints = open(plan.constraints_path).read().split()
    installed_packaging = importlib.metadata.version("packaging")
    assert f"packaging=={installed_packaging}" in constraints and "numpy<2" in constraints
    assert f"numpy=={importlib.metadata.version('numpy')}" in constraints
    assert any("keeping" in line and "packaging" in line for line in lines)
    assert open(result.log_path).read().splitlines()[-1] == result.message


def test_a_requirement_that_cannot_be_met_does_not_block_the_others(tmp_path):
    from dataclasses import replace

    prefix, calls = _fake_pip(tmp_path)
    plan = replace(make_plan(str(tmp_path / "deps"), requirements=["bad", "foo"], source_builds=()), pip_prefix=prefix)
    lines = []
    result = run_install(plan, lines.append)
    runs = [json.loads(line) for line in calls.read_text().splitlines()]
    assert runs[-1][-1] == "foo==1.0" and "--dry-run" not in runs[-1]  # foo was installed
    assert not result.success and result.installed == ("foo==1.0",) and result.failed == ("bad",)
    assert "bad (bad 1.0 depends on numpy>=9)" in result.message and "never replaces" in result.message
    assert any("trying each package on its own" in line for line in lines)
    only_bad = run_install(replace(plan, requirements=("bad",)))
    assert not only_bad.success and only_bad.installed == () and "Nothing was installed" in only_bad.message


@pytest.mark.parametrize("requirement, resolves, kept", [("needsnew", 3, "packaging"), ("tool", 1, "setuptools")])
def test_installed_versions_that_cannot_be_kept_are_left_as_they_are(tmp_path, requirement, resolves, kept):
    """Pinning the installed version makes it impossible (or it is a packaging tool): install the rest, log it."""
    from dataclasses import replace

    prefix, calls = _fake_pip(tmp_path)
    plan = replace(make_plan(str(tmp_path / "deps"), requirements=[requirement], source_builds=()), pip_prefix=prefix)
    lines = []
    result = run_install(plan, lines.append)
    runs = [json.loads(line) for line in calls.read_text().splitlines()]
    assert result.success and result.installed == (f"{requirement}==1.0",), "\n".join(lines)
    assert ["--dry-run" in run for run in runs] == [True] * resolves + [False]
    assert any(line.startswith(f"{kept}: the installed") for line in lines)
    assert f"{kept}==" not in open(plan.constraints_path).read()


def test_old_pip_installs_in_one_step(tmp_path):
    from dataclasses import replace

    prefix, calls = _fake_pip(tmp_path, version="21.3")
    plan = replace(make_plan(str(tmp_path / "deps"), requirements=["foo"], source_builds=()), pip_prefix=prefix)
    result = run_install(plan)
    runs = [json.loads(line) for line in calls.read_text().splitlines()]
    assert result.success and len(runs) == 1 and "--no-deps" not in runs[0] and runs[0][-1] == "foo"


def test_missing_pip_is_explained(tmp_path):
    from dataclasses import replace

    plan = replace(make_plan(str(tmp_path / "deps"), requirements=["foo"]),
                   pip_prefix=(sys.executable, "-c", "import sys; sys.exit(1)"))
    result = run_install(plan)
    assert not result.success and "pip is not available" in result.message and os.path.exists(result.log_path)


def _small_package_not_installed():
    for module, project in (("tomli", "tomli"), ("tomli_w", "tomli-w"), ("six", "six")):
        if importlib.util.find_spec(module) is None:
            return module, project
    pytest.skip("tomli, tomli-w and six are all installed already")


@pytest.mark.slow
def test_real_pip_install_into_a_throwaway_folder(tmp_path):
    module, project = _small_package_not_installed()
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp_path / "dl"),
                            project], capture_output=True, text=True, timeout=180)
    if probe.returncode != 0:
        pytest.skip(f"package registry unreachable: {probe.stderr[-300:]}")
    folder = tmp_path / "profile" / "python" / "satseg_deps"
    plan = make_plan(str(folder), requirements=[project])
    lines = []
    result = run_install(plan, lines.append)
    assert result.success, "\n".join(lines)
    assert len(result.installed) == 1 and result.installed[0].startswith(f"{project}==")
    assert os.path.isdir(folder / module) and not os.path.exists(folder / "numpy")
    log = open(result.log_path).read()
    assert "Successfully installed" in log and result.log_path.startswith(str(folder))
    # Imported the way the plugin does it: the folder after site-packages; numpy still the interpreter's own.
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        try:
            import {module}
            raise SystemExit('importable before activation')
        except ImportError:
            pass
        from satseg_plugin.core.deps import activate_deps_dir
        activate_deps_dir({str(folder)!r})
        import {module}, numpy
        print({module}.__file__)
        print(numpy.__file__)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    module_file, numpy_file = out.stdout.split()
    assert module_file.startswith(str(folder)) and not numpy_file.startswith(str(folder))
    again = run_install(plan)  # pip sees the folder: nothing left to do
    assert again.success and again.installed == () and "Nothing to install" in again.message


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="checks processes through /proc")
def test_cancel_kills_the_command_and_its_children(tmp_path):
    from dataclasses import replace

    pids = tmp_path / "pids"
    code = textwrap.dedent(f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        print("started", flush=True)
        time.sleep(120)
    """)
    plan = replace(make_plan(str(tmp_path / "deps"), requirements=["foo"]),
                   command_override=(sys.executable, "-c", code))
    lines = []
    start = time.monotonic()
    result = run_install(plan, lines.append, cancel_check=lambda: "started" in lines)
    assert time.monotonic() - start < 20
    assert result.canceled and not result.success
    parent, child = map(int, pids.read_text().split())
    time.sleep(0.5)
    assert not _alive(parent) and not _alive(child)


def test_cancel_stops_a_real_pip_waiting_for_the_index(tmp_path, monkeypatch):
    """pip blocked on an index that never answers is killed on cancel (its connection closes)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    connected, closed = threading.Event(), threading.Event()

    def serve():
        conn, _addr = server.accept()
        connected.set()
        try:
            while conn.recv(4096):
                pass  # read the request, never answer
        except OSError:
            pass
        closed.set()

    threading.Thread(target=serve, daemon=True).start()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.getsockname()[1]}/simple")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "100")
    plan = make_plan(str(tmp_path / "deps"), requirements=["tomli-w"], source_builds=())
    lines = []
    start = time.monotonic()
    result = run_install(plan, lines.append, cancel_check=connected.is_set)
    assert result.canceled and not result.success, "\n".join(lines)
    assert time.monotonic() - start < 60
    assert closed.wait(10), "pip's connection stayed open: pip still runs"
    server.close()


def test_interpreter_ignores_a_python_from_path_that_is_not_this_one(tmp_path, monkeypatch):
    """In QGIS desktop sys.executable can be the first ``python3`` on PATH (a pyenv shim: another Python)."""
    shim = tmp_path / "shims" / "python3"
    shim.parent.mkdir()
    shim.write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(shim))
    chosen = deps.python_interpreter()
    assert chosen != str(shim) and os.path.realpath(chosen).startswith(os.path.realpath(sys.base_exec_prefix))


def test_run_stops_before_pip_when_the_interpreter_is_another_python(tmp_path):
    from dataclasses import replace

    fake = tmp_path / "python3.99"
    calls = tmp_path / "calls"
    fake.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "$@" >> {calls}
        case "$*" in
          *--version*) echo "pip 23.0.1 from fake" ;;
          *) echo '{{"python": [3, 99], "dists": []}}' ;;
        esac
    """))
    fake.chmod(0o755)
    plan = replace(make_plan(str(tmp_path / "deps"), requirements=["foo"], interpreter=str(fake)),
                   python_version=(3, 11))
    result = run_install(plan)
    assert not result.success and "is Python 3.99, but QGIS runs Python 3.11" in result.message
    assert not any("install" in line for line in calls.read_text().splitlines())
    assert make_plan(str(tmp_path), requirements=["foo"]).python_version == tuple(sys.version_info[:2])


def test_setup_imports_adds_the_folder_and_keeps_triton_out(tmp_path):
    """What classFactory runs: the folder after site-packages, triton unimportable (unless allowed)."""
    folder = tmp_path / "deps"
    folder.mkdir()
    (folder / "satseg_probe_mod.py").write_text("VALUE = 42\n")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "satseg_probe_pth.py").write_text("VALUE = 7\n")
    (folder / "probe.pth").write_text(str(extra) + "\n")
    code = textwrap.dedent(f"""
        import json, os, sys
        sys.path.insert(0, {ROOT!r})
        from satseg_plugin.core import deps
        folder = deps.setup_imports(None)
        import satseg_probe_mod, satseg_probe_pth
        try:
            import triton
            triton_ok = True
        except ImportError:
            triton_ok = False
        sites = [i for i, p in enumerate(sys.path) if p.endswith(("site-packages", "dist-packages"))]
        print(json.dumps({{"folder": folder, "index": sys.path.index(folder), "last_site": max(sites),
                           "values": [satseg_probe_mod.VALUE, satseg_probe_pth.VALUE], "triton": triton_ok,
                           "marker": sys.modules.get("triton", "absent") is None}}))
    """)
    env = dict(os.environ, SATSEG_DEPS_DIR=str(folder))
    env.pop(deps.ALLOW_CRASHING_ENV, None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["folder"] == str(folder) and seen["index"] == seen["last_site"] + 1
    assert seen["values"] == [42, 7] and seen["triton"] is False and seen["marker"] is True
    env[deps.ALLOW_CRASHING_ENV] = "1"
    allowed = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, %r); "
                              "from satseg_plugin.core import deps; print(deps.block_crashing_imports())" % ROOT],
                             capture_output=True, text=True, env=env, timeout=120)
    assert allowed.stdout.strip() == "[]"
