"""Every model test runs torch on one thread (the shared ``one_torch_thread`` fixture)."""

import pytest


@pytest.fixture(scope="module", autouse=True)
def _models_on_one_thread(one_torch_thread):
    yield
