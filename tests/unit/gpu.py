"""What the ``gpu`` tests share: the device they run on and their marks.

Skipped without CUDA; ``SATSEG_GPU_TESTS_ON_CPU=1`` runs them on the CPU instead (the dry run before a GPU run).
"""

import os

import pytest

from sample_data.common import write_tif
from sample_data.scene import render_scene

ON_CPU = os.environ.get("SATSEG_GPU_TESTS_ON_CPU") == "1"
DEVICE = "cpu" if ON_CPU else "cuda"
CUDA = DEVICE == "cuda"


def gpu_marks(torch) -> list:
    """A module's ``pytestmark``: marked ``gpu``, skipped without CUDA (unless run on the CPU), one torch thread."""
    return [
        pytest.mark.gpu,
        pytest.mark.skipif(not ON_CPU and not torch.cuda.is_available(),
                           reason="needs a CUDA GPU (SATSEG_GPU_TESTS_ON_CPU=1 runs these tests on the CPU)"),
        pytest.mark.usefixtures("one_torch_thread"),
    ]


def write_scene(folder) -> tuple:
    """The generated 256 px test scene written into ``folder`` and its building footprints (kept in memory: no
    GDAL Python bindings needed): ``(path, LabelSet)``."""
    from satseg_plugin.core.labels import LabelSet

    rendered = render_scene(256, seed=3)
    path = str(folder / "scene.tif")
    write_tif(path, rendered)
    return path, LabelSet([b.polygon for b in rendered.buildings], [1] * len(rendered.buildings))
