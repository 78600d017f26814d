"""bench_quality.py's ``--via qgis-process`` step: the issue's protocol as a user runs it, through ``qgis_process``.

For one :class:`~quality_runs.Split`: ``satseg:trainsegmentation`` with only the inputs and outputs given (the
raster, the labels touching the training part, that part as AOI, the model file, the training log, DEVICE = cpu;
every setting at its default), then ``satseg:segmentraster`` on the test part (EXTENT = its bounds, defaults
otherwise) and ``satseg:evaluatesegmentation`` against all labels inside the test part (AOI = the test part).
Each step is one ``qgis_process.bin --json run`` call, timed from start to exit (QGIS's start included), its
outputs read from the JSON it prints and its whole output kept in ``<out>/<step>.log``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sysconfig
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from harness import REPO_ROOT, log
from quality_runs import QUICK_BATCHES, QUICK_EPOCHS, SCORES, Split

from satseg_plugin.core.cache import WEIGHTS_DIR_ENV, weights_dir

__all__ = ["BUDGET_S", "QgisProcess", "write_split_layers", "train_and_score_qgis"]

#: The issue's budget for train + segment + evaluate through qgis_process on the CPU.
BUDGET_S = 15 * 60
#: Index of ``cpu`` in the DEVICE enum of every SatSeg algorithm (auto, cpu, cuda).
DEVICE_CPU = 1
#: ``--quick``: the only settings changed from the defaults (a smoke run that proves the plumbing).
QUICK_SETTINGS = {"EPOCHS": QUICK_EPOCHS, "BATCHES_PER_EPOCH": QUICK_BATCHES}
#: evaluatesegmentation's outputs -> the keys of :data:`quality_runs.SCORES`.
SCORE_OUTPUTS = {"DICE": "dice", "IOU": "iou", "TILE_DICE": "tile_dice", "OBJECT_F1": "object_f1",
                 "OBJECT_PRECISION": "object_precision", "OBJECT_RECALL": "object_recall"}


class QgisProcess:
    """``qgis_process.bin`` with SatSeg enabled from this checkout, in a throwaway HOME (QGIS profile).

    The plugin is found through ``QGIS_PLUGINPATH`` = the repository, the venv's packages through
    ``PYTHONPATH``; pretrained weights come from the same cache as the engine runs (``$SATSEG_WEIGHTS_DIR`` set
    to :func:`~satseg_plugin.core.cache.weights_dir`), not from the throwaway profile.

    Raises:
        FileNotFoundError: ``qgis_process.bin`` is not installed (``make install`` installs QGIS).
    """

    def __init__(self, home: Optional[str] = None) -> None:
        self.exe = shutil.which("qgis_process.bin") or "/usr/lib/qgis/qgis_process.bin"
        if not os.path.exists(self.exe):
            raise FileNotFoundError("qgis_process.bin not found: install QGIS (make install) to use --via "
                                    "qgis-process, or leave --via at its default (engine)")
        self.home = home or tempfile.mkdtemp(prefix="satseg-bench-qgis-")
        site = sysconfig.get_paths()["purelib"]
        self.env = dict(os.environ, HOME=self.home, XDG_RUNTIME_DIR=self.home, QGIS_PLUGINPATH=REPO_ROOT,
                        QT_QPA_PLATFORM="offscreen", QGIS_OPTS="",
                        PYTHONPATH=os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH", "")) if p))
        self.env.setdefault(WEIGHTS_DIR_ENV, weights_dir())
        self.call(["plugins", "enable", "satseg_plugin"], os.path.join(self.home, "enable.log"))

    def call(self, args: Sequence[str], log_path: str, timeout: float = 3 * 3600) -> Tuple[str, float]:
        """Run ``qgis_process.bin ARGS``; its output (also written to ``log_path``) and wall seconds.

        Raises:
            RuntimeError: a non-zero exit (the message ends with the output's tail).
        """
        started = time.perf_counter()
        proc = subprocess.run([self.exe, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        seconds = time.perf_counter() - started
        output = proc.stdout + ("\n--- stderr ---\n" + proc.stderr if proc.stderr.strip() else "")
        with open(log_path, "w", encoding="utf-8") as handle:
            handle.write(output)
        if proc.returncode != 0:
            raise RuntimeError(f"qgis_process {' '.join(args[:3])} failed ({proc.returncode}); full output in "
                               f"{log_path}:\n{output[-2000:]}")
        return proc.stdout, seconds

    def run(self, algorithm: str, params: Dict[str, Any], log_path: str) -> Tuple[Dict[str, Any], str, float]:
        """``qgis_process.bin --json run ALGORITHM -- KEY=VALUE...``: its results, its log text and wall seconds."""
        args = ["--json", "run", algorithm, "--", *(f"{k}={v}" for k, v in params.items())]
        stdout, seconds = self.call(args, log_path)
        doc = json.loads(stdout[stdout.index("{"):])  # log lines may come before the JSON document
        return doc.get("results", {}), _log_lines(doc.get("log")) + stdout[:stdout.index("{")], seconds


def _log_lines(entry: Any) -> str:
    """The ``log`` of qgis_process's JSON (text, a list, or lists per level) as lines of text."""
    if isinstance(entry, dict):
        return "".join(_log_lines(v) for v in entry.values())
    if isinstance(entry, list):
        return "".join(f"{line}\n" for line in entry)
    return f"{entry}\n" if entry else ""


def _weights(log_text: str) -> str:
    """What the training log says about the encoder's initial weights, in a few words (``random``, ...)."""
    for line in log_text.splitlines():
        for key in ("Encoder weights: ", "Encoder initialised from "):
            if key in line:
                said = line[line.index(key) + len(key):].split(" (")[0].rstrip(".")
                return said if key.startswith("Encoder weights") else f"from {said}"
    return "not in the log"


def write_split_layers(split: Split, folder: str) -> Tuple[Dict[str, str], int]:
    """The split as the files the algorithms read, and how many polygons the training labels hold.

    Returns:
        Paths ``train_labels``, ``train_aoi``, ``test_aoi`` and ``labels``: the training labels are the polygons
        that touch the training part (as the engine mode hands the engine); ``labels`` (every polygon, scored
        inside the test AOI) is the dataset's own file when it has one.
    """
    import rasterio

    from sample_data.common import write_polygon_gpkg

    with rasterio.open(split.source) as src:
        crs_wkt = src.crs.to_wkt()
    os.makedirs(folder, exist_ok=True)
    paths = {name: os.path.join(folder, f"{name}.gpkg") for name in ("train_labels", "train_aoi", "test_aoi")}
    inside = [p for p in split.polygons if p.intersects(split.train_aoi)]
    write_polygon_gpkg(paths["train_labels"], "labels", crs_wkt, [], [(i, p, []) for i, p in enumerate(inside, 1)])
    write_polygon_gpkg(paths["train_aoi"], "aoi", crs_wkt, [], [(1, split.train_aoi, [])])
    write_polygon_gpkg(paths["test_aoi"], "aoi", crs_wkt, [], [(1, split.test_aoi, [])])
    own = split.info.get("labels")
    if own and os.path.exists(os.path.join(os.path.dirname(split.source), own)):
        paths["labels"] = os.path.join(os.path.dirname(split.source), own)
    else:
        paths["labels"] = os.path.join(folder, "labels.gpkg")
        write_polygon_gpkg(paths["labels"], "labels", crs_wkt, [],
                           [(i, p, []) for i, p in enumerate(split.polygons, 1)])
    return paths, len(inside)


def _history(log_csv: str) -> List[Dict[str, float]]:
    """The training log's rows with a validation Dice (the validation curve), as numbers."""
    if not os.path.exists(log_csv):
        return []
    with open(log_csv, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: float(v) for k, v in row.items() if v not in (None, "")} for row in rows if row.get("val_dice")]


