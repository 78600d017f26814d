"""Untrusted model files: the header schema refuses hostile or broken metadata before any model is built.

Every hostile file is written with the real safetensors writer and a crafted header, then opened the way SatSeg
opens a model (load, then build). A guard makes building a network, ``torch.load`` and timm's model factory fail
the test, so a refusal must come from the header check, not from smp or a weights mismatch.
"""

import dataclasses
import json
import math
import os

import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
smp = pytest.importorskip("segmentation_models_pytorch")
timm = pytest.importorskip("timm")

import satseg_plugin.models.nets.scene as scene_module
import satseg_plugin.models.registry as registry
from satseg_plugin.core.errors import CheckpointError
from satseg_plugin.models.checkpoint import (
    ModelMetadata,
    build_from_checkpoint,
    load_checkpoint,
    model_tensors,
    read_metadata,
    save_checkpoint,
)
from satseg_plugin.models.nets.clusternet import build_clusternet, clusternet_from_checkpoint
from satseg_plugin.models.nets.scene import SCENE_ARCHITECTURE, build_scene_model, scene_model_from_checkpoint
from satseg_plugin.models.schema import FIELDS, MAX_HEADER_BYTES


def header(**changes):
    """A valid segmentation header as the file stores it, with ``changes`` applied (None deletes a key)."""
    data = ModelMetadata(kind="segmentation", architecture="unet", encoder="resnet18", in_channels=3,
                         classes=["building"], bands=[1, 2, 3], mean=[10.0, 20.0, 30.0], std=[5.0, 5.0, 5.0],
                         patch_size=64, pixel_size=(0.5, 0.5), crs_units="metre",
                         extra={"note": "test"}).to_dict()
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def write(path, data, tensors=None, **more):
    """Write a safetensors file with the SatSeg marker and ``data`` as its metadata JSON (NaN allowed)."""
    meta = {"format": "satseg-model", "satseg": json.dumps(data), **more}
    safetensors_torch.save_file(tensors or {"model.w": torch.zeros(2)}, str(path), metadata=meta)
    return str(path)


@pytest.fixture
def nothing_built(monkeypatch):
    """Fail the test if anything builds a network or unpickles a file."""
    def forbidden(*_args, **_kwargs):
        pytest.fail("a model was built (or torch.load called) from a file the header check should refuse")

    monkeypatch.setattr(registry, "build_model", forbidden)
    monkeypatch.setattr(smp, "create_model", forbidden)
    monkeypatch.setattr(timm, "create_model", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(scene_module, "build_scene_model", forbidden)


def open_model(path):
    """What SatSeg does with a model file: load it, then build the network it describes."""
    ckpt = load_checkpoint(path)
    builders = {"segmentation": build_from_checkpoint, "clusternet": clusternet_from_checkpoint,
                "scene": scene_model_from_checkpoint}
    return builders[ckpt.metadata.kind](ckpt)


def refused(path, *fragments):
    """Open ``path``; it must fail with a CheckpointError naming the file and containing ``fragments``."""
    with pytest.raises(CheckpointError) as info:
        open_model(path)
    message = str(info.value)
    assert os.path.abspath(path) in message and "not a valid SatSeg model" in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert info.value.path == path
    return message


# --------------------------------------------------------------------------------------- the two hostile files


def test_timm_checkpoint_path_in_model_kwargs_is_refused(tmp_path, nothing_built):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(b"\x80\x04not really a pickle")
    path = write(tmp_path / "m.satseg", header(encoder="tu-resnet18", model_kwargs={"checkpoint_path": str(evil)}))
    refused(path, "model_kwargs.checkpoint_path", "decoder_channels")  # names the key and what is allowed
    with pytest.raises(CheckpointError, match="model_kwargs.checkpoint_path"):
        read_metadata(path)


def test_huge_decoder_channels_are_refused(tmp_path, nothing_built):
    path = write(tmp_path / "m.satseg", header(model_kwargs={"decoder_channels": [8192, 4096, 2048, 1024, 512]}))
    refused(path, "model_kwargs.decoder_channels", "1024")


# --------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("changes, fragment", [
    ({"std": [5.0, 0.0, 5.0]}, "(std)"),
    ({"std": [5.0, -1.0, 5.0]}, "(std)"),
    ({"std": [5.0, float("inf"), 5.0]}, "(std)"),
    ({"mean": [10.0, float("nan"), 30.0]}, "(mean)"),
    ({"mean": [10.0, 20.0]}, "(mean)"),
    ({"pixel_size": [0.0, 0.5]}, "(pixel_size)"),
    ({"pixel_size": [-0.5, 0.5]}, "(pixel_size)"),
    ({"pixel_size": [float("nan"), 0.5]}, "(pixel_size)"),
    ({"patch_size": 10 ** 9}, "(patch_size)"),
    ({"threshold": float("nan")}, "(threshold)"),
    ({"in_channels": 5000, "bands": list(range(1, 5001)), "mean": [0.0] * 5000, "std": [1.0] * 5000},
     "(in_channels)"),
    ({"extra": {"input_multiple": 2 ** 20}}, "(extra.input_multiple)"),
], ids=["std-zero", "std-negative", "std-inf", "mean-nan", "mean-short", "pixel-zero", "pixel-negative",
        "pixel-nan", "patch-huge", "threshold-nan", "bands-huge", "multiple-huge"])
