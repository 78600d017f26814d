"""ClusterNet: a size-keeping encoder-decoder that gives every pixel a feature vector, plus a 1x1 cluster head.

The backbone is any registry architecture (an smp U-Net by default) built with ``classes = feature_dim``, so
its "logits" are per-pixel features on the input grid (same padding: no misregistration). The head maps
features to cluster scores and is re-initialised every DeepCluster round, when the clusters change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict

from ...core.deps import require
from ...core.errors import CheckpointError, InputError, SatSegError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..checkpoint import Checkpoint

__all__ = ["build_clusternet", "clusternet_from_checkpoint"]


def build_clusternet(architecture: str, encoder: str, in_channels: int, feature_dim: int, num_clusters: int,
                     band_share: float = 0.5, **kwargs: Any) -> "torch.nn.Module":
    """Build a randomly initialised ClusterNet.

    Args:
        architecture: registry architecture of the backbone (``unet``, ...).
        encoder: smp encoder name.
        in_channels: input bands C.
        feature_dim: per-pixel feature channels D.
        num_clusters: cluster head outputs K.
        band_share: share of the feature variance carried by the pixel's own bands (0: bands left out).
        **kwargs: passed to the backbone (``decoder_channels``, ``encoder_depth``).

    Returns:
        A module with ``features(x) -> (N, D, H, W)``, ``head`` (a 1x1 conv D -> K), ``reset_head()`` and
        ``forward(x) -> (N, K, H, W)`` cluster logits.
    """
    torch = require("torch")
    from ..registry import build_model

    backbone = build_model(architecture, encoder, in_channels=in_channels, classes=feature_dim, **kwargs)

    class ClusterNet(torch.nn.Module):
        """Backbone features, a batch norm on them, and a re-initialisable cluster head."""

        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            # normalised features keep k-means from being dominated by a few large channels
            self.norm = torch.nn.BatchNorm2d(feature_dim, affine=False)
            if not 0.0 <= band_share < 1.0:
                raise InputError(f"band_share must lie in [0, 1), got {band_share}.", "BAND_SHARE")
            # unit-variance channels: C bands x w² = band_share x (D + C bands x w²)
            self.band_weight = (band_share * feature_dim / ((1.0 - band_share) * in_channels)) ** 0.5
            self.head = torch.nn.Conv2d(feature_dim + in_channels, num_clusters, kernel_size=1)
            self.feature_dim, self.num_clusters = feature_dim, num_clusters

        def features(self, x: "torch.Tensor") -> "torch.Tensor":
            """``(N, D + C, H, W)``: the learned channels and the pixel's own normalised bands, the bands
            weighted to carry ``band_share`` of the variance (a pixel's colour is part of what it is
            clustered on)."""
            return torch.cat([self.norm(self.backbone(x)), x * self.band_weight], dim=1)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return self.head(self.features(x))

        def reset_head(self, generator: "torch.Generator" = None) -> None:
            """Fresh head weights (DeepCluster: the old head scores clusters that no longer exist).

            The weights are drawn on the CPU (from ``generator`` when given) and copied to the head's device:
            a CPU generator cannot draw into CUDA tensors, and the same seed gives the same head everywhere.
            """
            with torch.no_grad():
                bound = 1.0 / (feature_dim + in_channels) ** 0.5
                fresh = torch.empty(self.head.weight.shape).uniform_(-bound, bound, generator=generator)
                self.head.weight.copy_(fresh)
                self.head.bias.zero_()

    return ClusterNet()


def clusternet_from_checkpoint(ckpt: "Checkpoint") -> "torch.nn.Module":
    """Build the ClusterNet a ``clusternet`` checkpoint describes and load its weights strictly.

    Raises:
        CheckpointError: the network cannot be built here or the weights do not fit it.
    """
    from ..checkpoint import load_weights, model_label

    meta = ckpt.metadata
    name = model_label(ckpt.path)
    feature_dim = int(meta.extra.get("feature_dim", 0))
    kwargs: Dict[str, Any] = dict(meta.model_kwargs)
    try:
        model = build_clusternet(meta.architecture, meta.encoder, meta.in_channels, feature_dim,
                                 len(meta.classes), float(meta.extra.get("band_share", 0.5)), **kwargs)
    except (SatSegError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"'{name}' needs a {meta.architecture}/{meta.encoder} ClusterNet with "
                              f"{feature_dim} features, which this installation cannot build ({exc}). Update "
                              "the SatSeg plugin and segmentation-models-pytorch.", ckpt.path or None) from exc
    return load_weights(model, ckpt, "its ClusterNet")
