"""Shared parsing for the scene-clustering algorithms: patch index features, their files, classes, groups."""

from __future__ import annotations

import os
from typing import Any, List, Tuple

from qgis.core import QgsFeature, QgsFeatureRequest, QgsProcessingException, QgsProcessingFeatureSource

__all__ = ["index_features", "patch_paths", "fraction_classes", "attribute_column", "soft_label_matrix"]


def index_features(source: QgsProcessingFeatureSource, parameter: str) -> List[QgsFeature]:
    """Every feature of a patch index, in a stable order (by ``patch_id`` when present, else feature id)."""
    if source is None:
        raise QgsProcessingException(f"{parameter}: choose a patch index layer (from 'Cut raster into patches').")
    features = list(source.getFeatures(QgsFeatureRequest()))
    if not features:
        raise QgsProcessingException(f"{parameter}: the patch index holds no patches.")
    key = source.fields().lookupField("patch_id")
    features.sort(key=(lambda f: (f.attribute(key), f.id())) if key >= 0 else (lambda f: f.id()))
    return features


def patch_paths(source: QgsProcessingFeatureSource, features: List[QgsFeature], field: str,
                parameter: str) -> List[str]:
    """The patch file of each feature (field ``field``); missing files are an error naming the first."""
    position = source.fields().lookupField(field)
    if position < 0:
        raise QgsProcessingException(f"{parameter}: the patch index has no field '{field}' with patch file paths.")
    paths = [str(f.attribute(position) or "") for f in features]
    missing = [p for p in paths if not p or not os.path.exists(p)]
    if missing:
        raise QgsProcessingException(f"{parameter}: {len(missing)} patch file(s) do not exist, e.g. "
                                     f"'{missing[0]}'. Cut the patches again or fix the '{field}' field.")
    return paths


def fraction_classes(source: QgsProcessingFeatureSource) -> List[str]:
    """Class names of the ``frac_<class>`` fields 'Label patches' writes, in field order."""
    return [f.name()[len("frac_"):] for f in source.fields() if f.name().startswith("frac_")]


def attribute_column(source: QgsProcessingFeatureSource, features: List[QgsFeature], field: str,
                     parameter: str) -> List[Any]:
    """One attribute of every feature; a missing field is an error naming ``parameter``."""
    position = source.fields().lookupField(field)
    if position < 0:
        raise QgsProcessingException(f"{parameter}: the layer has no field '{field}'.")
    return [f.attribute(position) for f in features]


def soft_label_matrix(source: QgsProcessingFeatureSource, features: List[QgsFeature],
                      classes: List[str]) -> Tuple[Any, int]:
    """``(n, C)`` soft labels from the ``frac_<class>`` fields (NULL -> 0) and the number of labelled rows."""
    import numpy as np

    columns = [source.fields().lookupField(f"frac_{c}") for c in classes]
    if any(c < 0 for c in columns):
        raise QgsProcessingException("PATCH_INDEX: the index lacks frac_<class> fields for "
                                     f"{[c for c, i in zip(classes, columns) if i < 0]}; run 'Label patches from "
                                     "annotations' first.")
    labels = np.array([[float(f.attribute(i) or 0.0) for i in columns] for f in features], np.float32)
    return labels, int((labels.sum(axis=1) > 0).sum())
