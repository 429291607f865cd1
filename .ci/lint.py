"""Lint, format and type checks against a ratchet: today's exceptions are recorded in .ci/lint-ratchet.json
and may only shrink. A new finding (a rule broken more often in a file than recorded, a file that ruff
would reformat and that was formatted before, a new mypy error) fails; a finding fixed is reported so the
ratchet can be tightened with ``python .ci/lint.py --update``.

    python .ci/lint.py            # check (what .ci/run does)
    python .ci/lint.py --update   # record today's findings as the new ratchet
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATCHET = ROOT / ".ci" / "lint-ratchet.json"
BIN = Path(sys.executable).parent
MYPY_LINE = re.compile(r"^(?P<file>[^:]+):\d+: error: .*\[(?P<code>[\w-]+)\]$")


def _run(*argv: str) -> str:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True).stdout


def ruff_findings() -> dict[str, int]:
    """'file::rule' → how many times ruff finds it."""
    out = _run(str(BIN / "ruff"), "check", "--output-format", "json", "--exit-zero", ".")
    return dict(Counter(f"{Path(f['filename']).relative_to(ROOT)}::{f['code']}" for f in json.loads(out or "[]")))


def unformatted_files() -> list[str]:
    """Files ``ruff format`` would change."""
    out = _run(str(BIN / "ruff"), "format", "--check", "--output-format", "concise", ".")
    return sorted({line.split(":", 1)[0] for line in out.splitlines() if ": unformatted:" in line})


def mypy_findings() -> dict[str, int]:
    """'file::code' → how many mypy errors of that code the file has."""
    out = _run(str(BIN / "mypy"), "replearn", "--no-error-summary", "--show-error-codes")
    return dict(Counter(f"{m['file']}::{m['code']}" for m in map(MYPY_LINE.match, out.splitlines()) if m))


def regressions(recorded: dict, now: dict) -> tuple[list[str], list[str]]:
    """(what got worse, what got better) between a recorded ratchet and today's findings."""
    worse, better = [], []
    for kind in ("ruff", "mypy"):
        before, after = recorded.get(kind, {}), now[kind]
        worse += [f"{kind}: {k} {before.get(k, 0)} → {n}" for k, n in sorted(after.items()) if n > before.get(k, 0)]
        better += [f"{kind}: {k} {n} → {after.get(k, 0)}" for k, n in sorted(before.items()) if after.get(k, 0) < n]
    before_fmt, after_fmt = set(recorded.get("unformatted", [])), set(now["unformatted"])
    worse += [f"format: {f} (run: ruff format {f})" for f in sorted(after_fmt - before_fmt)]
    better += [f"format: {f} is formatted now" for f in sorted(before_fmt - after_fmt)]
    return worse, better


def findings() -> dict:
    """Today's findings of every check, in the ratchet's layout."""
    return {"ruff": ruff_findings(), "unformatted": unformatted_files(), "mypy": mypy_findings()}


def main(argv: list[str]) -> int:
    now = findings()
    if "--update" in argv:
        RATCHET.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"lint: ratchet written ({sum(now['ruff'].values())} ruff, {len(now['unformatted'])} unformatted, "
              f"{sum(now['mypy'].values())} mypy)")
        return 0
    recorded = json.loads(RATCHET.read_text()) if RATCHET.is_file() else {}
    worse, better = regressions(recorded, now)
    for line in worse:
        print(f"lint: new finding: {line}")
    if better:
        print(f"lint: {len(better)} recorded findings are fixed; tighten with: python .ci/lint.py --update")
    print(f"lint: {'FAILED' if worse else 'passed'} ({sum(now['ruff'].values())} ruff, {len(now['unformatted'])} "
          f"unformatted, {sum(now['mypy'].values())} mypy findings recorded or fewer)")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
