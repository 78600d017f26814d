"""bench_quality.py's recipes and its one measured step: train on one part of an image, score the unseen rest.

The same step serves the synthetic sample scene (section ``quality``) and the real-imagery development set of
``scripts/fetch_devdata.py`` (section ``quality-real``): train through the engine
(:func:`train_segmentation` with the labels of the training part only, that part as the LabelSet AOI),
segment the held-out part (:func:`segment_raster`) and score it (:func:`evaluate_rasters`).
"""

from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from harness import REPO_ROOT, log

from satseg_plugin.core.labels import LabelSet
from satseg_plugin.core.progress import NullFeedback
from satseg_plugin.pipelines.segmentation.evaluate import evaluate_rasters
from satseg_plugin.pipelines.segmentation.segment import InferenceConfig, segment_raster
from satseg_plugin.pipelines.segmentation.train import TrainConfig, train_segmentation


@dataclass(frozen=True)
class Recipe:
    """A training recipe: its label in the tables and its ``TrainConfig`` settings that differ from the defaults.

    Attributes:
        label: the row's name in the tables.
        overrides: ``TrainConfig`` fields that differ from the defaults.
        bench_limits: train at most ``--epochs`` epochs with the bench's patience; False keeps ``TrainConfig``'s
            own epochs and patience (only ``--quick`` still caps the run).
    """

    label: str
    overrides: Dict[str, Any]
    bench_limits: bool = True


#: The recipes compared (``--recipe KEY``): ``TrainConfig()`` exactly as shipped (whatever its defaults are
#: today: what ``satseg:trainsegmentation`` runs when nothing is changed), the U-Net resnet34 of the first
#: measurements and the lighter settings of ``make demo``. Add a row to compare another recipe.
RECIPES: Dict[str, Recipe] = {
    "defaults": Recipe("defaults (TrainConfig() unchanged)", {}, bench_limits=False),
    "default": Recipe("U-Net resnet34 (other settings default)", dict(architecture="unet", encoder="resnet34")),
    "demo": Recipe("demo U-Net (resnet18, 128 px, batch 16, 10 batches/epoch)", dict(
        architecture="unet", encoder="resnet18", patch_size=128, batch_size=16, batches_per_epoch=10)),
}
#: Folder of the development set (``make devdata``).
DEVDATA_DIR = os.path.join(REPO_ROOT, "sample_data", "real")
#: Folder of the held-out tile (``make heldout``): scored, never tuned on.
HELDOUT_DIR = os.path.join(REPO_ROOT, "sample_data", "heldout")
#: Early-stopping patience of the recipes run with the bench's limits (``Recipe.bench_limits``).
BENCH_PATIENCE = 4
#: ``--quick``: at most this many epochs of at most this many batches (a smoke run, not a measurement).
QUICK_EPOCHS, QUICK_BATCHES = 2, 3
#: Scores copied from :meth:`EvaluationResult.metrics` into a run's summary.
SCORES = ("dice", "iou", "tile_dice", "object_f1", "object_precision", "object_recall")


class Log(NullFeedback):
    """Feedback that prints the engine's log lines, indented."""

    def info(self, message: str) -> None:
        print(f"    {message}", flush=True)

    def warning(self, message: str) -> None:
        print(f"    warning: {message}", flush=True)


@dataclass
class Split:
    """One image, its object polygons and the two parts: train (labels, AOI) and test (scored, never seen)."""

    name: str
    source: str
    polygons: List[Any]
    train_aoi: Any
    test_aoi: Any
    info: Dict[str, Any]


def load_devset(root: str = DEVDATA_DIR, names: Sequence[str] = (),
                fetch: str = "make devdata (scripts/fetch_devdata.py)") -> List[Split]:
    """The datasets written by ``scripts/fetch_devdata.py`` (or ``fetch_heldout.py``) under ``root``.

    Args:
        root: the folder holding ``<dataset>/dataset.json``.
        names: only these datasets (default all).
        fetch: the command that writes them, named in the error.

    Raises:
        FileNotFoundError: none there, or a named one missing (the message names ``fetch``).
    """
    from shapely.geometry import box

    from sample_data.common import read_polygon_layer

    paths = sorted(glob.glob(os.path.join(root, "*", "dataset.json")))
    splits = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            info = json.load(handle)
        if names and info["name"] not in names:
            continue
        folder = os.path.dirname(path)
        polygons = [geom for _, geom, _ in read_polygon_layer(os.path.join(folder, info["labels"]), info["layer"], ())]
        split = info["split"]
        splits.append(Split(info["name"], os.path.join(folder, info["image"]), polygons,
                            box(*split["train_bounds"]), box(*split["test_bounds"]), info))
    missing = set(names) - {s.name for s in splits}
    if not splits or missing:
        raise FileNotFoundError(f"no dataset{' ' + ', '.join(sorted(missing)) if missing else ''} under "
                                f"{root}: run {fetch} first")
    return splits


def train_and_score(split: Split, overrides: Dict[str, Any], epochs: Optional[int], out: str,
                    inference: InferenceConfig = InferenceConfig(), patience: Optional[int] = BENCH_PATIENCE) -> Dict[str, Any]:
    """Train with ``overrides`` on the training part, segment the test part, score it.

    Args:
        split: the image and its parts.
        overrides: ``TrainConfig`` settings that differ from the defaults (a row of :data:`RECIPES`).
        epochs: maximum epochs (early stopping after ``patience`` epochs without a better validation Dice);
            None keeps ``TrainConfig``'s, and so does a ``patience`` of None.
        out: scratch folder for the model, the training log and the predicted rasters.
        inference: inference settings; its ``bounds`` are set to the test part's.

    Returns:
        Training time (s), epochs run, best epoch, best validation Dice, the per-epoch history (the validation
        curve) and the test part's scores (:data:`SCORES`).
    """
    from dataclasses import replace

    inside = [p for p in split.polygons if p.intersects(split.train_aoi)]
    labels = LabelSet(inside, [1] * len(inside), aoi=split.train_aoi)
    os.makedirs(out, exist_ok=True)
    limits = {k: v for k, v in (("epochs", epochs), ("patience", patience)) if v is not None}
    started = time.time()
    result = train_segmentation(split.source, labels, os.path.join(out, "model.satseg"),
                                TrainConfig(**dict(overrides, **limits)), "cpu", Log(),
                                log_path=os.path.join(out, "training_log.csv"))
    trained = time.time() - started
    started = time.time()
    seg = segment_raster(split.source, [result.model_path], os.path.join(out, "prob.tif"),
                         os.path.join(out, "mask.tif"), replace(inference, bounds=split.test_aoi.bounds), "cpu")
    segmented = time.time() - started
    scores = evaluate_rasters(seg.mask_path, split.polygons, aoi=split.test_aoi).metrics()
    log("  scores on the test part: " + ", ".join(f"{k} {scores[k]:.3f}" for k in SCORES if k in scores))
    return {"train_s": trained, "segment_s": segmented, "epochs": result.epochs_run, "best_epoch": result.best_epoch,
            "val_dice": result.best_dice, "history": result.history, "train_labels": len(inside),
            **{k: scores[k] for k in SCORES if k in scores}}
