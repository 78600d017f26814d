"""Initial encoder weights: weights files, the ImageNet cache and its download, and transfer from SatSeg models.

No test touches the network: ``satseg_plugin.core.cache.urlopen`` is replaced to be offline, or to serve a local
file as a server would.
"""

import hashlib
import io
import os
import urllib.error

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from satseg_plugin.core import cache
from satseg_plugin.core.errors import CanceledError, InputError
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.models.checkpoint import ModelMetadata, model_tensors, save_checkpoint
from satseg_plugin.models.nets.clusternet import build_clusternet
from satseg_plugin.models.nets.scene import SCENE_ARCHITECTURE, build_scene_model
from satseg_plugin.models.pretrained import apply_encoder_weights, imagenet_source, init_from_model_file
from satseg_plugin.models.registry import build_model
from satseg_plugin.models.schema import HeaderError, check_metadata

ENCODER = "resnet18"


def seeded(seed: int, bands: int = 3, encoder: str = ENCODER, arch: str = "unet"):
    torch.manual_seed(seed)
    return build_model(arch, encoder, in_channels=bands, classes=1)


def same_encoder(a, b) -> bool:
    sa, sb = a.encoder.state_dict(), b.encoder.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def source_model():
    return seeded(0)


@pytest.fixture(scope="module")
def weights_files(source_model, tmp_path_factory):
    """The seeded encoder's state dict as safetensors (plain keys) and .pth (``encoder.`` prefixed keys)."""
    folder = tmp_path_factory.mktemp("weights")
    state = {k: v.contiguous() for k, v in source_model.encoder.state_dict().items()}
    st_path, pth_path = str(folder / "enc.safetensors"), str(folder / "enc.pth")
    safetensors_torch.save_file(state, st_path)
    torch.save({"encoder." + k: v for k, v in state.items()}, pth_path)
    return st_path, pth_path


@pytest.fixture
def offline(monkeypatch):
    """Every request fails as without network; the list records what was asked."""
    asked = []

    def no_network(request, timeout=None):
        asked.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.delenv(cache.OFFLINE_ENV, raising=False)  # the requests themselves fail, as on a machine offline
    monkeypatch.setattr(cache, "urlopen", no_network)
    cache.reachable.cache_clear()
    yield asked
    cache.reachable.cache_clear()


