"""Architecture registry: names, aliases, helpful unknown-name errors, input multiples verified by forward passes."""

import os
import re
import subprocess
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")

from satseg_plugin.core.errors import InputError
from satseg_plugin.models import registry
from satseg_plugin.models.registry import (
    ARCHITECTURE_NAMES,
    ARCHITECTURES,
    ENCODER_CHOICES,
    UnknownNameError,
    architecture_labels,
    architecture_names,
    build_model,
    encoder_names,
    input_multiple,
    resolve_architecture,
    resolve_encoder,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

#: What smp's defaults give: U-Net 5 stages (32), PSPNet 3 stages (8), DeepLabV3+ output stride 16.
EXPECTED_MULTIPLE = {"unet": 32, "pspnet": 8, "deeplabv3plus": 16}
MOBILENET = "tu-mobilenetv3_large_100"


def _has_timm_model(name: str) -> bool:
    import timm

    return timm.is_model(name)


ENCODERS = ["resnet18", pytest.param(MOBILENET, marks=pytest.mark.skipif(
    not _has_timm_model(MOBILENET[3:]), reason="timm lacks mobilenetv3_large_100"))]


@pytest.fixture(scope="module")
def five_band_models():
    torch.manual_seed(0)
    return {arch: build_model(arch, "resnet18", in_channels=5).eval() for arch in ARCHITECTURE_NAMES}


def test_architecture_names_and_registry(five_band_models):
    """One ordered table: name -> label; each name builds its smp class through ``smp.create_model``."""
    assert architecture_names() == ["unet", "pspnet", "deeplabv3plus"] == list(ARCHITECTURE_NAMES)
    assert ARCHITECTURES == {"unet": "U-Net", "pspnet": "PSPNet", "deeplabv3plus": "DeepLabV3+"}
    assert architecture_labels() == ["U-Net", "PSPNet", "DeepLabV3+"]
    import segmentation_models_pytorch as smp

    built = {arch: type(model) for arch, model in five_band_models.items()}
    assert built == {"unet": smp.Unet, "pspnet": smp.PSPNet, "deeplabv3plus": smp.DeepLabV3Plus}


def test_module_exports_exist():
    """Every name in ``__all__`` is defined (no lazily resolved names that tools cannot see)."""
    assert [name for name in registry.__all__ if not hasattr(registry, name)] == []


def test_encoder_choices_are_smp_encoders():
    assert len(set(ENCODER_CHOICES)) == len(ENCODER_CHOICES) and set(ENCODER_CHOICES) <= set(encoder_names())
    assert all(resolve_encoder(name) == name for name in ENCODER_CHOICES)


def test_names_need_no_torch():
    """A dialog can list the architectures without importing torch or smp."""
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from satseg_plugin.models.registry import ENCODER_CHOICES, architecture_names, resolve_architecture\n"
            "assert resolve_architecture('U-Net') == 'unet' and len(architecture_names()) == 3\n"
            "assert 'resnet34' in ENCODER_CHOICES\n"
            "print('torch' in sys.modules, 'segmentation_models_pytorch' in sys.modules)\n") % ROOT
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_encoder_names():
    names = encoder_names()
    assert "resnet18" in names and "resnet34" in names and names == sorted(names)


@pytest.mark.parametrize("arch", ARCHITECTURE_NAMES)
def test_build_five_bands_forward_shape(arch, five_band_models):
    model = five_band_models[arch]
    with torch.no_grad():
        out = model(torch.randn(2, 5, 64, 64))
    assert out.shape == (2, 1, 64, 64)
    assert model.encoder.conv1.in_channels == 5


def test_build_multiclass_and_train_mode():
    model = build_model("unet", "resnet18", in_channels=3, classes=4, decoder_channels=(16, 16, 16, 16, 16))
    assert model.training
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4, 32, 32)


@pytest.mark.parametrize("name, canonical", [
    ("unet", "unet"), ("U-Net", "unet"), ("UNET", "unet"), ("u_net", "unet"),
    ("PSPNet", "pspnet"), ("psp", "pspnet"), ("psp-net", "pspnet"),
    ("deeplabv3plus", "deeplabv3plus"), ("DeepLabV3Plus", "deeplabv3plus"), ("deeplabv3+", "deeplabv3plus"),
    ("deeplab_v3_plus", "deeplabv3plus"), ("DeepLab-V3+", "deeplabv3plus"), (" deeplabv3plus ", "deeplabv3plus"),
])
def test_architecture_aliases(name, canonical):
    assert resolve_architecture(name) == canonical


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(KeyError) as info:
        build_model("unett", "resnet18")
    message = str(info.value)
    assert "unknown architecture 'unett'" in message and "Did you mean 'unet'?" in message
    assert all(name in message for name in ARCHITECTURE_NAMES)
    assert isinstance(info.value, InputError)  # the Processing layer shows it unchanged
    assert not message.startswith("'")  # not KeyError's quoted repr


