"""Class buttons ("1 building", "2 water" ...), one checked at a time: the class that map clicks assign. The buttons
wrap onto new rows (:class:`.flow_layout.FlowLayout`) and long names are elided (full name in the tooltip), so the
picker never makes the dock wider."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from qgis.PyQt.QtCore import QSize, Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QFontMetrics, QIcon, QPixmap
from qgis.PyQt.QtWidgets import QButtonGroup, QLabel, QToolButton, QWidget

from ...processing.styling import class_colour
from .flow_layout import FlowLayout, fixed_height_for_width

__all__ = ["ClassPicker", "MAX_LABEL_PX"]

#: Button labels longer than this (pixels) are elided in the middle.
MAX_LABEL_PX = 150


def swatch(colour: QColor, size: int = 14) -> QIcon:
    """A filled square icon of ``colour``."""
    pixmap = QPixmap(size, size)
    pixmap.fill(colour)
    return QIcon(pixmap)


class ClassPicker(QWidget):
    """Exclusive class buttons; classes 1..9 are also reachable with the keys 1..9 (see :meth:`select`).

    Signals:
        classChanged(str): the newly chosen class name.
    """

    classChanged = pyqtSignal(str)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.names: List[str] = []
        self.colours: Dict[str, QColor] = {}
        self.group = QButtonGroup(self)
        self.group.setExclusive(True)
        self.group.buttonClicked.connect(lambda button: self.classChanged.emit(self.current_class()))
        self.flow = FlowLayout(self)
        fixed_height_for_width(self)
        self.empty = QLabel(self.tr("No classes yet."))
        self.empty.setWordWrap(True)
        self.flow.addWidget(self.empty)

    def set_classes(self, names: Sequence[str], colours: Optional[Dict[str, QColor]] = None) -> None:
        """Show one button per class (colours default to SatSeg's class colours); keeps the current class when it
        is still there, else selects the first."""
        previous = self.current_class()
        for button in self.group.buttons():
            self.group.removeButton(button)
            self.flow.removeWidget(button)
            button.deleteLater()
        self.names = list(dict.fromkeys(str(n) for n in names if str(n).strip()))
        colours = colours or {}
        self.colours = {n: QColor(colours.get(n) or class_colour(n, i)) for i, n in enumerate(self.names)}
        self.empty.setVisible(not self.names)
        metrics = QFontMetrics(self.font())
        for i, name in enumerate(self.names):
            button = QToolButton(self)
            button.setCheckable(True)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            button.setIcon(swatch(self.colours[name]))
            button.setIconSize(QSize(14, 14))
            label = metrics.elidedText(name, Qt.TextElideMode.ElideMiddle, MAX_LABEL_PX)
            button.setText(f"{i + 1}  {label}" if i < 9 else label)
            button.setToolTip(self.tr("Class '{}' (key {})").format(name, i + 1) if i < 9 else name)
            button.setObjectName(f"satsegClass_{i + 1}")
            self.group.addButton(button, i)
            self.flow.addWidget(button)
        if self.names:
            index = self.names.index(previous) if previous in self.names else 0
            self.group.button(index).setChecked(True)
        if self.current_class() != previous:
            self.classChanged.emit(self.current_class())

    def current_class(self) -> str:
        """The checked class ('' when there is none)."""
        index = self.group.checkedId()
        return self.names[index] if 0 <= index < len(self.names) else ""

    def colour(self, name: str) -> QColor:
        """The colour of class ``name`` (grey for unknown names)."""
        return QColor(self.colours.get(name, QColor(128, 128, 128)))

    def select(self, number: int) -> bool:
        """Check class ``number`` (1-based, as the keys 1..9); False when there is no such class."""
        if not 1 <= number <= len(self.names):
            return False
        self.group.button(number - 1).setChecked(True)
        self.classChanged.emit(self.current_class())
        return True

    def select_name(self, name: str) -> bool:
        """Check the class called ``name``; False when there is none."""
        return name in self.names and self.select(self.names.index(name) + 1)
