"""bench/harness.py: each benchmark replaces only its own section of RESULTS.md."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))

from harness import write_section


def test_sections_are_replaced_in_place_and_others_kept(tmp_path):
    path = str(tmp_path / "RESULTS.md")
    write_section(path, "a", "first A")
    write_section(path, "b", "first B")
    write_section(path, "a", "second A")
    text = open(path).read()
    assert text.startswith("# SatSeg benchmark results")
    assert "second A" in text and "first A" not in text and "first B" in text
    assert text.index("<!-- a:start -->") < text.index("<!-- b:start -->")
    assert text.count("<!-- a:start -->") == 1
