"""Facts that several Processing algorithms share: parameter parsers, default values, enum choices and field lists.

Algorithms never import each other; what two of them need lives here once. Choices come from the engine's own
tables (architectures and encoders from :mod:`~satseg_plugin.models.registry`, devices from
:data:`~satseg_plugin.core.device.DEVICE_CHOICES`) and defaults from the engine's config dataclasses
(:func:`config_defaults` on the ``pipelines/<pipeline>/config.py`` dataclasses), so the toolbox, the dock and the engine cannot disagree.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, List, Tuple

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
)

from ..models.pretrained import FILE_PARAMETER, MODES, PARAMETER, WEIGHT_SUFFIXES
from ..models.registry import ARCHITECTURE_NAMES, ENCODER_CHOICES, TIMM_PREFIX, architecture_labels

__all__ = ["DEFAULT_CLASSES", "parse_classes", "COMMUNITY_FIELDS", "config_defaults", "architecture_parameter",
           "ENCODER_NAME", "EncoderParameter", "encoder_parameters", "encoder_value", "encoder_weights_parameters",
           "encoder_weights_value", "MODEL_FILE_FILTER",
           "ModelFilesParameter", "split_model_paths", "model_files_value"]

#: Scene classes offered when the user names none (createannotationlayer, labelpatches).
DEFAULT_CLASSES = "urban,rural,uninhabited"

#: Fields of the community polygons (``trackcommunities`` adds ``track_id``).
COMMUNITY_FIELDS = (("frame", "int"), ("frame_name", "str"), ("segment_id", "int"), ("kmeans_label", "int"),
                    ("population", "float"), ("area_km2", "float"), ("centroid_x", "float"), ("centroid_y", "float"),
                    ("pixels", "int"))

def parse_classes(text: str, parameter: str) -> List[str]:
    """``"urban, rural,uninhabited"`` -> the distinct non-empty names in order."""
    names = list(dict.fromkeys(c.strip() for c in text.replace(";", ",").split(",") if c.strip()))
    if not names:
        raise QgsProcessingException(f"{parameter}: give at least one class name, e.g. {DEFAULT_CLASSES}.")
    return names


def config_defaults(config: type) -> Dict[str, Any]:
    """The field defaults of an engine config dataclass (``pipelines/<pipeline>/config.py``), by field name.

    The config modules import only the standard library and light core modules, so reading them here costs
    the provider nothing at QGIS start (numpy, rasterio and torch stay unimported until a tool runs).

    Args:
        config: the dataclass, e.g. :class:`~satseg_plugin.pipelines.segmentation.config.TrainConfig`.

    Returns:
        Field name -> default, for the fields that have a plain default (``default_factory`` ones are left out).
    """
    return {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}


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


#: The advanced free-text parameter that names an encoder outside the drop-down (it overrides ``ENCODER``).
ENCODER_NAME = "ENCODER_NAME"


class EncoderParameter(QgsProcessingParameterEnum):
    """The encoder drop-down: the registry's :data:`~satseg_plugin.models.registry.ENCODER_CHOICES` as static
    strings (the value is the encoder's name; an option's index is read as that option, as other enums take
    indexes), which also takes any other encoder name.

    QGIS's enums (3.18+, so 3.22 and 3.40 alike) refuse values outside their options, while SatSeg accepts every
    smp encoder and any timm model as ``tu-<timm name>`` (the registry checks the name and suggests close ones):
    scripts and ``qgis_process`` keep passing ``ENCODER=tu-...`` here; the dialog, whose enum widget cannot take
    free text, offers :data:`ENCODER_NAME` for it. :func:`encoder_value` reads both back.
    """

    def __init__(self, name: str, description: str, options: List[str], default: str,
                 optional: bool = False) -> None:
        super().__init__(name, description, options, False, default, optional, True)

    def clone(self) -> "EncoderParameter":
        copy = EncoderParameter(self.name(), self.description(), self.options(), self.defaultValue(),
                                bool(self.flags() & self.FlagOptional))
        copy.setFlags(self.flags())
        copy.setHelp(self.help())
        return copy

    def checkValueIsAcceptable(self, value: Any, context: Any = None) -> bool:
        """Any non-empty name or an option's index; whether smp or timm knows a name is the registry's to say (it
        names close ones)."""
        if isinstance(value, str) and value.strip():
            return True
        if isinstance(value, int) and not isinstance(value, bool):
            return 0 <= value < len(self.options())
        return super().checkValueIsAcceptable(value, context)


def encoder_parameters(key: str, label: str, default: str) -> Tuple[EncoderParameter, QgsProcessingParameterString]:
    """The encoder drop-down ``key`` and the advanced :data:`ENCODER_NAME` text that overrides it.

    Args:
        key: the drop-down's parameter name (``ENCODER``).
        label: the translated label.
        default: the default encoder (a config's ``encoder`` default; added to the choices if missing).
    """
    options = list(ENCODER_CHOICES) + ([default] if default not in ENCODER_CHOICES else [])
    choice = EncoderParameter(key, label, options, default)
    choice.setHelp(f"e.g. {', '.join(ENCODER_CHOICES)}; scripts and qgis_process may pass any "
                   f"segmentation-models-pytorch encoder, or any timm model as {TIMM_PREFIX}<timm name>, here.")
    name = QgsProcessingParameterString(ENCODER_NAME, f"Other encoder: any smp encoder or {TIMM_PREFIX}<timm name> "
                                                      "(overrides the choice above)", optional=True)
    name.setHelp(f"e.g. efficientnet-b3 or {TIMM_PREFIX}mobilenetv3_large_100; empty: the encoder chosen above.")
    name.setFlags(name.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return choice, name


def encoder_value(algorithm: Any, parameters: Dict[str, Any], key: str, context: QgsProcessingContext) -> str:
    """The engine's ``encoder``: :data:`ENCODER_NAME` when given, else the drop-down's name (an option's index
    stands for that option; no encoder is named by digits), its default when left empty."""
    other = algorithm.parameterAsString(parameters, ENCODER_NAME, context).strip()
    chosen = algorithm.parameterAsString(parameters, key, context).strip()
    options = algorithm.parameterDefinition(key).options()
    if chosen.isdigit() and int(chosen) < len(options):
        chosen = options[int(chosen)]
    return other or chosen or str(algorithm.parameterDefinition(key).defaultValue())


def encoder_weights_parameters(label: str, default: str) -> Tuple[QgsProcessingParameterEnum, QgsProcessingParameterFile]:
    """``ENCODER_WEIGHTS`` (auto | none | imagenet) and ``ENCODER_WEIGHTS_FILE`` (a weights file that overrides it).

    Args:
        label: the translated label of the choice (the file's label adds "file ... overrides the choice above").
        default: the config's ``encoder_weights`` default (one of :data:`~satseg_plugin.models.pretrained.MODES`).
    """
    choice = QgsProcessingParameterEnum(PARAMETER, label, options=list(MODES), defaultValue=MODES.index(default))
    weights_file = QgsProcessingParameterFile(
        FILE_PARAMETER, f"{label} file (overrides the choice above)", optional=True,
        fileFilter=f"Weights files ({' '.join('*' + s for s in WEIGHT_SUFFIXES)})")
    return choice, weights_file


def encoder_weights_value(algorithm: Any, parameters: Dict[str, Any], context: QgsProcessingContext) -> str:
    """The engine's ``encoder_weights``: the file when one is given, else the chosen mode."""
    return (algorithm.parameterAsFile(parameters, FILE_PARAMETER, context)
            or MODES[algorithm.parameterAsEnum(parameters, PARAMETER, context)])


# --- model files (segmentraster's MODELS): .satseg and .onnx, one or several, from the dialog or a script ---

#: The file dialog's filter for segmentation model files.
MODEL_FILE_FILTER = "Segmentation models (*.satseg *.onnx);;SatSeg models (*.satseg);;ONNX models (*.onnx)"


class ModelFilesParameter(QgsProcessingParameterFile):
    """A file parameter that takes one model file or several: a path, a list of paths (scripts, the dock), or
    paths separated by ``;`` (the dialog's text box).

    QGIS 3.22 has no file-list parameter: its multiple-layers box with the file type offers only "All files"
    and makes QGIS try to open each model as a layer. This keeps QGIS's file widget (filtered on
    :data:`MODEL_FILE_FILTER`) and widens what a value may be; :func:`model_files_value` reads it back.
    """

    def __init__(self, name: str, description: str = "", optional: bool = False) -> None:
        super().__init__(name, description, QgsProcessingParameterFile.File, "", None, optional, MODEL_FILE_FILTER)

    def clone(self) -> "ModelFilesParameter":
        copy = ModelFilesParameter(self.name(), self.description())
        copy.setFlags(self.flags())
        copy.setHelp(self.help())
        copy.setDefaultValue(self.defaultValue())
        return copy

    def checkValueIsAcceptable(self, value: Any, context: Any = None) -> bool:
        """Any non-empty path(s); whether each is a usable model is the engine's to say (it names the file)."""
        if isinstance(value, (list, tuple)):
            return bool(value) and all(isinstance(v, str) and v.strip() for v in value)
        if isinstance(value, str):
            return bool(split_model_paths(value)) or bool(self.flags() & self.FlagOptional)
        return super().checkValueIsAcceptable(value, context)


def split_model_paths(text: str) -> List[str]:
    """``"a.satseg;b.onnx"`` or QGIS's quoted ``'"a.satseg" "b.onnx"'`` -> the paths, in order."""
    if '"' in text:
        return [p for p in re.findall(r'"([^"]+)"', text) if p.strip()]
    return [p.strip() for p in text.split(";") if p.strip()]


def model_files_value(algorithm: Any, parameters: Dict[str, Any], key: str, context: QgsProcessingContext) -> List[str]:
    """The model paths of a :class:`ModelFilesParameter` value (a path, a list, or ``;``-separated paths)."""
    value = parameters.get(key)
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return split_model_paths(algorithm.parameterAsString(parameters, key, context))
