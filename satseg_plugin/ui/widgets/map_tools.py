"""Map tools of the SatSeg dock: capture a polygon by clicks, and report clicked map points.

Both tools turn the keys 1..9 into :attr:`SatSegMapTool.classKeyPressed`, so the current class can be
changed while the map canvas has the keyboard focus, without leaving the tool.
"""

from __future__ import annotations

from typing import List, Optional

from qgis.core import QgsGeometry, QgsPointLocator, QgsPointXY, QgsVectorLayer, QgsWkbTypes
from qgis.gui import QgsMapCanvas, QgsMapMouseEvent, QgsMapTool, QgsRubberBand, QgsSnapIndicator
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QKeyEvent

__all__ = ["SatSegMapTool", "PolygonCaptureTool", "PointClickTool"]

_DIGITS = {getattr(Qt.Key, f"Key_{i}"): i for i in range(1, 10)}


class SatSegMapTool(QgsMapTool):
    """Base class: keys 1..9 emit ``classKeyPressed(n)``."""

    classKeyPressed = pyqtSignal(int)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        number = _DIGITS.get(event.key())
        shortcut = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier
        if number is not None and not event.modifiers() & shortcut:
            self.classKeyPressed.emit(number)
            event.accept()
            return
        event.ignore()


class PolygonCaptureTool(SatSegMapTool):
    """Capture a polygon: left click adds a vertex (snapped with the canvas's snapping settings), right click or
    Enter finishes, Backspace/Delete removes the last vertex, Esc abandons it.

    ``captured(QgsGeometry)`` carries the polygon in the CRS of :attr:`layer` (multi-part when the layer is),
    or in the canvas CRS when no layer is set. Adding it to a layer is the caller's business.
    """

    captured = pyqtSignal(QgsGeometry)

    def __init__(self, canvas: QgsMapCanvas, layer: Optional[QgsVectorLayer] = None) -> None:
        super().__init__(canvas)
        self.layer = layer
        self.points: List[QgsPointXY] = []  # map (canvas CRS) coordinates
        self.band = QgsRubberBand(canvas, QgsWkbTypes.PolygonGeometry)
        self.band.setColor(QColor(255, 80, 0, 70))
        self.band.setStrokeColor(QColor(255, 80, 0, 220))
        self.band.setWidth(2)
        self.snap_indicator = QgsSnapIndicator(canvas)
        self.setCursor(Qt.CursorShape.CrossCursor)

    def flags(self):
        return super().flags() | QgsMapTool.EditTool

    # -- events -------------------------------------------------------------------------------------------------
    def canvasMoveEvent(self, event: QgsMapMouseEvent) -> None:
        point = event.snapPoint()
        self.snap_indicator.setMatch(event.mapPointMatch())
        self._draw(point)

    def canvasReleaseEvent(self, event: QgsMapMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.points.append(QgsPointXY(event.snapPoint()))
            self._draw()
        elif event.button() == Qt.MouseButton.RightButton:
            self.finish()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Backspace, Qt.Key.Key_Delete) and self.points:
            self.points.pop()
            self._draw()
            event.accept()
        elif event.key() == Qt.Key.Key_Escape:
            self.reset()
            event.accept()
        elif event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.finish()
            event.accept()
        else:
            super().keyPressEvent(event)

    def deactivate(self) -> None:
        self.reset()
        self.snap_indicator.setMatch(QgsPointLocator.Match())
        super().deactivate()

    def dispose(self) -> None:
        """Take the rubber band off the canvas (before the tool is dropped)."""
        self.reset()
        self.snap_indicator.setMatch(QgsPointLocator.Match())
        if self.band is not None:
            self.canvas().scene().removeItem(self.band)
            self.band = None

    # -- API ----------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the polygon being drawn."""
        self.points = []
        if self.band is not None:
            self.band.reset(QgsWkbTypes.PolygonGeometry)

    def finish(self) -> Optional[QgsGeometry]:
        """Close the polygon drawn so far: emit ``captured`` and return it (None with fewer than 3 vertices)."""
        points, self.points = self.points, []
        self.reset()
        if len(points) < 3:
            return None
        if self.layer is not None:
            points = [self.toLayerCoordinates(self.layer, p) for p in points]
        geometry = QgsGeometry.fromPolygonXY([points + [points[0]]])
        if self.layer is not None and QgsWkbTypes.isMultiType(self.layer.wkbType()):
            geometry.convertToMultiType()
        self.captured.emit(geometry)
        return geometry

    def _draw(self, hover: Optional[QgsPointXY] = None) -> None:
        if self.band is None:
            return
        self.band.reset(QgsWkbTypes.PolygonGeometry)
        points = self.points + ([hover] if hover is not None and self.points else [])
        for i, point in enumerate(points):
            self.band.addPoint(point, i == len(points) - 1)


class PointClickTool(SatSegMapTool):
    """Reports clicks: ``clicked(map point, button)`` with the point in the canvas CRS (not snapped)."""

    clicked = pyqtSignal(QgsPointXY, int)

    def __init__(self, canvas: QgsMapCanvas) -> None:
        super().__init__(canvas)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def canvasReleaseEvent(self, event: QgsMapMouseEvent) -> None:
        if event.button() in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            self.clicked.emit(QgsPointXY(event.mapPoint()), int(event.button()))