def test_bad_numbers_are_refused(tmp_path, nothing_built, changes, fragment):
    refused(write(tmp_path / "m.satseg", header(**changes)), fragment)


# --------------------------------------------------------------------------------------- keys, types, sizes


def test_unknown_header_key_is_refused(tmp_path, nothing_built):
    path = write(tmp_path / "m.satseg", header(loader="os.system"))
    refused(path, "unknown key", "(loader)")


def test_unknown_safetensors_metadata_entry_is_refused(tmp_path, nothing_built):
    path = write(tmp_path / "m.satseg", header(), hook="python -c ...")
    refused(path, "(hook)")


@pytest.mark.parametrize("changes, fragment", [
    ({"classes": ["c"] * 100000}, "(classes)"),
    ({"classes": ["x" * 100000]}, "(classes)"),
    ({"model_kwargs": {"decoder_channels": [16] * 50}}, "(model_kwargs.decoder_channels)"),
    ({"encoder": "resnet" + "1" * 5000}, "(encoder)"),
    ({"extra": {"notes": "x" * 300000}}, "(extra)"),
    ({"crs_wkt": "x" * 100000}, "(crs_wkt)"),
    ({"extra": {"notes": "x" * (2 * 2 ** 20)}}, "(satseg)"),  # all metadata together
], ids=["many-classes", "long-class", "long-decoder-list", "long-encoder", "big-extra", "big-wkt", "big-metadata"])
def test_oversized_values_are_refused(tmp_path, nothing_built, changes, fragment):
    refused(write(tmp_path / "m.satseg", header(**changes)), fragment)


@pytest.mark.parametrize("changes, fragment", [
    ({"in_channels": "3"}, "(in_channels)"),
    ({"in_channels": 3.0}, "(in_channels)"),
    ({"classes": "building"}, "(classes)"),
    ({"classes": []}, "(classes)"),
    ({"classes": [7]}, "(classes)"),
    ({"bands": [1, 2, True]}, "(bands)"),
    ({"mean": ["a", "b", "c"]}, "(mean)"),
    ({"patch_size": 64.5}, "(patch_size)"),
    ({"threshold": "0.5"}, "(threshold)"),
    ({"extra": ["notes"]}, "(extra)"),
    ({"model_kwargs": [["decoder_channels", [16]]]}, "(model_kwargs)"),
    ({"model_kwargs": {"encoder_depth": True}}, "(model_kwargs.encoder_depth)"),
    ({"model_kwargs": {"decoder_channels": ["16", "16", "16", "16", "16"]}}, "(model_kwargs.decoder_channels)"),
    ({"crs_wkt": 4326}, "(crs_wkt)"),
    ({"architecture": {"name": "unet"}}, "(architecture)"),
    ({"metrics": "good"}, "(metrics)"),
], ids=["channels-str", "channels-float", "classes-str", "classes-empty", "classes-int", "band-bool",
        "mean-str", "patch-float", "threshold-str", "extra-list", "kwargs-list", "depth-bool", "channels-strs",
        "wkt-int", "arch-dict", "metrics-str"])
def test_wrong_types_are_refused(tmp_path, nothing_built, changes, fragment):
    refused(write(tmp_path / "m.satseg", header(**changes)), fragment)


def test_clusternet_extra_entries_are_checked(tmp_path, nothing_built):
    base = dict(kind="clusternet", classes=["cluster 1", "cluster 2"])
    path = write(tmp_path / "m.satseg", header(**base, extra={"feature_dim": 10 ** 7, "band_share": 0.5}))
    refused(path, "(extra.feature_dim)")
    path = write(tmp_path / "m.satseg", header(**base, extra={"feature_dim": 8, "band_share": 5.0}))
    refused(path, "(extra.band_share)")
    path = write(tmp_path / "m.satseg", header(**base, extra={"feature_dim": 8, "normalize": "yes"}))
    refused(path, "(extra.normalize)")


