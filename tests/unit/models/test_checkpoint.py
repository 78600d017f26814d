"""SatSeg model files: round trips, every refusal with its message, atomic writes, no pickle anywhere."""

import ast
import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
pytest.importorskip("segmentation_models_pytorch")

from satseg_plugin.core.errors import CheckpointError, OutputError, SatSegError
from satseg_plugin.core.version import __version__
from satseg_plugin.models.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    ModelMetadata,
    build_from_checkpoint,
    load_checkpoint,
    model_tensors,
    read_metadata,
    save_checkpoint,
)
from satseg_plugin.models.registry import ARCHITECTURE_NAMES, build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def metadata(**changes) -> ModelMetadata:
    values = dict(kind="segmentation", architecture="unet", encoder="resnet18", in_channels=4,
                  classes=["building", "road"], bands=[3, 2, 1, 4], mean=[0.1, 0.2, 0.3, 0.4],
                  std=[1.0, 1.5, 2.0, 2.5], patch_size=64, pixel_size=(0.5, 0.5),
                  crs_wkt='PROJCS["WGS 84 / UTM zone 33N"]', crs_units="metre", threshold=0.4,
                  metrics={"val_dice": 0.8, "best_epoch": 3}, extra={"train_config": {"epochs": 5, "bands": None}})
    values.update(changes)
    return ModelMetadata(**values)


def tiny_tensors():
    return {"model.weight": torch.arange(6.0).reshape(2, 3), "extra.centroids": torch.ones(3, 4)}


def leftovers(folder):
    return [name for name in os.listdir(folder) if name.startswith(".satseg-tmp")]


@pytest.mark.parametrize("arch", ARCHITECTURE_NAMES)
def test_round_trip_weights_metadata_and_outputs(arch, tmp_path):
    torch.manual_seed(0)
    meta = metadata(architecture=arch)
    model = build_model(arch, "resnet18", in_channels=4, classes=meta.output_channels)
    assert meta.output_channels == 3  # two classes + background
    with torch.no_grad():  # move BatchNorm statistics away from their initial values
        model.train()(torch.randn(2, 4, 64, 64))
    model.eval()
    centroids = torch.randn(5, 8)
    path = str(tmp_path / "sub" / f"{arch}.satseg")
    save_checkpoint(path, model_tensors(model, {"centroids": centroids}), meta)
    assert leftovers(os.path.dirname(path)) == []

    ckpt = load_checkpoint(path, kind="segmentation")
    assert ckpt.metadata == meta and ckpt.path == path
    state = model.state_dict()
    assert set(ckpt.model_state) == set(state)
    assert all(torch.equal(ckpt.model_state[k], state[k]) for k in state)
    assert torch.equal(ckpt.extras["centroids"], centroids)

    rebuilt = build_from_checkpoint(ckpt)
    assert not rebuilt.training
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_metadata_defaults_and_json_round_trip():
    meta = metadata()
    assert meta.satseg_version == __version__ and meta.format_version == FORMAT_VERSION == 1
    created = datetime.fromisoformat(meta.created)
    assert created.utcoffset() == timezone.utc.utcoffset(None)
    assert ModelMetadata.from_json(meta.to_json()) == meta
    assert json.loads(meta.to_json())["pixel_size"] == [0.5, 0.5]
    assert metadata(classes=["building"]).output_channels == 1
    assert metadata(kind="clusternet", classes=["a", "b", "c"]).output_channels == 3


def test_numpy_values_in_metrics_are_written_as_numbers(tmp_path):
    path = str(tmp_path / "m.satseg")
    save_checkpoint(path, tiny_tensors(), metadata(metrics={"val_dice": np.float32(0.5), "hist": np.arange(3)}))
    assert read_metadata(path).metrics == {"val_dice": 0.5, "hist": [0, 1, 2]}


def test_tensors_are_made_contiguous_cpu_and_unshared(tmp_path):
    shared = torch.arange(12.0).reshape(3, 4)
    tensors = {"model.a": shared, "model.b": shared, "model.t": shared.t(), "extra.row": shared[1],
               "model.grad": torch.ones(2, requires_grad=True) * 2}
    path = str(tmp_path / "m.satseg")
    save_checkpoint(path, tensors, metadata())
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt.model_state["t"], shared.t()) and torch.equal(ckpt.extras["row"], shared[1])
    assert torch.equal(ckpt.model_state["a"], ckpt.model_state["b"])


