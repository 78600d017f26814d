"""Write docs/algorithms.md, the algorithm reference, from the Processing algorithms' own definitions.

Every fact on that page (display name, id, group, help text, each parameter's name, description, type,
default, options and range, each output) is read from the algorithms as QGIS registers them, so the page
cannot drift from the code: ``tests/qgis/test_docs.py`` renders it again in memory and fails when the file
differs. Run it through ``make docs`` (or ``.venv/bin/python scripts/gen_algorithm_reference.py``); it
starts a headless QGIS (no display needed) and writes the page.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Iterable, List, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Where the reference lives, relative to the repository root.
REFERENCE_PATH = os.path.join("docs", "algorithms.md")
#: The command that regenerates it (named in the page and in the test's failure message).
REGENERATE = "make docs"

_DOUBLE_MAX = 1.7976931348623157e308


def escape(text: str) -> str:
    """Plain help text as Markdown that renders as written: ``<class>`` would be an HTML tag, ``*`` and ``_``
    at a word boundary emphasis, ``|`` a table cell border."""
    text = text.replace("\\", "\\\\").replace("<", "&lt;")
    text = re.sub(r"([*`|\[\]])", r"\\\1", text)
    return re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", text)


def cell(text: str) -> str:
    """``text`` fit for one table cell (one line)."""
    return escape(" ".join(str(text).split()))


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: markup dropped, lower case, punctuation dropped, spaces to
    hyphens (``tests/unit/test_docs_links.py`` checks every ``#anchor`` of the docs with it)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[`*_]|<[^>]+>", "", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def format_value(value: Any) -> str:
    """A default value as a user types it in ``qgis_process`` or ``processing.run``."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    return str(value)


def parameter_type(definition, registry) -> str:
    """QGIS's own name of the parameter's type, with what a Number, Enum or layer list accepts."""
    from qgis.core import (
        QgsProcessingParameterEnum,
        QgsProcessingParameterMultipleLayers,
        QgsProcessingParameterNumber,
    )

    kind = registry.parameterType(definition.type())
    name = kind.name() if kind is not None else definition.type()
    if isinstance(definition, QgsProcessingParameterNumber):
        name = "Integer" if definition.dataType() == QgsProcessingParameterNumber.Integer else "Number"
    if isinstance(definition, QgsProcessingParameterEnum) and definition.allowMultiple():
        name += " (several)"
    if isinstance(definition, QgsProcessingParameterMultipleLayers):
        name += " (layers)"
    return name


def parameter_values(definition) -> str:
    """The options of an Enum (``index = label``) or the range of a Number; empty for other types."""
    from qgis.core import QgsProcessingParameterEnum, QgsProcessingParameterNumber

    if isinstance(definition, QgsProcessingParameterEnum):
        if definition.usesStaticStrings():  # the value is the option's text (SatSeg's ENCODER also takes others)
            return ", ".join(definition.options()) + " (the name)"
        return "; ".join(f"{index} = {label}" for index, label in enumerate(definition.options()))
    if isinstance(definition, QgsProcessingParameterNumber):
        low, high = definition.minimum(), definition.maximum()
        as_typed = int if definition.dataType() == QgsProcessingParameterNumber.Integer else float
        bounds = []
        if low > -_DOUBLE_MAX:
            bounds.append(f"≥ {format_value(as_typed(low))}")
        if high < _DOUBLE_MAX:
            bounds.append(f"≤ {format_value(as_typed(high))}")
        return ", ".join(bounds)
    return ""


def parameter_default(definition) -> str:
    """The default as typed, and for an Enum with the label it stands for."""
    from qgis.core import QgsProcessingParameterEnum

    value = definition.defaultValue()
    text = format_value(value)
    if isinstance(definition, QgsProcessingParameterEnum) and isinstance(value, int):
        options = definition.options()
        if 0 <= value < len(options):
            text = f"{value} ({options[value]})"
    return text


def parameter_notes(definition) -> str:
    """``optional``, ``advanced``, ``output`` flags of a parameter, comma-separated."""
    from qgis.core import QgsProcessingParameterDefinition

    flags = definition.flags()
    notes = []
    if definition.isDestination():
        notes.append("output")
    if flags & QgsProcessingParameterDefinition.FlagOptional:
        notes.append("optional")
    if flags & QgsProcessingParameterDefinition.FlagAdvanced:
        notes.append("advanced")
    return ", ".join(notes)


