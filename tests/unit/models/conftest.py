"""Model tests run torch on one thread: the tensors are tiny, and on a busy shared CPU torch's thread pool
makes a 64 px forward pass take seconds instead of milliseconds."""

import pytest


@pytest.fixture(scope="module", autouse=True)
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
