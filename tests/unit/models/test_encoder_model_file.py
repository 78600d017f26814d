"""Encoder model files (kind ``encoder``, written by satseg:pretrainencoder): the schema and INIT_WEIGHTS."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")

from satseg_plugin.core.errors import InputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.models.checkpoint import ModelMetadata, load_checkpoint, model_tensors, save_checkpoint
from satseg_plugin.models.pretrained import init_from_model_file
from satseg_plugin.models.registry import build_model
from satseg_plugin.models.schema import HeaderError, check_metadata

ENCODER = "resnet18"


def _metadata(encoder: str = ENCODER, bands: int = 3, **changes) -> ModelMetadata:
    fields = dict(kind="encoder", architecture="unet", encoder=encoder, in_channels=bands, classes=[],
                  bands=list(range(1, bands + 1)), mean=[0.0] * bands, std=[1.0] * bands, patch_size=64,
                  pixel_size=(0.5, 0.5), extra={"init": {"init": "none"}})
    fields.update(changes)
    return ModelMetadata(**fields)


def _encoder_file(path, encoder: str = ENCODER, bands: int = 3, seed: int = 40, drop: int = 0):
    """A seeded U-Net's encoder written as an encoder model file (``drop``: leave out the last tensors)."""
    torch.manual_seed(seed)
    encoder_net = build_model("unet", encoder, in_channels=bands, classes=1).encoder
    tensors = model_tensors(encoder_net)
    for key in list(tensors)[len(tensors) - drop:]:
        del tensors[key]
    save_checkpoint(str(path), tensors, _metadata(encoder, bands))
    return encoder_net


def test_encoder_kind_has_no_classes_others_need_them():
    assert check_metadata(_metadata().to_dict())["classes"] == []
    with pytest.raises(HeaderError, match="classes must be a list of 1 to"):
        check_metadata(_metadata(kind="segmentation").to_dict())


@pytest.mark.parametrize("arch", ["unet", "deeplabv3plus"])
def test_encoder_file_fills_the_encoder_of_any_architecture(arch, tmp_path):
    path = tmp_path / "encoder.satseg"
    source = _encoder_file(path)
    torch.manual_seed(41)
    model, feedback = build_model(arch, ENCODER, in_channels=3, classes=1), RecordingFeedback()
    decoder_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    origin = init_from_model_file(model, str(path), ENCODER, 3, "a test model", feedback)
    state, expected = model.encoder.state_dict(), source.state_dict()
    assert all(torch.equal(state[k], expected[k]) for k in state)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in decoder_before.items())  # the decoder stays
    assert origin["init"] == "encoder" and origin["tensors"] == len(state) and len(origin["sha256"]) == 64
    assert any(f"encoder model {path}: {len(state)} tensors taken" in m for m in feedback.infos)
    assert load_checkpoint(str(path)).metadata.kind == "encoder"


def test_encoder_file_of_another_encoder_or_bands_is_refused(tmp_path):
    path = tmp_path / "encoder.satseg"
    _encoder_file(path)
    with pytest.raises(InputError, match="pretrained without labels .*with encoder resnet18.*set ENCODER to "
                                         "resnet18") as err:
        init_from_model_file(build_model("unet", "resnet34"), str(path), "resnet34", 3, "x")
    assert err.value.parameter == "INIT_WEIGHTS"
    with pytest.raises(InputError, match="reads 3 band\\(s\\), this model 4: choose the same BANDS") as err:
        init_from_model_file(build_model("unet", ENCODER, in_channels=4), str(path), ENCODER, 4, "x")
    assert err.value.parameter == "INIT_WEIGHTS"


def test_incomplete_encoder_file_names_the_missing_tensors(tmp_path):
    path = tmp_path / "cut.satseg"
    _encoder_file(path, drop=2)
    with pytest.raises(InputError, match="2 missing") as err:
        init_from_model_file(build_model("unet", ENCODER), str(path), ENCODER, 3, "x")
    assert err.value.parameter == "INIT_WEIGHTS"
