"""Qt 6 readiness: field types come from one helper (PyQt6 has no ``QVariant.String``), and only through it."""

import os
import re

from qgis.PyQt.QtCore import QVariant

from satseg_plugin.processing.layers import field_type, qgs_field

PLUGIN = os.path.join(os.path.dirname(__file__), "..", "..", "satseg_plugin")


def test_field_types_on_this_qt():
    assert (field_type("str"), field_type("int"), field_type("float"), field_type("bool")) == (
        QVariant.String, QVariant.Int, QVariant.Double, QVariant.Bool)
    field = qgs_field("value", "float")
    assert field.name() == "value" and field.type() == QVariant.Double and field.isNumeric()


def test_no_qvariant_types_outside_the_helper():
    offenders = []
    for dirpath, _dirs, files in os.walk(PLUGIN):
        for name in files:
            path = os.path.join(dirpath, name)
            if name.endswith(".py") and not path.endswith(os.path.join("processing", "layers.py")):
                text = open(path, encoding="utf-8").read()
                offenders += [f"{name}: {m.group(0)}" for m in re.finditer(r"QVariant\.\w+", text)]
    assert offenders == []


#: Enum types themselves (not members) that the plugin names.
ENUM_TYPES = {"Qt.Orientations", "Qt.Orientation", "Qt.Key", "QMetaType.Type"}


def test_qt_enum_members_are_scoped():
    """PyQt6 knows ``Qt.AlignmentFlag.AlignRight`` but not ``Qt.AlignRight``; PyQt5 knows both. QGIS's own enums
    (``Qgis.Warning``, ``QgsProcessing.TypeRaster``) are QGIS's to keep working and are left alone."""
    offenders = []
    for dirpath, _dirs, files in os.walk(PLUGIN):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(dirpath, name), encoding="utf-8").read()
                offenders += [f"{name}: {m.group(0)}" for m in re.finditer(r"\bQ(?!gs|gis\b)[A-Za-z]+\.[A-Z]\w*\b(?!\.)",
                                                                             text) if m.group(0) not in ENUM_TYPES]
    assert offenders == []