def test_a_too_large_header_is_refused_before_parsing(tmp_path, nothing_built):
    path = write(tmp_path / "m.satseg", header(), padding="x" * (MAX_HEADER_BYTES + 1))
    refused(path, "(header)", "bytes")


@pytest.mark.parametrize("depth, fragment", [(100000, "(satseg)"), (50, "(extra)")])
def test_deeply_nested_metadata_is_refused(tmp_path, nothing_built, depth, fragment):
    path = str(tmp_path / "m.satseg")
    text = json.dumps(header(extra=None))[:-1] + ', "extra": {"a": ' + "[" * depth + "]" * depth + "}}"
    safetensors_torch.save_file({"model.w": torch.zeros(2)}, path, metadata={"format": "satseg-model",
                                                                             "satseg": text})
    refused(path, fragment)


# --------------------------------------------------------------------------------------- writing


def test_satseg_never_writes_a_header_it_would_refuse(tmp_path):
    good = ModelMetadata.from_dict(header())
    for bad in (dict(model_kwargs={"checkpoint_path": "evil.pt"}), dict(std=[1.0, 0.0, 1.0]),
                dict(mean=[0.0, math.nan, 0.0]), dict(pixel_size=(0.0, 1.0))):
        with pytest.raises(ValueError, match=f"^{next(iter(bad))}[ .]"):
            save_checkpoint(str(tmp_path / "m.satseg"), {"model.w": torch.zeros(1)},
                            ModelMetadata(**{**good.__dict__, **bad}))
    assert os.listdir(tmp_path) == []


def test_the_schema_lists_exactly_the_metadata_fields():
    assert set(FIELDS) == {f.name for f in dataclasses.fields(ModelMetadata)}
    required = {f.name for f in dataclasses.fields(ModelMetadata) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING}
    assert required | {"format_version"} == {k for k, spec in FIELDS.items() if spec.required}


# --------------------------------------------------------------------------------------- valid files still load


def test_valid_segmentation_file_with_model_kwargs_loads(tmp_path):
    kwargs = {"decoder_channels": [16, 16, 8, 8, 8]}  # what bench/ writes (TINY_KWARGS)
    model = registry.build_model("unet", "resnet18", in_channels=3, classes=1, **kwargs).eval()
    path = str(tmp_path / "seg.satseg")
    save_checkpoint(path, model_tensors(model), ModelMetadata.from_dict(header(model_kwargs=kwargs)))
    rebuilt = open_model(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
    deeplab = registry.build_model("deeplabv3plus", "resnet18", in_channels=3, classes=1,
                                   decoder_channels=32, encoder_output_stride=8).eval()
    save_checkpoint(path, model_tensors(deeplab), ModelMetadata.from_dict(header(
        architecture="deeplabv3plus", model_kwargs={"decoder_channels": 32, "encoder_output_stride": 8})))
    with torch.no_grad():
        assert torch.equal(deeplab(x), open_model(path)(x))


def test_valid_clusternet_file_loads(tmp_path):
    net = build_clusternet("unet", "resnet18", 3, 8, 4, 0.3, decoder_channels=[16, 16, 8, 8, 8]).eval()
    path = str(tmp_path / "c.satseg")
    meta = ModelMetadata.from_dict(header(
        kind="clusternet", classes=[f"cluster {i}" for i in range(1, 5)],
        model_kwargs={"decoder_channels": [16, 16, 8, 8, 8]},
        extra={"feature_dim": 8, "band_share": 0.3, "normalize": True, "whiten": False, "input_multiple": 32,
               "train_config": {"epochs": 1, "bands": None}, "sources": ["/data/a.tif"], "cluster_sizes": [1, 2]}))
    save_checkpoint(path, model_tensors(net, {"centroids": torch.zeros(4, 11)}), meta)
    rebuilt = open_model(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x), rebuilt(x))


def test_valid_scene_file_loads(tmp_path):
    model = build_scene_model(3, in_channels=4).eval()
    path = str(tmp_path / "s.satseg")
    meta = ModelMetadata.from_dict(header(
        kind="scene", architecture=SCENE_ARCHITECTURE, encoder="torchvision", in_channels=4,
        classes=["urban", "rural", "uninhabited"], bands=[1, 2, 3, 4], mean=[0.0] * 4, std=[1.0] * 4,
        metrics={"val_accuracy": None, "best_epoch": 2},
        extra={"patch_width": 64, "patch_height": 64, "class_counts": {"urban": 3}}))
    save_checkpoint(path, model_tensors(model), meta)
    rebuilt = open_model(path)
    x = torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
