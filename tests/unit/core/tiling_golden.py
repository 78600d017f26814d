"""Recipe of the tiled-sweep golden outputs in ``tests/unit/data/tiling_golden.npz``.

The golden outputs were made with the two sweeps as they were before ``core/tiling`` (commit 776c07c:
``segment_raster``'s Hann sweep and ``cluster_raster``'s ramp sweep), by running this file from a checkout of
that commit::

    cd /tmp/golden && PYTHONPATH=/tmp/golden QT_QPA_PLATFORM=offscreen \\
        /work/main/.venv/bin/python /work/main/tests/unit/core/tiling_golden.py tests/unit/data/tiling_golden.npz

The npz keeps the input pixels, what the models are made of besides their seeded weights (threshold,
centroids, a digest of the weights) and the outputs; ``test_tiling`` rebuilds the models from the seeds and
runs today's code on the same inputs. The models are random (seeded) networks: the test is about where
tiles are cut, read, blended and written, not about what a trained model predicts.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Dict, Tuple

import numpy as np

SEG_SEED, CLUSTER_SEED = 11, 12
SIZE = (260, 300)  # (height, width): wider than two 128 px column bands
BAND_COLUMNS = 128  # the column band width both sweeps run with (today's default is 8192)
HOLE = (slice(100, 140), slice(90, 200))  # all bands 0: nodata where the raster says 0 is nodata
CORNER = (slice(0, 30), slice(250, 300))  # a second all-zero patch, at the raster's edge
FEATURE_DIM, K = 8, 5
GRID = dict(tile_size=64, overlap=16, batch_size=3)
EXTENT_PIXELS = (5.4, 7.2, 292.6, 251.5)  # (col0, row0, col1, row1): rounded outward to pixels 5..293 x 7..252
TRANSFORM = (0.5, 0.0, 500000.0, 0.0, -0.5, 5000000.0)


def make_pixels() -> np.ndarray:
    """The input ``(3, 260, 300)`` uint8: smooth fields plus seeded noise, 1..255 except the zero patches."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:SIZE[0], 0:SIZE[1]].astype(np.float64)
    bands = []
    for i in range(3):
        smooth = np.sin(x / (17.0 + 5 * i) + i) * np.cos(y / (23.0 - 4 * i)) + 0.5 * np.sin((x + y) / 41.0)
        bands.append(128 + 70 * smooth + rng.integers(-4, 5, SIZE))
    data = np.clip(np.stack(bands), 1, 255).astype(np.uint8)
    data[:, HOLE[0], HOLE[1]] = 0
    data[:, CORNER[0], CORNER[1]] = 0
    return data


