"""Set-up: README's two commands, each run exactly as written in a fresh clone of this repository.

Command 1 installs replearn and runs the default digits comparison; command 2 installs it with the test
extras and runs the test suite (what CI runs). Both are read from README's set-up block, so the timing is
of the command a new user types. pip's download cache is whatever this machine has (no network anyway).

    python benchmarks/bench_setup.py [--only run|test]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, matmul_peak_gflops, report


def readme_commands() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = dict(re.findall(r"^# (\d)\. .*\n(python3 -m venv .*)$", text, flags=re.M))
    if set(found) != {"1", "2"}:
        raise SystemExit("README's set-up block must hold commands '# 1.' and '# 2.'")
    return {"run": found["1"], "test": found["2"]}


def timed_in_fresh_clone(command: str, log: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "replearn"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        started = time.perf_counter()
        done = subprocess.run(["bash", "-c", command], cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        wall = time.perf_counter() - started
    lines = done.stdout.strip().splitlines()
    if log is not None:
        log.write_text(done.stdout, encoding="utf-8")
    failures = [line[:200] for line in lines if line.startswith(("FAILED ", "ERROR "))][:10]
    return {"wall_s": wall, "exit_code": done.returncode, "last_line": (lines[-1:] or [""])[0][-200:],
            "failures": failures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("run", "test"), help="time one of the two commands")
    parser.add_argument("--log", type=Path, help="write each command's whole output to LOG.<run|test>.txt")
    args = parser.parse_args()
    peak = matmul_peak_gflops(2048, 5)
    results = {name: timed_in_fresh_clone(cmd, args.log.with_suffix(f".{name}.txt") if args.log else None)
               for name, cmd in readme_commands().items() if args.only in (None, name)}
    parts = [f"command {'1' if name == 'run' else '2'} ({name}): {r['wall_s']:.0f}s, exit {r['exit_code']} "
             f"({r['last_line']}{'; ' + ', '.join(r['failures']) if r['failures'] else ''})"
             for name, r in results.items()]
    report("setup", {"summary": "; ".join(parts) + f" [matmul {peak:.0f} GFLOP/s]", "results": results,
                     "matmul_gflops": peak, "machine": machine(),
                     "target": "both exit 0; CI (command 2) < 15 min"})


if __name__ == "__main__":
    main()
