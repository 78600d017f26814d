"""WindowAE: a small fully connected autoencoder of ``w x w`` windows, whose bottleneck is a per-pixel code.

Used by ``satseg:populationclusters``: a window of ``in_channels`` normalised channels (population, flow u, flow v
and two position channels) around a pixel is flattened, encoded to ``latent`` numbers, and decoded back to the
window of the first ``out_channels`` channels (the position channels are given, not reconstructed). The code of
the window centred on a pixel is that pixel's feature vector for k-means.

The layer sizes follow the original study (Dense 128-64-16 and back 64-128-147 for a 7 x 7 window of 3
reconstructed channels). Hidden layers use ReLU; the code layer is linear (a ReLU there can switch code
dimensions off for every pixel, which only leaves k-means fewer dimensions); the output is a sigmoid, because
the targets are min-max normalised to ``[0, 1]``.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

from ...core.errors import InputError

__all__ = ["WindowAE"]


class WindowAE(nn.Module):
    """MLP autoencoder of ``(in_channels, window, window)`` windows.

    Args:
        window: window side ``w`` in pixels (odd, >= 3, so the window has a centre pixel).
        in_channels: channels of the input window ``C_in``.
        out_channels: leading channels reconstructed ``C_out`` (``1 <= C_out <= C_in``).
        latent: size of the code ``D``.
        hidden: widths of the encoder's hidden layers; the decoder mirrors them.

    Raises:
        InputError: on a bad size.
    """

    def __init__(self, window: int = 7, in_channels: int = 5, out_channels: int = 3, latent: int = 16,
                 hidden: Sequence[int] = (128, 64)) -> None:
        super().__init__()
        if window < 3 or window % 2 == 0:
            raise InputError(f"the window must be an odd number of pixels, at least 3; got {window}.", "WINDOW")
        if latent < 1:
            raise InputError(f"the code must have at least 1 dimension, got {latent}.", "LATENT")
        if not 1 <= out_channels <= in_channels:
            raise InputError(f"out_channels must lie in 1..in_channels = {in_channels}, got {out_channels}.")
        if any(int(h) < 1 for h in hidden):
            raise InputError(f"hidden layer widths must be positive, got {tuple(hidden)}.")
        self.window, self.in_channels, self.out_channels, self.latent = int(window), in_channels, out_channels, latent
        self.hidden: Tuple[int, ...] = tuple(int(h) for h in hidden)
        sizes_in = [in_channels * window * window, *self.hidden]
        encoder: list = []
        for a, b in zip(sizes_in[:-1], sizes_in[1:]):
            encoder += [nn.Linear(a, b), nn.ReLU()]
        encoder.append(nn.Linear(sizes_in[-1], latent))
        self.encoder = nn.Sequential(*encoder)
        sizes_out = [latent, *reversed(self.hidden)]
        decoder: list = []
        for a, b in zip(sizes_out[:-1], sizes_out[1:]):
            decoder += [nn.Linear(a, b), nn.ReLU()]
        decoder += [nn.Linear(sizes_out[-1], out_channels * window * window), nn.Sigmoid()]
        self.decoder = nn.Sequential(*decoder)

    def _check(self, x: torch.Tensor) -> None:
        expected = (self.in_channels, self.window, self.window)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise InputError(f"WindowAE expects windows of shape (N, {expected[0]}, {expected[1]}, {expected[2]}), "
                             f"got {tuple(x.shape)}.")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of windows.

        Args:
            x: ``(N, C_in, w, w)`` windows.

        Returns:
            ``(N, D)`` codes.
        """
        self._check(x)
        return self.encoder(x.flatten(1))

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Reconstructions from codes.

        Args:
            code: ``(N, D)`` codes.

        Returns:
            ``(N, C_out, w, w)`` reconstructed windows in ``[0, 1]``.
        """
        return self.decoder(code).view(code.shape[0], self.out_channels, self.window, self.window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct the first ``C_out`` channels of windows.

        Args:
            x: ``(N, C_in, w, w)`` windows.

        Returns:
            ``(N, C_out, w, w)`` reconstructions in ``[0, 1]``.
        """
        return self.decode(self.encode(x))
