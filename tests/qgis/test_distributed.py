"""satseg:segmentraster with SCHEDULER in real QGIS and through qgis_process: the same rasters as in-process.

The model is an untrained U-Net saved as a SatSeg file (the outputs only have to agree, not to be good);
BAND_COLUMNS is lowered in this process so that the sample scene is cut into several work units.
"""

import numpy as np
import pytest
import rasterio
from qgis.core import QgsProcessingException

from sample_data.generate import generate_scene

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("distributed")
pytestmark = pytest.mark.slow

COMMON = {"TILE_SIZE": 64, "OVERLAP": 16, "THRESHOLD": 0.5, "DEVICE": 1}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(str(tmp_path_factory.mktemp("scene")), size=256, seed=5)["scene"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from tests.unit.pipelines.segmentation.untrained import save_untrained_unet

    return save_untrained_unet(tmp_path_factory.mktemp("model"))


def _params(scene, model, folder, **extra):
    return dict(COMMON, INPUT=scene, MODELS=[model], OUTPUT_PROBABILITY=str(folder / "p.tif"),
                OUTPUT_MASK=str(folder / "m.tif"), OUTPUT_POLYGONS=str(folder / "b.gpkg"), **extra)


def _rasters(result):
    out = []
    for key in ("OUTPUT_PROBABILITY", "OUTPUT_MASK"):
        with rasterio.open(result[key]) as r:
            out.append((r.read(), r.profile))
    return out


def test_local_cluster_gives_the_in_process_rasters(run_alg, scene, model, tmp_path, monkeypatch):
    from satseg_plugin.pipelines.segmentation import segment

    monkeypatch.setattr(segment, "BAND_COLUMNS", 128)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    here = run_alg("satseg:segmentraster", _params(scene, model, tmp_path / "a"))
    spread = run_alg("satseg:segmentraster", _params(scene, model, tmp_path / "b", SCHEDULER="local:2"))
    for (a, pa), (b, pb) in zip(_rasters(here), _rasters(spread)):
        np.testing.assert_array_equal(b, a)
        assert pa == pb
    assert spread["POLYGON_COUNT"] == here["POLYGON_COUNT"]


def test_bad_and_unreachable_schedulers_name_the_parameter(run_alg, scene, model, tmp_path):
    for value, message in (("local:zero", "SCHEDULER: 'local:zero'"),
                           ("tcp://127.0.0.1:1", "SCHEDULER: no Dask scheduler answered")):
        with pytest.raises(QgsProcessingException, match=message):
            run_alg("satseg:segmentraster", _params(scene, model, tmp_path, SCHEDULER=value))
    assert not list(tmp_path.iterdir())


def test_qgis_process_runs_on_a_local_cluster(qgis_process, scene, model, tmp_path):
    """qgis_process's own executable is not a Python: the workers are spawned with QGIS's Python instead."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    outputs = []
    for folder, scheduler in ((tmp_path / "a", ""), (tmp_path / "b", "local:2")):
        params = _params(scene, model, folder, SCHEDULER=scheduler)
        args = [f"{k}={v}" for k, v in params.items() if k != "MODELS" and v != ""] + [f"MODELS={model}"]
        qgis_process("run", "satseg:segmentraster", "--", *args)
        outputs.append(_rasters({"OUTPUT_PROBABILITY": str(folder / "p.tif"), "OUTPUT_MASK": str(folder / "m.tif")}))
    for (a, pa), (b, pb) in zip(*outputs):
        np.testing.assert_array_equal(b, a)
        assert pa == pb