class _Response(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


@pytest.fixture
def server(monkeypatch, weights_files):
    """Serve the local safetensors file for any URL, in small chunks; the list records what was asked."""
    data = open(weights_files[0], "rb").read()
    asked = []

    def serve(request, timeout=None):
        asked.append(getattr(request, "full_url", request))
        return _Response(data)

    monkeypatch.delenv(cache.OFFLINE_ENV, raising=False)  # tests/conftest.py forbids the network elsewhere
    monkeypatch.setattr(cache, "urlopen", serve)
    monkeypatch.setattr(cache, "CHUNK_BYTES", len(data) // 10 + 1)
    cache.reachable.cache_clear()
    yield asked, data
    cache.reachable.cache_clear()


@pytest.mark.parametrize("which", [0, 1], ids=["safetensors", "pth-with-encoder-prefix"])
def test_weights_file_fills_the_encoder(which, weights_files, source_model, offline):
    model = seeded(1)
    decoder_before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    origin = apply_encoder_weights(model, weights_files[which], ENCODER, "/nonexistent", RecordingFeedback())
    assert same_encoder(model, source_model)
    assert all(torch.equal(decoder_before[k], v) for k, v in model.decoder.state_dict().items())
    expected_hash = hashlib.sha256(open(weights_files[which], "rb").read()).hexdigest()
    assert origin["init"] == "file" and origin["sha256"] == expected_hash
    assert origin["file"] == os.path.basename(weights_files[which])
    assert origin["tensors"] == len(source_model.encoder.state_dict()) and not offline


def test_none_keeps_the_random_encoder(offline):
    model, twin = seeded(2), seeded(2)
    assert apply_encoder_weights(model, "none", ENCODER, "/nonexistent") == {"init": "none"}
    assert same_encoder(model, twin) and not offline


def test_cached_imagenet_file_is_used_without_network(weights_files, source_model, tmp_path, offline):
    name = imagenet_source(ENCODER).filename
    assert name.startswith(ENCODER) and name.endswith(".safetensors")
    with open(weights_files[0], "rb") as src, open(tmp_path / name, "wb") as dst:
        dst.write(src.read())
    for mode in ("imagenet", "auto"):
        model, feedback = seeded(3), RecordingFeedback()
        origin = apply_encoder_weights(model, mode, ENCODER, str(tmp_path), feedback)
        assert same_encoder(model, source_model)
        assert origin["init"] == "imagenet" and origin["file"] == name
        assert any("from the cache" in m for m in feedback.infos)
    assert offline == []  # not even a reachability probe


def test_offline_imagenet_names_file_url_and_folder(tmp_path, offline):
    source = imagenet_source(ENCODER)
    with pytest.raises(InputError) as err:
        apply_encoder_weights(seeded(4), "imagenet", ENCODER, str(tmp_path))
    text = str(err.value)
    assert err.value.parameter == "ENCODER_WEIGHTS"
    assert source.filename in text and source.url in text and str(tmp_path) in text
    assert source.url.startswith("https://huggingface.co/smp-hub/resnet18.imagenet/resolve/")
    assert os.listdir(tmp_path) == []  # no temporary file left behind


def test_auto_offline_falls_back_to_random_and_says_why(tmp_path, offline):
    model, twin, feedback = seeded(5), seeded(5), RecordingFeedback()
    origin = apply_encoder_weights(model, "auto", ENCODER, str(tmp_path), feedback)
    assert origin["init"] == "none" and same_encoder(model, twin)
    assert len(offline) == 1  # one short probe
    assert any("random (auto" in m and "not reachable" in m for m in feedback.infos)


def test_download_fills_the_cache_once_with_progress(tmp_path, server, source_model, monkeypatch):
    asked, data = server
    folder = tmp_path / "cache"
    feedback = RecordingFeedback()
    origin = apply_encoder_weights(seeded(6), "imagenet", ENCODER, str(folder), feedback)
    name = imagenet_source(ENCODER).filename
    assert os.listdir(folder) == [name] and open(folder / name, "rb").read() == data
    assert origin["init"] == "imagenet" and origin["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(feedback.progress) >= 10 and feedback.progress[-1] == pytest.approx(100.0)
    assert feedback.progress == sorted(feedback.progress)
    # the second run reads the cache: no request at all
    asked.clear()
    model = seeded(7)
    apply_encoder_weights(model, "auto", ENCODER, str(folder))
    assert asked == [] and same_encoder(model, source_model)


def test_auto_downloads_when_reachable(tmp_path, server, source_model):
    asked, _data = server
    model = seeded(8)
    assert apply_encoder_weights(model, "auto", ENCODER, str(tmp_path))["init"] == "imagenet"
    assert len(asked) == 2 and same_encoder(model, source_model)  # the probe, then the file


def test_cancel_during_download_leaves_nothing(tmp_path, server):
    folder = tmp_path / "cache"
    with pytest.raises(CanceledError):
        apply_encoder_weights(seeded(9), "imagenet", ENCODER, str(folder), RecordingFeedback(cancel_after=3))
    assert not folder.exists() or os.listdir(folder) == []


def test_hash_mismatch_is_refused(tmp_path, server):
    with pytest.raises(cache.DownloadError, match="SHA-256"):
        cache.download("https://example.org/x-0123456789.pth", str(tmp_path / "x.pth"), sha256="0123456789")
    assert os.listdir(tmp_path) == []


def test_weights_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.WEIGHTS_DIR_ENV, raising=False)
    assert cache.weights_dir(str(tmp_path)) == os.path.join(str(tmp_path), "python", "satseg_weights")
    assert cache.weights_dir().endswith(os.path.join(".cache", "satseg", "weights"))
    monkeypatch.setenv(cache.WEIGHTS_DIR_ENV, str(tmp_path / "mine"))
    assert cache.weights_dir(str(tmp_path)) == str(tmp_path / "mine")


def test_missing_corrupt_and_foreign_files(tmp_path, offline):
    with pytest.raises(InputError, match="does not exist") as err:
        apply_encoder_weights(seeded(10), str(tmp_path / "nope.safetensors"), ENCODER, str(tmp_path))
    assert err.value.parameter == "ENCODER_WEIGHTS_FILE"
    for name, content in (("bad.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json"),
                          ("bad.pth", b"this is not a zip nor a pickle")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match="damaged") as err:
            apply_encoder_weights(seeded(10), str(tmp_path / name), ENCODER, str(tmp_path))
        assert err.value.parameter == "ENCODER_WEIGHTS_FILE"
    (tmp_path / "model.ckpt").write_bytes(b"x")
    with pytest.raises(InputError, match=r"\.safetensors, \.pth, \.pt"):
        apply_encoder_weights(seeded(10), str(tmp_path / "model.ckpt"), ENCODER, str(tmp_path))


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, offline):
    marker = str(tmp_path / "ran")
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        torch.save({"conv1.weight": torch.zeros(1), "payload": _Payload(marker)}, handle)
    with pytest.raises(InputError, match="never unpickles") as err:
        apply_encoder_weights(seeded(11), str(path), ENCODER, str(tmp_path))
    assert err.value.parameter == "ENCODER_WEIGHTS_FILE"
    assert not os.path.exists(marker)


def test_weights_of_another_encoder_name_the_keys(tmp_path, offline):
    other = seeded(12, encoder="mobilenet_v2")
    path = str(tmp_path / "mobilenet.safetensors")
    safetensors_torch.save_file({k: v.contiguous() for k, v in other.encoder.state_dict().items()}, path)
    with pytest.raises(InputError) as err:
        apply_encoder_weights(seeded(12), path, ENCODER, str(tmp_path))
    text = str(err.value)
    n_missing = sum(1 for k in seeded(12).encoder.state_dict() if k not in other.encoder.state_dict())
    n_unexpected = sum(1 for k in other.encoder.state_dict() if k not in seeded(12).encoder.state_dict())
    assert f"{n_missing} missing (e.g. conv1.weight" in text and f"{n_unexpected} unexpected (e.g. features." in text
    assert "ENCODER" in text


def test_wrong_shapes_are_named(tmp_path, weights_files, offline):
    state = safetensors_torch.load_file(weights_files[0])
    state["fc_like"] = torch.zeros(1)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    del state["fc_like"]
    path = str(tmp_path / "reshaped.safetensors")
    safetensors_torch.save_file(state, path)
    with pytest.raises(InputError, match=r"1 of another shape \(e.g. layer1.0.conv1.weight: file \(64, 64, 1, 1\)"):
        apply_encoder_weights(seeded(13), path, ENCODER, str(tmp_path))


def test_four_band_raster_adapts_the_first_conv(weights_files, source_model, offline):
    model, feedback = seeded(14, bands=4), RecordingFeedback()
    origin = apply_encoder_weights(model, weights_files[0], ENCODER, "/nonexistent", feedback)
    rgb = source_model.encoder.state_dict()["conv1.weight"]
    got = model.encoder.state_dict()["conv1.weight"]
    assert got.shape == (64, 4, 7, 7) and origin["first_conv_adapted"]
    # smp's patch_first_conv rule: channel i takes RGB channel i % 3, all scaled by 3 / bands
    for i in range(4):
        torch.testing.assert_close(got[:, i], rgb[:, i % 3] * 3 / 4)
    assert any("adapted from 3 (RGB) to 4 bands" in m for m in feedback.infos)
    rest = {k for k in source_model.encoder.state_dict() if k != "conv1.weight"}
    assert all(torch.equal(model.encoder.state_dict()[k], source_model.encoder.state_dict()[k]) for k in rest)


def _clusternet_file(path, encoder=ENCODER, bands=3):
    torch.manual_seed(20)
    net = build_clusternet("unet", encoder, bands, 8, 4)
    meta = ModelMetadata(kind="clusternet", architecture="unet", encoder=encoder, in_channels=bands,
                         classes=["a", "b", "c", "d"], bands=list(range(1, bands + 1)), mean=[0.0] * bands,
                         std=[1.0] * bands, patch_size=64, pixel_size=(0.5, 0.5), extra={"feature_dim": 8})
    save_checkpoint(str(path), model_tensors(net), meta)
    return net


@pytest.mark.parametrize("arch", ["unet", "deeplabv3plus", "pspnet"])
def test_clusternet_encoder_transfers_into_a_segmentation_model(arch, tmp_path):
    path = tmp_path / "clusters.satseg"
    net = _clusternet_file(path)
    model, feedback = seeded(21, arch=arch), RecordingFeedback()
    origin = init_from_model_file(model, str(path), ENCODER, 3, "a test model", feedback)
    state = model.encoder.state_dict()
    source = net.backbone.encoder.state_dict()
    assert all(torch.equal(state[k], source[k]) for k in state)
    assert origin["init"] == "clusternet" and origin["tensors"] == len(state)
    assert any(f"{len(state)} tensors taken" in m for m in feedback.infos)


def test_clusternet_of_another_encoder_or_bands_is_refused(tmp_path):
    path = tmp_path / "clusters.satseg"
    _clusternet_file(path)
    with pytest.raises(InputError, match="ClusterNet with encoder resnet18.*set ENCODER to resnet18") as err:
        init_from_model_file(seeded(22, encoder="resnet34"), str(path), "resnet34", 3, "x")
    assert err.value.parameter == "INIT_WEIGHTS"
    with pytest.raises(InputError, match="reads 3 band"):
        init_from_model_file(seeded(22, bands=4), str(path), ENCODER, 4, "x")


def test_scene_classifier_encoder_transfers(tmp_path):
    torch.manual_seed(30)
    scene = build_scene_model(3)
    meta = ModelMetadata(kind="scene", architecture=SCENE_ARCHITECTURE, encoder="torchvision", in_channels=3,
                         classes=["urban", "rural", "none"], bands=[1, 2, 3], mean=[0.0] * 3, std=[1.0] * 3,
                         patch_size=64, pixel_size=(1.0, 1.0))
    path = str(tmp_path / "scene.satseg")
    save_checkpoint(path, model_tensors(scene), meta)
    model = seeded(31)
    assert init_from_model_file(model, path, ENCODER, 3, "x")["init"] == "scene"
    expected = scene.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.encoder.state_dict().items())
    with pytest.raises(InputError, match="set ENCODER to resnet18"):
        init_from_model_file(seeded(31, encoder="mobilenet_v2"), path, "mobilenet_v2", 3, "x")


def test_origin_entry_is_checked_in_model_files():
    meta = ModelMetadata(kind="segmentation", architecture="unet", encoder=ENCODER, in_channels=1, classes=["b"],
                         bands=[1], mean=[0.0], std=[1.0], patch_size=64, pixel_size=(1.0, 1.0),
                         extra={"init": {"init": "imagenet", "file": "x.safetensors", "sha256": "ab"}})
    assert check_metadata(meta.to_dict())["extra"]["init"]["init"] == "imagenet"
    bad = dict(meta.to_dict(), extra={"init": "imagenet"})
    with pytest.raises(HeaderError, match="extra.init must be a JSON object"):
        check_metadata(bad)


def test_satseg_offline_forbids_every_request(tmp_path, server, monkeypatch):
    asked, _data = server
    monkeypatch.setenv(cache.OFFLINE_ENV, "1")
    cache.reachable.cache_clear()
    assert not cache.reachable("https://example.invalid/w.safetensors")
    with pytest.raises(cache.DownloadError, match="SATSEG_OFFLINE"):
        cache.download("https://example.invalid/w.safetensors", str(tmp_path / "w.safetensors"))
    assert asked == [] and not os.path.exists(tmp_path / "w.safetensors")
