"""Toolbox dialogs a first-time user reads (issue 18): help texts name parameters by their on-screen labels, no
two outputs share a label, "Create annotation layer" sits with segmentation, and a model trained with a
temporary "Model file" is kept where the user finds it."""

from __future__ import annotations

import os
import re

import pytest
from qgis.core import QgsApplication

from satseg_plugin.processing.base import kept_model_path

# Algorithms whose help was rewritten for issue 18 (segment/cluster/patch raster belong to other changes).
REWRITTEN = ("trackcommunities", "populationclusters", "opticalflow", "deepcluster", "extractclusters",
             "labelpatches", "trainclusternet")


@pytest.mark.parametrize("name", REWRITTEN)
def test_help_names_parameters_by_their_labels(qgis_app, name):
    alg = QgsApplication.processingRegistry().algorithmById(f"satseg:{name}")
    keys = {p.name() for p in alg.parameterDefinitions()}
    internal = [key for key in keys if len(key) > 1 and re.search(rf"(?<![\w']){key}(?![\w'])",
                                                                    alg.shortHelpString())]
    assert internal == [], internal


def test_output_labels_are_unique_and_annotation_layer_sits_with_segmentation(qgis_app):
    registry = QgsApplication.processingRegistry()
    for alg in registry.providerById("satseg").algorithms():
        labels = [d.description() for d in alg.destinationParameterDefinitions()] + \
                 [o.description() for o in alg.outputDefinitions() if o.name() not in
                  {d.name() for d in alg.destinationParameterDefinitions()}]
        assert len(labels) == len(set(labels)), (alg.id(), labels)
    create = registry.algorithmById("satseg:createannotationlayer")
    assert create.groupId() == "segmentation" == registry.algorithmById("satseg:trainsegmentation").groupId()


def test_a_temporary_model_file_is_kept_beside_the_project(tmp_path):
    path = kept_model_path(str(tmp_path), now=0.0)
    assert os.path.dirname(path) == str(tmp_path / "satseg_results" / "models")
    assert re.fullmatch(r"model_\d{8}-\d{6}\.satseg", os.path.basename(path))
    os.makedirs(os.path.dirname(path))
    open(path, "wb").close()
    assert kept_model_path(str(tmp_path), now=0.0).endswith("_2.satseg")  # never over an earlier model
    assert kept_model_path("").startswith(os.path.join(os.path.expanduser("~"), "SatSeg", "models"))
