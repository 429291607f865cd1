"""README's measured figures come from the saved benchmark results, README, docs/benchmarks.md and
benchmarks/README.md agree with them, and README stays short (the rest lives in docs/)."""
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_updater():
    spec = importlib.util.spec_from_file_location("update_readmes", ROOT / "benchmarks" / "update_readmes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_and_benchmark_pages_hold_what_the_saved_results_say():
    updater = load_updater()
    assert {ROOT / "README.md", ROOT / "docs" / "benchmarks.md", ROOT / "benchmarks" / "README.md"} <= \
        set(updater.expected_files())
    for path, expected in updater.expected_files().items():
        assert path.read_text(encoding="utf-8") == expected, \
            f"{path.relative_to(ROOT)} is out of date with benchmarks/results: run python benchmarks/update_readmes.py"


def test_every_timing_in_readme_is_inside_the_generated_block():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    outside = text[:text.index("<!-- timings:start -->")] + text[text.index("<!-- timings:end -->"):]
    typed = re.findall(r"(?:~|about |takes )\d+(?:\.\d+)?\s*(?:s\b|seconds|min)", outside)
    assert not typed, f"hand-typed timings outside the generated Results block: {typed}"


def test_generated_rows_quote_the_saved_numbers():
    updater = load_updater()
    results = updater.load_results()
    block = updater.readme_block(results)
    for name, r in results.get("end_to_end", {}).get("results", {}).items():
        assert updater.duration(r["wall_s"]) in block
        assert f"{r['supervised_test_accuracy']:.4f}" in block
    bench = updater.benchmarks_block(results)
    for r in results.values():
        assert r["summary"] in bench


def test_readme_is_at_most_200_lines_and_keeps_its_two_setup_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200, f"README.md has {len(text.splitlines())} lines; move detail to docs/"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert test_command in text, "README's test command must be the one .ci/run runs"
    assert re.search(r"python3 -m venv \.venv .*\.venv/bin/replearn run\n", text), "README lacks its run command"
