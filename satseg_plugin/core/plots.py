"""PNG plots drawn with matplotlib's object API (``Figure`` + ``FigureCanvasAgg``), never ``pyplot``.

pyplot keeps global state (the current figure, the backend), which is not safe in the worker thread of a QGIS
task and would switch QGIS's own backend; a ``Figure`` with its own Agg canvas is independent of both. Files
are staged (:class:`.staging.StagedFile`): a failed plot leaves no half-written PNG.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Tuple

from .deps import require
from .staging import StagedFile

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["new_figure", "save_figure", "plot_training_curves"]

#: ``(history key, legend label, colour)`` of one curve.
Curve = Tuple[str, str, str]


def new_figure(width: float = 7.0, height: float = 4.0, dpi: int = 100) -> "Figure":
    """A matplotlib ``Figure`` with its own Agg canvas (no pyplot, safe off the GUI thread)."""
    require("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: "Figure", path: str, parameter: Optional[str] = "OUTPUT_PLOT") -> str:
    """Write ``figure`` as a PNG at ``path`` (staged); returns the absolute path."""
    staged = StagedFile(path, parameter=parameter, suffix=".png")
    with staged as tmp:
        figure.savefig(tmp, format="png")
        staged.commit()
    return os.path.abspath(path)


def plot_training_curves(path: str, history: Sequence[Mapping[str, Any]], left: Sequence[Curve], left_label: str,
                         right: Sequence[Curve] = (), right_label: str = "", right_limits: Optional[Tuple[float,
                         float]] = None, title: str = "SatSeg training", x_key: str = "epoch",
                         parameter: Optional[str] = "OUTPUT_PLOT") -> str:
    """Plot per-epoch values: curves on a left axis and, optionally, marked curves on a right one.

    Args:
        path: the PNG to write.
        history: one mapping per epoch (the CSV log's rows).
        left: the curves of the left axis (e.g. the losses).
        left_label: the left axis label.
        right: the curves of a second, right axis (e.g. a score), drawn with markers.
        right_label: the right axis label.
        right_limits: ``(low, high)`` of the right axis (None: automatic).
        title: the figure title.
        x_key: the history key on the x axis.
        parameter: the output parameter named in errors.

    Returns:
        The absolute path of the written PNG.
    """
    figure = new_figure()
    axes = figure.add_subplot(1, 1, 1)
    xs = [row[x_key] for row in history]
    for key, label, colour in left:
        axes.plot(xs, [row[key] for row in history], label=label, color=colour)
    axes.set_xlabel(x_key)
    axes.set_ylabel(left_label)
    handles, labels = axes.get_legend_handles_labels()
    if right:
        twin = axes.twinx()
        for key, label, colour in right:
            twin.plot(xs, [row[key] for row in history], label=label, color=colour, marker="o")
        twin.set_ylabel(right_label)
        if right_limits is not None:
            twin.set_ylim(*right_limits)
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    axes.legend(handles, labels, loc="center right")
    axes.set_title(title)
    figure.tight_layout()
    return save_figure(figure, path, parameter)