def _extent(bounds: Sequence[float], crs_authid: str) -> str:
    """An EXTENT value as qgis_process reads it: ``xmin,xmax,ymin,ymax [CRS]`` (no CRS: the layer's own)."""
    xmin, ymin, xmax, ymax = bounds
    return f"{xmin!r},{xmax!r},{ymin!r},{ymax!r}" + (f" [{crs_authid}]" if crs_authid else "")


def train_and_score_qgis(split: Split, out: str, runner: QgisProcess, quick: bool = False) -> Dict[str, Any]:
    """Train with the algorithm's defaults on the training part, segment the test part, score it; all via qgis_process.

    Args:
        split: the image and its parts.
        out: scratch folder for the layers, the model, the logs and the predicted rasters.
        runner: the qgis_process to call.
        quick: a smoke run (:data:`QUICK_SETTINGS`): proves the plumbing, measures nothing.

    Returns:
        The keys of :func:`quality_runs.train_and_score` (training time, epochs, best epoch, validation Dice,
        history, test scores) plus ``segment_s``, ``evaluate_s``, ``wall_s`` (the three calls), ``within_budget``
        (``wall_s`` <= :data:`BUDGET_S`) and ``weights`` (the training log's line on the encoder weights).
    """
    layers, train_labels = write_split_layers(split, os.path.join(out, "layers"))
    model, log_csv = os.path.join(out, "model.satseg"), os.path.join(out, "training_log.csv")
    train = {"INPUT": split.source, "LABELS": layers["train_labels"], "AOI": layers["train_aoi"],
             "DEVICE": DEVICE_CPU, "OUTPUT_MODEL": model, "OUTPUT_LOG": log_csv, **(QUICK_SETTINGS if quick else {})}
    log("  qgis_process run satseg:trainsegmentation (defaults" + (", --quick" if quick else "") + ")")
    trained, train_log, train_s = runner.run("satseg:trainsegmentation", train, os.path.join(out, "train.log"))
    crs = str(split.info.get("crs", ""))
    epsg = crs if split.info.get("georeferenced") and crs.startswith("EPSG:") else ""
    segment = {"INPUT": split.source, "MODELS": model, "EXTENT": _extent(split.test_aoi.bounds, epsg),
               "DEVICE": DEVICE_CPU, "OUTPUT_PROBABILITY": os.path.join(out, "prob.tif"),
               "OUTPUT_MASK": os.path.join(out, "mask.tif"), "OUTPUT_POLYGONS": os.path.join(out, "polygons.gpkg")}
    log("  qgis_process run satseg:segmentraster (test part)")
    segmented, _, segment_s = runner.run("satseg:segmentraster", segment, os.path.join(out, "segment.log"))
    evaluate = {"PREDICTION": segmented.get("OUTPUT_MASK") or segment["OUTPUT_MASK"],
                "REFERENCE_POLYGONS": layers["labels"], "AOI": layers["test_aoi"]}
    log("  qgis_process run satseg:evaluatesegmentation (test part)")
    scored, _, evaluate_s = runner.run("satseg:evaluatesegmentation", evaluate, os.path.join(out, "evaluate.log"))
    wall = train_s + segment_s + evaluate_s
    log(f"  times: train {train_s:.0f} s, segment {segment_s:.0f} s, evaluate {evaluate_s:.0f} s")
    scores = {SCORE_OUTPUTS[k]: float(v) for k, v in scored.items() if k in SCORE_OUTPUTS}
    return {"train_s": train_s, "segment_s": segment_s, "evaluate_s": evaluate_s, "wall_s": wall,
            "within_budget": wall <= BUDGET_S, "epochs": int(trained.get("EPOCHS_RUN", 0)),
            "best_epoch": int(trained.get("BEST_EPOCH", 0)), "val_dice": float(trained.get("BEST_DICE", 0.0)),
            "history": _history(log_csv), "train_labels": train_labels,
            "weights": _weights(train_log),
            **{k: scores[k] for k in SCORES if k in scores}}
