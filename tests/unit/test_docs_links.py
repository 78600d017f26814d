"""Every relative link of the README and docs/ points at a file of the repository, and every ``#anchor`` into a
Markdown page at one of its headings (GitHub's anchor rule) or ``<a id>`` tags."""

import glob
import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def _load_generator():
    """``scripts/gen_algorithm_reference.py``, whose ``slug`` also writes the reference's table of contents
    (it imports QGIS only inside functions, so loading it needs no QGIS)."""
    spec = importlib.util.spec_from_file_location(
        "gen_algorithm_reference", os.path.join(ROOT, "scripts", "gen_algorithm_reference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


slug = _load_generator().slug


def links(path: str):
    """Relative link targets of a Markdown file (code blocks and inline code left out)."""
    text = FENCE.sub("", open(path, encoding="utf-8").read())
    text = re.sub(r"`[^`\n]*`", "", text)
    for target in LINK.findall(text):
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            yield target


def anchors(path: str) -> set:
    """Every anchor a Markdown page offers: its headings' slugs (``-1``, ``-2`` for repeats) and ``<a id>``s."""
    text = FENCE.sub("", open(path, encoding="utf-8").read())
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    found.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    return found


def test_pages_found():
    names = {os.path.relpath(p, ROOT) for p in PAGES}
    assert {"README.md", "docs/algorithms.md", "docs/design.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        file_part, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), file_part)) if file_part else page
        if not os.path.exists(resolved):
            broken.append(f"{target}: no file {os.path.relpath(resolved, ROOT)}")
        elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading or <a id> '{anchor}' in {os.path.relpath(resolved, ROOT)}")
    assert not broken, f"broken links in {os.path.relpath(page, ROOT)}:\n" + "\n".join(broken)


def test_slug_follows_github():
    assert slug("Evaluate segmentation (`satseg:evaluatesegmentation`)") == \
        "evaluate-segmentation-satsegevaluatesegmentation"
    assert slug("k-means: the recipe, not faiss, makes it fast") == "k-means-the-recipe-not-faiss-makes-it-fast"
    assert slug("1. Create annotation layer") == "1-create-annotation-layer"


def test_a_missing_file_and_anchor_are_reported(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [bad](#nope) [gone](missing.md) `[code](not-a-link.md)`\n")
    assert list(links(str(page))) == ["#title", "#nope", "missing.md"]
    assert anchors(str(page)) == {"title"}
