"""Every SatSeg algorithm refuses, before any work, every output that names one of its inputs.

Not a list of known cases: the test walks every algorithm of the provider, every destination parameter and every
parameter that reads a file, so an algorithm added later is guarded too. Only the check that runs first
(``SatSegAlgorithm.check_parameters``) is called; the run itself is tested elsewhere (test_data_safety.py).
"""

import os

import pytest
from qgis.core import (
    QgsApplication,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
    QgsProject,
)

from sample_data.generate import generate_scene

VECTOR_INPUTS = (QgsProcessingParameterVectorLayer, QgsProcessingParameterFeatureSource)
VECTOR_OUTPUTS = (QgsProcessingParameterFeatureSink, QgsProcessingParameterVectorDestination)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guard")
    scene = generate_scene(str(folder), size=64, seed=1)
    model = folder / "model.satseg"
    model.write_bytes(b"not read: only the paths are compared")
    return {"raster": scene["scene"], "vector": scene["buildings"], "file": str(model)}


def input_value(definition, files):
    """A value naming an existing file for an input parameter, and that file; None for other parameters."""
    if isinstance(definition, QgsProcessingParameterRasterLayer):
        return files["raster"], files["raster"]
    if isinstance(definition, VECTOR_INPUTS):
        return f"{files['vector']}|layername=buildings", files["vector"]
    if isinstance(definition, QgsProcessingParameterMapLayer):
        return files["raster"], files["raster"]
    if isinstance(definition, QgsProcessingParameterMultipleLayers):
        kind = definition.layerType()
        if kind in (QgsProcessing.TypeFile,):
            return [files["file"]], files["file"]
        if kind in (QgsProcessing.TypeVectorAnyGeometry, QgsProcessing.TypeVectorPolygon,
                    QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorLine):
            return [f"{files['vector']}|layername=buildings"], files["vector"]
        return [files["raster"]], files["raster"]
    if isinstance(definition, QgsProcessingParameterFile) and definition.behavior() == QgsProcessingParameterFile.File:
        return files["file"], files["file"]
    return None


def cases():
    """``(algorithm id, input parameter, output parameter)`` for every file input and file output."""
    provider = QgsApplication.processingRegistry().providerById("satseg")
    found = []
    for algorithm in sorted(provider.algorithms(), key=lambda a: a.id()):
        definitions = algorithm.parameterDefinitions()
        outputs = [d.name() for d in definitions
                   if d.isDestination() and not isinstance(d, QgsProcessingParameterFolderDestination)]
        inputs = [d.name() for d in definitions if not d.isDestination() and input_value(d, {
            "raster": "r", "vector": "v", "file": "f"}) is not None]
        found += [(algorithm.id(), i, o) for i in inputs for o in outputs]
    return found


def test_every_algorithm_has_its_outputs_checked_against_its_inputs(qgis_app, files):
    checked = cases()
    assert len(checked) >= 40 and len({alg for alg, _i, _o in checked}) >= 15  # the walk found the provider
    for alg_id, input_name, output_name in checked:
        algorithm = QgsApplication.processingRegistry().createAlgorithmById(alg_id)
        definition = algorithm.parameterDefinition(input_name)
        value, path = input_value(definition, files)
        output = algorithm.parameterDefinition(output_name)
        target = path if not isinstance(output, VECTOR_OUTPUTS) or not path.endswith(".gpkg") else \
            f"{path}|layername=buildings"  # the input layer itself
        context = QgsProcessingContext()
        context.setProject(QgsProject.instance())
        before = os.path.getmtime(path)
        with pytest.raises(QgsProcessingException) as err:
            algorithm.check_parameters({input_name: value, output_name: target}, context)
        message = str(err.value)
        assert message.startswith(f"{output_name}: ") and input_name in message, (alg_id, input_name, output_name,
                                                                                   message)
        assert os.path.getmtime(path) == before


def test_every_algorithm_refuses_two_outputs_on_one_file(qgis_app, tmp_path):
    provider = QgsApplication.processingRegistry().providerById("satseg")
    pairs = []
    for algorithm in provider.algorithms():
        outputs = [d.name() for d in algorithm.parameterDefinitions()
                   if d.isDestination() and not isinstance(d, QgsProcessingParameterFolderDestination)]
        pairs += [(algorithm.id(), a, b) for i, a in enumerate(outputs) for b in outputs[i + 1:]]
    assert len(pairs) >= 20
    for alg_id, first, second in pairs:
        algorithm = QgsApplication.processingRegistry().createAlgorithmById(alg_id)
        context = QgsProcessingContext()
        context.setProject(QgsProject.instance())
        same = str(tmp_path / "out.dat")
        with pytest.raises(QgsProcessingException, match=f"^{second}: .*also given as {first}"):
            algorithm.check_parameters({first: same, second: same}, context)
        assert not os.path.exists(same)


@pytest.mark.parametrize("value, path, layer", [
    ("ogr:dbname='/data/project.gpkg' table=\"buildings\" (geom)", "/data/project.gpkg", "buildings"),
    ("ogr:dbname='/data/my project.gpkg' table=\"Häuser 2\" (geom)", "/data/my project.gpkg", "Häuser 2"),
    ("/data/project.GPKG|layername=buildings", "/data/project.GPKG", "buildings"),
    ("/data/project.gpkg|layerid=0", "/data/project.gpkg", None),  # no layer name: the whole file
    ("/data/project.gpkg", "/data/project.gpkg", None),
    ("/data/roads.shp|layername=roads", "/data/roads.shp", None),  # only GeoPackages hold named layers here
    ("ogr:dbname='/data/a.sqlite' table=\"b\" (geom)", "/data/a.sqlite", None),
    ("TEMPORARY_OUTPUT", None, None),
    ("memory:", None, None),
    ("postgres://dbname='x' table=\"y\"", None, None),
])
def test_a_destination_names_its_file_and_its_geopackage_layer(qgis_app, value, path, layer):
    from satseg_plugin.processing.layers import destination_layer, destination_path

    context = QgsProcessingContext()
    assert destination_path(value, context) == path
    assert destination_layer(value, context) == layer
