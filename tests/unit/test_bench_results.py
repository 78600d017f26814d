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


BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench")


def test_bench_modules_stay_small_and_never_import_a_bench_script():
    import ast

    for name in sorted(os.listdir(BENCH)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(BENCH, name), encoding="utf-8") as handle:
            text = handle.read()
        assert text.count("\n") <= 600, f"{name} has {text.count(chr(10))} lines"
        for node in ast.walk(ast.parse(text)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(m.split(".")[0].startswith("bench_") for m in modules), f"{name} imports {modules}"


def _gpu_results(**extra):
    results = {"size": 1024, "tile": 256, "overlap": 64, "batch": 4, "encoder": "resnet18", "device": "cpu",
               "device_name": "Test CPU", "machine": "a machine", "device_line": "torch x", "code": "commit abc",
               "tiles": 25, "pipeline_s": 8.5, "pipeline_mpx_s": 0.12, "bare_s": 12.0, "bare_mpx_s": 0.09,
               "ratio": 1.4118}
    results.update(extra)
    return results


def test_gpu_section_is_one_table_row_with_the_profile_and_command(tmp_path):
    import cProfile

    from bench_gpu import profile_table, section

    profiler = cProfile.Profile()
    profiler.enable()
    sorted(str(i) for i in range(20000))
    profiler.disable()
    profile = profile_table(profiler, 15)
    assert profile[0].startswith("| ncalls |") and 3 <= len(profile) <= 17
    cumtimes = [float(line.split("|")[3]) for line in profile[2:]]
    assert cumtimes == sorted(cumtimes, reverse=True)

    text = section(_gpu_results(clusternet_train_s=27.4, cluster_raster_s=6.5, cluster_mpx_s=0.16), profile,
                   "python bench/bench_gpu.py --device cpu", 1.5, "quiet machine")
    path = str(tmp_path / "RESULTS.md")
    write_section(path, "gpu", text)
    written = open(path).read()
    assert "<!-- gpu:start -->" in written and "<!-- gpu:end -->" in written
    row = next(line for line in written.splitlines() if line.startswith("| 1024x1024 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["1024x1024", "256", "64", "4", "resnet18", "Test CPU", "25", "8.50", "0.12", "12.00", "0.09",
                     "**1.412**", "27.40", "6.50", "0.16"]
    assert "`python bench/bench_gpu.py --device cpu`" in written and "- Note: quiet machine" in written
    assert profile[2] in written


def test_gpu_section_says_skipped_without_the_cluster_part():
    from bench_gpu import section

    text = section(_gpu_results(), ["| ncalls | tottime (s) | cumtime (s) | function |", "|---:|---:|---:|---|"],
                   "cmd", 0.5, "")
    row = next(line for line in text.splitlines() if line.startswith("| 1024x1024 |"))
    assert row.rstrip(" |").endswith("skipped | skipped | skipped")
    assert "- Note:" not in text
