"""WindowAE: the window autoencoder of the population-communities pipeline (shapes, layers, gradients, errors)."""

import pytest

torch = pytest.importorskip("torch")

from satseg_plugin.core.errors import InputError
from satseg_plugin.models.nets.window_ae import WindowAE


def linear_sizes(module):
    return [(layer.in_features, layer.out_features) for layer in module if isinstance(layer, torch.nn.Linear)]


def test_default_layers_are_the_original_128_64_16_and_back_to_147():
    model = WindowAE()
    assert linear_sizes(model.encoder) == [(245, 128), (128, 64), (64, 16)]
    assert linear_sizes(model.decoder) == [(16, 64), (64, 128), (128, 147)]


@pytest.mark.parametrize("window,in_channels,out_channels,latent,hidden", [(7, 5, 3, 16, (128, 64)),
                                                                           (5, 4, 1, 8, (32,)),
                                                                           (3, 2, 2, 2, (16, 8, 4))])
def test_shapes_of_codes_and_reconstructions(window, in_channels, out_channels, latent, hidden):
    torch.manual_seed(0)
    model = WindowAE(window, in_channels, out_channels, latent, hidden)
    x = torch.rand(6, in_channels, window, window)
    with torch.no_grad():
        code = model.encode(x)
        out = model(x)
    assert code.shape == (6, latent)
    assert out.shape == (6, out_channels, window, window)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0  # sigmoid: targets are min-max normalised
    with torch.no_grad():
        torch.testing.assert_close(model.decode(code), out)


def test_every_parameter_gets_a_gradient_and_a_step_lowers_the_loss():
    torch.manual_seed(1)
    model = WindowAE()
    x = torch.rand(32, 5, 7, 7)
    loss = torch.nn.functional.mse_loss(model(x), x[:, :3])
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and float(parameter.grad.abs().sum()) > 0, name
    # windows that vary along two factors only: a few Adam steps must reconstruct them much better than
    # predicting their mean window does
    factors = torch.rand(64, 2, 1, 1, 1)
    patterns = torch.rand(2, 5, 7, 7)
    x = 0.5 * (factors[:, 0] * patterns[0] + factors[:, 1] * patterns[1])
    baseline = float(((x[:, :3] - x[:, :3].mean(dim=0)) ** 2).mean())
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        optimiser.zero_grad()
        step_loss = torch.nn.functional.mse_loss(model(x), x[:, :3])
        step_loss.backward()
        optimiser.step()
    with torch.no_grad():
        assert float(torch.nn.functional.mse_loss(model(x), x[:, :3])) < 0.2 * baseline


def test_the_code_of_a_window_does_not_depend_on_the_rest_of_the_batch():
    torch.manual_seed(2)
    model = WindowAE().eval()
    x = torch.rand(10, 5, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x[3:4]), model.encode(x)[3:4], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs,parameter", [({"window": 6}, "WINDOW"), ({"window": 1}, "WINDOW"),
                                              ({"latent": 0}, "LATENT")])
def test_bad_sizes_name_the_parameter(kwargs, parameter):
    with pytest.raises(InputError, match=f"^{parameter}: "):
        WindowAE(**kwargs)


def test_more_reconstructed_than_input_channels_is_refused():
    with pytest.raises(InputError, match="out_channels"):
        WindowAE(in_channels=3, out_channels=4)


def test_windows_of_the_wrong_shape_are_refused_with_the_expected_shape():
    model = WindowAE()
    with pytest.raises(InputError, match=r"\(N, 5, 7, 7\)"):
        model.encode(torch.rand(2, 5, 5, 5))
    with pytest.raises(InputError, match=r"\(N, 5, 7, 7\)"):
        model(torch.rand(5, 7, 7))