def test_read_metadata_needs_no_torch(tmp_path):
    path = str(tmp_path / "m.satseg")
    save_checkpoint(path, tiny_tensors(), metadata())
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch': raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "from satseg_plugin.models.checkpoint import read_metadata\n"
        f"print(read_metadata({path!r}, kind='segmentation').classes)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['building', 'road']"


# ---------------------------------------------------------------------------------------------- refusals


def check_refused(path, *fragments, kind=None):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(str(path), kind=kind)
    message = str(info.value)
    assert os.path.abspath(str(path)) in message
    for fragment in fragments:
        assert fragment in message
    assert isinstance(info.value, SatSegError) and info.value.path == str(path)
    return message


def test_missing_file_and_folder(tmp_path):
    check_refused(tmp_path / "nope.satseg", "does not exist", "train a model")
    check_refused(tmp_path, "is a folder")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    path = tmp_path / "m.satseg"
    save_checkpoint(str(path), tiny_tensors(), metadata())
    path.chmod(0)
    try:
        check_refused(path, "cannot read model file", "readable")
    finally:
        path.chmod(0o600)


def test_truncated_file(tmp_path):
    path = tmp_path / "m.satseg"
    save_checkpoint(str(path), tiny_tensors(), metadata())
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    check_refused(path, "damaged or truncated", "copy or train it again")
    path.write_bytes(data[:40])
    check_refused(path, "damaged or truncated")


@pytest.mark.parametrize("content", [b"", b"abc", bytes(np.random.default_rng(0).integers(0, 256, 4096,
                                                                                         dtype=np.uint8))])
def test_not_a_safetensors_file(tmp_path, content):
    path = tmp_path / "random.satseg"
    path.write_bytes(content)
    check_refused(path, "is not a SatSeg model file", "not a safetensors file")


