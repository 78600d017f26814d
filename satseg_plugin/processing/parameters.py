"""Facts that several Processing algorithms share: parameter parsers, default values and field lists.

Algorithms never import each other; what two of them need lives here once.
"""

from __future__ import annotations

from typing import List

from qgis.core import QgsProcessingException

__all__ = ["DEFAULT_CLASSES", "parse_classes", "COMMUNITY_FIELDS"]

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