def weights_digest(model) -> str:
    """sha256 of a network's state dict (key order), to tell whether a seeded build still gives the same weights."""
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def array_digest(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _metadata(kind: str, data: np.ndarray, classes, threshold: float, extra: Dict) -> object:
    from satseg_plugin.models.checkpoint import ModelMetadata

    valid = ~np.all(data == 0, axis=0)
    mean = [float(band[valid].mean()) for band in data]
    std = [float(band[valid].std()) for band in data]
    return ModelMetadata(kind=kind, architecture="unet", encoder="resnet18", in_channels=3, classes=list(classes),
                         bands=[1, 2, 3], mean=mean, std=std, patch_size=64, pixel_size=(0.5, 0.5),
                         crs_units="metre", threshold=threshold, extra=extra)


def build_segmentation(path: str, data: np.ndarray, threshold: float) -> Tuple[str, str]:
    """A seeded, untrained binary U-Net (resnet18) saved as a SatSeg model file; returns (path, digest)."""
    import torch

    from satseg_plugin.models.checkpoint import model_tensors, save_checkpoint
    from satseg_plugin.models.registry import build_model

    torch.manual_seed(SEG_SEED)
    model = build_model("unet", "resnet18", in_channels=3, classes=1).eval()
    save_checkpoint(path, model_tensors(model), _metadata("segmentation", data, ["thing"], threshold, {}))
    return path, weights_digest(model)


def build_clusternet(path: str, data: np.ndarray, centroids: np.ndarray) -> Tuple[str, str]:
    """A seeded, untrained ClusterNet with the given centroids saved as a model file; returns (path, digest)."""
    import torch

    from satseg_plugin.models.checkpoint import model_tensors, save_checkpoint
    from satseg_plugin.models.nets.clusternet import build_clusternet as build

    torch.manual_seed(CLUSTER_SEED)
    model = build("unet", "resnet18", 3, FEATURE_DIM, K).eval()
    extra = {"feature_dim": FEATURE_DIM, "band_share": 0.5, "normalize": True, "whiten": False, "input_multiple": 32}
    meta = _metadata("clusternet", data, [f"cluster {i}" for i in range(1, K + 1)], 0.5, extra)
    save_checkpoint(path, model_tensors(model, {"centroids": torch.from_numpy(centroids)}), meta)
    return path, weights_digest(model)


def write_input(folder: str, data: np.ndarray, nodata) -> str:
    """The input as a north-up GeoTIFF (EPSG:32633, 0.5 m pixels) with the given nodata value."""
    from affine import Affine

    from tests.conftest import write_raster

    name = "nodata0.tif" if nodata is not None else "plain.tif"
    return write_raster(os.path.join(folder, name), data, transform=Affine(*TRANSFORM), nodata=nodata)


def extent_and_mask():
    """The EXTENT bounds and the MASK polygon (map coordinates) every golden run uses."""
    from affine import Affine
    from shapely.geometry import Polygon

    t = Affine(*TRANSFORM)
    c0, r0, c1, r1 = EXTENT_PIXELS
    x0, y0 = t * (c0, r0)
    x1, y1 = t * (c1, r1)
    corners = [(20.0, 15.0), (280.0, 30.0), (260.0, 240.0), (150.0, 180.0), (30.0, 230.0)]
    return (x0, y1, x1, y0), Polygon([t * p for p in corners])


def _read(path: str) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read()


def run_sweeps(folder: str, data: np.ndarray, seg_model: str, cluster_model: str) -> Dict[str, np.ndarray]:
    """Segment and cluster the input (with and without a nodata value) with the installed satseg_plugin.

    Both sweeps run on 128 px column bands (so every run crosses band borders), an EXTENT inside the
    raster and a MASK polygon; the tiles are 64 px with 16 px overlap, three to a batch, on the CPU.
    """
    from satseg_plugin.pipelines.clustering.pixel import cluster_map
    from satseg_plugin.pipelines.clustering.pixel.cluster_map import ClusterMapConfig, cluster_raster
    from satseg_plugin.pipelines.segmentation import segment
    from satseg_plugin.pipelines.segmentation.segment import InferenceConfig, segment_raster

    bounds, mask = extent_and_mask()
    saved = segment.BAND_COLUMNS, cluster_map.CLUSTER_BAND_COLUMNS
    segment.BAND_COLUMNS = cluster_map.CLUSTER_BAND_COLUMNS = BAND_COLUMNS
    try:
        out: Dict[str, np.ndarray] = {}
        for nodata, suffix in ((0, "nodata0"), (None, "plain")):
            raster = write_input(folder, data, nodata)
            seg = segment_raster(raster, [seg_model], os.path.join(folder, f"p_{suffix}.tif"),
                                 os.path.join(folder, f"m_{suffix}.tif"),
                                 InferenceConfig(bounds=bounds, mask=mask, **GRID), "cpu")
            prob = _read(seg.probability_path)
            # the full probabilities of one run (the other's digest keeps the file small)
            out[f"seg_prob_{suffix}"] = prob if nodata is not None else np.array(array_digest(prob))
            out[f"seg_mask_{suffix}"] = _read(seg.mask_path)[0]
            out[f"seg_summary_{suffix}"] = np.array([*seg.window, seg.tiles, seg.positive_pixels], np.int64)
            clu = cluster_raster(raster, cluster_model, os.path.join(folder, f"c_{suffix}.tif"),
                                 ClusterMapConfig(bounds=bounds, mask=mask, **GRID), "cpu")
            out[f"cluster_ids_{suffix}"] = _read(clu.path)[0]
            out[f"cluster_summary_{suffix}"] = np.array([*clu.window, clu.tiles, *clu.pixel_counts], np.int64)
        return out
    finally:
        segment.BAND_COLUMNS, cluster_map.CLUSTER_BAND_COLUMNS = saved


def _make(path: str) -> None:  # pragma: no cover - run by hand on the old checkout
    import tempfile

    import torch

    torch.set_num_threads(1)
    data = make_pixels()
    with tempfile.TemporaryDirectory() as folder:
        # threshold: the median probability of the seeded network, so the mask has both classes
        seg_model, _ = build_segmentation(os.path.join(folder, "probe.satseg"), data, 0.5)
        from satseg_plugin.models.checkpoint import build_from_checkpoint, load_checkpoint

        ckpt = load_checkpoint(seg_model)
        net = build_from_checkpoint(ckpt).eval()
        meta = ckpt.metadata
        x = (data[:, :256, :256].astype(np.float32) - np.float32(meta.mean)[:, None, None]) \
            / np.float32(meta.std)[:, None, None]
        with torch.no_grad():
            probs = torch.sigmoid(net(torch.from_numpy(x[None]))).numpy()
        threshold = float(np.clip(np.median(probs), 0.02, 0.98))
        seg_model, seg_digest = build_segmentation(os.path.join(folder, "seg.satseg"), data, threshold)
        # centroids: the l2-normalised features of K fixed pixels of the seeded ClusterNet
        probe, _ = build_clusternet(os.path.join(folder, "probe_c.satseg"), data, np.eye(K, FEATURE_DIM + 3,
                                                                                          dtype=np.float32))
        from satseg_plugin.models.nets.clusternet import clusternet_from_checkpoint

        cnet = clusternet_from_checkpoint(load_checkpoint(probe)).eval()
        with torch.no_grad():
            feats = cnet.features(torch.from_numpy(x[None])).numpy()[0]
        picks = [(20, 30), (200, 40), (60, 220), (230, 230), (128, 64)]
        cents = np.stack([feats[:, r, c] for r, c in picks]).astype(np.float32)
        cents /= np.linalg.norm(cents, axis=1, keepdims=True)
        cluster_model, cluster_digest = build_clusternet(os.path.join(folder, "c.satseg"), data, cents)
        outputs = run_sweeps(folder, data, seg_model, cluster_model)
    np.savez_compressed(path, data=data, threshold=np.float64(threshold), centroids=cents,
                        seg_digest=np.array(seg_digest), cluster_digest=np.array(cluster_digest), **outputs)
    print(path, os.path.getsize(path), "bytes;", {k: v.shape for k, v in outputs.items()})


if __name__ == "__main__":  # pragma: no cover
    _make(sys.argv[1])
