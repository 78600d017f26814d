"""An untrained U-Net saved as a SatSeg segmentation model file, for tests about the sweep (not the weights)."""

import os


def save_untrained_unet(folder: str, name: str = "m.satseg") -> str:
    """Write a seeded, untrained resnet18 U-Net (3 bands, one class ``building``) into ``folder``; its path."""
    import torch

    from satseg_plugin.models.checkpoint import ModelMetadata, model_tensors, save_checkpoint
    from satseg_plugin.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("unet", "resnet18", in_channels=3, classes=1).eval()
    meta = ModelMetadata(kind="segmentation", architecture="unet", encoder="resnet18", in_channels=3,
                         classes=["building"], bands=[1, 2, 3], mean=[100.0] * 3, std=[50.0] * 3, patch_size=64,
                         pixel_size=(0.5, 0.5), crs_units="metre")
    path = os.path.join(str(folder), name)
    save_checkpoint(path, model_tensors(model), meta)
    return path
