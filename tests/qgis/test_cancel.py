"""Cancel is prompt: a run canceled through its Processing feedback (as the toolbox's Cancel button does) returns
within 2 s of the cancel, says "Canceled", and keeps what it promises (segmentraster: nothing written; trainsegmentation:
the best model so far)."""

from __future__ import annotations

import os
import time

import pytest
from qgis.core import QgsProcessingException, QgsProcessingFeedback

from sample_data.generate import generate_scene
from tests.qgis.conftest import train_on_scene

pytest.importorskip("segmentation_models_pytorch")
pytestmark = pytest.mark.slow

#: The most seconds a run may take to end after its feedback was canceled.
PROMPT = 2.0
TRAIN = {"ENCODER": "resnet18", "ENCODER_WEIGHTS": 1, "PATCH_SIZE": 64, "BATCH_SIZE": 2, "DEVICE": 1}


class CancelAfter(QgsProcessingFeedback):
    """Cancels at its ``calls``-th progress report after a log line starting with ``after`` (from the start when
    empty), as the toolbox's Cancel button does (``cancel()``), and notes when; keeps the run's log lines."""

    def __init__(self, calls: int, after: str = "") -> None:
        super().__init__()
        self.calls, self.after, self.seen, self.canceled_at = calls, after, 0, None
        self.armed = not after
        self.lines = []

    def setProgress(self, progress: float) -> None:
        super().setProgress(progress)
        self.seen += self.armed
        if self.armed and self.seen == self.calls and self.canceled_at is None:
            self.canceled_at = time.monotonic()
            self.cancel()

    def pushInfo(self, info: str) -> None:
        self.lines.append(info)
        self.armed = self.armed or info.startswith(self.after)

    def pushWarning(self, warning: str) -> None:
        self.lines.append(warning)

    def seconds_since_cancel(self) -> float:
        assert self.canceled_at is not None, f"the run ended before the cancel: {self.lines[-3:]}"
        return time.monotonic() - self.canceled_at


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(str(tmp_path_factory.mktemp("cancel_scene")), size=512, seed=11)


@pytest.fixture(scope="module")
def model(scene, tmp_path_factory, session_plugin):
    session_plugin.initProcessing()
    out = tmp_path_factory.mktemp("cancel_model")
    return train_on_scene(scene, dict(TRAIN, EPOCHS=1, BATCHES_PER_EPOCH=1),
                          OUTPUT_MODEL=str(out / "m.satseg"))["OUTPUT_MODEL"]


def test_segmentraster_cancel_returns_promptly_and_writes_nothing(run_alg, scene, model, tmp_path):
    feedback = CancelAfter(2)  # during the sweep: progress is reported per tile row
    params = {"INPUT": scene["scene"], "MODELS": [model], "TILE_SIZE": 64, "BATCH_SIZE": 2, "DEVICE": 1,
              "OUTPUT_PROBABILITY": str(tmp_path / "p.tif"), "OUTPUT_MASK": str(tmp_path / "m.tif"),
              "OUTPUT_POLYGONS": str(tmp_path / "b.gpkg")}
    with pytest.raises(QgsProcessingException, match="Canceled: previous outputs were left as they were"):
        run_alg("satseg:segmentraster", params, feedback=feedback)
    took = feedback.seconds_since_cancel()
    assert took < PROMPT, f"segmentraster took {took:.2f} s to stop after the cancel"
    assert os.listdir(tmp_path) == []


def test_trainsegmentation_cancel_keeps_the_best_model_promptly(run_alg, scene, tmp_path):
    batches = 3
    feedback = CancelAfter(2, after="Epoch 1 (")  # in the second epoch: the first epoch's model is kept
    result = run_alg("satseg:trainsegmentation", dict(
        TRAIN, INPUT=scene["scene"], LABELS=scene["buildings"] + "|layername=buildings", EPOCHS=50,
        BATCHES_PER_EPOCH=batches, OUTPUT_MODEL=str(tmp_path / "m.satseg"), OUTPUT_LOG=str(tmp_path / "log.csv"),
        OUTPUT_PLOT=str(tmp_path / "curves.png")), feedback=feedback)
    took = feedback.seconds_since_cancel()
    assert took < PROMPT, f"trainsegmentation took {took:.2f} s to stop after the cancel"
    assert result["EPOCHS_RUN"] == 1 and os.path.isfile(result["OUTPUT_MODEL"])
    assert any(line.startswith("Canceled during epoch 2") for line in feedback.lines), feedback.lines
    assert any(line.startswith("Canceled: the outputs written so far were kept.") and "Execution failed" in line
               for line in feedback.lines), feedback.lines
