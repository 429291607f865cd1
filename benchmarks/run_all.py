"""Run every benchmark (each in its own process) and write the results table into benchmarks/README.md.

    python benchmarks/run_all.py
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["bench_training.py", "bench_probe.py", "bench_projection.py", "bench_extraction.py",
              "bench_end_to_end.py"]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def main() -> None:
    with tempfile.NamedTemporaryFile("w+", suffix=".jsonl", delete=False) as fh:
        results_path = fh.name
    env = {**os.environ, "BENCH_RESULTS": results_path}
    for script in BENCHMARKS:
        subprocess.run([sys.executable, str(HERE / script)], env=env, cwd=HERE, check=False)
    rows = [json.loads(line) for line in Path(results_path).read_text().splitlines() if line.strip()]
    machine = rows[0]["machine"] if rows else "?"
    table = [f"Measured {dt.date.today().isoformat()} on {machine}.", "",
             "| benchmark | result | target |", "|---|---|---|"]
    table += [f"| {r['benchmark']} | {r['summary']} | {r.get('target', '')} |" for r in rows]
    readme = HERE / "README.md"
    text = readme.read_text(encoding="utf-8")
    block = START + "\n" + "\n".join(table) + "\n" + END
    text = text[:text.index(START)] + block + text[text.index(END) + len(END):] if START in text else text + "\n" + block + "\n"
    readme.write_text(text, encoding="utf-8")
    print("\n".join(table))


if __name__ == "__main__":
    main()