def test_safetensors_file_without_marker(tmp_path):
    path = tmp_path / "hf.satseg"
    safetensors_torch.save_file({"weight": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    check_refused(path, "is a safetensors file but not a SatSeg model", "trained with SatSeg")
    safetensors_torch.save_file({"weight": torch.zeros(2)}, str(path))  # no header metadata at all
    check_refused(path, "not a SatSeg model")


def test_damaged_metadata(tmp_path):
    path = tmp_path / "m.satseg"
    safetensors_torch.save_file({"model.w": torch.zeros(2)}, str(path), metadata={"format": "satseg-model",
                                                                                    "satseg": "{not json"})
    check_refused(path, "damaged metadata", "train the model again")
    data = metadata().to_dict()
    del data["bands"]
    safetensors_torch.save_file({"model.w": torch.zeros(2)}, str(path), metadata={"format": "satseg-model",
                                                                                    "satseg": json.dumps(data)})
    check_refused(path, "damaged metadata", "bands")


def test_newer_format_version(tmp_path):
    path = tmp_path / "future.satseg"
    data = dict(metadata().to_dict(), format_version=FORMAT_VERSION + 1, satseg_version="9.1.0", new_field=[1])
    safetensors_torch.save_file({"model.w": torch.zeros(2)}, str(path), metadata={"format": "satseg-model",
                                                                                    "satseg": json.dumps(data)})
    message = check_refused(path, f"written by SatSeg 9.1.0 (format {FORMAT_VERSION + 1}), newer than this SatSeg "
                                  f"{__version__} (format {FORMAT_VERSION}): update the plugin")
    with pytest.raises(CheckpointError, match="update the plugin"):
        read_metadata(str(path))
    assert "damaged" not in message


def test_wrong_kind(tmp_path):
    path = tmp_path / "clusters.satseg"
    save_checkpoint(str(path), tiny_tensors(), metadata(kind="clusternet"))
    check_refused(path, "is a clusternet model, expected a segmentation model", kind="segmentation")
    assert load_checkpoint(str(path), kind="clusternet").metadata.kind == "clusternet"
    assert load_checkpoint(str(path)).metadata.kind == "clusternet"
    with pytest.raises(ValueError, match="kind must be one of"):
        load_checkpoint(str(path), kind="segmentaton")


def test_unknown_tensor_prefix_in_file(tmp_path):
    path = tmp_path / "m.satseg"
    safetensors_torch.save_file({"optimizer.state": torch.zeros(2)}, str(path),
                                metadata={"format": "satseg-model", "satseg": metadata().to_json()})
    check_refused(path, "tensors SatSeg does not know", "optimizer.state")


# ---------------------------------------------------------------------------------------------- building


@pytest.fixture(scope="module")
def psp_state():
    torch.manual_seed(0)
    return build_model("pspnet", "resnet18", in_channels=4, classes=3).state_dict()


def test_strict_mismatch_becomes_checkpoint_error(psp_state):
    shape = Checkpoint(metadata(architecture="pspnet", in_channels=3, bands=[1, 2, 3], mean=[0.0] * 3,
                                std=[1.0] * 3), dict(psp_state), path="/models/psp.satseg")
    with pytest.raises(CheckpointError, match=r"do not fit a pspnet/resnet18 model with 3 band\(s\) and 3 output"
                                              r"\(s\): 1 of another shape \(e.g. encoder.conv1.weight: file "
                                              r"\(64, 4, 7, 7\) vs model \(64, 3, 7, 7\)\)") as info:
        build_from_checkpoint(shape)
    assert "/models/psp.satseg" in str(info.value)

    partial = dict(psp_state)
    partial.pop("segmentation_head.0.bias")
    partial["stray.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="1 missing .*segmentation_head.0.bias.*1 unexpected .*stray.weight"):
        build_from_checkpoint(Checkpoint(metadata(architecture="pspnet"), partial))


def test_unbuildable_architecture_becomes_checkpoint_error(psp_state):
    ckpt = Checkpoint(metadata(architecture="segformer"), dict(psp_state), path="m.satseg")
    with pytest.raises(CheckpointError, match="cannot build .*unknown architecture 'segformer'.*Update"):
        build_from_checkpoint(ckpt)


def test_build_from_checkpoint_leaves_state_untouched(psp_state):
    state = dict(psp_state)
    build_from_checkpoint(Checkpoint(metadata(architecture="pspnet"), state))
    assert set(state) == set(psp_state)


# ---------------------------------------------------------------------------------------------- writing


def test_failure_mid_save_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a model")
        raise OSError(28, "No space left on device")

    target = tmp_path / "new" / "m.satseg"
    monkeypatch.setattr(safetensors_torch, "save_file", broken_save)
    with pytest.raises(OutputError, match=r"cannot write model file .*m.satseg' \(No space left on device\)\. "
                                          "Free disk space"):
        save_checkpoint(str(target), tiny_tensors(), metadata())
    assert not (tmp_path / "new").exists()  # neither the file, nor a temp file, nor the folder it created


def test_failure_mid_save_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "m.satseg"
    save_checkpoint(str(target), tiny_tensors(), metadata())
    before = target.read_bytes()

    def broken_save(tensors, filename, metadata=None):
        open(filename, "wb").write(b"x")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors_torch, "save_file", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(str(target), tiny_tensors(), metadata(threshold=0.9))
    assert target.read_bytes() == before and leftovers(tmp_path) == []
    monkeypatch.undo()
    save_checkpoint(str(target), tiny_tensors(), metadata(threshold=0.9))  # overwriting works
    assert read_metadata(str(target)).threshold == 0.9


def test_unwritable_folder_is_an_output_error(unwritable_dir):
    with pytest.raises(OutputError, match="Choose a folder you can write to"):
        save_checkpoint(os.path.join(unwritable_dir, "m.satseg"), tiny_tensors(), metadata(), parameter="OUTPUT_MODEL")


def test_bad_input_is_refused_before_writing(tmp_path):
    path = tmp_path / "m.satseg"
    with pytest.raises(ValueError, match="must start with 'model.'"):
        save_checkpoint(str(path), {"weight": torch.zeros(1)}, metadata())
    with pytest.raises(ValueError, match="bands must list 4"):
        save_checkpoint(str(path), tiny_tensors(), metadata(bands=[1, 2]))
    with pytest.raises(ValueError, match="kind must be one of"):
        save_checkpoint(str(path), tiny_tensors(), metadata(kind="detector"))
    with pytest.raises(ValueError, match="cannot be written as JSON"):
        save_checkpoint(str(path), tiny_tensors(), metadata(extra={"when": datetime.now()}))
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------- safety


def test_no_unsafe_torch_load_anywhere():
    """Loading model files must never unpickle: every torch.load in the project passes weights_only=True."""
    offenders = []
    for folder in ("satseg_plugin", "scripts", "sample_data", "bench", "tests"):
        for dirpath, _dirs, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(dirpath, name)
                tree = ast.parse(open(path, encoding="utf-8").read(), path)
                for node in ast.walk(tree):
                    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                            and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
                            and node.func.value.id == "torch"):
                        safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                                   and k.value.value is True for k in node.keywords)
                        if not safe:
                            offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert offenders == []
