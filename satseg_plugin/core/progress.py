"""A small progress/cancel protocol between the engine and whoever runs it.

The engine never imports QGIS: it reports through any object with the four methods of
:class:`Feedback`. The Processing layer passes an adapter over ``QgsProcessingFeedback``; tests and
scripts pass :class:`NullFeedback` or :class:`RecordingFeedback`. Cancel is checked once per step in the
engine's shared loops (:func:`track`), never copied into each caller.
"""

from __future__ import annotations

from typing import Iterable, Iterator, List, Optional, Protocol, Sized, Tuple, TypeVar, runtime_checkable

from .errors import CanceledError

__all__ = ["Feedback", "NullFeedback", "RecordingFeedback", "SubFeedback", "track", "check_canceled"]

T = TypeVar("T")


@runtime_checkable
class Feedback(Protocol):
    """What the engine needs from a progress reporter."""

    def set_progress(self, percent: float) -> None:
        """Report overall progress in percent (0..100)."""

    def is_canceled(self) -> bool:
        """Return True once the user asked to stop."""

    def info(self, message: str) -> None:
        """Log an informational message."""

    def warning(self, message: str) -> None:
        """Log a warning the user should read."""


class NullFeedback:
    """Feedback that ignores reports and is never canceled."""

    def set_progress(self, percent: float) -> None:
        pass

    def is_canceled(self) -> bool:
        return False

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        pass


class RecordingFeedback(NullFeedback):
    """Feedback that records everything and can cancel itself after ``cancel_after`` progress reports.

    Args:
        cancel_after: cancel once this many progress reports were made (None: never).
    """

    def __init__(self, cancel_after: Optional[int] = None) -> None:
        self.progress: List[float] = []
        self.infos: List[str] = []
        self.warnings: List[str] = []
        self.cancel_after = cancel_after
        self.canceled = False

    def set_progress(self, percent: float) -> None:
        self.progress.append(percent)
        if self.cancel_after is not None and len(self.progress) >= self.cancel_after:
            self.canceled = True

    def is_canceled(self) -> bool:
        return self.canceled

    def info(self, message: str) -> None:
        self.infos.append(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)


class SubFeedback:
    """Maps a sub-task's 0..100 progress onto ``[start, end]`` of a parent feedback.

    Args:
        parent: the feedback to forward to.
        start: parent percent at the sub-task's 0 %.
        end: parent percent at the sub-task's 100 %.
    """

    def __init__(self, parent: Feedback, start: float, end: float) -> None:
        if not 0 <= start <= end <= 100:
            raise ValueError(f"SubFeedback range must satisfy 0 <= start <= end <= 100, got {start}, {end}")
        self.parent, self.start, self.end = parent, start, end

    def set_progress(self, percent: float) -> None:
        self.parent.set_progress(self.start + (self.end - self.start) * min(max(percent, 0.0), 100.0) / 100.0)

    def is_canceled(self) -> bool:
        return self.parent.is_canceled()

    def info(self, message: str) -> None:
        self.parent.info(message)

    def warning(self, message: str) -> None:
        self.parent.warning(message)


def check_canceled(feedback: Feedback) -> None:
    """Raise :class:`CanceledError` if the user asked to stop."""
    if feedback.is_canceled():
        raise CanceledError()


def track(items: Iterable[T], feedback: Feedback, total: Optional[int] = None,
          span: Tuple[float, float] = (0.0, 100.0)) -> Iterator[T]:
    """Iterate ``items``, checking cancel before each one and reporting progress after it.

    This is the one place the engine's loops check for cancel.

    Args:
        items: the work items.
        feedback: where progress goes and cancel comes from.
        total: number of items (taken from ``len(items)`` when omitted and available).
        span: the percent range of the parent progress these items cover.

    Yields:
        The items, in order.

    Raises:
        CanceledError: when the user cancels.
    """
    if total is None and isinstance(items, Sized):
        total = len(items)
    lo, hi = span
    done = 0
    for item in items:
        check_canceled(feedback)
        yield item
        done += 1
        if total:
            feedback.set_progress(lo + (hi - lo) * min(done / total, 1.0))
    check_canceled(feedback)
