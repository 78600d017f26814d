"""ClusterNet network: size-keeping features, the re-initialisable head, and model-file round trips."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors.torch")
pytest.importorskip("segmentation_models_pytorch")

from satseg_plugin.core.errors import CheckpointError
from satseg_plugin.models.checkpoint import Checkpoint, ModelMetadata, load_checkpoint, model_tensors, save_checkpoint
from satseg_plugin.models.nets.clusternet import build_clusternet, clusternet_from_checkpoint

C, D, K = 3, 8, 4


def metadata(**changes) -> ModelMetadata:
    values = {"kind": "clusternet", "architecture": "unet", "encoder": "resnet18", "in_channels": C,
              "classes": [f"cluster {i}" for i in range(1, K + 1)], "bands": [1, 2, 3], "mean": [10.0, 20.0, 30.0],
              "std": [1.0, 2.0, 3.0], "patch_size": 64, "pixel_size": (0.5, 0.5), "extra": {"feature_dim": D}}
    values.update(changes)
    return ModelMetadata(**values)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = build_clusternet("unet", "resnet18", C, D, K)
    with torch.no_grad():  # move the BatchNorm running statistics away from their initial values
        model.train()(torch.randn(2, C, 64, 64))
    return model.eval()


@pytest.mark.parametrize("shape", [(2, C, 64, 64), (1, C, 64, 96)])
def test_features_and_logits_keep_the_input_size(net, shape):
    x = torch.randn(*shape)
    with torch.no_grad():
        feats = net.features(x)
        logits = net(x)
    n, _, h, w = shape
    assert tuple(feats.shape) == (n, D + C, h, w)
    assert tuple(logits.shape) == (n, K, h, w)
    # the last C channels are the pixel's own (normalised) bands, weighted by sqrt(D / C)
    torch.testing.assert_close(feats[:, D:], x * (D / C) ** 0.5)
    # the logits are the 1x1 head applied to the features
    torch.testing.assert_close(logits, net.head(feats))
    assert (net.feature_dim, net.num_clusters) == (D, K)


def test_reset_head_draws_new_seeded_weights():
    torch.manual_seed(0)
    model = build_clusternet("unet", "resnet18", C, D, K)
    with torch.no_grad():
        model.head.bias.fill_(1.0)
    before = model.head.weight.detach().clone()
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}

    model.reset_head(torch.Generator().manual_seed(7))
    first = model.head.weight.detach().clone()
    assert not torch.equal(first, before)
    assert torch.equal(model.head.bias, torch.zeros(K))
    bound = 1.0 / (D + C) ** 0.5
    assert first.abs().max() <= bound and first.abs().max() > bound / 2
    assert all(torch.equal(v, backbone[k]) for k, v in model.backbone.state_dict().items())

    model.reset_head(torch.Generator().manual_seed(7))
    assert torch.equal(model.head.weight, first)  # same seed, same weights
    model.reset_head(torch.Generator().manual_seed(8))
    assert not torch.equal(model.head.weight, first)


def test_save_load_round_trip_gives_identical_features(net, tmp_path):
    centroids = torch.randn(K, D + C)
    path = str(tmp_path / "cn.satseg")
    save_checkpoint(path, model_tensors(net, {"centroids": centroids}), metadata())
    ckpt = load_checkpoint(path, kind="clusternet")
    assert torch.equal(ckpt.extras["centroids"], centroids)
    rebuilt = clusternet_from_checkpoint(ckpt)
    assert not rebuilt.training
    state = net.state_dict()
    assert set(rebuilt.state_dict()) == set(state)
    assert all(torch.equal(rebuilt.state_dict()[k], state[k]) for k in state)
    x = torch.randn(2, C, 64, 64)
    with torch.no_grad():
        assert torch.equal(rebuilt.features(x), net.features(x))
        assert torch.equal(rebuilt(x), net(x))


def test_weights_that_do_not_fit_raise_checkpoint_error(net, tmp_path):
    # the file says 16 features, the weights were made for 8
    path = str(tmp_path / "wrong.satseg")
    save_checkpoint(path, model_tensors(net), metadata(extra={"feature_dim": 16}))
    with pytest.raises(CheckpointError, match="do not fit its ClusterNet.*of another shape"):
        clusternet_from_checkpoint(load_checkpoint(path))

    # one tensor missing
    state = dict(net.state_dict())
    del state["head.bias"]
    with pytest.raises(CheckpointError, match="missing.*head.bias"):
        clusternet_from_checkpoint(Checkpoint(metadata(), state))

    # more clusters in the metadata than the head has outputs
    with pytest.raises(CheckpointError, match="head.weight"):
        clusternet_from_checkpoint(Checkpoint(metadata(classes=["a", "b", "c", "d", "e"]), dict(net.state_dict())))


def test_unbuildable_network_raises_checkpoint_error(net):
    with pytest.raises(CheckpointError, match="cannot build"):
        clusternet_from_checkpoint(Checkpoint(metadata(encoder="no-such-encoder"), dict(net.state_dict())))
    with pytest.raises(CheckpointError, match="cannot build"):
        clusternet_from_checkpoint(Checkpoint(metadata(extra={}), dict(net.state_dict())))  # no feature_dim


def test_features_are_deterministic_in_eval_mode(net):
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, C, 64, 64)).astype(np.float32))
    with torch.no_grad():
        a = net.features(x)
        b = net.features(torch.cat([x, torch.zeros_like(x)]))[:1]  # batch-independent (eval BatchNorm)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
