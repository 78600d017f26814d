"""Shared test set-up: the repository root on sys.path, no network and an empty weights cache for every test
(also for the qgis_process children, which inherit the environment), and a factory of small real GeoTIFFs."""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Optional, Sequence

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Training defaults to ENCODER_WEIGHTS=auto, which would look for ImageNet weights in the user's cache or online:
# tests start from random weights unless they say otherwise.
os.environ["SATSEG_OFFLINE"] = "1"
os.environ["SATSEG_WEIGHTS_DIR"] = tempfile.mkdtemp(prefix="satseg-test-weights-")


def load_script(name: str):
    """Import ``scripts/<name>.py`` (scripts are not a package) as module ``name``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def write_raster(path: str, data, transform=None, crs: Optional[str] = "EPSG:32633", nodata=None,
                 descriptions: Optional[Sequence[str]] = None, **profile) -> str:
    """Write ``data`` ``(C, H, W)`` as a GeoTIFF with the given georeferencing; return its path."""
    import numpy as np
    import rasterio
    from affine import Affine

    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    transform = transform if transform is not None else Affine(0.5, 0, 500000.0, 0, -0.5, 5000000.0)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype.name, transform=transform, crs=crs, nodata=nodata, **profile) as dst:
        dst.write(data)
        for i, desc in enumerate(descriptions or (), start=1):
            dst.set_band_description(i, desc)
    return path


@pytest.fixture
def make_raster(tmp_path):
    """Factory fixture: ``make_raster(data, name='in.tif', **kwargs)`` writes a GeoTIFF under tmp_path."""

    def factory(data, name: str = "in.tif", **kwargs) -> str:
        return write_raster(str(tmp_path / name), data, **kwargs)

    return factory


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder this process cannot create anything in (sysfs when running as root, as CI does)."""
    if os.geteuid() == 0:
        yield "/sys/satseg-unwritable"
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    yield str(locked)
    locked.chmod(0o700)
