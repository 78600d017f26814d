"""Missing-package messages and the device helper."""

import sys

import pytest

from satseg_plugin.core import deps
from satseg_plugin.core.device import describe_device, resolve_device
from satseg_plugin.core.errors import DeviceError, MissingDependencyError


def test_require_returns_module():
    assert deps.require("json").dumps([1]) == "[1]"


def test_missing_package_names_pip_package_and_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with pytest.raises(MissingDependencyError) as info:
        deps.require("faiss")
    message = str(info.value)
    assert "'faiss-cpu'" in message
    assert f"{deps.python_interpreter()} -m pip install --user faiss-cpu" in message
    assert "SatSeg > Install Python packages" in message  # the way that works on Debian 12's managed Python
    assert deps.missing_packages("faiss", "json") == {"faiss": "faiss-cpu"}


def test_version_constraints_are_quoted_for_the_shell():
    assert deps.install_command("numpy<2").endswith('install --user "numpy<2"')


def test_interpreter_inside_an_embedding_binary(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/usr/bin/qgis")
    path = deps.python_interpreter()
    assert "python3" in path and path.startswith(sys.exec_prefix)


def test_cpu_and_auto():
    torch = pytest.importorskip("torch")
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(" CPU ").type == "cpu"
    assert describe_device(torch.device("cpu")).startswith("cpu (")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu", "cuda:-1"])
def test_malformed_device(spec):
    pytest.importorskip("torch")
    with pytest.raises(DeviceError, match="Unknown device"):
        resolve_device(spec)


def test_cuda_without_gpu_is_a_clear_error():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="no CUDA GPU.*'auto' or 'cpu'"):
        resolve_device("cuda")
    with pytest.raises(DeviceError):
        resolve_device("cuda:1")


@pytest.mark.gpu
def test_cuda_device_when_present():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    assert resolve_device("cuda").type == "cuda"
    with pytest.raises(DeviceError, match="does not exist"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