def test_unknown_encoder_suggests_close_match_and_lists_compactly():
    with pytest.raises(KeyError) as info:
        build_model("unet", "resnet19")
    message = str(info.value)
    assert "unknown encoder 'resnet19'" in message and "'resnet18'" in message.split("Choose")[0]
    assert "resnet{18,34,50,101,152}" in message and "tu-<timm name>" in message
    assert len(message) < 1500
    assert isinstance(info.value, UnknownNameError)


def test_timm_model_without_prefix_suggests_tu_name():
    if not _has_timm_model(MOBILENET[3:]):
        pytest.skip("timm lacks mobilenetv3_large_100")
    for wrong in ("mobilenetv3_large_100", "timm-mobilenetv3_large_100"):
        with pytest.raises(KeyError, match=f"Did you mean '{MOBILENET}'"):
            resolve_encoder(wrong)
    with pytest.raises(KeyError, match="timm has no model 'mobilenetv3_large_10'.*tu-mobilenetv3_large_100"):
        resolve_encoder("tu-mobilenetv3_large_10")


def test_encoder_case_insensitive_and_timm_prefix():
    assert resolve_encoder("ResNet18") == "resnet18"
    if _has_timm_model(MOBILENET[3:]):
        assert resolve_encoder(MOBILENET) == MOBILENET


def test_refuses_pretrained_weights_and_bad_sizes():
    with pytest.raises(InputError, match="never downloads"):
        build_model("unet", "resnet18", encoder_weights="imagenet")
    with pytest.raises(InputError, match="in_channels"):
        build_model("unet", "resnet18", in_channels=0)
    with pytest.raises(InputError, match="classes"):
        build_model("unet", "resnet18", classes=0)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"checkpoint_path": "evil.pt"}, "checkpoint_path is not taken: SatSeg builds models only with encoder_depth"),
    ({"decoder_channels": 4096}, "decoder_channels must be an integer from 1 to 1024"),
    ({"decoder_channels": [16] * 6}, "or a list of 1 to 5 of them"),
    ({"decoder_channels": [[16], 16, 16, 16, 16]}, "or a list of 1 to 5 of them"),
    ({"encoder_depth": 9}, "encoder_depth must be an integer from 1 to 5"),
    ({"encoder_output_stride": 32}, "encoder_output_stride must be 8 or 16"),
])
def test_build_model_takes_only_the_listed_keyword_arguments(kwargs, fragment, monkeypatch):
    """smp hands unknown keywords on to timm (which would torch.load a checkpoint_path): refused first."""
    smp = pytest.importorskip("segmentation_models_pytorch")
    monkeypatch.setattr(smp, "create_model", lambda *a, **k: pytest.fail("smp.create_model was called"))
    with pytest.raises(InputError, match=re.escape(fragment)):
        build_model("unet", "tu-resnet18", **kwargs)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("arch", ARCHITECTURE_NAMES)
def test_input_multiple_predicts_which_sizes_run(arch, encoder):
    multiple = input_multiple(arch, encoder)
    assert multiple == EXPECTED_MULTIPLE[arch]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(arch, encoder, in_channels=3).eval()
    assert input_multiple(model) == multiple
    good, odd = multiple, multiple + multiple // 2  # odd: a multiple of half the multiple, not of it
    with torch.no_grad():
        assert model(torch.zeros(1, 3, good, good)).shape[-2:] == (good, good)
        if getattr(model, "requires_divisible_input_shape", True):
            with pytest.raises(RuntimeError, match=f"divisible by {multiple}"):
                model(torch.zeros(1, 3, odd, good))
        else:
            # recent smp U-Net resamples inside its decoder instead of failing; SatSeg still pads (see docstring)
            assert arch == "unet"
            assert model(torch.zeros(1, 3, odd, good)).shape[-2:] == (odd, good)


def test_input_multiple_follows_build_kwargs():
    assert input_multiple("deeplabv3plus", "resnet18", encoder_output_stride=8) == 8
    assert input_multiple("unet", "resnet18", encoder_depth=4, decoder_channels=[32, 16, 8, 8]) == 16
    assert input_multiple("DeepLabV3+", "ResNet18") == 16
    with pytest.raises(KeyError):
        input_multiple("unet", "resnet19")