def algorithm_section(algorithm, registry) -> List[str]:
    """The Markdown lines of one algorithm: heading, id, help text, parameter and output tables."""
    from qgis.core import QgsProcessingParameterDefinition

    lines = [f"### {algorithm.displayName()}", "",
             f"`{algorithm.id()}` · group *{algorithm.group()}*", ""]
    for paragraph in algorithm.shortHelpString().strip().split("\n"):
        if paragraph.strip():
            lines += [escape(paragraph.strip()), ""]
    lines += ["| parameter | description | type | default | options / range | notes |",
              "| --- | --- | --- | --- | --- | --- |"]
    for definition in algorithm.parameterDefinitions():
        if definition.flags() & QgsProcessingParameterDefinition.FlagHidden:
            continue
        default = parameter_default(definition)
        lines.append(f"| `{definition.name()}` | {cell(definition.description())} | "
                     f"{cell(parameter_type(definition, registry))} | {f'`{default}`' if default else ''} | "
                     f"{cell(parameter_values(definition))} | {parameter_notes(definition)} |")
    outputs = algorithm.outputDefinitions()
    if outputs:
        lines += ["", "| output | description | type |", "| --- | --- | --- |"]
        for output in outputs:
            kind = re.sub(r"^output", "", output.type())
            lines.append(f"| `{output.name()}` | {cell(output.description())} | {cell(kind[:1].lower() + kind[1:])} |")
    return lines + [""]


def render_reference(algorithms: Iterable, registry, order: Sequence[type]) -> str:
    """The whole reference page for ``algorithms`` (registered instances), grouped in the order the groups
    first appear in ``order`` (the provider's list of algorithm classes), each group in that order too."""
    ranked = sorted(algorithms, key=lambda alg: order.index(type(alg)) if type(alg) in order else len(order))
    groups: dict = {}
    for algorithm in ranked:
        groups.setdefault(algorithm.group(), []).append(algorithm)
    lines = ["# Algorithm reference", "",
             "<!-- Generated by scripts/gen_algorithm_reference.py; do not edit by hand. -->", "",
             "Every SatSeg tool of the Processing toolbox (provider `satseg`), as QGIS shows it. The page is "
             f"generated from the algorithms' own definitions: after changing one, run `{REGENERATE}` "
             "(`tests/qgis/test_docs.py` fails while it is out of date).", "",
             "Parameter names are the keys of `processing.run` and `qgis_process`; an Enum takes the index "
             "of its option (or the option's name where the values say so). `qgis_process.bin help <id>` prints the same for one tool.", ""]
    for group, members in groups.items():
        links = ", ".join(f"[{alg.displayName()}](#{slug(alg.displayName())})" for alg in members)
        lines.append(f"- **{group}**: {links}")
    lines.append("")
    for group, members in groups.items():
        lines += [f"## {group}", ""]
        for algorithm in members:
            lines += algorithm_section(algorithm, registry)
    return "\n".join(lines).rstrip("\n") + "\n"


def reference_from_registry() -> str:
    """Render the reference from the ``satseg`` provider of the running QGIS (registering it if needed)."""
    from qgis.core import QgsApplication

    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from satseg_plugin.processing.provider import ALGORITHMS, SatSegProvider

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("satseg")
    if provider is None:
        provider = SatSegProvider()
        registry.addProvider(provider)
    return render_reference(provider.algorithms(), registry, ALGORITHMS)


def main(argv: Sequence[str] | None = None) -> int:
    """Start a headless QGIS, render the reference, write it to ``--out`` (or check it with ``--check``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, REFERENCE_PATH), help="file to write")
    parser.add_argument("--check", action="store_true", help="only report whether the file is current")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    text = reference_from_registry()
    current = open(args.out, encoding="utf-8").read() if os.path.exists(args.out) else None
    if args.check:
        print(f"{args.out} is {'current' if current == text else f'out of date: run {REGENERATE}'}")
        return 0 if current == text else 1
    if current != text:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    print(f"{args.out}: {len(text.splitlines())} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
