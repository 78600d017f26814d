"""ONNX model files: reading Deepness-style and SatSeg metadata, refusing bad files, exporting SatSeg models."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("segmentation_models_pytorch")

from satseg_plugin.core.errors import InputError, OutputError
from satseg_plugin.models.checkpoint import ModelMetadata, model_tensors, save_checkpoint
from satseg_plugin.models.nets.clusternet import build_clusternet
from satseg_plugin.models.onnx_export import export_onnx
from satseg_plugin.models.onnx_model import OnnxSegmenter, read_onnx
from satseg_plugin.models.registry import build_model

from .onnx_files import MEAN, STD, deepness_model, export_bytes, pointwise_net, reference, with_metadata


def test_deepness_metadata_becomes_satseg_metadata(tmp_path):
    path = deepness_model(str(tmp_path / "d.onnx"))
    _, info = read_onnx(path)
    meta = info.metadata
    assert (meta.classes, meta.bands, info.source) == (["building"], [1, 2, 3], "deepness")
    # Deepness's (raw / 255 - m) / s is SatSeg's (raw - 255 m) / (255 s)
    np.testing.assert_allclose(meta.mean, np.multiply(MEAN, 255.0))
    np.testing.assert_allclose(meta.std, np.multiply(STD, 255.0))
    assert tuple(meta.pixel_size) == (0.5, 0.5) and meta.threshold == 0.6
    assert (info.fixed_size, info.batch, info.multiple) == (64, 1, 64)


def test_a_fixed_batch_model_runs_any_number_of_tiles(tmp_path):
    path = deepness_model(str(tmp_path / "d.onnx"))
    model = OnnxSegmenter(path, "cpu")
    raw = np.random.default_rng(1).integers(0, 256, (3, 3, 64, 64)).astype(np.float32)
    mean = np.asarray(model.metadata.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(model.metadata.std, np.float32).reshape(1, -1, 1, 1)
    probs = model.run((raw - mean) / std)
    assert probs.shape == (3, 1, 64, 64)
    np.testing.assert_allclose(probs, reference(raw), atol=1e-5)


def test_one_sigmoid_channel_is_the_one_named_class(tmp_path):
    path = deepness_model(str(tmp_path / "d.onnx"), size=None, classes=1, class_names={0: "tree"})
    _, info = read_onnx(path)
    assert info.metadata.classes == ["tree"] and info.fixed_size is None and info.batch is None


def _write(tmp_path, data: bytes, name: str = "bad.onnx") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_truncated_file_is_refused_naming_the_parameter(tmp_path):
    whole = open(deepness_model(str(tmp_path / "d.onnx")), "rb").read()
    path = _write(tmp_path, whole[: len(whole) // 2])
    with pytest.raises(InputError, match=r"MODELS: .*bad\.onnx' is not an ONNX model: it is damaged or truncated"):
        read_onnx(path)


def test_wrong_input_rank_is_refused(tmp_path):
    class Flat(torch.nn.Module):
        def forward(self, x):
            return torch.sigmoid(x.sum(dim=0, keepdim=True))

    data = with_metadata(export_bytes(Flat(), (3, 64, 64)), {"model_type": "Segmentor", "class_names": {0: "a"}})
    with pytest.raises(InputError, match=r"MODELS: .*3-dimensional input.*must be a 4-dimensional float tensor"):
        read_onnx(_write(tmp_path, data))


@pytest.mark.parametrize("key", ["class_names", "model_type"])
def test_missing_metadata_names_the_key(tmp_path, key):
    path = deepness_model(str(tmp_path / "d.onnx"), **{key: None})
    with pytest.raises(InputError, match=rf"MODELS: .*d\.onnx' has no '{key}' metadata"):
        read_onnx(path)


@pytest.mark.parametrize("changes, message", [
    ({"class_names": {0: "background", 2: "building"}}, "ids must run 0, 1, 2"),
    ({"standardization_std": [0.2, 0.0, 0.3]}, "'standardization_std'.*positive finite"),
    ({"seg_thresh": 1.5}, "'seg_thresh'.*between 0 and 1"),
    ({"model_type": "Detector"}, "'Detector' model"),
    ({"class_names": {0: "background", 1: "a", 2: "b"}}, "2 output channels but metadata 'class_names' names 3"),
])
def test_bad_metadata_values_are_refused(tmp_path, changes, message):
    path = deepness_model(str(tmp_path / "d.onnx"), **changes)
    with pytest.raises(InputError, match=message):
        read_onnx(path)


def test_non_square_fixed_input_is_refused(tmp_path):
    data = with_metadata(export_bytes(pointwise_net(2), (1, 3, 64, 32)),
                         {"model_type": "Segmentor", "class_names": {0: "background", 1: "a"}})
    with pytest.raises(InputError, match="64 x 32 px.*square"):
        read_onnx(_write(tmp_path, data))


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(InputError, match="MODELS: model file .*nothing.onnx' does not exist"):
        read_onnx(str(tmp_path / "nothing.onnx"))


def _segmentation_file(path: str, classes=("building",)) -> str:
    torch.manual_seed(0)
    net = build_model("unet", "resnet18", in_channels=3, classes=1 if len(classes) == 1 else len(classes) + 1)
    meta = ModelMetadata(kind="segmentation", architecture="unet", encoder="resnet18", in_channels=3,
                         classes=list(classes), bands=[3, 2, 1], mean=[90.0, 100.0, 110.0], std=[40.0, 50.0, 60.0],
                         patch_size=64, pixel_size=(0.3, 0.3), crs_units="metre", threshold=0.4,
                         extra={"min_object_pixels": 6})
    save_checkpoint(path, model_tensors(net), meta)
    return path


def test_export_writes_deepness_and_satseg_metadata_and_matches_torch(tmp_path):
    model = _segmentation_file(str(tmp_path / "m.satseg"), ("roof", "wall"))
    result = export_onnx(model, str(tmp_path / "m.onnx"))
    assert result.max_difference <= 1e-4 and result.checked_shapes == [(2, 3, 64, 64), (1, 3, 96, 96)]
    written = {p.key: json.loads(p.value) for p in onnx.load(result.path).metadata_props}
    assert written["model_type"] == "Segmentor" and written["satseg_kind"] == "segmentation"
    assert written["class_names"] == {"0": "background", "1": "roof", "2": "wall"}
    assert written["resolution"] == pytest.approx(30.0) and written["tiles_size"] == 512
    np.testing.assert_allclose(written["standardization_mean"], np.divide([90.0, 100.0, 110.0], 255.0))
    assert (written["bands"], written["threshold"], written["min_object_pixels"]) == ([3, 2, 1], 0.4, 6)
    # read back: SatSeg's own keys win (raw-unit normalisation, bands as trained)
    _, info = read_onnx(result.path)
    assert (info.source, info.metadata.bands, info.metadata.classes) == ("satseg", [3, 2, 1], ["roof", "wall"])
    assert info.metadata.mean == [90.0, 100.0, 110.0] and info.fixed_size is None and info.multiple == 32


def test_export_of_a_clusternet_gives_its_features(tmp_path):
    torch.manual_seed(0)
    net = build_clusternet("unet", "resnet18", 3, 8, 4)
    meta = ModelMetadata(kind="clusternet", architecture="unet", encoder="resnet18", in_channels=3,
                         classes=[f"cluster {i}" for i in range(1, 5)], bands=[1, 2, 3], mean=[1.0, 2.0, 3.0],
                         std=[1.0, 1.0, 1.0], patch_size=64, pixel_size=(1.0, 1.0), extra={"feature_dim": 8})
    save_checkpoint(str(tmp_path / "c.satseg"), model_tensors(net, {"centroids": torch.zeros(4, 11)}), meta)
    result = export_onnx(str(tmp_path / "c.satseg"), str(tmp_path / "c.onnx"))
    assert result.kind == "clusternet" and result.max_difference <= 1e-4
    written = {p.key: json.loads(p.value) for p in onnx.load(result.path).metadata_props}
    assert written["model_type"] == "Regressor" and len(written["class_names"]) == 8 + 3
    with pytest.raises(InputError, match="MODELS: .*SatSeg 'clusternet' export"):
        read_onnx(result.path)


def test_export_refuses_bad_outputs_and_opsets(tmp_path):
    model = _segmentation_file(str(tmp_path / "m.satseg"))
    with pytest.raises(OutputError, match="OUTPUT: .*ending in .onnx"):
        export_onnx(model, str(tmp_path / "m.satseg2"))
    with pytest.raises(InputError, match="OPSET: must be from 17 to 20, got 16"):
        export_onnx(model, str(tmp_path / "m.onnx"), opset=16)
    with pytest.raises(InputError, match="SAMPLE_RASTER: sample tiles must have shape"):
        export_onnx(model, str(tmp_path / "m.onnx"), samples=np.zeros((1, 4, 64, 64), np.float32))
    assert not (tmp_path / "m.onnx").exists()


def test_execution_providers_follow_the_device():
    import onnxruntime

    from satseg_plugin.models.onnx_model import execution_providers

    assert execution_providers(torch.device("cpu")) == ["CPUExecutionProvider"]
    on_gpu = execution_providers(torch.device("cuda", 1))
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert on_gpu == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    else:  # onnxruntime without CUDA: the CPU, and segment_raster says so
        assert on_gpu == ["CPUExecutionProvider"]
