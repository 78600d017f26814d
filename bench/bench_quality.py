"""Segmentation quality on the sample scene: train on the west half, score the unseen east half.

Runs the engine directly (no QGIS), with the default U-Net settings of ``satseg:trainsegmentation``
(resnet34 encoder, 224 px crops, batches of 32, focal + Dice, Adam 1e-3, StepLR) and, for comparison, the
lighter settings ``make demo`` uses. Reports wall time and the scores of ``satseg:evaluatesegmentation``.

    .venv/bin/python bench/bench_quality.py --write-results bench/RESULTS.md
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import tempfile
import time
from typing import Dict, List

import rasterio
from harness import REPO_ROOT, add_common_args, new_parser, write_section  # bench/ is the script folder
from shapely.geometry import box

from sample_data.generate import generate_scene, read_buildings
from satseg_plugin.core.labels import LabelSet
from satseg_plugin.core.progress import NullFeedback
from satseg_plugin.pipelines.segmentation.evaluate import evaluate_rasters
from satseg_plugin.pipelines.segmentation.segment import InferenceConfig, segment_raster
from satseg_plugin.pipelines.segmentation.train import TrainConfig, train_segmentation

CONFIGS = {
    "default U-Net (resnet34, 224 px, batch 32)": dict(architecture="unet", encoder="resnet34"),
    "demo U-Net (resnet18, 128 px, batch 16, 10 batches/epoch)": dict(
        architecture="unet", encoder="resnet18", patch_size=128, batch_size=16, batches_per_epoch=10),
}


class Log(NullFeedback):
    def info(self, message: str) -> None:
        print(f"    {message}", flush=True)


def run(name: str, overrides: Dict, epochs: int, scene: Dict[str, str], out: str) -> Dict[str, float]:
    """Train with ``overrides`` on the west half, predict everything, score the east half."""
    buildings = [b.polygon for b in read_buildings(scene["buildings"])]
    with rasterio.open(scene["scene"]) as src:
        b = src.bounds
    mid = (b.left + b.right) / 2
    west, east = box(b.left, b.bottom, mid, b.top), box(mid, b.bottom, b.right, b.top)
    labels = LabelSet(buildings, [1] * len(buildings), aoi=west)
    print(f"[quality] {name}", flush=True)
    started = time.time()
    result = train_segmentation(scene["scene"], labels, os.path.join(out, "m.satseg"),
                                TrainConfig(**dict(overrides, epochs=epochs, patience=4)), "cpu", Log())
    trained = time.time() - started
    seg = segment_raster(scene["scene"], [result.model_path], os.path.join(out, "p.tif"), os.path.join(out, "m.tif"),
                         InferenceConfig(tile_size=256), "cpu")
    scores = evaluate_rasters(seg.mask_path, buildings, aoi=east).metrics()
    return {"train_s": trained, "epochs": result.epochs_run, "best_epoch": result.best_epoch,
            "val_dice": result.best_dice, **{k: scores[k] for k in ("dice", "iou", "tile_dice", "object_f1")}}


def main(argv: List[str] = None) -> int:
    parser = new_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=12, help="maximum epochs (early stopping may end sooner)")
    add_common_args(parser, "quality", note=True)
    args = parser.parse_args(argv)
    scene = generate_scene(os.path.join(REPO_ROOT, "sample_data", "generated"), size=1024, seed=0)
    rows = []
    for name, overrides in CONFIGS.items():
        with tempfile.TemporaryDirectory() as out:
            rows.append((name, run(name, overrides, args.epochs, scene, out)))
            print(f"[quality] {rows[-1]}", flush=True)
    lines = ["## Segmentation quality on the sample scene", "",
             f"{datetime.date.today()}, {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
             "CPU only. Command: `.venv/bin/python bench/bench_quality.py --write-results bench/RESULTS.md` "
             f"(max {args.epochs} epochs, patience 4, seed 0).", "",
             "Labels and training only in the west half of the 1024 x 1024 px sample scene (AOI = west half, "
             "validation blocks held out inside it); the model then segments the whole scene and is scored on "
             "the east half, which it never saw, against the exact footprints.", "",
             "| settings | training time (s) | epochs (best) | validation Dice | east-half Dice | IoU | tile Dice (224) | per-building F1 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in rows:
        lines.append(f"| {name} | {r['train_s']:.0f} | {r['epochs']} ({r['best_epoch']}) | {r['val_dice']:.3f} | "
                     f"{r['dice']:.3f} | {r['iou']:.3f} | {r['tile_dice']:.3f} | {r['object_f1']:.3f} |")
    lines += ["", "The stored threshold is tuned on the validation blocks (0.20..0.80, best validation Dice at the "
              "best epoch), not on the east half."]
    if args.note:
        lines += ["", f"Note: {args.note}"]
    lines += ["", "Target: building Dice >= 0.85 with the default U-Net on CPU within a few minutes."]
    section = "\n".join(lines)
    print(section)
    if args.write_results:
        write_section(args.write_results, "quality", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
