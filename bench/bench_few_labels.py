"""Few labels: which weights to keep when the validation blocks hold only a handful of objects.

A user with a few dozen polygons gets a validation set of a few blocks and a handful of objects, whose Dice jumps
from epoch to epoch. This benchmark trains the defaults (``TrainConfig()``, the time-fitted cosine schedule) on a
600 x 600 px area of interest of the Yellowstone development image holding ~30 tree crowns, once per AOI, with
early stopping off, and scores two sets of weights of that one run on the whole unseen east part: the epoch with
the best smoothed validation Dice (the rule for many validation objects) and the last epoch (what
``train.MIN_SELECTION_OBJECTS`` keeps when the validation blocks hold fewer objects). Needs ``make devdata``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import REPO_ROOT, add_common_args, command_line, host_info, log, new_parser, publish_section  # noqa: E402
from quality_runs import Log, load_devset  # noqa: E402

#: Areas of interest inside the training (west) part, in the image's pixel grid (x = column, y = -row), chosen
#: by counting crowns in 600 px windows: ~30 crowns each, as a user labelling one small area would draw.
AOIS = {"a": (250, -600, 850, 0), "b": (0, -1800, 600, -1200)}
SECTION = "few-labels"


def run_aoi(name: str, minutes: float, out_root: str) -> Dict[str, Any]:
    """Train on one AOI's crowns, score the best-smoothed and the last weights on the east part."""
    from shapely.geometry import box

    import satseg_plugin.pipelines.segmentation.train as training
    from satseg_plugin.core.labels import LabelSet
    from satseg_plugin.models.checkpoint import build_from_checkpoint, load_checkpoint, model_tensors, save_checkpoint
    from satseg_plugin.pipelines.segmentation.evaluate import evaluate_rasters
    from satseg_plugin.pipelines.segmentation.segment import InferenceConfig, segment_raster

    last: Dict[str, Any] = {}

    class Recording(training.BestModel):
        """Keeps what ``BestModel`` keeps, and also the latest epoch's weights."""

        def offer(self, score, model, epoch, **info):
            last["state"] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            last["info"] = dict(info, epoch=epoch)
            return super().offer(score, model, epoch, **info)

    split = load_devset(names=["neon-yell-crop2"])[0]
    aoi = box(*AOIS[name])
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    inside = [p for p in split.polygons if p.intersects(aoi)]
    log(f"AOI {name}: {len(inside)} crowns")
    saved = training.BestModel, training.MIN_SELECTION_OBJECTS
    training.BestModel, training.MIN_SELECTION_OBJECTS = Recording, 0  # pick by the smoothed Dice; record the last
    try:
        started = time.time()
        result = training.train_segmentation(split.source, LabelSet(inside, [1] * len(inside), aoi=aoi),
                                             os.path.join(out, "best.satseg"),
                                             training.TrainConfig(patience=10_000, max_minutes=minutes), "cpu", Log())
        train_s = time.time() - started
    finally:
        training.BestModel, training.MIN_SELECTION_OBJECTS = saved
    ckpt = load_checkpoint(result.model_path, kind="segmentation")
    model = build_from_checkpoint(ckpt)
    model.load_state_dict(last["state"])
    save_checkpoint(os.path.join(out, "last.satseg"), model_tensors(model),
                    dataclasses.replace(ckpt.metadata, threshold=float(last["info"]["threshold"])))
    row: Dict[str, Any] = {"aoi": name, "crowns": len(inside), "best_epoch": result.best_epoch,
                           "epochs": result.epochs_run, "train_s": train_s,
                           "val_objects": result.report.val_objects if result.report else None}
    for which in ("best", "last"):
        seg = segment_raster(split.source, [os.path.join(out, f"{which}.satseg")], os.path.join(out, f"{which}_p.tif"),
                             os.path.join(out, f"{which}_m.tif"), InferenceConfig(bounds=split.test_aoi.bounds), "cpu")
        scores = evaluate_rasters(seg.mask_path, split.polygons, aoi=split.test_aoi).metrics()
        row[which] = {k: float(scores[k]) for k in ("dice", "iou", "object_f1")}
    log(f"  {row}")
    return row


def section(rows: List[Dict[str, Any]], command: str, minutes: float) -> str:
    lines = ["## Segmentation with few labels: best smoothed epoch or last epoch", "",
             f"{time.strftime('%Y-%m-%d')}; {host_info()}; CPU only. Command: `{command}`.", "",
             f"Defaults (`TrainConfig()`, time limit {minutes:g} min, early stopping off) on the crowns of one "
             "600 px AOI of the Yellowstone image's training part; one run per AOI; both sets of weights of that "
             "run segment the whole unseen east 40 % and are scored there.", "",
             "| AOI | crowns | validation objects | epochs | best smoothed epoch | test Dice best / last | "
             "test IoU best / last | object F1 best / last | training (s) |",
             "|---|---:|---:|---:|---:|---|---|---|---:|"]
    for r in rows:
        b, last = r["best"], r["last"]
        lines.append(f"| {r['aoi']} {AOIS[r['aoi']]} | {r['crowns']} | {r['val_objects']} | {r['epochs']} | "
                     f"{r['best_epoch']} | {b['dice']:.3f} / **{last['dice']:.3f}** | {b['iou']:.3f} / "
                     f"{last['iou']:.3f} | {b['object_f1']:.3f} / {last['object_f1']:.3f} | {r['train_s']:.0f} |")
    lines += ["", "Verdict: with a handful of validation objects the smoothed validation Dice still picks an "
              "earlier, worse epoch; the end of the annealed schedule is kept below "
              "`MIN_SELECTION_OBJECTS` validation objects (pipelines/segmentation/train.py)."]
    return "\n".join(lines)


def main() -> int:
    parser = add_common_args(new_parser(__doc__), SECTION, out_dir=os.path.join(REPO_ROOT, "bench", "out",
                                                                                 "few-labels"))
    parser.add_argument("--minutes", type=float, default=10.0, help="training time limit per AOI (10, the default)")
    parser.add_argument("--aoi", action="append", choices=sorted(AOIS), help="only these AOIs (default all)")
    args = parser.parse_args()
    rows = [run_aoi(name, args.minutes, args.out_dir) for name in (args.aoi or sorted(AOIS))]
    publish_section(section(rows, command_line(__file__), args.minutes), SECTION, args.write_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
