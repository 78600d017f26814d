"""Shared fixtures of the engine and model tests.

``one_torch_thread``: tests with tiny tensors run torch on one thread; on a busy shared CPU torch's thread
pool makes a 64 px forward pass take seconds instead of milliseconds. Modules opt in with
``pytestmark = pytest.mark.usefixtures("one_torch_thread")`` (every model test does, see models/conftest.py)."""

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    try:
        import torch
    except ImportError:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
