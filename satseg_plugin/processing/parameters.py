"""Facts that several Processing algorithms share: parameter parsers, default values, enum choices and field lists.

Algorithms never import each other; what two of them need lives here once. Choices come from the engine's own
tables (architectures and encoders from :mod:`~satseg_plugin.models.registry`, devices from
:data:`~satseg_plugin.core.device.DEVICE_CHOICES`) and defaults from the engine's config dataclasses
(:func:`config_defaults`), so the toolbox, the dock and the engine cannot disagree.
"""

from __future__ import annotations

import ast
import functools
import os
from typing import Any, Dict, List

from qgis.core import QgsProcessingException, QgsProcessingParameterEnum, QgsProcessingParameterString

from ..models.registry import ARCHITECTURE_NAMES, ENCODER_CHOICES, TIMM_PREFIX, architecture_labels

__all__ = ["DEFAULT_CLASSES", "parse_classes", "COMMUNITY_FIELDS", "config_defaults", "architecture_parameter",
           "encoder_parameter"]

#: Scene classes offered when the user names none (createannotationlayer, labelpatches).
DEFAULT_CLASSES = "urban,rural,uninhabited"

#: Fields of the community polygons (``trackcommunities`` adds ``track_id``).
COMMUNITY_FIELDS = (("frame", "int"), ("frame_name", "str"), ("segment_id", "int"), ("kmeans_label", "int"),
                    ("population", "float"), ("area_km2", "float"), ("centroid_x", "float"), ("centroid_y", "float"),
                    ("pixels", "int"))

_PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_classes(text: str, parameter: str) -> List[str]:
    """``"urban, rural,uninhabited"`` -> the distinct non-empty names in order."""
    names = list(dict.fromkeys(c.strip() for c in text.replace(";", ",").split(",") if c.strip()))
    if not names:
        raise QgsProcessingException(f"{parameter}: give at least one class name, e.g. {DEFAULT_CLASSES}.")
    return names


@functools.lru_cache(maxsize=None)
def config_defaults(config: str) -> Dict[str, Any]:
    """The literal field defaults of an engine config dataclass, read from its source.

    Importing the pipeline module would import numpy and rasterio while the provider loads (they may be missing
    until the installer has run, and they slow QGIS's start), so the class body is parsed with ``ast`` instead and
    each default is evaluated with :func:`ast.literal_eval`; ``tests/qgis/test_parameters.py`` checks the result
    against :func:`dataclasses.fields` of the imported class.

    Args:
        config: the class's dotted path inside the plugin, e.g. ``"pipelines.segmentation.train.TrainConfig"``.

    Returns:
        Field name -> default, for the fields whose default is a literal (``default_factory`` fields are left out).

    Raises:
        KeyError: when the module has no such class.
    """
    module, _, name = config.rpartition(".")
    path = os.path.join(_PLUGIN_DIR, *module.split(".")) + ".py"
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            defaults = {}
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None:
                    try:
                        defaults[item.target.id] = ast.literal_eval(item.value)
                    except ValueError:  # field(default_factory=...) or an expression: not a Processing default
                        continue
            return defaults
    raise KeyError(f"{module} has no class {name}")


def architecture_parameter(key: str, label: str, default: str) -> QgsProcessingParameterEnum:
    """An enum of the registry's architectures (labels in :data:`~satseg_plugin.models.registry.ARCHITECTURES`'
    order, so an index means the same architecture in every algorithm); read it back with
    ``ARCHITECTURE_NAMES[parameterAsEnum(...)]``.

    Args:
        key: the parameter name.
        label: the translated label.
        default: the canonical name of the default architecture (a config's ``architecture`` default).
    """
    return QgsProcessingParameterEnum(key, label, options=architecture_labels(),
                                      defaultValue=ARCHITECTURE_NAMES.index(default))


def encoder_parameter(key: str, label: str, default: str) -> QgsProcessingParameterString:
    """The encoder: a name, with the registry's offered encoders in the help.

    A string rather than an enum: QGIS's enums (3.22) refuse any value outside their options, and SatSeg accepts
    every smp encoder and any timm model as ``tu-<timm name>`` (the registry checks the name and suggests close
    ones).

    Args:
        key: the parameter name.
        label: the translated label.
        default: the default encoder (a config's ``encoder`` default).
    """
    param = QgsProcessingParameterString(key, label, defaultValue=default)
    param.setHelp(f"e.g. {', '.join(ENCODER_CHOICES)}; any segmentation-models-pytorch encoder, or any timm model "
                  f"as {TIMM_PREFIX}<timm name>.")
    return param
