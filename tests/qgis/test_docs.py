"""docs/algorithms.md is generated from the algorithms' own definitions and must be current."""

import importlib.util
import os

from qgis.core import QgsApplication, QgsProcessingParameterDefinition

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_generator():
    """``scripts/gen_algorithm_reference.py`` as a module (scripts/ is not a package)."""
    path = os.path.join(ROOT, "scripts", "gen_algorithm_reference.py")
    spec = importlib.util.spec_from_file_location("gen_algorithm_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_algorithm_reference_is_current(qgis_app):
    generator = load_generator()
    text = generator.reference_from_registry()
    path = os.path.join(ROOT, generator.REFERENCE_PATH)
    current = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    assert current == text, (f"{generator.REFERENCE_PATH} is out of date with the algorithms' definitions: "
                             f"run `{generator.REGENERATE}` and commit the result")


def test_reference_lists_every_algorithm_and_parameter(qgis_app):
    """Each algorithm has its section with its help text and a table row for every visible parameter."""
    generator = load_generator()
    text = generator.reference_from_registry()
    algorithms = QgsApplication.processingRegistry().providerById("satseg").algorithms()
    assert len(algorithms) >= 20
    for algorithm in algorithms:
        section = text.split(f"`{algorithm.id()}` · group")[1].split("\n### ")[0]
        first_line = algorithm.shortHelpString().strip().split("\n")[0]
        assert generator.escape(first_line) in section
        for definition in algorithm.parameterDefinitions():
            if definition.flags() & QgsProcessingParameterDefinition.FlagHidden:
                continue
            assert f"| `{definition.name()}` |" in section, (algorithm.id(), definition.name())
    assert "| `EDGE` | Edge handling | Enum | `0 (shift" in text
    assert "| `PATCH_WIDTH` | Patch width (pixels) | Integer | `512` | ≥ 1 |" in text


def test_escape_keeps_help_text_literal():
    generator = load_generator()
    assert generator.escape("frac_<class> | a*b _x_") == "frac\\_&lt;class> \\| a\\*b \\_x\\_"
    assert generator.slug("Train scene classifier (mean teacher)") == "train-scene-classifier-mean-teacher"
