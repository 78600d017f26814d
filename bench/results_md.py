"""The one writer of bench/RESULTS.md: each benchmark owns a section between HTML comment markers."""

import os

__all__ = ["write_section"]


def write_section(path: str, name: str, body: str) -> None:
    """Replace (or append) section ``name`` of the results file, keeping everything else.

    Args:
        path: the results Markdown file (created if missing).
        name: section name; its markers are ``<!-- name:start -->`` and ``<!-- name:end -->``.
        body: the section's Markdown, without markers.
    """
    start_marker, end_marker = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start_marker}\n{body.strip()}\n{end_marker}"
    text = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    start, end = text.find(start_marker), text.find(end_marker)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(end_marker):]
    else:
        text = (text.rstrip("\n") or "# SatSeg benchmark results") + "\n\n" + section + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
