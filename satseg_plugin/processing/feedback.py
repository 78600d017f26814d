"""Adapter from QGIS's ``QgsProcessingFeedback`` to the engine's progress/cancel protocol."""

from __future__ import annotations

from qgis.core import QgsProcessingFeedback

__all__ = ["QgisFeedback"]


class QgisFeedback:
    """Implements :class:`engine.progress.Feedback` over a Processing feedback object."""

    def __init__(self, feedback: QgsProcessingFeedback) -> None:
        self._feedback = feedback or QgsProcessingFeedback()

    def set_progress(self, percent: float) -> None:
        self._feedback.setProgress(percent)

    def is_canceled(self) -> bool:
        return self._feedback.isCanceled()

    def info(self, message: str) -> None:
        self._feedback.pushInfo(message)

    def warning(self, message: str) -> None:
        self._feedback.pushWarning(message)
